"""train.py and distill.py end to end on a tiny synthetic benchmark (CPU, seconds each)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file


REPO = Path(__file__).resolve().parents[1]

# Small enough for seconds on 2 cores, big enough for the loss to move.
TINY_TEACHER = {
    "num_frames": 4, "projection_dim": 32, "vision_hidden_size": 16, "text_hidden_size": 32,
    "temporal_aggregator": "mean",
}
TINY_STUDENT = {"num_frames": 4, "projection_dim": 16, "vision_hidden_size": 8, "text_hidden_size": 16}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from modeling_mckd.data_prep.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, seed=0, num_train=32, num_val=8, num_test=8, num_frames=8, frame_size=32)
    return root / "dataset"


def common_args(dataset: Path, output_dir: Path, **extra) -> list[str]:
    args = {
        "dataset": str(dataset), "output_dir": str(output_dir), "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16, "learning_rate": 3e-3, "report_to": "none", "disable_tqdm": True,
        "image_size": 32, "seed": 0, "warmup_ratio": 0.0,
    }
    args.update(extra)
    argv = []
    for key, value in args.items():
        argv += [f"--{key}", str(value)]
    return argv


def losses(output_dir: Path) -> list[float]:
    return [row["loss"] for row in json.loads((output_dir / "training_history.json").read_text())]


@pytest.fixture(scope="session")
def trained_teacher(tiny_dataset, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("teacher")
    train = load_script("train")
    train.main(common_args(tiny_dataset, output_dir, max_steps=24, model_overrides=json.dumps(TINY_TEACHER)))
    return output_dir


def test_teacher_trains_and_writes_a_hub_ready_folder(trained_teacher, tiny_dataset):
    history = losses(trained_teacher)
    assert len(history) == 24
    assert sum(history[-4:]) / 4 < sum(history[:4]) / 4, history
    for name in ("config.json", "model.safetensors", "README.md", "all_results.json"):
        assert (trained_teacher / name).is_file(), name
    results = json.loads((trained_teacher / "all_results.json").read_text())
    assert results["role"] == "teacher"
    assert 0 <= results["test_t2v_R@1"] <= 100
    card = (trained_teacher / "README.md").read_text()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert front_matter["model-index"][0]["results"]
    # A local --dataset is named by its folder (here .../synthetic<N>/dataset), never by this disk's path.
    dataset = front_matter["model-index"][0]["results"][0]["dataset"]
    assert (dataset["name"], dataset["type"]) == ("dataset", "local")
    assert "datasets" not in front_matter
    assert str(tiny_dataset) not in card and str(trained_teacher) not in card

    from transformers import AutoModel

    model = AutoModel.from_pretrained(trained_teacher, trust_remote_code=True)
    assert model.config.role == "teacher"


def test_student_distills_from_the_teacher(trained_teacher, tiny_dataset, tmp_path):
    distill = load_script("distill")
    output_dir = tmp_path / "student"
    results = distill.main(
        common_args(tiny_dataset, output_dir, teacher=trained_teacher, max_steps=24, captions_per_video=2,
                    model_overrides=json.dumps(TINY_STUDENT))
    )
    history = json.loads((output_dir / "training_history.json").read_text())
    assert {"loss/ranking", "loss/distillation", "loss/discrimination"} <= set(history[0])
    totals = [row["loss"] for row in history]
    assert sum(totals[-4:]) / 4 < sum(totals[:4]) / 4, totals
    assert results["role"] == "student"
    assert str(trained_teacher) in (output_dir / "README.md").read_text()
    # the learning curve: one validation row per epoch, the best one is what was shipped
    curve = json.loads((output_dir / "eval_history.json").read_text())
    assert curve and [row["epoch"] for row in curve] == list(range(1, len(curve) + 1))
    best = max(curve, key=lambda row: row["rsum"])
    assert best["step"] == results["best_step"]
    assert best["rsum"] == pytest.approx(results["best_rsum"])


def test_student_with_random_teacher_frames_runs_the_teacher_each_step(trained_teacher, tiny_dataset, tmp_path):
    """teacher_frame_sampling=random: no cache, the frozen teacher sees the student's frames."""
    distill = load_script("distill")
    output_dir = tmp_path / "random"
    distill.main(common_args(tiny_dataset, output_dir, teacher=trained_teacher, max_steps=3, eval_strategy="no",
                             teacher_frame_sampling="random", model_overrides=json.dumps(TINY_STUDENT)))
    history = json.loads((output_dir / "training_history.json").read_text())
    assert len(history) == 3 and all(row["loss/distillation"] > 0 for row in history)


