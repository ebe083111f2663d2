"""Training-step time and peak memory of the real-benchmark teacher and student at real size (issue 16, item 5).

The models are those of the recipes (configs/msrvtt_1ka_teacher.yaml, configs/msrvtt_1ka_student.yaml), built with
random weights: each named backbone is replaced by a locally built config of the same architecture and size
(``REAL_SIZE_BACKBONES``), so nothing is downloaded. One step is what the trainer does per micro-batch: forward,
the recipe's objective (the teacher's multimodal InfoNCE; the student's ranking + distillation + discrimination
against a cached teacher, as ``teacher_frame_sampling: uniform`` runs it), backward and an AdamW update. fp32 and
bf16 (autocast, as ``accelerate --mixed_precision bf16``) on CUDA when present, else CPU.

    python benchmarks/bench_step.py                      # CUDA: batch 32; CPU: batch 2
    python benchmarks/bench_step.py --batch 2 --steps 2 --precisions fp32 bf16

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the timed steps (weights, optimiser state,
activations). On CPU each model and precision is measured in a fresh process (spawned), and the figure is that
process's peak resident set (VmHWM) over the whole measurement above its resident set just before the model was
built (weights, optimiser state, activations, and the allocator's own slack): one model's figure holds nothing
another left behind. Where /proc/self/clear_refs cannot reset the peak, the CPU column reads n/a.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modeling_mckd.arguments import DistillArguments, ModelArguments  # noqa: E402
from modeling_mckd.configuration_mckd import MCKDConfig  # noqa: E402
from modeling_mckd.modeling_mckd import MCKDModel  # noqa: E402
from modeling_mckd.objectives import StudentObjective, TeacherObjective, TeacherSignal  # noqa: E402

TEACHER_RECIPE = REPO / "configs" / "msrvtt_1ka_teacher.yaml"
STUDENT_RECIPE = REPO / "configs" / "msrvtt_1ka_student.yaml"
# The audio feature size a dataset with audio would give (filled from the files at run time: "auto").
AUDIO_FEATURE_DIM = 128
AUDIO_STEPS = 32


def _clip_vision():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig()  # the defaults are ViT-B/32: width 768, 12 layers, patch 32, 224 px


def _clip_text():
    from transformers import CLIPTextConfig

    return CLIPTextConfig()  # CLIP ViT-B/32's text tower: width 512, 12 layers, 8 heads, 49,408 tokens


def _deit_tiny():
    from transformers import ViTConfig

    return ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                     patch_size=16, image_size=224)


def _minilm_l6():
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512)


# name in a recipe -> {tower: config builder}: the published configs of these checkpoints, written out here.
REAL_SIZE_BACKBONES = {
    "openai/clip-vit-base-patch32": {"vision": _clip_vision, "text": _clip_text},
    "facebook/deit-tiny-patch16-224": {"vision": _deit_tiny},
    "sentence-transformers/all-MiniLM-L6-v2": {"text": _minilm_l6},
}


def read_recipe(path: str | Path) -> dict:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("model_overrides"), dict):
        raise ValueError(f"{path}: expected a recipe with a `model_overrides` mapping")
    return data


def recipe_model_config(path: str | Path, *, audio_feature_dim: int = AUDIO_FEATURE_DIM) -> MCKDConfig:
    """The recipe's model config at real size, every named backbone given as a local config (no download)."""
    recipe = read_recipe(path)
    fields = dict(recipe["model_overrides"])
    for tower in ("vision", "text"):
        name = fields.get(f"{tower}_backbone")
        if name is None:
            continue
        builders = REAL_SIZE_BACKBONES.get(name)
        if builders is None or tower not in builders:
            raise ValueError(f"{path}: {tower}_backbone {name!r} has no local real-size config in bench_step.py "
                             f"(known: {sorted(REAL_SIZE_BACKBONES)})")
        fields[f"{tower}_config"] = builders[tower]()
    extra = {}
    for modality, spec in (fields.get("extra_modalities") or {}).items():
        spec = dict(spec)
        if spec.get("feature_dim", "auto") == "auto":
            spec["feature_dim"] = audio_feature_dim
        extra[modality] = spec
    if "extra_modalities" in fields:
        fields["extra_modalities"] = extra
    preset = {"teacher": MCKDConfig.teacher_preset, "student": MCKDConfig.student_preset}[recipe.get("model_preset", "teacher")]
    return preset(**fields)


def recipe_image_size(recipe: dict, config: MCKDConfig) -> int:
    """The frame size the recipe's model is fed: an HF vision backbone's own, else the recipe's ``image_size``
    (the built-in encoders of configs/synthetic_*.yaml), else the runner's default."""
    if config.vision_config is not None:
        return int(config.vision_config.image_size)
    return int(recipe.get("image_size", ModelArguments().image_size))


def synthetic_batch(config: MCKDConfig, batch: int, captions_per_video: int, device, size: int) -> dict:
    """A batch shaped as the trainer's collator makes it (random values: the cost depends on shapes only)."""
    generator = torch.Generator().manual_seed(0)
    texts = batch * captions_per_video
    length = config.max_text_length
    vocab = config.text_config.vocab_size if config.text_encoder_type == "hf" else config.vocab_size
    inputs = {
        "pixel_values_videos": torch.randn(batch, config.num_frames, config.num_channels, size, size, generator=generator),
        "video_mask": torch.ones(batch, config.num_frames, dtype=torch.long),
        "input_ids": torch.randint(3, vocab, (texts, length), generator=generator),
        "attention_mask": torch.ones(texts, length, dtype=torch.long),
    }
    if "audio" in config.extra_modalities:
        inputs["audio_features"] = torch.randn(batch, AUDIO_STEPS, config.extra_modalities["audio"]["feature_dim"],
                                               generator=generator)
        inputs["audio_mask"] = torch.ones(batch, AUDIO_STEPS, dtype=torch.long)
    position = torch.arange(batch).repeat_interleave(captions_per_video)
    return {
        "student": {key: value.to(device) for key, value in inputs.items()},
        "video_index": torch.arange(batch).to(device),
        "caption_index": torch.arange(texts).to(device),
        "text_video_position": position.to(device),
    }


