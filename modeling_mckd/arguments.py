"""Typed arguments shared by ``train.py`` and ``distill.py``.

Names follow :class:`transformers.TrainingArguments` wherever an equivalent exists, so that
users can carry their habits over. Every dataclass can be filled from the command line, from a
YAML/JSON file given with ``--config``, or both (the command line wins).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


@dataclass
class DataArguments:
    """Where the retrieval data comes from and how clips are sampled."""

    dataset: str | None = field(
        default=None,
        metadata={"help": "A `load_from_disk` folder written by dataset_scripts/, or a Hub dataset id. "
                  "Without it the built-in synthetic benchmark is generated (once) and used."},
    )
    synthetic_dir: str = field(
        default="data/synthetic", metadata={"help": "Where the synthetic default is generated."}
    )
    media_root: str | None = field(
        default=None,
        metadata={"help": "Folder the dataset's relative video/audio/features paths are relative to. Default: the "
                  "root recorded when a local dataset was prepared (if it still exists), else the dataset "
                  "folder's parent. Embedded clips and arrays need none."},
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic benchmark."})
    synthetic_num_train: int | None = field(default=None, metadata={"help": "Synthetic train clips."})
    synthetic_num_val: int | None = field(default=None, metadata={"help": "Synthetic validation clips."})
    synthetic_num_test: int | None = field(default=None, metadata={"help": "Synthetic test clips."})
    train_split: str = field(default="train", metadata={"help": "Split the model is trained on."})
    eval_split: str | None = field(
        default="validation", metadata={"help": "Split evaluated each epoch (best model by rsum)."}
    )
    test_split: str | None = field(default="test", metadata={"help": "Split evaluated at the end."})
    max_train_videos: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_videos: int | None = field(default=None, metadata={"help": "Truncate eval/test splits."})
    captions_per_video: int = field(
        default=1,
        metadata={"help": "Captions drawn per video in a training batch (>1 lets the discrimination "
                  "loss see captions of the same video together)."},
    )
    cache_frames: str = field(
        default="auto",
        metadata={"help": "Keep decoded clips in memory: auto (when the split is small), yes, no."},
    )
    frame_cache: str | None = field(
        default=None,
        metadata={"help": "A frame cache folder built with `python -m modeling_mckd.frame_cache` (frames decoded and "
                  "resized once); clips it lacks are decoded from their files. Default: $MCKD_FRAME_CACHE, if set."},
    )
    max_decode_failure_fraction: float = field(
        default=0.05,
        metadata={"help": "Fail the run when more than this fraction of clips cannot be decoded."},
    )
    dataloader_num_workers: int = field(
        default=0, metadata={"help": "Worker processes decoding clips for the DataLoader (0: in the main process)."}
    )


@dataclass
class ModelArguments:
    """How a new model is built (the teacher in train.py, the student in distill.py)."""

    model_preset: str = field(
        default="teacher", metadata={"help": "MCKDConfig preset: teacher or student."}
    )
    model_config: str | None = field(
        default=None, metadata={"help": "JSON/YAML file of MCKDConfig fields (applied over the preset)."}
    )
    model_overrides: str | None = field(
        default=None, metadata={"help": "JSON object of MCKDConfig fields applied last."}
    )
    image_size: int = field(
        default=64, metadata={"help": "Frame crop size for pixel models without a fixed backbone size."}
    )
    freeze_text_backbone: bool = field(
        default=False, metadata={"help": "Keep an HF text backbone's weights fixed (its projection still trains)."}
    )
    freeze_vision_backbone: bool = field(
        default=False, metadata={"help": "Keep an HF vision backbone's weights fixed (aggregator and projection train)."}
    )
    load_pretrained_backbones: bool = field(
        default=False,
        metadata={"help": "Load the named HF backbones' pretrained weights when building a new model."},
    )


@dataclass
class RunArguments:
    """Optimisation, checkpoints, logging and Hub upload (TrainingArguments names)."""

    output_dir: str | None = field(default=None, metadata={"help": "Where everything is written."})
    config: str | None = field(
        default=None, metadata={"help": "YAML or JSON file of arguments; the command line overrides it."}
    )
    num_train_epochs: float = field(default=10.0, metadata={"help": "Passes over the train split (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Overrides num_train_epochs when > 0."})
    per_device_train_batch_size: int = field(
        default=64, metadata={"help": "Videos per training batch on each process (the contrastive batch)."}
    )
    per_device_eval_batch_size: int = field(
        default=256, metadata={"help": "Videos or captions encoded at once during evaluation."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (after warmup)."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not applied to biases, norms and the logit scale)."}
    )
    warmup_ratio: float = field(
        default=0.1, metadata={"help": "Fraction of the optimiser steps spent warming the learning rate up from 0."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "cosine, linear or constant."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Batches whose gradients are summed before each optimiser step."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm to this (0: no clipping)."})
    mixed_precision: str = field(
        default="auto", metadata={"help": "auto (bf16 on a GPU that has it, else no), no, fp16, bf16."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of initialisation, shuffling and frame sampling."})
    tune_cpu_allocator: bool = field(
        default=True,
        metadata={"help": "Let glibc's malloc keep freed memory for reuse (modeling_mckd.cpu_allocator): CPU training "
                  "and evaluation run up to 2x faster for a little more peak memory. No effect on results."},
    )
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N optimiser steps (0: each epoch)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the most recent)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "epoch or no."})
    logging_steps: int = field(default=10, metadata={"help": "Log the losses every N optimiser steps."})
    report_to: str = field(
        default="auto", metadata={"help": "tensorboard, trackio, wandb, none, or auto (tensorboard if installed)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    push_to_hub: bool = field(
        default=False, metadata={"help": "Upload the final model and its card to the Hub (needs hub_model_id)."}
    )
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository to push to, as owner/name."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})


@dataclass
class TeacherArguments:
    """The teacher objective (train.py only): multimodal InfoNCE over the pairs of co-occurring modalities."""

    teacher_part_pairs: bool = field(
        default=True,
        metadata={"help": "A model with fuse_modalities: also contrast each part of the video embedding "
                  "(text-visual, text-audio, visual-audio) next to text-video, so the frames are not left "
                  "untrained behind the audio. false: text-video, text-audio, video-audio."},
    )
    save_visual_part: bool = field(
        default=False,
        metadata={"help": "A model with fuse_modalities: also save its visual part (the frames + text model: the "
                  "same video and text towers, nothing fused) to OUTPUT/visual_part, with its results. It needs "
                  "the video file alone; distil from it with --teacher OUTPUT/visual_part."},
    )


# Options of one script only: the other script names them in its error instead of a generic "unknown argument".
SCRIPT_ONLY_ARGUMENTS = {
    TeacherArguments: "train.py (the teacher objective)",
}


@dataclass
class DistillArguments:
    """The MCKD student objective: ranking + kd_weight * distillation + disc_weight * discrimination."""

    teacher: str | None = field(default=None, metadata={"help": "Teacher folder or Hub id (from_pretrained)."})
    kd_weight: float = field(default=1.0, metadata={"help": "Weight of the distillation term (0: none)."})
    disc_weight: float = field(default=1.0, metadata={"help": "Weight of the discrimination term (0: none)."})
    ranking_margin: float = field(default=0.2, metadata={"help": "Margin of the hinge ranking loss."})
    ranking_negatives: str = field(
        default="hardest",
        metadata={"help": "Which negatives each query of the ranking loss pays for: hardest (VSE++), all (sum of "
                  "hinges) or semi_hard (the hardest one still below the positive). See docs/method.md."},
    )
    ranking_warmup_epochs: int = field(
        default=0,
        metadata={"help": "Epochs of sum-of-hinges ranking (negatives all) before ranking_negatives takes over: "
                  "VSE++'s advice against the hardest negative's collapse from a random start."},
    )
    ranking_max_violation: bool | None = field(
        default=None,
        metadata={"help": "Deprecated: true means --ranking_negatives hardest, false means all."},
    )
    kd_mode: str = field(default="kl", metadata={"help": "kl, pearson, relation or feature (see docs/method.md)."})
    kd_temperature: float = field(
        default=0.05, metadata={"help": "Temperature of the similarity distributions the distillation compares."}
    )
    disc_temperature: float = field(default=0.05, metadata={"help": "Temperature of the discrimination InfoNCE."})
    disc_text_weight: float = field(
        default=1.0, metadata={"help": "Weight of the text-text term inside the discrimination loss (0: none)."}
    )
    teacher_frame_sampling: str = field(
        default="uniform",
        metadata={"help": "uniform (deterministic, teacher embeddings cached once) or random "
                  "(teacher re-run each step on the student's frames)."},
    )
    kd_parts: bool = field(
        default=False,
        metadata={"help": "Student and teacher both fuse modalities: also distil each part of the video embedding "
                  "(the teacher's text-visual and text-audio structure into the student's visual and audio parts), "
                  "so the student's frames learn what the teacher's frames know. See docs/method.md."},
    )
    kd_anchor_weight: float = field(
        default=0.0,
        metadata={"help": "Weight, inside the distillation term, of dataset-level structure: each caption placed among "
                  "the teacher's embeddings of every train video, each video (and with kd_parts each part) among "
                  "the teacher's embeddings of every train caption (AnchorDistillationLoss). Needs the teacher's "
                  "cache (teacher_frame_sampling uniform) and a student in the teacher's space (same "
                  "projection_dim; init_from_teacher text helps). See docs/method.md."},
    )
    init_from_teacher: str = field(
        default="",
        metadata={"help": "Comma-separated towers the student copies from the teacher before training: text, and/or "
                  "an extra modality (audio). Their configs and the tokenizer's vocabulary must match. The video "
                  "tower, the one the student makes cheaper, is never copied. See docs/method.md."},
    )
    freeze_from_teacher: bool = field(
        default=False, metadata={"help": "Keep the towers copied by --init_from_teacher frozen during training."}
    )


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = file.read_text()
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"--config {path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of argument names to values, got {type(data).__name__}")
    return data


def _refuse_other_scripts_arguments(dataclass_types: tuple[type, ...], given, config: str | None) -> None:
    """A clear error for an option that belongs to the other script (``given``: argv, or a config file's keys)."""
    for owner, script in SCRIPT_ONLY_ARGUMENTS.items():
        if owner in dataclass_types:
            continue
        for name in (f.name for f in fields(owner)):
            if config is not None:
                found = name in given
            else:  # every spelling HfArgumentParser accepts: --a_b, --a-b, and for a bool --no_a_b, --no-a-b
                dashed = name.replace("_", "-")
                flags = {f"--{name}", f"--{dashed}", f"--no_{name}", f"--no-{dashed}"}
                found = any(str(arg).split("=", 1)[0] in flags for arg in given)
            if found:
                where = f"--config {config}: `{name}`" if config is not None else f"--{name}"
                raise ValueError(f"{where} is an option of {script}, not of this script; remove it")


def parse_arguments(dataclass_types: tuple[type, ...], argv: list[str] | None = None,
                    defaults: dict[str, Any] | None = None) -> tuple:
    """Parse ``dataclass_types`` from ``--config FILE`` (YAML or JSON) then the command line.

    ``defaults`` replace the dataclass defaults (e.g. distill.py builds a student preset).
    Values on the command line override the file, which overrides ``defaults``. Unknown keys in the file are an error that
    names them, so a typo never silently falls back to a default.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _refuse_other_scripts_arguments(dataclass_types, argv, None)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = HfArgumentParser(dataclass_types)
    if defaults:
        parser.set_defaults(**defaults)
    if known.config:
        values = _read_config_file(known.config)
        _refuse_other_scripts_arguments(dataclass_types, values, known.config)
        valid = {f.name for cls in dataclass_types for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"--config {known.config}: unknown argument(s) {unknown}")
        for key, value in values.items():
            if isinstance(value, (dict, list)) and key == "model_overrides":
                values[key] = json.dumps(value)
        parser.set_defaults(**values)
    return tuple(parser.parse_args_into_dataclasses(args=argv))