# The teacher's text tower settings (teacher preset: transformer text encoder, 2 layers) at TINY_TEACHER's sizes.
STUDENT_WITH_TEACHER_TEXT = {**TINY_STUDENT, "builtin_text_arch": "transformer", "text_hidden_size": 32,
                             "text_num_layers": 2, "projection_dim": 32}


def test_student_starts_from_the_teachers_text_tower_and_can_keep_it_frozen(trained_teacher, tiny_dataset, tmp_path):
    distill = load_script("distill")
    output_dir = tmp_path / "init"
    distill.main(common_args(tiny_dataset, output_dir, teacher=trained_teacher, max_steps=3, eval_strategy="no",
                             init_from_teacher="text", freeze_from_teacher="true",
                             model_overrides=json.dumps(STUDENT_WITH_TEACHER_TEXT)))
    student, teacher = load_file(output_dir / "model.safetensors"), load_file(trained_teacher / "model.safetensors")
    text_keys = [key for key in teacher if key.startswith("text_tower.")]
    assert text_keys
    for key in text_keys:  # frozen: still exactly the teacher's after three optimizer steps
        torch.testing.assert_close(student[key], teacher[key], rtol=0, atol=0)
    video_keys = [key for key in student if key.startswith("video_tower.")]
    assert any(student[key].shape != teacher[key].shape or not torch.equal(student[key], teacher[key])
               for key in video_keys)


def test_init_from_teacher_copies_then_trains_and_refuses_a_mismatch(trained_teacher, tiny_dataset):
    from modeling_mckd import MCKDConfig, MCKDModel, MCKDProcessor
    from modeling_mckd.runner import copy_towers_from_teacher

    teacher = MCKDModel.from_pretrained(trained_teacher)
    processor = MCKDProcessor.from_pretrained(trained_teacher)
    student = MCKDModel(MCKDConfig.student_preset(**STUDENT_WITH_TEACHER_TEXT, vocab_size=teacher.config.vocab_size))
    assert copy_towers_from_teacher(student, processor, teacher, processor, "text") == ["text"]
    for (name, copied), original in zip(student.text_tower.named_parameters(), teacher.text_tower.parameters()):
        assert torch.equal(copied, original), name
        assert copied.requires_grad and copied.data_ptr() != original.data_ptr(), name  # a trainable copy

    mismatched = MCKDModel(MCKDConfig.student_preset(**TINY_STUDENT, vocab_size=teacher.config.vocab_size))
    with pytest.raises(ValueError, match=r"'text'.*another shape.*text_\* and projection_dim"):
        copy_towers_from_teacher(mismatched, processor, teacher, processor, "text", teacher_name="T")
    with pytest.raises(ValueError, match="video tower cannot be copied"):
        copy_towers_from_teacher(student, processor, teacher, processor, "video")
    with pytest.raises(ValueError, match=r"'audio'.*extra modality that both"):
        copy_towers_from_teacher(student, processor, teacher, processor, "audio")

    class OtherTokenizer:
        @staticmethod
        def get_vocab():
            return {"[PAD]": 0}

    class OtherProcessor:
        tokenizer = OtherTokenizer()

    with pytest.raises(ValueError, match="tokenizer differs"):
        copy_towers_from_teacher(student, OtherProcessor(), teacher, processor, "text")


def test_kd_parts_needs_fused_models_and_says_which_fuses_nothing(trained_teacher, tiny_dataset, tmp_path):
    distill = load_script("distill")
    with pytest.raises(ValueError, match="--kd_parts distils the parts.*student fuses nothing"):
        distill.main(common_args(tiny_dataset, tmp_path / "x", teacher=trained_teacher, kd_parts="true", max_steps=1,
                                 model_overrides=json.dumps(TINY_STUDENT)))


