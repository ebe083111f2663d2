"""MCKD dual-encoder text-video retrieval model (teacher or student), CLIP-style.

This file is copied next to the weights by ``save_pretrained`` so that
``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works without this package: it imports
only ``torch``, ``transformers`` and the sibling ``configuration_mckd``. That is why it is one file
over ~600 lines: trust_remote_code copies exactly this file and the config, so the towers cannot live
in sibling modules of the package.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mckd import MCKDConfig


# ---------------------------------------------------------------------------------------------
# outputs and the inline loss
# ---------------------------------------------------------------------------------------------
@dataclass
class MCKDOutput(ModelOutput):
    """Output of [`MCKDModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): symmetric InfoNCE (CLIP's), when
            `return_loss=True`.
        logits_per_text (`torch.FloatTensor` of shape `(n_texts, n_videos)`): `logit_scale * text @ video.T`.
        logits_per_video (`torch.FloatTensor` of shape `(n_videos, n_texts)`): its transpose.
        text_embeds (`torch.FloatTensor` of shape `(n_texts, projection_dim)`).
        video_embeds (`torch.FloatTensor` of shape `(n_videos, projection_dim)`).
        audio_embeds (`torch.FloatTensor` of shape `(n_videos, projection_dim)`, *optional*).
        modality_embeds (`dict[str, torch.FloatTensor]`, *optional*): every extra modality given
            (audio included), name -> `(batch, projection_dim)`.
        visual_embeds (`torch.FloatTensor` of shape `(n_videos, projection_dim)`, *optional*): the visual
            part of the video embedding before fusion (the same as `video_embeds` for a model without
            `fuse_modalities`).
        logit_scale (`torch.FloatTensor` of shape `()`): the scale actually applied,
            `exp(min(logit_scale, log(logit_scale_max)))`.
    """

    loss: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    audio_embeds: torch.FloatTensor | None = None
    modality_embeds: dict[str, torch.FloatTensor] | None = None
    logit_scale: torch.FloatTensor | None = None
    visual_embeds: torch.FloatTensor | None = None


def symmetric_infonce_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: mean of the text->video and video->text cross-entropies, positives on the diagonal."""
    if logits_per_text.shape[0] != logits_per_text.shape[1]:
        raise ValueError(
            "return_loss=True needs one caption per video (a square similarity matrix), got "
            f"{tuple(logits_per_text.shape)}; use modeling_mckd.losses.ContrastiveLoss for multi-caption batches."
        )
    labels = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    return (F.cross_entropy(logits_per_text, labels) + F.cross_entropy(logits_per_text.t(), labels)) / 2


# ---------------------------------------------------------------------------------------------
# masking helpers
# ---------------------------------------------------------------------------------------------
def _as_bool_mask(mask: torch.Tensor | None, batch: int, length: int, device, name: str) -> torch.Tensor:
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if mask.shape != (batch, length):
        raise ValueError(f"`{name}` must have shape {(batch, length)}, got {tuple(mask.shape)}.")
    mask = mask.to(device=device) != 0
    if not bool(mask.any(dim=1).all()):
        raise ValueError(f"`{name}` has a row with no real step (all zeros); every item needs at least one.")
    return mask


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # torch.where rather than a product: NaN/inf garbage in padded steps must not leak (0 * nan = nan)
    hidden = torch.where(mask.unsqueeze(-1), hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
    return hidden.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(hidden.dtype)


def _first_valid(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    index = mask.to(torch.int8).argmax(dim=1)  # first True
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def _last_valid(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    index = torch.where(mask, positions, -1).max(dim=1).values
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "mean":
        return _masked_mean(hidden, mask)
    if pooling == "cls":
        return _first_valid(hidden, mask)
    if pooling == "eos":
        return _last_valid(hidden, mask)
    raise ValueError(f"Unknown pooling {pooling!r}.")


def _run_gru(gru: nn.GRU, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a GRU on the real steps only; returns outputs with the real steps moved to the front."""
    lengths = mask.sum(dim=1)
    # stable sort keeps the real steps in their order and puts padding last, whatever the mask layout
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    hidden = hidden.gather(1, order.unsqueeze(-1).expand_as(hidden))
    packed = pack_padded_sequence(hidden, lengths.cpu(), batch_first=True, enforce_sorted=False)
    output, _ = gru(packed)
    output, _ = pad_packed_sequence(output, batch_first=True, total_length=hidden.shape[1])
    compact_mask = torch.arange(hidden.shape[1], device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
    return output, compact_mask


def _transformer_encoder(width: int, num_layers: int, num_heads: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=width,
        nhead=num_heads,
        dim_feedforward=4 * width,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    # no nested tensors: the fast path changes numerics between padded and unpadded batches
    return nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)


def _build_hf_backbone(backbone_config, drop_pooler: bool) -> PreTrainedModel:
    """AutoModel.from_config, without the pooler head when we don't use it (no unused DDP params)."""
    kwargs = {}
    if drop_pooler:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        try:
            model_class = MODEL_MAPPING[type(backbone_config)]
        except (KeyError, ValueError):
            model_class = None
        if isinstance(model_class, type) and "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
            kwargs["add_pooling_layer"] = False
    return AutoModel.from_config(backbone_config, **kwargs)


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class MCKDConvFrameEncoder(nn.Module):
    """A small per-frame encoder: stride-2 3x3 convolutions + GELU (or ReLU), pooled to a coarse
    `spatial_grid x spatial_grid` layout (a global average pool would forget where objects are),
    flattened and projected back to `width`, then LayerNorm."""

    def __init__(self, num_channels: int, width: int, num_layers: int, spatial_grid: int = 1, pooling: str = "avg",
                 activation: str = "gelu"):
        super().__init__()
        layers = []
        in_channels = num_channels
        for _ in range(num_layers):
            layers += [nn.Conv2d(in_channels, width, kernel_size=3, stride=2, padding=1),
                       nn.ReLU() if activation == "relu" else nn.GELU()]
            in_channels = width
        self.convs = nn.Sequential(*layers)
        self.spatial_grid = spatial_grid
        self.pool = nn.AdaptiveMaxPool2d(spatial_grid) if pooling == "max" else nn.AdaptiveAvgPool2d(spatial_grid)
        self.grid_projection = nn.Linear(width * spatial_grid**2, width) if spatial_grid > 1 else None
        self.norm = nn.LayerNorm(width)
        self.output_dim = width

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.convs(frames)).flatten(1)
        if self.grid_projection is not None:
            pooled = self.grid_projection(pooled)
        return self.norm(pooled)


class MCKDTemporalAggregator(nn.Module):
    """Projects each step to `hidden_size` and aggregates the real steps: mean, transformer or GRU."""

    def __init__(
        self,
        kind: str,
        input_dim: int,
        hidden_size: int,
        num_layers: int,
        num_heads: int,
        max_positions: int,
        dropout: float,
        length_field: str,
    ):
        super().__init__()
        self.kind = kind
        self.max_positions = max_positions
        self.length_field = length_field  # named in the error when a sequence is too long
        self.input_projection = nn.Linear(input_dim, hidden_size)
        self.position_embedding = None
        self.encoder = None
        self.gru = None
        if kind == "transformer":
            self.position_embedding = nn.Embedding(max_positions, hidden_size)
            self.encoder = _transformer_encoder(hidden_size, num_layers, num_heads, dropout)
            self.norm = nn.LayerNorm(hidden_size)
        elif kind == "gru":
            self.gru = nn.GRU(hidden_size, hidden_size, num_layers=num_layers, batch_first=True)
        elif kind != "mean":
            raise ValueError(f"Unknown temporal aggregator {kind!r}.")

    def forward(self, steps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """steps (B, T, input_dim), mask (B, T) bool -> (B, hidden_size)."""
        # zero the padded steps first: garbage (even NaN) must not reach any computation we keep
        steps = torch.where(mask.unsqueeze(-1), steps, torch.zeros((), dtype=steps.dtype, device=steps.device))
        hidden = self.input_projection(steps)
        if self.kind == "transformer":
            length = hidden.shape[1]
            if length > self.max_positions:
                raise ValueError(
                    f"Got {length} steps but the transformer aggregator has {self.max_positions} positions "
                    f"(`{self.length_field}`)."
                )
            positions = torch.arange(length, device=hidden.device)
            hidden = hidden + self.position_embedding(positions).unsqueeze(0)
            hidden = self.norm(self.encoder(hidden, src_key_padding_mask=~mask))
        elif self.kind == "gru":
            hidden, mask = _run_gru(self.gru, hidden, mask)
        return _masked_mean(hidden, mask)


def _with_frame_differences(frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, 2C, H, W): each frame next to its change from the previous one (zero for the
    first frame). Padded frames (``mask`` False) are zeroed first, so garbage in them cannot reach a real frame's
    difference. Written into one preallocated tensor: the concatenations it replaces cost a tenth of a small
    student's forward."""
    if mask is not None:
        frames = torch.where(mask[:, :, None, None, None], frames, 0.0)
    channels = frames.shape[2]
    output = frames.new_empty(*frames.shape[:2], 2 * channels, *frames.shape[3:])
    output[:, :, :channels] = frames
    output[:, :1, channels:] = 0.0
    torch.sub(frames[:, 1:], frames[:, :-1], out=output[:, 1:, channels:])
    return output


class MCKDVideoTower(nn.Module):
    """Per-frame encoder (HF backbone, built-in conv, or none for features) -> temporal aggregator -> projection."""

    def __init__(self, config: MCKDConfig):
        super().__init__()
        self.video_input = config.video_input
        self.vision_pooling = config.vision_pooling
        self.frame_encoder = None
        self.is_hf = False
        self.frame_difference = False
        if config.video_input == "features":
            frame_dim = config.video_feature_dim
        elif config.vision_encoder_type == "hf":
            self.frame_encoder = _build_hf_backbone(config.vision_config, drop_pooler=config.vision_pooling != "pooler")
            self.is_hf = True
            frame_dim = config.vision_config.hidden_size
        else:
            self.frame_difference = config.vision_frame_difference
            self.frame_encoder = MCKDConvFrameEncoder(
                config.num_channels * (2 if self.frame_difference else 1), config.vision_hidden_size,
                config.vision_num_layers, config.vision_spatial_grid, config.vision_spatial_pooling,
                config.vision_activation,
            )
            frame_dim = config.vision_hidden_size
        hidden = config.resolved_temporal_hidden_size
        self.aggregator = MCKDTemporalAggregator(
            config.temporal_aggregator,
            frame_dim,
            hidden,
            config.temporal_num_layers,
            config.temporal_num_heads,
            config.num_frames,
            config.dropout,
            length_field="num_frames",
        )
        self.projection = nn.Linear(hidden, config.projection_dim, bias=False)

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (N, C, H, W) -> (N, frame_dim)."""
        if not self.is_hf:
            return self.frame_encoder(frames)
        outputs = self.frame_encoder(pixel_values=frames)
        if self.vision_pooling == "pooler" and getattr(outputs, "pooler_output", None) is not None:
            pooled = outputs.pooler_output
        elif self.vision_pooling == "mean":
            pooled = outputs.last_hidden_state.mean(dim=1)
        else:  # cls, or a backbone without a pooled output
            pooled = outputs.last_hidden_state[:, 0]
        return pooled.flatten(1)

    def forward(self, pixel_values_videos=None, video_features=None, video_mask=None) -> torch.Tensor:
        if self.video_input == "pixels":
            if pixel_values_videos is None:
                raise ValueError("This model takes `pixel_values_videos` (B, T, C, H, W) (config video_input='pixels').")
            if pixel_values_videos.dim() != 5:
                raise ValueError(
                    f"`pixel_values_videos` must be (B, T, C, H, W), got shape {tuple(pixel_values_videos.shape)}."
                )
            batch, length = pixel_values_videos.shape[:2]
            mask = _as_bool_mask(video_mask, batch, length, pixel_values_videos.device, "video_mask")
            every_frame_real = bool(mask.all())
            if self.frame_difference:
                pixel_values_videos = _with_frame_differences(pixel_values_videos, None if every_frame_real else mask)
            if every_frame_real:
                # the common case (no padding): a view instead of a masked copy in and out
                steps = self.encode_frames(pixel_values_videos.flatten(0, 1)).unflatten(0, (batch, length))
            else:
                # only real frames go through the (expensive) frame encoder; padded slots stay zero
                frame_embeds = self.encode_frames(pixel_values_videos[mask])
                steps = frame_embeds.new_zeros(batch, length, frame_embeds.shape[-1])
                steps[mask] = frame_embeds
        else:
            if video_features is None:
                raise ValueError("This model takes `video_features` (B, T, D) (config video_input='features').")
            if video_features.dim() != 3:
                raise ValueError(f"`video_features` must be (B, T, D), got shape {tuple(video_features.shape)}.")
            batch, length = video_features.shape[:2]
            mask = _as_bool_mask(video_mask, batch, length, video_features.device, "video_mask")
            steps = video_features
        return self.projection(self.aggregator(steps, mask))


class MCKDTextTower(nn.Module):
    """HF text backbone + pooling, or a built-in embedding + GRU / transformer encoder; then a projection."""

    def __init__(self, config: MCKDConfig):
        super().__init__()
        self.pooling = config.text_pooling
        self.is_hf = config.text_encoder_type == "hf"
        if self.is_hf:
            self.backbone = _build_hf_backbone(config.text_config, drop_pooler=config.text_pooling != "pooler")
            width = config.text_config.hidden_size
        else:
            self.arch = config.builtin_text_arch
            self.vocab_size = config.vocab_size
            self.max_length = config.max_text_length
            self.embeddings = nn.Embedding(config.vocab_size, config.text_hidden_size, padding_idx=config.pad_token_id)
            self.dropout = nn.Dropout(config.dropout)
            if self.arch == "gru":
                self.gru = nn.GRU(
                    config.text_hidden_size,
                    config.text_hidden_size,
                    num_layers=config.text_num_layers,
                    batch_first=True,
                    bidirectional=True,
                )
                width = 2 * config.text_hidden_size
            else:
                self.position_embedding = nn.Embedding(config.max_text_length, config.text_hidden_size)
                self.encoder = _transformer_encoder(
                    config.text_hidden_size, config.text_num_layers, config.text_num_heads, config.dropout
                )
                width = config.text_hidden_size
            self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, config.projection_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must be (batch, length), got shape {tuple(input_ids.shape)}.")
        batch, length = input_ids.shape
        mask = _as_bool_mask(attention_mask, batch, length, input_ids.device, "attention_mask")
        if self.is_hf:
            outputs = self.backbone(input_ids=input_ids, attention_mask=mask.long())
            if self.pooling == "pooler":
                pooled = outputs.pooler_output
            else:
                pooled = _pool(outputs.last_hidden_state, mask, self.pooling)
            return self.projection(pooled)

        if length > self.max_length:
            raise ValueError(f"Got {length} tokens, more than `max_text_length`={self.max_length}.")
        if int(input_ids.max()) >= self.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(
                f"`input_ids` holds ids outside [0, vocab_size={self.vocab_size}); the tokenizer and the config's "
                "`vocab_size` disagree."
            )
        hidden = self.dropout(self.embeddings(input_ids))
        if self.arch == "gru":
            hidden, mask = _run_gru(self.gru, hidden, mask)
        else:
            positions = torch.arange(length, device=input_ids.device)
            hidden = hidden + self.position_embedding(positions).unsqueeze(0)
            hidden = self.encoder(hidden, src_key_padding_mask=~mask)
        return self.projection(_pool(self.norm(hidden), mask, self.pooling))


class MCKDModalityTower(nn.Module):
    """An extra co-occurring modality (audio, motion...): step MLP -> temporal aggregator -> projection."""

    def __init__(self, name: str, spec: dict, projection_dim: int, dropout: float):
        super().__init__()
        hidden = spec["hidden_size"]
        self.input_mlp = nn.Sequential(nn.Linear(spec["feature_dim"], hidden), nn.GELU())
        self.aggregator = MCKDTemporalAggregator(
            spec["aggregator"],
            hidden,
            hidden,
            spec["num_layers"],
            spec["num_heads"],
            spec["max_length"],
            dropout,
            length_field=f"extra_modalities[{name!r}]['max_length']",
        )
        self.projection = nn.Linear(hidden, projection_dim, bias=False)
        self.feature_dim = spec["feature_dim"]

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.projection(self.aggregator(self.input_mlp(features), mask))


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class MCKDPreTrainedModel(PreTrainedModel):
    config_class = MCKDConfig
    base_model_prefix = "mckd"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        """Initialise our own layers; HF backbones are initialised by their own `_init_weights`."""
        if isinstance(module, MCKDModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, nn.Conv2d):
            # the conv stack has no norm between layers: keep activations' scale with He init
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    init.orthogonal_(param)
                else:
                    init.zeros_(param)
        else:
            super()._init_weights(module)


class MCKDModel(MCKDPreTrainedModel):
    """Dual encoder for text-video retrieval, used as the MCKD teacher or student (see `config.role`).

    `MCKDModel(config)` and `MCKDModel.from_pretrained(dir)` never load backbone weights: they build
    every tower from the config (an HF backbone given only by name has its config.json read once
    and stored in `config`). Use [`MCKDModel.from_backbones`] to start from pretrained backbones.
    """

    def __init__(self, config: MCKDConfig):
        super().__init__(config)
        config.resolve_backbone_configs()
        self.video_tower = MCKDVideoTower(config)
        self.text_tower = MCKDTextTower(config)
        self.modality_towers = nn.ModuleDict(
            {
                name: MCKDModalityTower(name, spec, config.projection_dim, config.dropout)
                for name, spec in config.extra_modalities.items()
            }
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))
        self.mimicry_projection = (
            nn.Linear(config.projection_dim, config.teacher_projection_dim) if config.feature_mimicry else None
        )
        self.post_init()

    # ---------------------------------------------------------------- construction from backbones
    @classmethod
    def from_backbones(cls, config: MCKDConfig, load_pretrained_backbones: bool = True, **backbone_kwargs) -> "MCKDModel":
        """Build a new model and (optionally) load the pretrained weights of `vision_backbone` / `text_backbone`.

        Only this method reads backbone weights (`AutoModel.from_pretrained`, so a Hub name or a
        local folder); `backbone_kwargs` go to that call (e.g. `local_files_only=True`). The config
        is copied, its backbone configs stored inline, so the saved model is self-contained.
        """
        config = copy.deepcopy(config)
        model = cls(config)
        if not load_pretrained_backbones:
            return model
        if config.video_input == "pixels" and config.vision_encoder_type == "hf" and config.vision_backbone:
            cls._load_backbone_weights(
                model.video_tower.frame_encoder, config.vision_backbone, config.vision_config, backbone_kwargs
            )
        if config.text_encoder_type == "hf" and config.text_backbone:
            cls._load_backbone_weights(model.text_tower.backbone, config.text_backbone, config.text_config, backbone_kwargs)
        return model

    @staticmethod
    def _load_backbone_weights(target: PreTrainedModel, name_or_path: str, backbone_config, kwargs: dict) -> None:
        # load the checkpoint's own architecture (pooler included when it has one), then copy what
        # our tower has: a pooler we dropped is simply not copied
        pretrained = AutoModel.from_pretrained(name_or_path, config=backbone_config, **kwargs)
        missing, _ = target.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:
            raise ValueError(
                f"Backbone {name_or_path!r} does not provide weights for {sorted(missing)[:8]} "
                f"({len(missing)} missing); is it the same architecture as its config says?"
            )
        del pretrained

    # ---------------------------------------------------------------- parameter groups
    def video_encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the video tower (frame encoder, temporal aggregator, projection)."""
        return list(self.video_tower.parameters())

    def text_encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the text tower (backbone or built-in encoder, projection)."""
        return list(self.text_tower.parameters())

    def modality_encoder_parameters(self, name: str) -> list[nn.Parameter]:
        """Parameters of one extra modality tower."""
        return list(self._modality_tower(name).parameters())

    # ---------------------------------------------------------------- encoders
    def _finish(self, embeds: torch.Tensor) -> torch.Tensor:
        return F.normalize(embeds, dim=-1) if self.config.normalize_embeddings else embeds

    def get_logit_scale(self) -> torch.Tensor:
        """The multiplicative scale applied to cosine similarities, `exp(min(s, log(logit_scale_max)))`."""
        return self.logit_scale.clamp(max=math.log(self.config.logit_scale_max)).exp()

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed captions: `input_ids` (B, L) -> (B, projection_dim), L2-normalised when `normalize_embeddings`."""
        return self._finish(self.text_tower(input_ids, attention_mask))

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        modality_features: dict[str, torch.Tensor] | None = None,
        modality_masks: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embed videos: frames (B, T, C, H, W) or frame features (B, T, D); `video_mask` (B, T), 1 = real frame.

        With `config.fuse_modalities` (e.g. `["audio"]`) the video embedding is the normalised sum of
        the visual embedding and each fused modality's embedding, so those inputs are required.
        """
        return self.fuse_video_parts(self.get_video_feature_parts(
            pixel_values_videos, video_features, video_mask, audio_features, audio_mask, modality_features, modality_masks
        ))

    def fuse_video_parts(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The video embedding from `get_video_feature_parts`'s output: the visual part alone, or the normalised
        sum of every part for a model with `fuse_modalities`."""
        fused = {name: part for name, part in parts.items() if name != "visual"}
        return self._fuse(parts["visual"], fused) if fused else parts["visual"]

    def get_video_feature_parts(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        modality_features: dict[str, torch.Tensor] | None = None,
        modality_masks: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The parts a fused video embedding is made of: `{"visual": ..., "audio": ...}` (one entry per
        `config.fuse_modalities`, each (B, projection_dim) and normalised like the embedding). Retrieval with
        one part alone shows what each modality contributes (see `evaluate_split`)."""
        parts = {"visual": self._finish(self.video_tower(pixel_values_videos, video_features, video_mask))}
        if self.config.fuse_modalities:
            inputs, masks = self._modality_inputs(audio_features, audio_mask, modality_features, modality_masks)
            for name in self._fused_names(inputs):
                parts[name] = self.get_modality_features(name, inputs[name], masks.get(name))
        return parts

    def _modality_inputs(self, audio_features, audio_mask, modality_features, modality_masks):
        inputs, masks = dict(modality_features or {}), dict(modality_masks or {})
        if audio_features is not None:
            inputs["audio"], masks["audio"] = audio_features, audio_mask
        return inputs, masks

    def _fused_names(self, inputs: dict) -> list[str]:
        missing = [name for name in self.config.fuse_modalities if name not in inputs]
        if missing:
            raise ValueError(
                f"This model fuses {missing} into its video embedding (config.fuse_modalities): pass "
                + ", ".join("audio_features" if n == "audio" else f"modality_features[{n!r}]" for n in missing)
            )
        return list(self.config.fuse_modalities)

    def _fuse(self, visual: torch.Tensor, fused: dict[str, torch.Tensor]) -> torch.Tensor:
        # Each part is unit-norm, so every modality weighs the same; renormalise the sum.
        total = visual + sum(fused.values())
        return nn.functional.normalize(total, dim=-1) if self.config.normalize_embeddings else total

    def _modality_tower(self, name: str) -> MCKDModalityTower:
        if name not in self.modality_towers:
            configured = list(self.modality_towers.keys()) or "none"
            raise ValueError(
                f"Modality {name!r} is not configured (extra_modalities: {configured}); add it to "
                "`MCKDConfig.extra_modalities` with its feature_dim."
            )
        return self.modality_towers[name]

    def get_modality_features(self, name: str, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed an extra modality: `features` (B, T, feature_dim), `mask` (B, T) -> (B, projection_dim)."""
        tower = self._modality_tower(name)
        if features.dim() != 3 or features.shape[-1] != tower.feature_dim:
            raise ValueError(
                f"`{name}` features must be (B, T, {tower.feature_dim}) (extra_modalities[{name!r}]['feature_dim']), "
                f"got shape {tuple(features.shape)}."
            )
        batch, length = features.shape[:2]
        mask = _as_bool_mask(mask, batch, length, features.device, f"{name}_mask")
        return self._finish(tower(features, mask))

    def get_audio_features(self, audio_features: torch.Tensor, audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embed audio features (B, T_a, D_a); needs an `"audio"` entry in `extra_modalities`."""
        return self.get_modality_features("audio", audio_features, audio_mask)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_features: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        return_dict: bool | None = True,
        modality_features: dict[str, torch.Tensor] | None = None,
        modality_masks: dict[str, torch.Tensor] | None = None,
        **kwargs,
    ) -> MCKDOutput | tuple:
        """Encode what is given and score texts against videos, as `CLIPModel` does.

        `logits_per_text[i, j] = logit_scale * <text_i, video_j>` needs both texts and videos;
        `return_loss=True` adds the symmetric InfoNCE loss (one caption per video, matched by
        position). Extra modalities come as `audio_features`/`audio_mask` or through
        `modality_features`/`modality_masks` dicts. Other keyword arguments (e.g. a tokenizer's
        `token_type_ids`) are ignored.
        """
        text_embeds = video_embeds = visual_embeds = None
        if input_ids is not None:
            text_embeds = self.get_text_features(input_ids, attention_mask)
        inputs, masks = self._modality_inputs(audio_features, audio_mask, modality_features, modality_masks)
        modality_embeds = {name: self.get_modality_features(name, feats, masks.get(name)) for name, feats in inputs.items()}
        if pixel_values_videos is not None or video_features is not None:
            video_embeds = visual_embeds = self._finish(self.video_tower(pixel_values_videos, video_features, video_mask))
            if self.config.fuse_modalities:
                video_embeds = self._fuse(visual_embeds, {n: modality_embeds[n] for n in self._fused_names(inputs)})

        logit_scale = self.get_logit_scale()
        logits_per_text = logits_per_video = loss = None
        if text_embeds is not None and video_embeds is not None:
            logits_per_text = logit_scale * text_embeds @ video_embeds.t()
            logits_per_video = logits_per_text.t()
        if return_loss:
            if logits_per_text is None:
                raise ValueError("return_loss=True needs both texts (input_ids) and videos.")
            loss = symmetric_infonce_loss(logits_per_text)

        output = MCKDOutput(
            loss=loss,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_video,
            text_embeds=text_embeds,
            video_embeds=video_embeds,
            audio_embeds=modality_embeds.get("audio"),
            modality_embeds=modality_embeds or None,
            logit_scale=logit_scale,
            visual_embeds=visual_embeds,
        )
        return output if return_dict is None or return_dict else output.to_tuple()


__all__ = ["MCKDModel", "MCKDOutput", "MCKDPreTrainedModel", "symmetric_infonce_loss"]
