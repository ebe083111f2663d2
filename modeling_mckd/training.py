"""The Accelerate training loop shared by ``train.py`` (teacher) and ``distill.py`` (student).

The loop knows nothing of the objective: an objective is a callable ``(model, batch) -> (loss,
logs)``. ``TeacherObjective`` is multimodal InfoNCE; ``StudentObjective`` is ranking +
distillation + discrimination. See docs/method.md for the formulas.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_scheduler

from .data import (
    ClipStore,
    EpochShuffleSampler,
    RetrievalTrainSet,
    RetrievalVideoSet,
    TrainCollator,
    VideoCollator,
    choose_cache,
)
from .losses import (
    AnchorDistillationLoss,
    ContrastiveLoss,
    DiscriminationLoss,
    DistillationLoss,
    RankingLoss,
    multimodal_contrastive_loss,
)
from .retrieval import evaluate_retrieval


logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def _scale(outputs) -> torch.Tensor:
    return outputs.logit_scale.float()


def _forward(model, inputs: dict):
    # Always go through the (possibly DDP-wrapped) forward, so gradient sync hooks run.
    return model(**inputs, return_dict=True)


def teacher_pairs(extra_modalities: Sequence[str], part_pairs: bool) -> list[tuple[str, str]]:
    """The modality pairs the teacher contrasts, given the extra modalities it embeds (e.g. ``["audio"]``).

    ``part_pairs`` (a model that fuses modalities, with ``--teacher_part_pairs``): text-video (the fused
    retrieval embedding), text-visual, text-m and visual-m for each extra modality m. Otherwise every pair
    of text, video and the extra modalities.
    """
    extra = list(extra_modalities)
    if part_pairs:
        return [("text", "video"), ("text", "visual"), *[("text", m) for m in extra], *[("visual", m) for m in extra]]
    names = ["text", "video", *extra]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


class TeacherObjective:
    """Multimodal contrastive learning: InfoNCE between every pair of co-occurring modalities.

    For a model that fuses modalities into its video embedding, ``part_pairs`` (the default) contrasts the
    parts too: text-video (the fused retrieval embedding), text-visual, text-audio and visual-audio. The
    fused embedding alone lets a part that learns fast (audio features) carry one that learns slowly (frames),
    which then never learns: the visual part of such a teacher retrieved at chance (docs/results.md).
    Without ``part_pairs`` the pairs are text-video, text-audio and video-audio.
    """

    def __init__(self, part_pairs: bool = True):
        self.contrastive = ContrastiveLoss(local_loss=True, gather_with_grad=True)
        self.part_pairs = part_pairs

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = _forward(model, batch["student"])
        position = batch["text_video_position"]
        embeddings = {"text": outputs.text_embeds.float(), "video": outputs.video_embeds.float()[position]}
        extra = []
        if getattr(outputs, "audio_embeds", None) is not None:
            embeddings["audio"] = outputs.audio_embeds.float()[position]
            extra.append("audio")
        part_pairs = self.part_pairs and bool(_unwrap(model).config.fuse_modalities)
        if part_pairs:
            embeddings["visual"] = outputs.visual_embeds.float()[position]
        pairs = teacher_pairs(extra, part_pairs)
        loss, pair_losses = multimodal_contrastive_loss(
            embeddings, _scale(outputs), ids=batch["video_index"][position], loss_fn=self.contrastive, pairs=pairs
        )
        logs = {f"loss/{pair}": value.item() for pair, value in pair_losses.items()}
        logs["logit_scale"] = _scale(outputs).item()
        return loss, logs


class StudentObjective:
    """MCKD student: ranking + kd_weight * distillation + disc_weight * discrimination.

    Teacher embeddings come either from a cache built once (deterministic teacher inputs) or from
    running the frozen teacher on the batch's ``teacher`` inputs.
    """

    def __init__(self, distill_args, teacher=None, teacher_text_cache=None, teacher_video_cache=None,
                 teacher_part_caches=None):
        self.args = distill_args
        self.ranking = RankingLoss(margin=distill_args.ranking_margin, max_violation=distill_args.ranking_max_violation)
        self.distillation = DistillationLoss(mode=distill_args.kd_mode, temperature=distill_args.kd_temperature)
        self.anchor_distillation = AnchorDistillationLoss(temperature=distill_args.kd_temperature)
        self.discrimination = DiscriminationLoss(
            temperature=distill_args.disc_temperature, text_weight=distill_args.disc_text_weight
        )
        self.teacher = teacher
        self.teacher_text_cache = teacher_text_cache
        self.teacher_video_cache = teacher_video_cache
        # with kd_parts: the teacher's "visual" / "audio" parts of its fused video embedding, per train video
        self.teacher_part_caches = teacher_part_caches or {}

    def teacher_embeddings(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher's caption and video embeddings for the batch, and the parts of its video embeddings."""
        if self.teacher_text_cache is not None:
            device = batch["video_index"].device
            videos = batch["video_index"].cpu()
            text = self.teacher_text_cache[batch["caption_index"].cpu()].to(device)
            video = self.teacher_video_cache[videos].to(device)
            parts = {name: cache[videos].to(device) for name, cache in self.teacher_part_caches.items()}
            return text, video, parts
        with torch.no_grad():
            outputs = self.teacher(**batch["teacher"], return_dict=True)
        parts = _video_parts(self.teacher, outputs) if self.args.kd_parts else {}
        return outputs.text_embeds.float(), outputs.video_embeds.float(), parts

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = _forward(model, batch["student"])
        position = batch["text_video_position"]
        ids = batch["video_index"][position]
        text = outputs.text_embeds.float()
        video = outputs.video_embeds.float()[position]
        loss = self.ranking(text, video, ids=ids)
        logs = {"loss/ranking": loss.item()}
        if self.args.kd_weight:
            teacher_text, teacher_video, teacher_parts = self.teacher_embeddings(batch)
            extra = {}
            if "feature" in self.args.kd_mode.split("+"):
                projection = _unwrap(model).mimicry_projection
                extra = {"student_projected_text": projection(text), "student_projected_video": projection(video)}
            kd = self.distillation(text, video, teacher_text, teacher_video[position], **extra)
            logs["loss/distillation"] = kd.item()
            student_parts = _video_parts(model, outputs) if self.args.kd_parts else {}
            if self.args.kd_parts:
                # The same structure, part by part: the student's visual part learns the teacher's text-visual
                # structure instead of leaning on the audio it is fused with.
                for name, teacher_part in teacher_parts.items():
                    part_kd = self.distillation(text, student_parts[name][position], teacher_text,
                                                teacher_part[position])
                    logs[f"loss/distillation_{name}"] = part_kd.item()
                    kd = kd + part_kd
            if self.args.kd_anchor_weight:
                anchor = self.anchor_terms(text, outputs.video_embeds.float(), student_parts, teacher_text,
                                           teacher_video, teacher_parts)
                logs["loss/distillation_anchor"] = anchor.item()
                kd = kd + self.args.kd_anchor_weight * anchor
            loss = loss + self.args.kd_weight * kd
        if self.args.disc_weight:
            disc = self.discrimination(text, video, ids=ids)
            loss = loss + self.args.disc_weight * disc
            logs["loss/discrimination"] = disc.item()
        return loss, logs

    def anchor_terms(self, text, videos, student_parts, teacher_text, teacher_videos, teacher_parts) -> torch.Tensor:
        """Dataset-level structure: the batch's captions among the teacher's train videos, its videos (and with
        kd_parts each part) among the teacher's train captions. Each video counts once, however many captions."""
        if self.teacher_text_cache is None:
            raise ValueError("kd_anchor_weight needs the teacher's cache of the train split (teacher_frame_sampling "
                             "uniform)")
        text_bank = self.teacher_text_cache.to(text.device)
        loss = self.anchor_distillation(text, teacher_text, self.teacher_video_cache.to(text.device))
        loss = loss + self.anchor_distillation(videos, teacher_videos, text_bank)
        for name, teacher_part in teacher_parts.items():
            loss = loss + self.anchor_distillation(student_parts[name], teacher_part, text_bank)
        return loss


