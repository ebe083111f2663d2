"""The training objectives: callables ``(model, batch) -> (loss, logs)`` that the loop in `training.py` runs.

``TeacherObjective`` is multimodal InfoNCE; ``StudentObjective`` is ranking + distillation +
discrimination, reading the frozen teacher through a ``TeacherSignal`` it is given at construction
(cached embeddings of the train split, or the teacher itself run on each batch). See
docs/method.md for the formulas.

Each objective also names the model parameters it never reads (``unused_parameters``): they are
frozen before training, so that they are not trained and DDP does not wait for their gradients.
"""

from __future__ import annotations

import warnings

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .data import ClipStore, InputSpec
from .encoding import encode_texts, encode_video_parts, fuses_audio, unwrap_model
from .losses import (
    AnchorDistillationLoss,
    ContrastiveLoss,
    DiscriminationLoss,
    DistillationLoss,
    RankingLoss,
    multimodal_contrastive_loss,
)


def _scale(outputs) -> torch.Tensor:
    return outputs.logit_scale.float()


def _forward(model, inputs: dict):
    # Always go through the (possibly DDP-wrapped) forward, so gradient sync hooks run.
    return model(**inputs, return_dict=True)


def _parameters_under(model, prefixes: Sequence[str]) -> list[str]:
    return [name for name, _ in unwrap_model(model).named_parameters()
            if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)]


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


def video_parts(model, outputs) -> dict[str, torch.Tensor]:
    """The parts of a forward's fused video embedding (as `get_video_feature_parts` names them), float32."""
    fused = unwrap_model(model).config.fuse_modalities
    return {"visual": outputs.visual_embeds.float(), **{name: outputs.modality_embeds[name].float() for name in fused}}


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

    def use_epoch(self, epoch: int) -> None:
        """Nothing changes with the epoch (the trainer calls it on every objective)."""

    def unused_parameters(self, model) -> list[str]:
        """The feature-mimicry head (a student's), and towers of extra modalities other than audio (never fed)."""
        towers = [f"modality_towers.{name}" for name in unwrap_model(model).modality_towers.keys() if name != "audio"]
        return _parameters_under(model, ["mimicry_projection", *towers])

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = _forward(model, batch["student"])
        position = batch["text_video_position"]
        embeddings = {"text": outputs.text_embeds.float(), "video": outputs.video_embeds.float()[position]}
        extra = []
        if getattr(outputs, "audio_embeds", None) is not None:
            embeddings["audio"] = outputs.audio_embeds.float()[position]
            extra.append("audio")
        part_pairs = self.part_pairs and bool(unwrap_model(model).config.fuse_modalities)
        if part_pairs:
            embeddings["visual"] = outputs.visual_embeds.float()[position]
        pairs = teacher_pairs(extra, part_pairs)
        loss, pair_losses = multimodal_contrastive_loss(
            embeddings, _scale(outputs), ids=batch["video_index"][position], loss_fn=self.contrastive, pairs=pairs
        )
        logs = {f"loss/{pair}": value.item() for pair, value in pair_losses.items()}
        logs["logit_scale"] = _scale(outputs).item()
        return loss, logs