def test_kd_anchor_weight_needs_the_teachers_space_and_its_cache(trained_teacher, tiny_dataset, tmp_path):
    distill = load_script("distill")
    with pytest.raises(ValueError, match="student's projection_dim is 16 and .*'s is 32"):
        distill.main(common_args(tiny_dataset, tmp_path / "x", teacher=trained_teacher, kd_anchor_weight=1,
                                 max_steps=1, model_overrides=json.dumps(TINY_STUDENT)))
    same_space = json.dumps({**TINY_STUDENT, "projection_dim": 32})
    with pytest.raises(ValueError, match="--kd_anchor_weight .* needs --teacher_frame_sampling uniform"):
        distill.main(common_args(tiny_dataset, tmp_path / "y", teacher=trained_teacher, kd_anchor_weight=1,
                                 teacher_frame_sampling="random", max_steps=1, model_overrides=same_space))
    output_dir = tmp_path / "anchored"
    distill.main(common_args(tiny_dataset, output_dir, teacher=trained_teacher, kd_anchor_weight=0.5, max_steps=2,
                             eval_strategy="no", model_overrides=same_space))
    history = json.loads((output_dir / "training_history.json").read_text())
    assert all(step["loss/distillation_anchor"] > 0 for step in history)


def test_init_from_teacher_needs_a_teacher(tiny_dataset, tmp_path):
    distill = load_script("distill")
    with pytest.raises(ValueError, match="--init_from_teacher needs --teacher"):
        distill.main(common_args(tiny_dataset, tmp_path / "x", kd_weight=0, disc_weight=0, max_steps=1,
                                 init_from_teacher="text", model_overrides=json.dumps(TINY_STUDENT)))


def test_ranking_only_baseline_needs_no_teacher(tiny_dataset, tmp_path):
    distill = load_script("distill")
    output_dir = tmp_path / "baseline"
    distill.main(common_args(tiny_dataset, output_dir, kd_weight=0, disc_weight=0, max_steps=4,
                             model_overrides=json.dumps(TINY_STUDENT), eval_strategy="no"))
    history = json.loads((output_dir / "training_history.json").read_text())
    assert set(history[0]) >= {"loss/ranking"} and "loss/distillation" not in history[0]


@pytest.fixture(scope="module")
def straight_run(tiny_dataset, tmp_path_factory) -> Path:
    """10 uninterrupted steps with a checkpoint every 3 (checkpoint-3, -6, -9 kept)."""
    train = load_script("train")
    straight = tmp_path_factory.mktemp("straight")
    train.main(common_args(tiny_dataset, straight, max_steps=10, save_steps=3, save_total_limit=5,
                           eval_strategy="no", model_overrides=json.dumps(TINY_TEACHER)))
    return straight


def _interrupted_copy(straight: Path, target: Path, *steps: int) -> Path:
    """A run folder holding only the given checkpoints of the straight run (as if it had stopped)."""
    (target / "checkpoints").mkdir(parents=True)
    for step in steps:
        shutil.copytree(straight / "checkpoints" / f"checkpoint-{step}", target / "checkpoints" / f"checkpoint-{step}")
    return target


