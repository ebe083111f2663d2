"""The Accelerate training loop shared by ``train.py`` (teacher) and ``distill.py`` (student): its state,
checkpoints, evaluation schedule and failure policies.

The loop knows nothing of the objective: an objective is a callable ``(model, batch) -> (loss,
logs)`` (`objectives.py`). Encoding and split evaluation are in `encoding.py`.

Testing aid: with the environment variable ``MCKD_DUMP_FIRST_STEP_GRADS=<file>`` the main process
saves the first optimiser step's gradients there (safetensors), e.g. to compare a multi-process run
with a single-process one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env
from tqdm.auto import tqdm
from transformers import get_scheduler

from .data import ClipStore, EpochShuffleSampler, InputSpec, RetrievalTrainSet, TrainCollator, choose_cache
from .encoding import evaluate_split, unwrap_model, uses_audio


logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"
DUMP_GRADS_ENV = "MCKD_DUMP_FIRST_STEP_GRADS"


def launch_state() -> PartialState:
    """This process's place in the launch, set up as the trainer's `Accelerator` sets it up.

    Use this, never a bare ``PartialState()``, for anything that runs before the trainer exists: the first state
    made is shared by the whole process, and a bare one ignores ``ACCELERATE_USE_CPU`` (only ``Accelerator`` reads
    it), so under ``accelerate launch`` on CPU it fixes the run as single-process: no process group, no DDP, every
    rank training on rank 0's batches with its own gradients.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def check_launch(accelerator: Accelerator) -> None:
    """Fail when the launcher started several processes but the Accelerator sees one (see `launch_state`)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"launched as {launched} processes (WORLD_SIZE) but the Accelerator runs {accelerator.num_processes} "
            f"({accelerator.distributed_type}): the process state was set up before the trainer without the launch's "
            "settings (use modeling_mckd.training.launch_state(), not PartialState(), before the trainer exists)"
        )


def select_videos(videos, limit: int | None):
    """The first ``limit`` videos of a split (all of them without a limit)."""
    return videos.select(range(min(limit, len(videos)))) if limit else videos


def make_clip_store(videos, processor, cache_policy: str, frame_cache: str | None = None) -> ClipStore:
    """A split's clip reader for ``processor``'s input mode, caching decoded frames as ``cache_policy`` says and
    reading a prebuilt ``frame_cache`` folder when given (None: ``$MCKD_FRAME_CACHE``)."""
    store = ClipStore(videos, input_mode=processor.video_processor.input_mode, frame_cache=frame_cache)
    store.cache = choose_cache(store, cache_policy)
    return store


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def resolve_report_to(report_to: str) -> list[str]:
    if report_to == "none":
        return []
    if report_to == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return []
        return ["tensorboard"]
    return [name.strip() for name in report_to.split(",") if name.strip()]


def resolve_mixed_precision(value: str) -> str:
    if value != "auto":
        if value not in {"no", "fp16", "bf16"}:
            raise ValueError(f"mixed_precision must be auto, no, fp16 or bf16, got {value!r}")
        return value
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or damaged (the message names the file)."""


def _checkpoint_number(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX):])