def _video_parts(model, outputs) -> dict[str, torch.Tensor]:
    """The parts of a forward's fused video embedding (as `get_video_feature_parts` names them), float32."""
    fused = _unwrap(model).config.fuse_modalities
    return {"visual": outputs.visual_embeds.float(), **{name: outputs.modality_embeds[name].float() for name in fused}}


def uses_audio(model) -> bool:
    return "audio" in (_unwrap(model).config.extra_modalities or {})


def fuses_audio(model) -> bool:
    """Whether the model's video embedding needs the clip's audio (``config.fuse_modalities``)."""
    return "audio" in (_unwrap(model).config.fuse_modalities or [])


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------
# Encoding and evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_texts(model, processor, captions: list[str], batch_size: int, device, max_text_length: int = 32) -> torch.Tensor:
    """Embeddings of ``captions`` in order (float32, on CPU)."""
    model = _unwrap(model)
    chunks = []
    for start in range(0, len(captions), batch_size):
        tokens = processor.tokenizer(
            captions[start : start + batch_size], padding=True, truncation=True,
            max_length=max_text_length, return_tensors="pt",
        ).to(device)
        chunks.append(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def encode_videos(model, processor, store: ClipStore, batch_size: int, device, num_workers: int = 0) -> tuple[torch.Tensor, int]:
    """Embeddings of every video of ``store`` in order, and how many failed to decode."""
    parts, failed = encode_video_parts(model, processor, store, batch_size, device, num_workers, fused_only=True)
    return parts["video"], failed


@torch.no_grad()
def encode_video_parts(model, processor, store: ClipStore, batch_size: int, device, num_workers: int = 0,
                       fused_only: bool = False) -> tuple[dict[str, torch.Tensor], int]:
    """``{"video": fused embeddings, "visual": ..., "audio": ...}`` of every video of ``store`` in order (the
    parts only for a model with ``config.fuse_modalities``, and not with ``fused_only``), and how many clips
    failed to decode."""
    model = _unwrap(model)
    loader = torch.utils.data.DataLoader(
        RetrievalVideoSet(store, processor, with_audio=fuses_audio(model)), batch_size=batch_size,
        collate_fn=VideoCollator(processor), num_workers=num_workers,
    )
    with_parts = bool(model.config.fuse_modalities) and not fused_only
    chunks, failed = {}, 0
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch["model"].items()}
        parts = model.get_video_feature_parts(**inputs)
        embeddings = {"video": model.fuse_video_parts(parts), **(parts if with_parts else {})}
        for name, value in embeddings.items():
            chunks.setdefault(name, []).append(value.float().cpu())
        failed += int(batch["num_failed"])
    return {name: torch.cat(values) for name, values in chunks.items()}, failed