def _assert_same_final_weights(one: Path, two: Path) -> None:
    expected = load_file(one / "model.safetensors")
    actual = load_file(two / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


def test_resume_mid_epoch_gives_the_same_weights(tiny_dataset, straight_run, tmp_path):
    train = load_script("train")
    # 32 videos / batch 8 = 4 steps per epoch: checkpoint-6 lies in the middle of epoch 2.
    # The interrupted run: only what had been written by step 6 exists.
    resumed = _interrupted_copy(straight_run, tmp_path / "resumed", 6)
    state = json.loads((resumed / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["batches_done_in_epoch"] == 2 and state["epoch"] == 1
    train.main(common_args(tiny_dataset, resumed, max_steps=10, save_steps=3, eval_strategy="no",
                           resume_from_checkpoint="latest", model_overrides=json.dumps(TINY_TEACHER)))
    _assert_same_final_weights(straight_run, resumed)
    # Only the most recent checkpoints are kept, and none is half-written.
    kept = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert kept == ["checkpoint-6", "checkpoint-9"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.bin"])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_dataset, straight_run, tmp_path, caplog, damaged):
    train = load_script("train")
    resumed = _interrupted_copy(straight_run, tmp_path / "resumed", 3, 6)
    bad = resumed / "checkpoints" / "checkpoint-6" / damaged
    _truncate(bad)
    with caplog.at_level("WARNING", logger="modeling_mckd.training"):
        train.main(common_args(tiny_dataset, resumed, max_steps=10, save_steps=3, eval_strategy="no",
                               resume_from_checkpoint="latest", model_overrides=json.dumps(TINY_TEACHER)))
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert str(bad) in warnings and "checkpoint-3" in warnings
    # Resumed from step 3 (the damaged step-6 checkpoint was not used): the same weights as the straight run.
    _assert_same_final_weights(straight_run, resumed)


def test_corrupt_named_checkpoint_is_an_error_naming_the_file(tiny_dataset, straight_run, tmp_path):
    from modeling_mckd.training import CorruptCheckpointError, verify_checkpoint

    train = load_script("train")
    resumed = _interrupted_copy(straight_run, tmp_path / "resumed", 6)
    checkpoint = resumed / "checkpoints" / "checkpoint-6"
    assert verify_checkpoint(checkpoint).global_step == 6  # intact before the damage
    bad = checkpoint / "optimizer.bin"
    _truncate(bad)
    args = common_args(tiny_dataset, resumed, max_steps=10, eval_strategy="no",
                       model_overrides=json.dumps(TINY_TEACHER))
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(bad))):
        train.main(args + ["--resume_from_checkpoint", str(checkpoint)])
    # "latest" with nothing complete left: the same error, not a traceback from inside accelerate
    with pytest.raises(CorruptCheckpointError, match="no complete checkpoint.*optimizer.bin"):
        train.main(args + ["--resume_from_checkpoint", "latest"])
    # One damaged byte inside an archive (same length) is caught by its checksum.
    _interrupted_copy(straight_run, tmp_path / "flipped", 6)
    flipped = tmp_path / "flipped" / "checkpoints" / "checkpoint-6" / "optimizer.bin"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="optimizer.bin"):
        verify_checkpoint(flipped.parent)


def test_non_finite_loss_stops_with_the_step(tiny_dataset, tmp_path, monkeypatch):
    from modeling_mckd import objectives

    original = objectives.TeacherObjective.__call__
    calls = {"n": 0}

    def poisoned(self, model, batch):
        loss, logs = original(self, model, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), logs

    monkeypatch.setattr(objectives.TeacherObjective, "__call__", poisoned)
    train = load_script("train")
    output_dir = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match="step 3"):
        train.main(common_args(tiny_dataset, output_dir, max_steps=6, save_steps=2, eval_strategy="no",
                               model_overrides=json.dumps(TINY_TEACHER)))
    assert (output_dir / "checkpoints" / "checkpoint-2").is_dir()


def test_undecodable_clips_are_skipped_counted_and_bounded(tiny_dataset, tmp_path):
    from datasets import load_from_disk

    dataset = load_from_disk(str(tiny_dataset))
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"not a video at all")
    train_split = dataset["train"]
    paths = list(train_split["video"])
    paths[0] = str(broken_video)
    dataset["train"] = train_split.remove_columns("video").add_column("video", paths)
    broken = tmp_path / "broken_dataset"
    dataset.save_to_disk(str(broken))
    train = load_script("train")
    results = train.main(common_args(broken, tmp_path / "ok", max_steps=4, eval_strategy="no",
                                     max_decode_failure_fraction=0.5, model_overrides=json.dumps(TINY_TEACHER)))
    assert results["decode_failures"] == 1
    with pytest.raises(RuntimeError, match="could not be decoded"):
        train.main(common_args(broken, tmp_path / "fail", max_steps=4, eval_strategy="no",
                               max_decode_failure_fraction=0.0, model_overrides=json.dumps(TINY_TEACHER)))