@dataclass
class TeacherSignal:
    """The frozen teacher as the student objective reads it: either its cached embeddings of every train caption
    and video (``text_cache``, ``video_cache``, and with kd_parts each part of its fused video embedding in
    ``part_caches``), or the ``model`` itself, run on each batch's ``"teacher"`` inputs, which the train set
    builds as ``inputs`` says (the teacher's processor, text length, and the clip's audio for a teacher that
    fuses it). Build one with `cached` or `on_the_fly`."""

    model: torch.nn.Module | None = None
    inputs: InputSpec | None = None
    text_cache: torch.Tensor | None = None
    video_cache: torch.Tensor | None = None
    part_caches: dict[str, torch.Tensor] = field(default_factory=dict)
    with_parts: bool = False

    @classmethod
    def cached(cls, teacher, processor, videos, store: ClipStore, *, batch_size: int, device,
               with_parts: bool = False) -> "TeacherSignal":
        """Encode the train split (``videos`` and its ``store``) once with the teacher's own processor, the clip's
        audio included for a teacher that fuses it, whatever the student is fed. The caches live on ``device``
        (the anchor term reads all of them at every step)."""
        teacher.to(device)
        captions = [c for caps in videos["captions"] for c in caps]
        text = encode_texts(teacher, processor, captions, batch_size, device)
        parts, _ = encode_video_parts(teacher, processor, store, batch_size, device, fused_only=not with_parts)
        video = parts.pop("video")
        return cls(text_cache=text.to(device), video_cache=video.to(device),
                   part_caches={name: cache.to(device) for name, cache in parts.items()}, with_parts=with_parts)

    @classmethod
    def on_the_fly(cls, teacher, processor, *, device, with_parts: bool = False) -> "TeacherSignal":
        """Run the teacher on each batch, on the frames the student sees (``teacher_frame_sampling random``)."""
        teacher.to(device)
        inputs = InputSpec(processor, max_text_length=teacher.config.max_text_length, with_audio=fuses_audio(teacher))
        return cls(model=teacher, inputs=inputs, with_parts=with_parts)

    @property
    def is_cached(self) -> bool:
        return self.text_cache is not None

    def embeddings(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The teacher's caption and video embeddings for the batch, and the parts of its video embeddings."""
        if self.is_cached:
            device = batch["video_index"].device
            videos = batch["video_index"].cpu()
            text = self.text_cache[batch["caption_index"].cpu()].to(device)
            video = self.video_cache[videos].to(device)
            parts = {name: cache[videos].to(device) for name, cache in self.part_caches.items()}
            return text, video, parts
        with torch.no_grad():
            outputs = self.model(**batch["teacher"], return_dict=True)
        parts = video_parts(self.model, outputs) if self.with_parts else {}
        return outputs.text_embeds.float(), outputs.video_embeds.float(), parts


def ranking_negatives(distill_args) -> str:
    """``ranking_negatives``, or what the deprecated ``ranking_max_violation`` meant when a config still sets it."""
    legacy = distill_args.ranking_max_violation
    if legacy is None:
        return distill_args.ranking_negatives
    meant = "hardest" if legacy else "all"
    if distill_args.ranking_negatives not in ("hardest", meant):
        raise ValueError(f"ranking_max_violation={legacy} means ranking_negatives={meant!r}, but ranking_negatives="
                         f"{distill_args.ranking_negatives!r} was also given; give only ranking_negatives")
    warnings.warn(f"ranking_max_violation is deprecated; use ranking_negatives: {meant}", DeprecationWarning,
                  stacklevel=2)
    return meant


class StudentObjective:
    """MCKD student: ranking + kd_weight * distillation + disc_weight * discrimination.

    ``teacher`` (a `TeacherSignal`) is needed when ``kd_weight`` is not 0.
    """

    def __init__(self, distill_args, teacher: TeacherSignal | None = None):
        self.args = distill_args
        self.ranking = RankingLoss(margin=distill_args.ranking_margin, negatives=ranking_negatives(distill_args))
        if distill_args.ranking_warmup_epochs < 0:
            raise ValueError(f"ranking_warmup_epochs must be >= 0, got {distill_args.ranking_warmup_epochs}")
        # the negatives of the current epoch (sum of hinges during the warm-up); see use_epoch
        self.ranking_mode = self.ranking.negatives_at_epoch(0, distill_args.ranking_warmup_epochs)
        self.distillation = DistillationLoss(mode=distill_args.kd_mode, temperature=distill_args.kd_temperature)
        self.anchor_distillation = AnchorDistillationLoss(temperature=distill_args.kd_temperature)
        self.discrimination = DiscriminationLoss(
            temperature=distill_args.disc_temperature, text_weight=distill_args.disc_text_weight
        )
        if distill_args.kd_weight and teacher is None:
            raise ValueError("StudentObjective: kd_weight is not 0 but no teacher was given")
        if distill_args.kd_weight and distill_args.kd_anchor_weight and not teacher.is_cached:
            raise ValueError("kd_anchor_weight needs the teacher's cache of the train split (teacher_frame_sampling "
                             "uniform)")
        self.teacher = teacher

    def use_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every (0-based) epoch, resumed ones included."""
        self.ranking_mode = self.ranking.negatives_at_epoch(epoch, self.args.ranking_warmup_epochs)

    @property
    def _uses_mimicry(self) -> bool:
        return bool(self.args.kd_weight) and "feature" in self.args.kd_mode.split("+")

    def unused_parameters(self, model) -> list[str]:
        """``logit_scale`` (ranking and discrimination have their own margin and temperature), the feature-mimicry
        head unless kd_mode has ``feature``, and the towers of extra modalities the video embedding does not fuse."""
        unwrapped = unwrap_model(model)
        fused = set(unwrapped.config.fuse_modalities or [])
        prefixes = ["logit_scale", *[f"modality_towers.{name}" for name in unwrapped.modality_towers.keys()
                                     if name not in fused]]
        if not self._uses_mimicry:
            prefixes.append("mimicry_projection")
        return _parameters_under(model, prefixes)

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = _forward(model, batch["student"])
        position = batch["text_video_position"]
        ids = batch["video_index"][position]
        text = outputs.text_embeds.float()
        video = outputs.video_embeds.float()[position]
        loss = self.ranking(text, video, ids=ids, negatives=self.ranking_mode)
        logs = {"loss/ranking": loss.item()}
        if self.args.kd_weight:
            teacher_text, teacher_video, teacher_parts = self.teacher.embeddings(batch)
            extra = {}
            if self._uses_mimicry:
                projection = unwrap_model(model).mimicry_projection
                extra = {"student_projected_text": projection(text), "student_projected_video": projection(video)}
            # ids: rows of the same video are not each other's relations (no twin entry at cosine 1)
            kd = self.distillation(text, video, teacher_text, teacher_video[position], ids=ids, **extra)
            logs["loss/distillation"] = kd.item()
            student_parts = video_parts(model, outputs) if self.args.kd_parts else {}
            if self.args.kd_parts:
                # The same structure, part by part: the student's visual part learns the teacher's text-visual
                # structure instead of leaning on the audio it is fused with.
                for name, teacher_part in teacher_parts.items():
                    # the text-text relation is already in the fused term: once per step, not once per part
                    part_kd = self.distillation(text, student_parts[name][position], teacher_text,
                                                teacher_part[position], ids=ids, text_relation=False)
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
        text_bank = self.teacher.text_cache.to(text.device)
        loss = self.anchor_distillation(text, teacher_text, self.teacher.video_cache.to(text.device))
        loss = loss + self.anchor_distillation(videos, teacher_videos, text_bank)
        for name, teacher_part in teacher_parts.items():
            loss = loss + self.anchor_distillation(student_parts[name], teacher_part, text_bank)
        return loss


def freeze_unused_parameters(model, objective) -> list[str]:
    """Freeze what ``objective`` never reads (its ``unused_parameters``); returns their names."""
    names = objective.unused_parameters(model) if hasattr(objective, "unused_parameters") else []
    parameters = dict(unwrap_model(model).named_parameters())
    for name in names:
        parameters[name].requires_grad_(False)
    return names


__all__ = ["StudentObjective", "TeacherObjective", "TeacherSignal", "freeze_unused_parameters", "teacher_pairs",
           "video_parts"]
