"""The frames + text model inside a teacher that fuses other modalities into its video embedding.

A teacher trained with ``fuse_modalities`` (e.g. audio) and the part pairs (text-visual, text-audio,
visual-audio, text-fused) learns a visual part that is contrasted with the text and with the co-occurring
audio. That part is a frames + text retrieval model on its own: the same video and text towers, the audio tower
left out. `save_visual_part` writes it as an ordinary model folder, so that search, evaluation and distillation
use it like any other model and need the video file alone. Its video embedding equals the fused teacher's
``get_video_feature_parts(...)["visual"]`` exactly (tested).
"""

from __future__ import annotations

import json
from pathlib import Path

from .configuration_mckd import MCKDConfig
from .modeling_mckd import MCKDModel

VISUAL_PART_DIR = "visual_part"


def visual_part_model(model: MCKDModel) -> MCKDModel:
    """A new model with ``model``'s video and text towers and no extra modality (nothing fused)."""
    config_dict = model.config.to_dict()
    dropped = sorted((config_dict.get("extra_modalities") or {}))
    config_dict.update(extra_modalities={}, fuse_modalities=[])
    config = MCKDConfig.from_dict(config_dict)
    part = MCKDModel(config)
    state = {k: v for k, v in model.state_dict().items()
             if not any(k.startswith(f"modality_towers.{name}.") for name in dropped)}
    missing, unexpected = part.load_state_dict(state, strict=False)
    if missing or unexpected:  # every kept weight must land, and nothing else may be left over
        raise ValueError(f"the visual part does not match the model's weights: missing {missing}, unexpected {unexpected}")
    return part.eval()


def save_visual_part(model_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Write the visual part of the fused model in ``model_dir`` to ``output_dir`` (default
    ``model_dir/visual_part``): weights, config, processor, the part's results, and a short card. Refuses a
    model that fuses nothing (its video embedding already is its visual part)."""
    from .processing_mckd import MCKDProcessor

    model_dir = Path(model_dir)
    output_dir = Path(output_dir) if output_dir is not None else model_dir / VISUAL_PART_DIR
    model = MCKDModel.from_pretrained(model_dir)
    if not model.config.fuse_modalities:
        raise ValueError(f"{model_dir}: this model fuses nothing (config.fuse_modalities is empty); its video "
                         "embedding already is its visual part")
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / "config.json").is_file():
        raise FileExistsError(f"{output_dir}: exists and is not a model folder this function wrote; choose another")
    part = visual_part_model(model)
    output_dir.mkdir(parents=True, exist_ok=True)
    part.save_pretrained(output_dir)
    MCKDProcessor.from_pretrained(model_dir).save_pretrained(output_dir)
    results = _visual_results(model_dir / "all_results.json")
    if results is not None:
        results["num_parameters"] = sum(p.numel() for p in part.parameters())
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2))
    fused = ", ".join(model.config.fuse_modalities)
    (output_dir / "README.md").write_text(
        "---\nlibrary_name: transformers\ntags: [mckd, video-text-retrieval]\n---\n\n"
        f"# The visual part of `{model_dir.name}`\n\n"
        f"The frames + text model inside the teacher `{model_dir.name}`, which fuses {fused} into its video "
        "embedding. Same video and text towers and weights; the other towers are left out, so this model needs "
        f"the video file alone. Trained as part of that teacher (its card lists the objective); the metrics in "
        "`all_results.json` are the teacher's `visual_only` retrieval on each split.\n")
    return output_dir


def _visual_results(path: Path) -> dict | None:
    """The fused run's results seen from its visual part: ``<split>_visual_only_<metric>`` becomes
    ``<split>_<metric>``; the fused model's other numbers are kept as ``fused_<split>_...`` (its fused embedding,
    and its other parts alone, e.g. ``fused_test_audio_only_t2v_R@1``)."""
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    out = {"role": "teacher (visual part)"}
    for key, value in results.items():
        for split in ("validation", "test"):
            prefix = f"{split}_visual_only_"
            if key.startswith(prefix):
                out[f"{split}_{key[len(prefix):]}"] = value
    for key, value in results.items():
        if key.startswith(("validation_", "test_")) and "_visual_only_" not in key:
            out[f"fused_{key}"] = value
            if key.endswith(("_num_texts", "_num_videos", "_decode_failures")):  # the same for every part
                out[key] = value
    return out