def test_gradient_accumulation_counts_optimizer_steps_and_tensorboard_logs(tiny_dataset, tmp_path):
    train = load_script("train")
    output_dir = tmp_path / "accumulate"
    results = train.main(common_args(tiny_dataset, output_dir, max_steps=2, gradient_accumulation_steps=2,
                                     per_device_train_batch_size=4, eval_strategy="no", logging_steps=1,
                                     report_to="tensorboard", model_overrides=json.dumps(TINY_TEACHER)))
    # 2 optimiser steps of 2 micro-batches of 4 videos each.
    assert results["global_step"] == 2
    assert len(losses(output_dir)) == 2
    state = json.loads((output_dir / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["batches_done_in_epoch"] == 4
    assert list((output_dir / "runs").rglob("events.out.tfevents.*")), "no tensorboard event file"


def test_config_file_with_cli_override(tiny_dataset, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": str(tiny_dataset), "output_dir": str(tmp_path / "from_yaml"), "max_steps": 50,
        "report_to": "none", "disable_tqdm": True, "eval_strategy": "no", "image_size": 32,
        "model_overrides": TINY_TEACHER,
    }))
    train = load_script("train")
    results = train.main(["--config", str(config), "--max_steps", "2"])
    assert results["global_step"] == 2


def _launch_two_processes(script: str, args: list[str], env: dict, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), str(REPO / script), *args],
        env=env, cwd=REPO, capture_output=True, text=True,
    )


def _assert_same_gradients(one: Path, two: Path) -> None:
    expected, actual = load_file(one), load_file(two)
    assert expected.keys() == actual.keys() and expected
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=name)


