"""Configuration of an MCKD dual-encoder text-video retrieval model (teacher or student).

This file is copied next to the weights by ``save_pretrained`` so that
``AutoConfig.from_pretrained(dir, trust_remote_code=True)`` works without this package: it
imports only the standard library and ``transformers``.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

VALID_ROLES = ("teacher", "student")
VALID_VIDEO_INPUTS = ("pixels", "features")
VALID_VISION_ENCODERS = ("hf", "conv")
VALID_CONV_ACTIVATIONS = ("gelu", "relu")
VALID_VISION_POOLINGS = ("pooler", "cls", "mean")
VALID_TEXT_ENCODERS = ("hf", "builtin")
VALID_TEXT_POOLINGS = ("cls", "mean", "eos", "pooler")
VALID_BUILTIN_TEXT_ARCHS = ("gru", "transformer")
VALID_AGGREGATORS = ("mean", "transformer", "gru")
RESERVED_MODALITY_NAMES = ("text", "video")
MODALITY_KEYS = ("feature_dim", "hidden_size", "aggregator", "num_layers", "num_heads", "max_length")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def _check_positive_int(name: str, value: Any) -> None:
    # bool is an int subclass: reject it explicitly, `True` is never a meant dimension
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def resolve_backbone_config(name_or_path: str, kind: str) -> PreTrainedConfig:
    """Read (never the weights) the config of an HF backbone, keeping only the tower we need.

    ``kind`` is ``"vision"`` or ``"text"``. A composite checkpoint such as a full CLIP model gives
    its ``vision_config`` / ``text_config``, so ``openai/clip-vit-base-patch32`` works as either.
    """
    config = AutoConfig.from_pretrained(name_or_path)
    sub = getattr(config, f"{kind}_config", None)
    return sub if isinstance(sub, PreTrainedConfig) else config


class MCKDConfig(PreTrainedConfig):
    r"""Configuration of [`MCKDModel`], a CLIP-style dual encoder for text-video retrieval.

    One class describes both the MCKD teacher and the student; `role` says which one a checkpoint
    is, and [`MCKDConfig.teacher_preset`] / [`MCKDConfig.student_preset`] give documented
    starting points (see ``docs/modeling.md``). Every impossible combination raises a
    `ValueError` naming the offending field when the config is built (and again before saving).

    Args:
        role (`str`, defaults to `"teacher"`): `"teacher"` or `"student"`.
        video_input (`str`, defaults to `"pixels"`): `"pixels"` (frames go through a per-frame
            encoder) or `"features"` (pre-extracted frame features of size `video_feature_dim`).
        vision_encoder_type (`str`, *optional*): per-frame encoder in pixels mode: `"hf"` (any HF
            vision backbone from `vision_backbone` or `vision_config`) or `"conv"` (a small built-in
            strided-conv encoder). Unset: `"hf"` when a backbone/config is given, else `"conv"`.
            The alias keyword `vision_encoder=` is accepted.
        vision_backbone (`str`, *optional*): name or path of an HF vision backbone (a full CLIP
            checkpoint gives its vision tower). Its config is read when the model is first built
            and stored in `vision_config`; its weights are loaded only by `MCKDModel.from_backbones`.
        vision_config (`dict` or `PreTrainedConfig`, *optional*): inline HF vision config, e.g.
            `{"model_type": "vit", "hidden_size": 32, ...}` or a `clip_vision_model` dict.
        vision_pooling (`str`, defaults to `"pooler"`): per-frame pooling of an HF backbone:
            `"pooler"` (its pooled output, CLS when it has none), `"cls"` or `"mean"`.
        vision_hidden_size (`int`, defaults to 64): width of the built-in conv encoder.
        vision_num_layers (`int`, defaults to 3): stride-2 conv layers of the built-in encoder.
        vision_spatial_grid (`int`, defaults to 2): the built-in encoder pools its last feature map
            to a `grid x grid` layout before projecting, so where things are (and so which way they
            move) survives; 1 is a plain global average pool.
        vision_spatial_pooling (`str`, defaults to `"avg"`): how the built-in encoder pools each grid
            cell: `"avg"` or `"max"` (max keeps a small object's response undiluted by the background).
        vision_activation (`str`, defaults to `"gelu"`): the built-in encoder's activation after each
            conv: `"gelu"` or `"relu"` (cheaper on CPU).
        vision_frame_difference (`bool`, defaults to `False`): the built-in encoder also sees each
            frame minus the previous one (zero for the first), a cheap motion cue: what moves stands
            out from a static background and static clutter.
        num_channels (`int`, defaults to 3): image channels.
        video_feature_dim (`int`, *optional*): frame feature size in features mode.
        num_frames (`int`, defaults to 8): frames per video (size of the temporal position table).
        temporal_aggregator (`str`, defaults to `"mean"`): `"mean"`, `"transformer"` (learned
            temporal position embeddings) or `"gru"`. Padded frames (`video_mask == 0`) never count.
        temporal_hidden_size (`int`, *optional*): width of the temporal aggregator; defaults to
            `projection_dim`.
        temporal_num_layers (`int`, defaults to 1), temporal_num_heads (`int`, defaults to 4).
        text_encoder_type (`str`, *optional*): `"hf"` (any HF text backbone from `text_backbone` or
            `text_config`) or `"builtin"` (embeddings + GRU/transformer trained from scratch).
            Unset: `"hf"` when a backbone/config is given, else `"builtin"`. The alias keyword
            `text_encoder=` is accepted (the attribute can't be called that: transformers treats an
            attribute named `text_encoder` as a nested text config).
        text_backbone (`str`, *optional*), text_config (`dict` or `PreTrainedConfig`, *optional*):
            as for the vision tower (CLIP text, BERT, MiniLM, ...).
        text_pooling (`str`, defaults to `"mean"`): `"cls"`, `"mean"`, `"eos"` (last real token)
            or `"pooler"` (the backbone's pooled output; HF backbones only).
        builtin_text_arch (`str`, defaults to `"gru"`): `"gru"` (bidirectional) or `"transformer"`.
        vocab_size (`int`, defaults to 1000), text_hidden_size (`int`, defaults to 64),
        text_num_layers (`int`, defaults to 1), text_num_heads (`int`, defaults to 4),
        max_text_length (`int`, defaults to 32), pad_token_id (`int`, defaults to 0): built-in text
            encoder sizes; `vocab_size` must cover the tokenizer.
        extra_modalities (`dict`, defaults to `{}`): co-occurring modalities, name -> dict with
            `feature_dim` (required), `hidden_size` (defaults to `projection_dim`), `aggregator`
            (defaults to `"mean"`), `num_layers` (1), `num_heads` (4), `max_length` (64,
            positions of a transformer aggregator). `"audio"` is the usual one.
        fuse_modalities (`list[str]`, defaults to `[]`): extra modalities whose embeddings are
            added to the visual one to form the video embedding used for retrieval (a multimodal
            teacher that hears the clip as well as sees it). Each must be in `extra_modalities`;
            the model then needs those inputs wherever it embeds videos.
        projection_dim (`int`, defaults to 64): joint embedding size.
        normalize_embeddings (`bool`, defaults to `True`): L2-normalise every embedding.
        logit_scale_init_value (`float`, defaults to `log(1/0.07)`): initial log logit scale.
        logit_scale_max (`float`, defaults to 100): the scale is clamped to `log(logit_scale_max)`.
        teacher_projection_dim (`int`, *optional*): embedding size of the teacher (students only).
        feature_mimicry (`bool`, defaults to `False`): give a student a learned
            `mimicry_projection` (projection_dim -> teacher_projection_dim) for feature distillation.
        dropout (`float`, defaults to 0.0): dropout of the built-in transformer layers.
        initializer_range (`float`, defaults to 0.02): std of the normal initialisation.
    """

    model_type = "mckd"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit", optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True),
    }

    role: str = "teacher"
    # video tower
    video_input: str = "pixels"
    vision_encoder_type: str | None = None
    vision_backbone: str | None = None
    vision_config: dict | PreTrainedConfig | None = None
    vision_pooling: str = "pooler"
    vision_hidden_size: int = 64
    vision_num_layers: int = 3
    vision_spatial_grid: int = 2
    vision_spatial_pooling: str = "avg"
    vision_activation: str = "gelu"
    vision_frame_difference: bool = False
    num_channels: int = 3
    video_feature_dim: int | None = None
    num_frames: int = 8
    temporal_aggregator: str = "mean"
    temporal_hidden_size: int | None = None
    temporal_num_layers: int = 1
    temporal_num_heads: int = 4
    # text tower
    text_encoder_type: str | None = None
    text_backbone: str | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_pooling: str = "mean"
    builtin_text_arch: str = "gru"
    vocab_size: int = 1000
    text_hidden_size: int = 64
    text_num_layers: int = 1
    text_num_heads: int = 4
    max_text_length: int = 32
    pad_token_id: int = 0
    # extra modalities (audio, motion, ...)
    extra_modalities: dict = field(default_factory=dict)
    fuse_modalities: list = field(default_factory=list)
    # joint space
    projection_dim: int = 64
    normalize_embeddings: bool = True
    logit_scale_init_value: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    # distillation
    teacher_projection_dim: int | None = None
    feature_mimicry: bool = False
    # misc
    dropout: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # Friendly aliases (see the docstring for why the attributes carry a `_type` suffix).
        for alias in ("vision_encoder", "text_encoder"):
            if alias in kwargs:
                value = kwargs.pop(alias)
                if getattr(self, f"{alias}_type") is None:
                    setattr(self, f"{alias}_type", value)
        if self.vision_encoder_type is None:
            has_hf_vision = self.vision_backbone is not None or self.vision_config is not None
            self.vision_encoder_type = "hf" if has_hf_vision else "conv"
        if self.text_encoder_type is None:
            has_hf_text = self.text_backbone is not None or self.text_config is not None
            self.text_encoder_type = "hf" if has_hf_text else "builtin"
        super().__post_init__(**kwargs)
        # JSON turns ints into floats only when they were floats; keep a stable copy we own
        self.extra_modalities = self._normalized_modalities(self.extra_modalities)
        self.check_fields()

    # ------------------------------------------------------------------ validation
    def _normalized_modalities(self, modalities: Any) -> dict[str, dict[str, Any]]:
        if modalities is None:
            return {}
        if not isinstance(modalities, dict):
            raise ValueError(
                f"`extra_modalities` must be a dict name -> {{'feature_dim': int, ...}}, got {type(modalities).__name__}."
            )
        normalized = {}
        for name, spec in modalities.items():
            where = f"extra_modalities[{name!r}]"
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"`extra_modalities` keys must be identifiers, got {name!r}.")
            if name in RESERVED_MODALITY_NAMES:
                raise ValueError(f"`{where}`: {name!r} is reserved for the main towers, choose another name.")
            if not isinstance(spec, dict):
                raise ValueError(
                    f"`{where}` must be a dict with at least 'feature_dim' (the tower's input size), got {spec!r}."
                )
            unknown = sorted(set(spec) - set(MODALITY_KEYS))
            if unknown:
                raise ValueError(f"`{where}` has unknown keys {unknown}; allowed: {list(MODALITY_KEYS)}.")
            if spec.get("feature_dim") is None:
                raise ValueError(
                    f"`{where}['feature_dim']` is required: an extra modality needs the input size of its tower."
                )
            resolved = {
                "feature_dim": spec["feature_dim"],
                "hidden_size": spec.get("hidden_size") if spec.get("hidden_size") is not None else self.projection_dim,
                "aggregator": spec.get("aggregator") or "mean",
                "num_layers": spec.get("num_layers") if spec.get("num_layers") is not None else 1,
                "num_heads": spec.get("num_heads") if spec.get("num_heads") is not None else 4,
                "max_length": spec.get("max_length") if spec.get("max_length") is not None else 64,
            }
            for key in ("feature_dim", "hidden_size", "num_layers", "num_heads", "max_length"):
                _check_positive_int(f"{where}['{key}']", resolved[key])
            _check_choice(f"{where}['aggregator']", resolved["aggregator"], VALID_AGGREGATORS)
            if resolved["aggregator"] == "transformer" and resolved["hidden_size"] % resolved["num_heads"]:
                raise ValueError(
                    f"`{where}['num_heads']` ({resolved['num_heads']}) must divide its hidden_size "
                    f"({resolved['hidden_size']}) for a transformer aggregator."
                )
            normalized[name] = resolved
        return normalized

    def check_fields(self) -> None:
        """Raise `ValueError` naming the field if the configuration cannot describe a model."""
        if not isinstance(self.fuse_modalities, (list, tuple)):
            raise ValueError(f"`fuse_modalities` must be a list of extra modality names, got {self.fuse_modalities!r}.")
        for name in self.fuse_modalities:
            if name not in (self.extra_modalities or {}):
                raise ValueError(
                    f"`fuse_modalities` names {name!r}, which is not in `extra_modalities` "
                    f"({sorted(self.extra_modalities or {}) or 'none'}): a fused modality needs its tower."
                )
        _check_choice("role", self.role, VALID_ROLES)
        _check_choice("video_input", self.video_input, VALID_VIDEO_INPUTS)
        _check_choice("temporal_aggregator", self.temporal_aggregator, VALID_AGGREGATORS)
        _check_choice("text_encoder_type", self.text_encoder_type, VALID_TEXT_ENCODERS)
        _check_choice("text_pooling", self.text_pooling, VALID_TEXT_POOLINGS)
        for name in ("projection_dim", "num_frames", "temporal_num_layers", "temporal_num_heads"):
            _check_positive_int(name, getattr(self, name))
        if self.temporal_hidden_size is not None:
            _check_positive_int("temporal_hidden_size", self.temporal_hidden_size)
        if self.temporal_aggregator == "transformer" and self.resolved_temporal_hidden_size % self.temporal_num_heads:
            raise ValueError(
                f"`temporal_num_heads` ({self.temporal_num_heads}) must divide the temporal hidden size "
                f"({self.resolved_temporal_hidden_size}, from `temporal_hidden_size` or `projection_dim`)."
            )

        if self.video_input == "pixels":
            _check_choice("vision_encoder_type", self.vision_encoder_type, VALID_VISION_ENCODERS)
            _check_positive_int("num_channels", self.num_channels)
            if self.vision_encoder_type == "hf":
                if self.vision_backbone is None and self.vision_config is None:
                    raise ValueError(
                        "`vision_backbone` or `vision_config` is required for video_input='pixels' with "
                        "vision_encoder_type='hf' (or use vision_encoder_type='conv' for the built-in encoder)."
                    )
                _check_choice("vision_pooling", self.vision_pooling, VALID_VISION_POOLINGS)
                if self.vision_frame_difference:
                    raise ValueError(
                        "`vision_frame_difference` is for the built-in conv encoder; an HF vision backbone "
                        "takes plain frames (set vision_encoder_type='conv' or drop the option)."
                    )
            else:
                _check_positive_int("vision_hidden_size", self.vision_hidden_size)
                _check_positive_int("vision_num_layers", self.vision_num_layers)
                _check_positive_int("vision_spatial_grid", self.vision_spatial_grid)
                _check_choice("vision_spatial_pooling", self.vision_spatial_pooling, ("avg", "max"))
                _check_choice("vision_activation", self.vision_activation, VALID_CONV_ACTIVATIONS)
        elif self.video_feature_dim is None:
            raise ValueError("`video_feature_dim` is required for video_input='features' (the size of one frame feature).")
        else:
            _check_positive_int("video_feature_dim", self.video_feature_dim)

        if self.text_encoder_type == "hf":
            if self.text_backbone is None and self.text_config is None:
                raise ValueError("`text_backbone` or `text_config` is required for text_encoder_type='hf'.")
        else:
            _check_choice("builtin_text_arch", self.builtin_text_arch, VALID_BUILTIN_TEXT_ARCHS)
            for name in ("vocab_size", "text_hidden_size", "text_num_layers", "text_num_heads", "max_text_length"):
                _check_positive_int(name, getattr(self, name))
            if self.text_pooling == "pooler":
                raise ValueError("`text_pooling`='pooler' needs an HF text backbone; use 'mean', 'cls' or 'eos'.")
            if self.builtin_text_arch == "transformer" and self.text_hidden_size % self.text_num_heads:
                raise ValueError(
                    f"`text_num_heads` ({self.text_num_heads}) must divide `text_hidden_size` ({self.text_hidden_size})."
                )
            if not 0 <= self.pad_token_id < self.vocab_size:
                raise ValueError(f"`pad_token_id` must lie in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}.")

        if not self.logit_scale_max > 0:
            raise ValueError(f"`logit_scale_max` must be > 0, got {self.logit_scale_max}.")
        if self.logit_scale_init_value > math.log(self.logit_scale_max):
            raise ValueError(
                f"`logit_scale_init_value` ({self.logit_scale_init_value}) exceeds log(logit_scale_max) = "
                f"{math.log(self.logit_scale_max):.4f}; the scale would start clamped."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {self.dropout}.")

        if self.teacher_projection_dim is not None:
            _check_positive_int("teacher_projection_dim", self.teacher_projection_dim)
        if self.feature_mimicry:
            if self.role != "student":
                raise ValueError("`feature_mimicry` is for role='student' (it maps the student into the teacher space).")
            if self.teacher_projection_dim is None:
                raise ValueError(
                    "`feature_mimicry`=True needs `teacher_projection_dim` (the teacher's projection_dim) so the "
                    "student's embeddings can be projected to the teacher's size."
                )

    def validate(self):
        """Run transformers' checks, then ours (called by `save_pretrained`)."""
        super().validate()
        self.check_fields()

    # ------------------------------------------------------------------ helpers
    @property
    def resolved_temporal_hidden_size(self) -> int:
        """Width of the temporal aggregator: `temporal_hidden_size`, or `projection_dim`."""
        return self.temporal_hidden_size if self.temporal_hidden_size is not None else self.projection_dim

    def resolve_backbone_configs(self) -> None:
        """Store the configs of `vision_backbone` / `text_backbone` inline (reads config.json only).

        Called when a model is first built, so that the saved checkpoint is self-contained and
        `from_pretrained` never needs the backbone again.
        """
        if (
            self.video_input == "pixels"
            and self.vision_encoder_type == "hf"
            and self.vision_config is None
            and self.vision_backbone is not None
        ):
            self.vision_config = resolve_backbone_config(self.vision_backbone, "vision")
        if self.text_encoder_type == "hf" and self.text_config is None and self.text_backbone is not None:
            self.text_config = resolve_backbone_config(self.text_backbone, "text")

    @classmethod
    def teacher_preset(cls, **overrides) -> "MCKDConfig":
        """A teacher: wider towers, transformer temporal aggregation, transformer text encoder.

        Override anything, e.g. `MCKDConfig.teacher_preset(text_backbone="path/to/minilm",
        extra_modalities={"audio": {"feature_dim": 128}})` for a pretrained text tower and audio.
        """
        values = dict(
            role="teacher",
            video_input="pixels",
            vision_hidden_size=64,
            vision_num_layers=3,
            temporal_aggregator="transformer",
            temporal_num_layers=2,
            builtin_text_arch="transformer",
            text_hidden_size=128,
            text_num_layers=2,
            projection_dim=128,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def student_preset(cls, **overrides) -> "MCKDConfig":
        """A student: a narrow conv frame encoder, mean pooling over time, a GRU text encoder.

        For feature mimicry pass `feature_mimicry=True, teacher_projection_dim=<teacher's projection_dim>`.
        """
        values = dict(
            role="student",
            video_input="pixels",
            vision_hidden_size=32,
            vision_num_layers=3,
            temporal_aggregator="mean",
            builtin_text_arch="gru",
            text_hidden_size=64,
            text_num_layers=1,
            projection_dim=64,
        )
        values.update(overrides)
        return cls(**values)


__all__ = ["MCKDConfig"]
