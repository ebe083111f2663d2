"""From captions and clips to embeddings, and the retrieval metrics of a split.

Training (the teacher's caches), evaluation (each epoch and at the end) and the benchmarks all go
through these functions: one path from a clip to an embedding (`RetrievalVideoSet` reads and
samples it, `VideoCollator` preprocesses the batch, `embed_video_inputs` runs the model's
`get_video_features`, or `get_video_feature_parts` and `fuse_video_parts` for the parts). Search reads files itself (decoding threads, failures
reported per file) but embeds through `embed_processed_videos`, the same batching and model call. Text is tokenised to the model's own ``config.max_text_length``.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import ClipStore, RetrievalVideoSet, VideoCollator, model_inputs
from .retrieval import evaluate_retrieval


def unwrap_model(model):
    """The model inside a DDP (or similar) wrapper."""
    return model.module if hasattr(model, "module") else model


def uses_audio(model) -> bool:
    """Whether the model has an audio tower (``config.extra_modalities``)."""
    return "audio" in (unwrap_model(model).config.extra_modalities or {})


def fuses_audio(model) -> bool:
    """Whether the model's video embedding needs the clip's audio (``config.fuse_modalities``)."""
    return "audio" in (unwrap_model(model).config.fuse_modalities or [])


@torch.no_grad()
def encode_texts(model, processor, captions: list[str], batch_size: int, device) -> torch.Tensor:
    """Embeddings of ``captions`` in order (float32, on CPU), tokenised to ``config.max_text_length``."""
    model = unwrap_model(model)
    chunks = []
    for start in range(0, len(captions), batch_size):
        tokens = processor.tokenizer(
            captions[start : start + batch_size], padding=True, truncation=True,
            max_length=model.config.max_text_length, return_tensors="pt",
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
    failed to decode. The clip's audio is read for a model that fuses it, whatever the store's other users."""
    model = unwrap_model(model)
    loader = torch.utils.data.DataLoader(
        RetrievalVideoSet(store, processor, with_audio=fuses_audio(model)), batch_size=batch_size,
        collate_fn=VideoCollator(processor), num_workers=num_workers,
    )
    with_parts = bool(model.config.fuse_modalities) and not fused_only
    chunks, failed = {}, 0
    for batch in loader:
        for name, value in embed_video_inputs(model, batch["model"], device, with_parts=with_parts).items():
            chunks.setdefault(name, []).append(value)
        failed += int(batch["num_failed"])
    return {name: torch.cat(values) for name, values in chunks.items()}, failed


@torch.no_grad()
def embed_video_inputs(model, inputs: dict[str, torch.Tensor], device, with_parts: bool = False) -> dict[str, torch.Tensor]:
    """``{"video": (B, D)}`` float32 on CPU (and each part, with ``with_parts``) from one batch of model inputs
    (`data.model_inputs`' output): the one place a clip's embedding is computed."""
    model = unwrap_model(model)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if with_parts:
        parts = model.get_video_feature_parts(**inputs)
        embeddings = {"video": model.fuse_video_parts(parts), **parts}
    else:  # the same computation (get_video_features fuses get_video_feature_parts' output)
        embeddings = {"video": model.get_video_features(**inputs)}
    return {name: value.float().cpu() for name, value in embeddings.items()}


@torch.no_grad()
def embed_processed_videos(model, processor, processed: list[dict], device) -> torch.Tensor:
    """(B, D) float32 embeddings, on CPU, of clips already processed one by one (`data.process_sampled` /
    `data.process_clip`: ``{"clip": tensor, "audio": tensor}``), batched by `data.model_inputs` as evaluation
    batches them. Search embeds its files with this, so an index holds what `encode_videos` gives."""
    return embed_video_inputs(model, model_inputs(processor, processed, None, 0), device)["video"]


def evaluate_split(model, processor, videos, store: ClipStore, *, batch_size: int, device, num_workers: int = 0,
                   with_parts: bool = False) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics over every caption of a split; with ``with_parts``, for a
    model that fuses modalities, also each part of its video embedding alone (``visual_only_*``, ``audio_only_*``)."""
    was_training = model.training
    model.eval()
    captions = [list(c) for c in videos["captions"]]
    flat = [c for caps in captions for c in caps]
    text_to_video = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    text_embeds = encode_texts(model, processor, flat, batch_size, device)
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


__all__ = ["embed_processed_videos", "embed_video_inputs", "encode_texts", "encode_video_parts", "encode_videos",
           "evaluate_split", "fuses_audio", "unwrap_model", "uses_audio"]