def evaluate_split(model, processor, videos, store: ClipStore, *, batch_size: int, device, max_text_length: int = 32,
                   num_workers: int = 0, with_parts: bool = False) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics over every caption of a split; with ``with_parts``, for a
    model that fuses modalities, also each part of its video embedding alone (``visual_only_*``, ``audio_only_*``)."""
    was_training = model.training
    model.eval()
    captions = [list(c) for c in videos["captions"]]
    flat = [c for caps in captions for c in caps]
    text_to_video = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    text_embeds = encode_texts(model, processor, flat, batch_size, device, max_text_length)
    video_parts, failed = encode_video_parts(model, processor, store, batch_size, device, num_workers,
                                             fused_only=not with_parts)
    model.train(was_training)
    metrics = evaluate_retrieval(text_embeds, video_parts.pop("video"), text_to_video)
    metrics["decode_failures"] = failed
    # A fused video embedding: what each part alone retrieves (e.g. "visual_only_t2v_R@1"), so that a model
    # whose frames contribute nothing cannot hide behind its audio.
    for part, embeds in video_parts.items():
        part_metrics = evaluate_retrieval(text_embeds, embeds, text_to_video)
        metrics.update({f"{part}_only_{key}": part_metrics[key] for key in ("t2v_R@1", "t2v_R@5", "v2t_R@1", "rsum")})
    return metrics


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


def find_checkpoint(output_dir: Path, resume: str) -> Path:
    if resume != "latest":
        path = Path(resume)
        if not (path / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"--resume_from_checkpoint {resume}: not a checkpoint folder (no {TRAINER_STATE})")
        return path
    checkpoints = sorted(
        (p for p in (output_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*") if (p / TRAINER_STATE).is_file()),
        key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]),
    )
    if not checkpoints:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
    return checkpoints[-1]


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
                 extra_processors: dict | None = None, track_config: dict | None = None):
        self.run_args = run_args
        self.data_args = data_args
        self.output_dir = Path(run_args.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(run_args.mixed_precision),
            gradient_accumulation_steps=run_args.gradient_accumulation_steps,
            log_with=resolve_report_to(run_args.report_to) or None,
            project_dir=str(self.output_dir / "runs"),
        )
        self.model = model
        self.processor = processor
        self.objective = objective
        self.datasets = datasets
        self.stores = {}
        processors = {"student": processor, **(extra_processors or {})}
        train_videos = datasets[data_args.train_split]
        if data_args.max_train_videos:
            train_videos = train_videos.select(range(min(data_args.max_train_videos, len(train_videos))))
        self.train_videos = train_videos
        self.train_store = self.make_store(train_videos)
        self.train_set = RetrievalTrainSet(
            train_videos, self.train_store, processors,
            captions_per_video=data_args.captions_per_video, seed=run_args.seed,
            audio_users={"student"} if uses_audio(model) else set(),
        )
        self.sampler = EpochShuffleSampler(len(self.train_set), seed=run_args.seed)
        self.collator = TrainCollator(processors, max_text_length=data_args.max_text_length)
        self.track_config = track_config or {}

    def make_store(self, videos) -> ClipStore:
        store = ClipStore(videos, input_mode=self.processor.video_processor.input_mode)
        store.cache = choose_cache(store, self.data_args.cache_frames)
        return store

    def eval_data(self, split: str):
        if split not in self.stores:
            videos = self.datasets[split]
            if self.data_args.max_eval_videos:
                videos = videos.select(range(min(self.data_args.max_eval_videos, len(videos))))
            self.stores[split] = (videos, self.make_store(videos))
        return self.stores[split]

    def evaluate(self, split: str, with_parts: bool = False) -> dict[str, float]:
        videos, store = self.eval_data(split)
        return evaluate_split(
            self.model, self.processor, videos, store, batch_size=self.run_args.per_device_eval_batch_size,
            device=self.accelerator.device, max_text_length=self.data_args.max_text_length,
            num_workers=self.data_args.dataloader_num_workers, with_parts=with_parts,
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
        self.accelerator.save_state(str(temporary))
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

        state = TrainState()
        if args.resume_from_checkpoint:
            checkpoint = find_checkpoint(self.output_dir, args.resume_from_checkpoint)
            accelerator.load_state(str(checkpoint))
            state = TrainState(**json.loads((checkpoint / TRAINER_STATE).read_text()))
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
                    if state.global_step == 0 and args.debug_dump_first_step_grads and accelerator.sync_gradients:
                        self.dump_gradients(Path(args.debug_dump_first_step_grads))
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
