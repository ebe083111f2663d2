"""The real-benchmark recipes (configs/msrvtt_1ka_*.yaml, configs/msvd_*.yaml; issue 16, item 4), offline.

Each named backbone is replaced by a tiny randomly initialised checkpoint of the same architecture, saved to a
local folder with a word tokenizer, and the recipe runs as written otherwise (its frames, pooling, aggregator,
audio tower, objective and `load_pretrained_backbones`) for one optimiser step on a tiny generated dataset:
the teacher with train.py's arguments, then the student distilled from it with distill.py's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modeling_mckd.arguments import (
    DataArguments,
    DistillArguments,
    ModelArguments,
    RunArguments,
    TeacherArguments,
    parse_arguments,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_step  # noqa: E402  (the real-size configs of the named backbones)

TEACHER_TYPES = (ModelArguments, DataArguments, RunArguments, TeacherArguments)
STUDENT_TYPES = (ModelArguments, DataArguments, RunArguments, DistillArguments)
BENCHMARKS = ("msrvtt_1ka", "msvd")
CLIP = "openai/clip-vit-base-patch32"
DEIT_TINY = "facebook/deit-tiny-patch16-224"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def parse_recipe(benchmark: str, role: str, *argv: str) -> tuple:
    types = TEACHER_TYPES if role == "teacher" else STUDENT_TYPES
    defaults = None if role == "teacher" else {"model_preset": "student"}  # as distill.py parses
    return parse_arguments(types, ["--config", str(CONFIGS / f"{benchmark}_{role}.yaml"), *argv], defaults=defaults)


def recipe(benchmark: str, role: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{benchmark}_{role}.yaml").read_text())


# ------------------------------------------------------------------------------------------ what the recipes say


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_teacher_recipe_is_clip_vit_b32_on_12_frames_at_224_in_bf16(benchmark):
    model_args, data_args, run_args, _ = parse_recipe(benchmark, "teacher")
    overrides = json.loads(model_args.model_overrides)
    assert overrides["vision_backbone"] == CLIP and overrides["text_backbone"] == CLIP
    assert overrides["num_frames"] == 12 and model_args.image_size == 224
    assert overrides["extra_modalities"] == {"audio": {"feature_dim": "auto"}}  # read from the files when present
    assert model_args.load_pretrained_backbones
    assert run_args.mixed_precision == "bf16"
    assert 128 <= run_args.per_device_train_batch_size * run_args.gradient_accumulation_steps <= 256
    assert data_args.frame_cache and data_args.dataset


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_student_recipe_distils_with_the_synthetic_students_settings(benchmark):
    model_args, data_args, run_args, distill_args = parse_recipe(benchmark, "student")
    overrides = json.loads(model_args.model_overrides)
    assert model_args.model_preset == "student"
    assert overrides["vision_backbone"] == DEIT_TINY and overrides["text_backbone"] == MINILM
    teacher_model_args = parse_recipe(benchmark, "teacher")[0]
    assert overrides["num_frames"] < json.loads(teacher_model_args.model_overrides)["num_frames"]
    synthetic = recipe("synthetic", "student")
    for key in ("kd_weight", "disc_weight", "kd_mode", "kd_parts", "kd_temperature", "disc_temperature"):
        assert getattr(distill_args, key) == synthetic[key], key
    assert distill_args.teacher == recipe(benchmark, "teacher")["output_dir"]
    assert run_args.mixed_precision == "bf16"
    assert 128 <= run_args.per_device_train_batch_size * run_args.gradient_accumulation_steps <= 256
    # the student reads the teacher's frame cache: one build serves both
    assert data_args.frame_cache == recipe(benchmark, "teacher")["frame_cache"]


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_msvd_recipes_are_the_msrvtt_models(role):
    """So the end-to-end test of the MSR-VTT pair below covers the MSVD models too."""
    assert recipe("msvd", role)["model_overrides"] == recipe("msrvtt_1ka", role)["model_overrides"]
    assert recipe("msvd", role)["eval_split"] == "validation"  # MSVD has one; 1k-A has none
    assert recipe("msrvtt_1ka", role)["eval_split"] is None


def test_student_is_several_times_cheaper_at_real_size():
    """Real-size configs on the meta device (no memory, no download). Per-clip encoder cost ~ frames x tokens x
    width^2 x layers: teacher 12 x 50 x 768^2 x 12, student 6 x 197 x 192^2 x 12, 8.1x by hand."""
    from modeling_mckd import MCKDModel

    configs = {role: bench_step.recipe_model_config(CONFIGS / f"msrvtt_1ka_{role}.yaml") for role in ("teacher", "student")}

    def frame_cost(config):
        vision = config.vision_config
        tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        return config.num_frames * tokens * vision.hidden_size**2 * vision.num_hidden_layers

    assert frame_cost(configs["teacher"]) / frame_cost(configs["student"]) == pytest.approx(
        (12 * 50 * 768**2) / (6 * 197 * 192**2))
    assert frame_cost(configs["teacher"]) / frame_cost(configs["student"]) > 3
    with torch.device("meta"):
        sizes = {role: sum(p.numel() for p in MCKDModel(config).parameters()) for role, config in configs.items()}
    assert sizes["teacher"] > 3 * sizes["student"]


# ------------------------------------------------------------------------------------------ one step, tiny shapes


def tiny_backbone_configs(vocab_size: int) -> dict:
    """The same architectures as the named backbones (the classes of bench_step's real-size configs), tiny."""
    from transformers import BertConfig, CLIPConfig, ViTConfig

    layers = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_size=32)
    return {
        CLIP: CLIPConfig(text_config=dict(vocab_size=vocab_size, max_position_embeddings=40, **layers),
                         vision_config=dict(image_size=64, patch_size=32, **layers), projection_dim=16),
        DEIT_TINY: ViTConfig(image_size=32, patch_size=16, **layers),
        MINILM: BertConfig(vocab_size=vocab_size, max_position_embeddings=64, **layers),
    }


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny generated dataset (with audio) and a local tiny checkpoint + tokenizer per named backbone."""
    from transformers import AutoModel

    from modeling_mckd import build_word_tokenizer
    from modeling_mckd.data_prep.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("recipes")
    dataset = generate_synthetic(root / "synthetic", seed=0, num_train=8, num_val=2, num_test=2, num_frames=8,
                                 frame_size=32)
    tokenizer = build_word_tokenizer([c for caps in dataset["train"]["captions"] for c in caps], max_length=32)
    folders = {}
    torch.manual_seed(0)
    for name, config in tiny_backbone_configs(len(tokenizer)).items():
        folder = root / "backbones" / name.replace("/", "--")
        kwargs = {"add_pooling_layer": False} if name == DEIT_TINY else {}  # DeiT ships no trained pooler
        AutoModel.from_config(config, **kwargs).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    audio_dim = int(np.load(dataset["train"]["audio"][0]).shape[-1])
    return {"dataset": root / "synthetic" / "dataset", "backbones": folders, "audio_dim": audio_dim}


def test_tiny_stand_ins_have_the_architectures_of_the_named_backbones(tiny_world):
    from transformers import AutoConfig

    for name, folder in tiny_world["backbones"].items():
        stand_in = AutoConfig.from_pretrained(folder)
        for tower, real in ((t, build()) for t, build in bench_step.REAL_SIZE_BACKBONES[name].items()):
            sub = getattr(stand_in, f"{tower}_config", stand_in)
            assert type(sub) is type(real), (name, tower)


def run_recipe_tiny(role: str, world: dict, output_dir: Path, **distill) -> tuple[dict, tuple]:
    """The MSR-VTT recipe as written, except: named backbones -> the tiny local folders, the tiny dataset
    (no frame cache), one optimiser step of batch 4 in fp32 on CPU, no evaluation between epochs."""
    from modeling_mckd.runner import run_student, run_teacher

    model_args, data_args, run_args, extra = parse_recipe("msrvtt_1ka", role)
    overrides = json.loads(model_args.model_overrides)
    for key in ("vision_backbone", "text_backbone"):
        overrides[key] = str(world["backbones"][overrides[key]])
    model_args = dataclasses.replace(model_args, model_overrides=json.dumps(overrides))
    data_args = dataclasses.replace(data_args, dataset=str(world["dataset"]), frame_cache=None,
                                    dataloader_num_workers=0)
    run_args = dataclasses.replace(
        run_args, output_dir=str(output_dir), max_steps=1, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        mixed_precision="no", report_to="none", disable_tqdm=True, tune_cpu_allocator=False, seed=0,
    )
    if role == "student":
        extra = dataclasses.replace(extra, **distill)
        results = run_student(model_args, data_args, run_args, extra)
    else:
        results = run_teacher(model_args, data_args, run_args, extra)
    return results, (model_args, data_args, run_args, extra)


def _steps(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "training_history.json").read_text())


def _frame_encoder(output_dir: Path) -> dict[str, torch.Tensor]:
    prefix = "video_tower.frame_encoder."
    return {k[len(prefix):]: v for k, v in load_file(output_dir / "model.safetensors").items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def tiny_teacher(tiny_world, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("teacher") / "out"
    results, _ = run_recipe_tiny("teacher", tiny_world, output_dir)
    assert results["global_step"] == 1
    return output_dir


def test_teacher_recipe_trains_one_step_from_its_pretrained_backbones(tiny_world, tiny_teacher):
    from transformers import AutoModel

    config = json.loads((tiny_teacher / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert config["text_config"]["model_type"] == "clip_text_model"
    assert config["num_frames"] == 12 and config["temporal_aggregator"] == "transformer"
    # the audio tower came from the data: the dataset's feature size
    assert config["extra_modalities"]["audio"]["feature_dim"] == tiny_world["audio_dim"]
    history = _steps(tiny_teacher)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    # load_pretrained_backbones: the vision tower starts from the checkpoint, not from a random init (one step
    # of AdamW at a 1e-5 peak rate moves a weight by at most ~1e-5; two random inits differ by ~0.02)
    clip = AutoModel.from_pretrained(tiny_world["backbones"][CLIP]).vision_model.state_dict()
    trained = _frame_encoder(tiny_teacher)
    weight = "encoder.layers.0.mlp.fc1.weight"
    torch.testing.assert_close(trained[weight], clip[weight], rtol=0, atol=1e-4)
    assert not torch.allclose(trained[weight], clip[weight], rtol=0, atol=0)  # and it did train


def test_teacher_recipe_drops_the_audio_tower_when_the_dataset_has_none(tiny_world):
    from datasets import load_from_disk

    from modeling_mckd.runner import build_config

    model_args = parse_recipe("msrvtt_1ka", "teacher")[0]
    videos = load_from_disk(str(tiny_world["dataset"]))["train"].remove_columns("audio")
    assert build_config(model_args, videos, tokenizer_vocab_size=None).extra_modalities == {}


def test_student_recipe_distils_one_step_from_the_recipe_teacher(tiny_world, tiny_teacher, tmp_path):
    output_dir = tmp_path / "student"
    results, (_, _, _, distill_args) = run_recipe_tiny("student", tiny_world, output_dir, teacher=str(tiny_teacher))
    assert results["global_step"] == 1
    config = json.loads((output_dir / "config.json").read_text())
    assert config["role"] == "student"
    assert config["vision_config"]["model_type"] == "vit" and config["text_config"]["model_type"] == "bert"
    assert config["num_frames"] == 6 and config["vision_pooling"] == "cls"
    step = _steps(output_dir)[0]
    # ranking + 2.0 x distillation + 1.0 x discrimination, every term present and finite
    assert distill_args.kd_mode == "kl+relation" and distill_args.kd_weight == 2.0
    for term in ("loss/ranking", "loss/distillation", "loss/discrimination"):
        assert np.isfinite(step[term]), term
    assert step["loss/distillation"] > 0


@pytest.mark.parametrize("role, size", [("teacher", 64), ("student", 32)])
def test_bench_step_measures_the_default_jobs_built_in_models(role, size):
    """bench_step also takes configs/synthetic_*.yaml (built-in encoders, no vision_config): the frames are fed at the
    recipe's image_size, and one step of the recipe's objective runs."""
    recipe = CONFIGS / f"synthetic_{role}.yaml"
    config = bench_step.recipe_model_config(recipe)
    assert config.vision_config is None
    assert bench_step.recipe_image_size(bench_step.read_recipe(recipe), config) == size
    teacher_dim = bench_step.recipe_model_config(CONFIGS / "synthetic_teacher.yaml").projection_dim
    row = bench_step.measure(role, recipe, batch=2, steps=1, precision="fp32", device=torch.device("cpu"),
                             teacher_dim=teacher_dim)
    assert (row["image_size"], row["frames"], row["batch"]) == (size, 8, 2)
    assert math.isfinite(row["loss"]) and row["step_s"] > 0
    from modeling_mckd import MCKDModel

    assert row["parameters"] == sum(p.numel() for p in MCKDModel(config).parameters())