def student_objective(recipe: dict, teacher_dim: int, batch: int, captions_per_video: int, device) -> StudentObjective:
    """The recipe's student objective against a cached teacher (random unit embeddings of the batch's items)."""
    names = {f.name for f in DistillArguments.__dataclass_fields__.values()}
    args = DistillArguments(**{key: value for key, value in recipe.items() if key in names and key != "teacher"})
    generator = torch.Generator().manual_seed(1)
    text = torch.nn.functional.normalize(torch.randn(batch * captions_per_video, teacher_dim, generator=generator), dim=-1)
    video = torch.nn.functional.normalize(torch.randn(batch, teacher_dim, generator=generator), dim=-1)
    return StudentObjective(args, teacher=TeacherSignal(text_cache=text.to(device), video_cache=video.to(device)))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> int | None:
    """Reset this process's peak resident set (VmHWM) to its current size; returns that size in bytes, or None
    where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def measure(role: str, recipe_path: Path, *, batch: int, steps: int, precision: str, device: torch.device,
            teacher_dim: int) -> dict:
    """Median step time and peak memory of one model at one precision (one warm-up step first)."""
    rss_before = _reset_peak_rss() if device.type == "cpu" else None
    recipe = read_recipe(recipe_path)
    config = recipe_model_config(recipe_path)
    captions = int(recipe.get("captions_per_video", 1))
    torch.manual_seed(0)
    model = MCKDModel(config).to(device).train()
    objective = TeacherObjective() if role == "teacher" else student_objective(recipe, teacher_dim, batch, captions, device)
    # As the runner does: parameters the objective never reads are frozen (the student's logit scale).
    for name, parameter in model.named_parameters():
        if name in set(objective.unused_parameters(model)):
            parameter.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    size = recipe_image_size(recipe, config)
    data = synthetic_batch(config, batch, captions, device, size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss, _ = objective(model, data)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return loss.item()

    step()  # warm-up: kernels chosen, optimiser state allocated
    times, peak = [], 0
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
            peak = max(peak, torch.cuda.max_memory_allocated(device))
        else:
            start = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - start)
    if device.type == "cpu":
        peak = _status_kib("VmHWM") * 1024 - rss_before if rss_before is not None else float("nan")
    if not torch.isfinite(torch.tensor(loss)):
        raise RuntimeError(f"{role} {precision}: the loss is not finite ({loss})")
    result = {
        "role": role, "precision": precision, "batch": batch, "frames": config.num_frames,
        "image_size": size, "captions_per_video": captions,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times), "peak_mib": peak / 2**20, "loss": loss,
    }
    del model, optimizer, objective, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def measure_in_fresh_process(*args, **kwargs) -> dict:
    """`measure` in a spawned process, so its resident-set peak is this model's alone (CPU)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args, kwargs)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def table(results: list[dict], device: torch.device) -> str:
    memory = "peak allocated (MiB)" if device.type == "cuda" else "peak RSS above the start, own process (MiB)"
    lines = [f"| model | precision | clips x frames @ px | parameters | step (s) | {memory} |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['role']} | {r['precision']} | {r['batch']} x {r['frames']} @ {r['image_size']} | "
                     f"{r['parameters'] / 1e6:.1f}M | {r['step_s']:.3f} | {r['peak_mib']:.0f} |")
    lines += ["", "| precision | teacher / student step time | teacher / student peak memory |", "|---|---|---|"]
    by = {(r["role"], r["precision"]): r for r in results}
    for precision in dict.fromkeys(r["precision"] for r in results):
        teacher, student = by.get(("teacher", precision)), by.get(("student", precision))
        if teacher and student:
            memory_ratio = teacher["peak_mib"] / student["peak_mib"] if student["peak_mib"] > 0 else float("nan")
            lines.append(f"| {precision} | {teacher['step_s'] / student['step_s']:.1f}x | {memory_ratio:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default: 32 on CUDA, 2 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up (default: 10 CUDA, 2 CPU)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--teacher_recipe", default=str(TEACHER_RECIPE))
    parser.add_argument("--student_recipe", default=str(STUDENT_RECIPE))
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch = args.batch or (32 if device.type == "cuda" else 2)
    steps = args.steps or (10 if device.type == "cuda" else 2)
    if batch < 2:
        parser.error("--batch must be >= 2 (a contrastive batch needs negatives)")
    teacher_dim = recipe_model_config(args.teacher_recipe).projection_dim
    results = []
    for precision in args.precisions:
        for role, recipe in (("teacher", args.teacher_recipe), ("student", args.student_recipe)):
            run = measure_in_fresh_process if device.type == "cpu" else measure
            row = run(role, Path(recipe), batch=batch, steps=steps, precision=precision, device=device,
                      teacher_dim=teacher_dim)
            print(json.dumps(row), flush=True)
            results.append(row)
    print(f"\ndevice: {device_name(device)}; torch {torch.__version__}; {steps} timed steps (median) after one warm-up\n")
    print(table(results, device))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name(device), "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