def test_two_processes_match_one_process_gradients(tiny_dataset, tmp_path):
    """DDP over 2 CPU processes (gloo) gives the gradients of 1 process on the same global batch."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    base = ["--max_steps", "1", "--eval_strategy", "no", "--model_overrides", json.dumps(TINY_TEACHER)]
    subprocess.run(
        [sys.executable, str(REPO / "train.py"), *common_args(tiny_dataset, tmp_path / "p1", per_device_train_batch_size=16),
         *base],
        check=True, env={**env, "MCKD_DUMP_FIRST_STEP_GRADS": str(one)}, cwd=REPO, capture_output=True,
    )
    launched = _launch_two_processes(
        "train.py", [*common_args(tiny_dataset, tmp_path / "p2", per_device_train_batch_size=8), *base],
        {**env, "MCKD_DUMP_FIRST_STEP_GRADS": str(two)}, 29517,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    _assert_same_gradients(one, two)


# A tiny teacher that fuses the clip's audio, with a GRU text tower like the default student's (so
# init_from_teacher text,audio finds towers of its shapes).
TINY_AUDIO_TEACHER = {
    "num_frames": 4, "projection_dim": 32, "vision_hidden_size": 16, "temporal_aggregator": "mean",
    "builtin_text_arch": "gru", "text_hidden_size": 32, "text_num_layers": 2,
    "extra_modalities": {"audio": {"feature_dim": "auto"}}, "fuse_modalities": ["audio"],
}
# A student with configs/synthetic_student.yaml's architecture at tiny sizes, plus a fused audio part (so that
# kd_parts and audio inputs are exercised too; the shipped student is frames + text).
TINY_DEFAULT_STUDENT = {
    "num_frames": 4, "vision_hidden_size": 8, "vision_num_layers": 3, "vision_frame_difference": True,
    "vision_spatial_pooling": "max", "temporal_aggregator": "gru", "builtin_text_arch": "gru", "text_hidden_size": 32,
    "text_num_layers": 2, "projection_dim": 32, "extra_modalities": {"audio": {"feature_dim": "auto"}},
    "fuse_modalities": ["audio"],
}


@pytest.fixture(scope="session")
def audio_teacher(tiny_dataset, tmp_path_factory) -> Path:
    """Trained from an old-style YAML config that sets teacher_part_pairs (now a train.py-only option)."""
    output_dir = tmp_path_factory.mktemp("audio_teacher")
    config = output_dir.parent / "audio_teacher.yaml"
    config.write_text(yaml.safe_dump({"teacher_part_pairs": False, "model_overrides": TINY_AUDIO_TEACHER}))
    train = load_script("train")
    train.main(["--config", str(config), *common_args(tiny_dataset, output_dir, max_steps=2, eval_strategy="no",
                                                      eval_split="none", test_split="none")])
    return output_dir


def test_teacher_part_pairs_is_a_train_py_option_kept_from_old_configs(audio_teacher, tiny_dataset, tmp_path, capsys):
    # the config's `teacher_part_pairs: false` reached the objective: the fused model's parts were not contrasted
    history = json.loads((audio_teacher / "training_history.json").read_text())
    assert {key for key in history[0] if key.startswith("loss/")} == {"loss/text-video", "loss/text-audio",
                                                                       "loss/video-audio"}
    distill = load_script("distill")
    for spelling in (["--teacher_part_pairs", "false"], ["--teacher-part-pairs=true"], ["--no_teacher_part_pairs"]):
        with pytest.raises(ValueError, match=r"--teacher_part_pairs is an option of train\.py"):
            distill.main([*common_args(tiny_dataset, tmp_path / "x", max_steps=1), *spelling])
    config = tmp_path / "student.yaml"
    config.write_text("teacher_part_pairs: true\n")
    with pytest.raises(ValueError, match=rf"--config {config}: `teacher_part_pairs` is an option of train\.py"):
        distill.main(["--config", str(config), *common_args(tiny_dataset, tmp_path / "x", max_steps=1)])
    assert not (tmp_path / "x").exists()
    helps = {}
    for script in ("train", "distill"):
        with pytest.raises(SystemExit):
            load_script(script).main(["--help"])
        helps[script] = capsys.readouterr().out
    assert "--teacher_part_pairs" in helps["train"] and "--teacher_part_pairs" not in helps["distill"]


def test_a_launch_the_accelerator_does_not_see_is_refused(monkeypatch):
    """The root cause of 2-process distillation training each rank alone: a process state set up as single-process
    before the trainer. The trainer refuses it instead of training without DDP."""
    from modeling_mckd.training import check_launch

    class SingleProcess:
        num_processes = 1
        distributed_type = "NO"

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"launched as 2 processes .* the Accelerator runs 1"):
        check_launch(SingleProcess())
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_launch(SingleProcess())


def test_checkpoint_is_renamed_only_after_every_rank_has_written(tmp_path):
    """Every rank writes into the temporary checkpoint (its random_states_<rank>.pkl) and save_state does not wait
    for the others: the main process may rename the folder only after a barrier that follows its own save_state,
    or another rank's write lands in a folder that is gone ("No such file or directory")."""
    import types

    from modeling_mckd.training import RetrievalTrainer, TrainState

    root = tmp_path / "run" / "checkpoints"
    events = []

    class MainProcessOfTwo:
        is_main_process = True

        def save_state(self, path):
            Path(path).mkdir(parents=True)
            (Path(path) / "random_states_0.pkl").write_bytes(b"")
            events.append("save_state")

        def wait_for_everyone(self):
            # what the other rank would find if it were still writing now
            events.append(("barrier", sorted(p.name for p in root.iterdir()) if root.is_dir() else []))

    trainer = object.__new__(RetrievalTrainer)
    trainer.accelerator, trainer.output_dir = MainProcessOfTwo(), tmp_path / "run"
    trainer.run_args = types.SimpleNamespace(save_total_limit=2)
    final = trainer.save_checkpoint(TrainState(global_step=4))
    after_save = events[events.index("save_state") + 1]
    assert after_save == ("barrier", [".tmp-checkpoint-4"]), events
    assert final == root / "checkpoint-4" and sorted(p.name for p in root.iterdir()) == ["checkpoint-4"]
    assert json.loads((final / "trainer_state.json").read_text())["global_step"] == 4


DISTILLATION_STUDENTS = {
    # the default student config's training settings, a tiny student that fuses audio like its teacher
    "default": ["--config", str(REPO / "configs/synthetic_student.yaml"),
                "--model_overrides", json.dumps(TINY_DEFAULT_STUDENT)],
    # the plain student preset: frames + text, nothing fused
    "plain": ["--model_overrides", json.dumps(TINY_STUDENT), "--captions_per_video", "2"],
}