def find_checkpoints(output_dir: Path, resume: str) -> list[Path]:
    """The checkpoints to try, best first: the named folder, or for ``latest`` every complete one, newest first."""
    if resume != "latest":
        path = Path(resume)
        if not (path / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: not a checkpoint folder (no {TRAINER_STATE})")
        return [path]
    checkpoints = sorted(
        (p for p in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
         if (p / TRAINER_STATE).is_file() and p.name[len(CHECKPOINT_PREFIX):].isdigit()),
        key=_checkpoint_number, reverse=True,
    )
    if not checkpoints:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
    return checkpoints


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    """The checkpoint ``resume`` names (``latest``: the newest), without checking its files."""
    return find_checkpoints(output_dir, resume)[0]


def verify_checkpoint(path: Path) -> TrainState:
    """Check every file of a checkpoint folder before loading it; its `TrainState`, or CorruptCheckpointError.

    ``save_state`` writes safetensors (the model) and zip archives made by ``torch.save`` (optimizer, scheduler,
    sampler, random states): a truncated or damaged one fails here with its name, instead of deep inside
    ``load_state`` with a message that names no file. Nothing is unpickled here.
    """
    import zipfile

    from safetensors import safe_open

    state_file = path / TRAINER_STATE
    try:
        values = json.loads(state_file.read_text(encoding="utf-8"))
        state = TrainState(**values)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise CorruptCheckpointError(f"{state_file}: not a trainer state ({error})") from None
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as archive:  # checks that the data covers the header
                    archive.keys()
            elif file.suffix in {".bin", ".pkl", ".pt", ".pth"}:
                if not zipfile.is_zipfile(file):
                    raise ValueError("not a complete torch.save archive (truncated?)")
                with zipfile.ZipFile(file) as archive:
                    damaged = archive.testzip()  # CRC of every member
                if damaged is not None:
                    raise ValueError(f"member {damaged} fails its checksum")
        except Exception as error:  # safetensors raises its own error types
            raise CorruptCheckpointError(f"{file}: corrupt checkpoint file ({error})") from None
    return state


def load_checkpoint(accelerator: Accelerator, output_dir: Path, resume: str) -> tuple[Path, TrainState]:
    """Load ``resume`` into ``accelerator``'s objects; its folder and `TrainState`.

    A corrupt checkpoint (truncated or damaged file): with ``latest``, a warning naming the file, then the previous
    complete checkpoint (they are rotated, so ``save_total_limit`` >= 2 keeps one); a named folder, or no
    complete checkpoint left, stops with a CorruptCheckpointError naming the file(s).
    """
    problems = []
    for checkpoint in find_checkpoints(output_dir, resume):
        try:
            state = verify_checkpoint(checkpoint)
            accelerator.load_state(str(checkpoint))
        except CorruptCheckpointError as error:
            problems.append(str(error))
            logger.warning("--resume_from_checkpoint %s: skipping %s", resume, error)
            continue
        if problems:
            logger.warning("resuming from the previous complete checkpoint %s", checkpoint)
        return checkpoint, state
    raise CorruptCheckpointError(f"--resume_from_checkpoint {resume}: no complete checkpoint: " + "; ".join(problems))


@dataclasses.dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    batches_done_in_epoch: int = 0
    best_rsum: float = -math.inf
    best_step: int = -1
    decode_failures: int = 0


class RetrievalTrainer:
    """Runs an objective over a retrieval dataset with Accelerate.

    It owns checkpointing (atomic, rotated, resumable mid-epoch), evaluation (best model by
    rsum), logging and the failure policies (non-finite loss, undecodable clips).
    """

    def __init__(self, *, model, processor, objective: Callable, datasets, run_args, data_args,
                 train_store: ClipStore | None = None, teacher_inputs: InputSpec | None = None,
                 track_config: dict | None = None):
        """``train_store`` reads the train split (``data_args.max_train_videos`` of it); one is made when not given.
        ``teacher_inputs`` says what each batch's ``"teacher"`` entry holds, for an objective that runs a teacher
        on the batch (`objectives.TeacherSignal.on_the_fly`)."""
        self.run_args = run_args
        self.data_args = data_args
        self.output_dir = Path(run_args.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(run_args.mixed_precision),
            gradient_accumulation_steps=run_args.gradient_accumulation_steps,
            log_with=resolve_report_to(run_args.report_to) or None,
            project_dir=str(self.output_dir / "runs"),
        )
        check_launch(self.accelerator)
        self.model = model
        self.processor = processor
        self.objective = objective
        self.datasets = datasets
        self.stores = {}
        # The student (or the teacher being trained) gets the audio when it has an audio tower.
        inputs = {"student": InputSpec(processor, max_text_length=unwrap_model(model).config.max_text_length,
                                       with_audio=uses_audio(model))}
        if teacher_inputs is not None:
            inputs["teacher"] = teacher_inputs
        self.train_videos = select_videos(datasets[data_args.train_split], data_args.max_train_videos)
        self.train_store = train_store or make_clip_store(self.train_videos, processor, data_args.cache_frames,
                                                          data_args.frame_cache)
        if len(self.train_store) != len(self.train_videos):
            raise ValueError(f"train_store holds {len(self.train_store)} videos, the train split {len(self.train_videos)}")
        self.train_set = RetrievalTrainSet(
            self.train_videos, self.train_store, inputs,
            captions_per_video=data_args.captions_per_video, seed=run_args.seed,
        )
        self.sampler = EpochShuffleSampler(len(self.train_set), seed=run_args.seed)
        self.collator = TrainCollator(inputs)
        self.track_config = track_config or {}

    def eval_data(self, split: str):
        if split not in self.stores:
            videos = select_videos(self.datasets[split], self.data_args.max_eval_videos)
            store = make_clip_store(videos, self.processor, self.data_args.cache_frames, self.data_args.frame_cache)
            self.stores[split] = (videos, store)
        return self.stores[split]

    def evaluate(self, split: str, with_parts: bool = False) -> dict[str, float]:
        videos, store = self.eval_data(split)
        return evaluate_split(
            self.model, self.processor, videos, store, batch_size=self.run_args.per_device_eval_batch_size,
            device=self.accelerator.device, num_workers=self.data_args.dataloader_num_workers, with_parts=with_parts,
        )

    # -- checkpoints ---------------------------------------------------------------------

    def save_checkpoint(self, state: TrainState) -> Path:
        """``save_state`` into a temporary folder, then rename: a checkpoint is whole or absent."""
        root = self.output_dir / "checkpoints"
        final = root / f"{CHECKPOINT_PREFIX}{state.global_step}"
        temporary = root / f".tmp-{CHECKPOINT_PREFIX}{state.global_step}"
        if self.accelerator.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(temporary, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        # Every process writes into the folder (its own random_states_<rank>.pkl), and save_state returns without
        # waiting for the others: the rename must wait until all have written.
        self.accelerator.save_state(str(temporary))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            (temporary / TRAINER_STATE).write_text(json.dumps(dataclasses.asdict(state), indent=2))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
            self.rotate_checkpoints(root)
        self.accelerator.wait_for_everyone()
        return final

    def rotate_checkpoints(self, root: Path) -> None:
        checkpoints = sorted(root.glob(f"{CHECKPOINT_PREFIX}*"), key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
        limit = max(self.run_args.save_total_limit, 1)
        for old in checkpoints[:-limit]:
            shutil.rmtree(old, ignore_errors=True)

    def save_best(self, state: TrainState, metrics: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        final = self.output_dir / "best_model"
        temporary = self.output_dir / ".tmp-best_model"
        shutil.rmtree(temporary, ignore_errors=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(temporary)
        (temporary / "best_metrics.json").write_text(json.dumps({"step": state.global_step, **metrics}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)

    # -- training ------------------------------------------------------------------------

    def train(self) -> dict:
        args = self.run_args
        accelerator = self.accelerator
        loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=args.per_device_train_batch_size, sampler=self.sampler,
            collate_fn=self.collator, num_workers=self.data_args.dataloader_num_workers, drop_last=False,
        )
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if parameter.requires_grad:
                (no_decay if parameter.ndim < 2 or "logit_scale" in name else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=args.learning_rate,
        )
        batches_per_epoch = math.ceil(len(self.train_set) / (args.per_device_train_batch_size * accelerator.num_processes))
        steps_per_epoch = max(math.ceil(batches_per_epoch / args.gradient_accumulation_steps), 1)
        total_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        num_epochs = math.ceil(total_steps / steps_per_epoch)
        scheduler = get_scheduler(
            args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        self.model, optimizer, loader, scheduler = accelerator.prepare(self.model, optimizer, loader, scheduler)

        dump_grads = os.environ.get(DUMP_GRADS_ENV)
        state = TrainState()
        if args.resume_from_checkpoint:
            checkpoint, state = load_checkpoint(accelerator, self.output_dir, args.resume_from_checkpoint)
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", checkpoint, state.global_step,
                        state.epoch, state.batches_done_in_epoch)

        if accelerator.is_main_process and resolve_report_to(args.report_to):
            scalar_config = {k: v for k, v in self.track_config.items() if isinstance(v, (int, float, str, bool))}
            accelerator.init_trackers("mckd", config=scalar_config)

        progress = tqdm(total=total_steps, initial=state.global_step, disable=not accelerator.is_main_process or args.disable_tqdm,
                        desc="training")
        self.model.train()
        history, eval_history = [], []
        start_time = time.time()
        while state.global_step < total_steps and state.epoch < num_epochs:
            self.sampler.use_epoch(state.epoch)
            self.train_set.use_epoch(state.epoch)
            use_epoch = getattr(self.objective, "use_epoch", None)  # any callable may be an objective
            if use_epoch is not None:
                use_epoch(state.epoch)  # e.g. the ranking loss's warm-up
            epoch_loader = loader
            if state.batches_done_in_epoch:
                epoch_loader = accelerator.skip_first_batches(loader, state.batches_done_in_epoch)
            failed_in_epoch = seen_in_epoch = 0
            for batch in epoch_loader:
                failed_in_epoch += int(batch["num_failed"])
                seen_in_epoch += int(batch["num_items"])
                state.batches_done_in_epoch += 1
                if "video_index" not in batch:
                    continue
                with accelerator.accumulate(self.model):
                    loss, logs = self.objective(self.model, batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"non-finite loss ({loss.item()}) at step {state.global_step + 1} "
                            f"(epoch {state.epoch}, batch {state.batches_done_in_epoch}); stopping. "
                            f"The last good checkpoint is kept in {self.output_dir / 'checkpoints'}"
                        )
                    accelerator.backward(loss)
                    if state.global_step == 0 and dump_grads and accelerator.sync_gradients:
                        self.dump_gradients(Path(dump_grads))
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                progress.update(1)
                logs["loss"] = loss.item()
                logs["lr"] = scheduler.get_last_lr()[0]
                history.append({"step": state.global_step, **logs})
                if state.global_step % max(args.logging_steps, 1) == 0:
                    progress.set_postfix(loss=f"{logs['loss']:.4f}")
                    accelerator.log(logs, step=state.global_step)
                if args.save_steps and state.global_step % args.save_steps == 0:
                    self.save_checkpoint(state)
                if state.global_step >= total_steps:
                    break
            self.check_decode_failures(failed_in_epoch, seen_in_epoch, state)
            state.decode_failures += failed_in_epoch
            finished_epoch = state.global_step < total_steps or state.batches_done_in_epoch >= len(loader)
            if finished_epoch:
                state.epoch += 1
                state.batches_done_in_epoch = 0
            if args.eval_strategy == "epoch" and self.data_args.eval_split and self.data_args.eval_split in self.datasets:
                metrics = self.evaluate(self.data_args.eval_split)
                accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
                logger.info("epoch %d %s: %s", state.epoch, self.data_args.eval_split, _summary(metrics))
                eval_history.append({"step": state.global_step, "epoch": state.epoch, **metrics})
                if metrics["rsum"] > state.best_rsum:
                    state.best_rsum, state.best_step = metrics["rsum"], state.global_step
                    self.save_best(state, metrics)
            if not args.save_steps:
                self.save_checkpoint(state)
        progress.close()
        accelerator.wait_for_everyone()
        elapsed = time.time() - start_time
        best = self.output_dir / "best_model"
        if (best / "best_metrics.json").is_file():
            # Evaluate and ship the best model on validation, not the last one.
            from safetensors.torch import load_file

            weights = load_file(str(best / "model.safetensors"))
            self.accelerator.unwrap_model(self.model).load_state_dict(weights, strict=False)
        return {"global_step": state.global_step, "train_runtime_s": elapsed, "best_rsum": state.best_rsum,
                "best_step": state.best_step, "decode_failures": state.decode_failures, "history": history,
                "eval_history": eval_history}

    def check_decode_failures(self, failed: int, seen: int, state: TrainState) -> None:
        if not seen:
            return
        counts = self.accelerator.reduce(torch.tensor([failed, seen], device=self.accelerator.device), reduction="sum")
        failed, seen = int(counts[0]), int(counts[1])
        if failed:
            logger.warning("epoch %d: %d of %d training clips could not be decoded and were skipped", state.epoch, failed, seen)
        self.accelerator.log({"decode_failures": failed}, step=state.global_step)
        if failed / seen > self.data_args.max_decode_failure_fraction:
            raise RuntimeError(
                f"epoch {state.epoch}: {failed} of {seen} clips could not be decoded, more than "
                f"max_decode_failure_fraction={self.data_args.max_decode_failure_fraction}"
            )

    def dump_gradients(self, path: Path) -> None:
        grads = {name: p.grad.detach().cpu().clone() for name, p in self.accelerator.unwrap_model(self.model).named_parameters()
                 if p.grad is not None}
        if self.accelerator.is_main_process:
            from safetensors.torch import save_file

            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(grads, str(path))


def _summary(metrics: dict) -> str:
    keys = ("t2v_R@1", "t2v_R@5", "v2t_R@1", "rsum")
    return ", ".join(f"{k}={metrics[k]:.2f}" for k in keys if k in metrics)