@pytest.mark.parametrize("teacher_frame_sampling", ["uniform", "random"])
@pytest.mark.parametrize("student", sorted(DISTILLATION_STUDENTS))
def test_two_process_distillation_has_one_process_gradients_and_writes_once(audio_teacher, tiny_dataset, tmp_path,
                                                                             monkeypatch, student,
                                                                             teacher_frame_sampling):
    """accelerate launch distill.py with 2 CPU processes (gloo), a student distilled from an audio-fusing teacher
    (cached, or run on each batch).

    The right reference: the student's losses (ranking, distillation, discrimination) are in-batch per process, not
    gathered, so DDP's average of the ranks' gradients is the mean of the per-half-batch gradients: one process
    that accumulates the same two half-batches (gradient_accumulation_steps 2, which halves each loss), not one
    process on the batch of 16 (the teacher's gathered contrastive loss has that one). Then 3 steps with a
    checkpoint at each: every rank's files in each, no temporary folder left, results printed once."""
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    base = [*DISTILLATION_STUDENTS[student], "--teacher", str(audio_teacher),
            "--teacher_frame_sampling", teacher_frame_sampling, "--eval_strategy", "no", "--eval_split", "none",
            "--test_split", "none"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    monkeypatch.setenv("MCKD_DUMP_FIRST_STEP_GRADS", str(one))
    load_script("distill").main([*base, *common_args(tiny_dataset, tmp_path / "p1", per_device_train_batch_size=8,
                                                     gradient_accumulation_steps=2, max_steps=1)])
    output_dir = tmp_path / "p2"
    port = 29520 + 2 * sorted(DISTILLATION_STUDENTS).index(student) + (teacher_frame_sampling == "random")
    launched = _launch_two_processes(
        "distill.py", [*base, *common_args(tiny_dataset, output_dir, per_device_train_batch_size=8, max_steps=3,
                                           save_steps=1, save_total_limit=3)],
        {**env, "MCKD_DUMP_FIRST_STEP_GRADS": str(two)}, port,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    expected, actual = load_file(one), load_file(two)
    assert expected.keys() == actual.keys() and "logit_scale" not in actual  # frozen: the objective never reads it
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-4, msg=name)
    assert launched.stdout.count('"role": "student"') == 1, launched.stdout[-2000:]
    history = json.loads((output_dir / "training_history.json").read_text())
    assert [row["step"] for row in history] == [1, 2, 3]
    assert json.loads((output_dir / "all_results.json").read_text())["global_step"] == 3
    checkpoints = output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    for checkpoint in checkpoints.iterdir():
        for name in ("random_states_0.pkl", "random_states_1.pkl", "trainer_state.json", "model.safetensors"):
            assert (checkpoint / name).is_file(), checkpoint / name


def _hub_server_module():
    spec = importlib.util.spec_from_file_location("mckd_hub_server", REPO / "tests" / "hub_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def test_push_to_hub_uploads_the_trained_folder(tiny_dataset, tmp_path):
    """train.py --push_to_hub drives the real huggingface_hub client against a loopback Hub stand-in."""
    hub_server = _hub_server_module()
    secret = "hf_trainpushsecret0123456789"
    output_dir = tmp_path / "pushed"
    with hub_server.HubStandIn() as server:
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home"),
               "HF_TOKEN": secret, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        completed = subprocess.run(
            [sys.executable, str(REPO / "train.py"),
             *common_args(tiny_dataset, output_dir, max_steps=2, eval_strategy="no", save_steps=1,
                          model_overrides=json.dumps(TINY_TEACHER), push_to_hub="true", hub_model_id="someone/tiny-teacher")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert secret not in completed.stdout + completed.stderr
        commits = [c for c in server.commits if c.repo_id == "someone/tiny-teacher"]
        assert len(commits) == 1
        files = commits[0].files
        for name in ("config.json", "model.safetensors", "README.md", "all_results.json", "processor_config.json"):
            assert files[name] == (output_dir / name).read_bytes(), name
        assert not any(name.startswith("checkpoints/") for name in files)


def test_push_without_token_fails_before_training(tiny_dataset, tmp_path, monkeypatch):
    from modeling_mckd.hub import HubAuthError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    train = load_script("train")
    output_dir = tmp_path / "never"
    with pytest.raises(HubAuthError, match="no token"):
        train.main(common_args(tiny_dataset, output_dir, max_steps=2, push_to_hub="true", hub_model_id="someone/x",
                               model_overrides=json.dumps(TINY_TEACHER)))
    assert not (output_dir / "checkpoints").exists()


def test_default_configs_let_the_student_start_from_the_teachers_towers(tiny_dataset):
    """configs/synthetic_*.yaml: the deployable student sees frames and text only (no audio tower, nothing
    fused, no kd_parts) and starts from scratch, while the teacher fuses audio and saves its visual part; the
    student's text tower has the teacher's shapes, so the protocol's tower rows (init_from_teacher text) work."""
    from datasets import load_from_disk

    from modeling_mckd.arguments import (DataArguments, DistillArguments, ModelArguments, RunArguments,
                                         TeacherArguments, parse_arguments)
    from modeling_mckd.runner import build_model_and_processor, copy_towers_from_teacher

    train = load_from_disk(str(tiny_dataset))["train"]
    built, parsed_by_role = {}, {}
    for role in ("teacher", "student"):
        classes = (ModelArguments, DataArguments, RunArguments) + \
            ((DistillArguments,) if role == "student" else (TeacherArguments,))
        parsed = parse_arguments(classes, ["--config", str(REPO / f"configs/synthetic_{role}.yaml"),
                                           "--dataset", str(tiny_dataset)])
        built[role] = build_model_and_processor(parsed[0], parsed[1], train)
        parsed_by_role[role] = parsed
    distill_args, teacher_args = parsed_by_role["student"][-1], parsed_by_role["teacher"][-1]
    assert distill_args.init_from_teacher == "" and teacher_args.save_visual_part
    (student, student_processor), (teacher, teacher_processor) = built["student"], built["teacher"]
    copied = copy_towers_from_teacher(student, student_processor, teacher, teacher_processor, "text")
    assert copied == ["text"]
    assert not distill_args.kd_parts and not student.config.fuse_modalities and not student.config.extra_modalities
    assert teacher.config.fuse_modalities == ["audio"]
    assert len(student.modality_towers) == 0
    assert student.config.vision_frame_difference and teacher.config.vision_frame_difference


def test_train_saves_the_visual_part_of_a_fused_teacher(tiny_dataset, tmp_path):
    """--save_visual_part: the frames + text model inside a fused teacher, as its own folder; its results are the
    teacher's visual_only numbers; a model that fuses nothing is refused before any training."""
    from modeling_mckd import MCKDModel

    train = load_script("train")
    output_dir = tmp_path / "teacher"
    results = train.main(["--model_overrides", json.dumps(TINY_AUDIO_TEACHER), "--save_visual_part", "true",
                          *common_args(tiny_dataset, output_dir, max_steps=2, eval_strategy="no", test_split="none")])
    part_dir = output_dir / "visual_part"
    assert results["visual_part_dir"] == str(part_dir)
    part = json.loads((part_dir / "all_results.json").read_text())
    assert part["validation_t2v_R@1"] == results["validation_visual_only_t2v_R@1"]
    assert part["fused_validation_t2v_R@1"] == results["validation_t2v_R@1"]
    model = MCKDModel.from_pretrained(part_dir)
    assert model.config.fuse_modalities == [] and "audio" not in model.config.extra_modalities
    plain = {k: v for k, v in TINY_AUDIO_TEACHER.items() if k not in ("extra_modalities", "fuse_modalities")}
    with pytest.raises(ValueError, match="fuses nothing"):
        train.main(["--model_overrides", json.dumps(plain), "--save_visual_part", "true",
                    *common_args(tiny_dataset, tmp_path / "plain", max_steps=1)])
    assert not (tmp_path / "plain" / "model.safetensors").exists()
