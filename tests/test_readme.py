"""The README's code runs (issue 14, item 8).

Its ```python blocks run against a tiny teacher and a tiny frames + text student trained here (the README's
model folder and clip names are replaced by the test's); every `python X.py` / `accelerate launch X.py`
command of its ```bash blocks names a script that exists and only options that its `--help` lists, and
every console script it names is one of pyproject.toml.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import json
import re
import runpy
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
README_MODEL = "runs/protocol/seed-0/mckd_full"  # the protocol's headline student folder
README_CLIPS = ("clip_a.mp4", "clip_b.mp4")
TINY_TEACHER = {"num_frames": 4, "projection_dim": 16, "vision_hidden_size": 8, "text_hidden_size": 16,
                "temporal_aggregator": "mean"}
TINY_STUDENT = {"num_frames": 4, "projection_dim": 16, "vision_hidden_size": 8, "text_hidden_size": 16}


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


# ------------------------------------------------------------------------------------------- python


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic set, a teacher and a frames + text student distilled from it (a few steps each)."""
    from modeling_mckd.arguments import DataArguments, DistillArguments, ModelArguments, RunArguments
    from modeling_mckd.data_prep.synthetic import generate_synthetic
    from modeling_mckd.runner import run_student, run_teacher

    root = tmp_path_factory.mktemp("readme")
    generate_synthetic(root / "synthetic", seed=0, num_train=16, num_val=4, num_test=4, num_frames=8, frame_size=32)
    data = DataArguments(dataset=str(root / "synthetic" / "dataset"), eval_split=None)

    def run(output: str, **extra) -> RunArguments:
        return RunArguments(output_dir=str(root / output), max_steps=2, per_device_train_batch_size=8,
                            per_device_eval_batch_size=8, report_to="none", disable_tqdm=True, eval_strategy="no",
                            seed=0, **extra)

    run_teacher(ModelArguments(model_overrides=json.dumps(TINY_TEACHER), image_size=32), data, run("teacher"))
    run_student(ModelArguments(model_preset="student", model_overrides=json.dumps(TINY_STUDENT), image_size=32),
                dataclasses.replace(data), run("student"), DistillArguments(teacher=str(root / "teacher")))
    clips = sorted((root / "synthetic").rglob("*.mp4"))[:2]
    assert len(clips) == 2
    return {"student": root / "student", "clip_a": clips[0], "clip_b": clips[1]}


def run_block(code: str, cwd: Path, monkeypatch) -> tuple[dict, str]:
    """Run a README block as a script would (its own namespace, in `cwd`); its globals and its stdout."""
    monkeypatch.chdir(cwd)
    namespace = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)  # the README's own code, not input
    return namespace, out.getvalue()


def test_readme_has_the_blocks_this_test_runs():
    blocks = fenced_blocks("python")
    assert len(blocks) == 2, "a ```python block was added or removed: run it here too"
    assert README_MODEL in blocks[0] and all(clip in blocks[0] for clip in README_CLIPS)
    assert "audio_features" not in blocks[0]  # the headline student takes frames and text only
    assert "evaluate.load" in blocks[1]


def test_using_a_trained_model_snippet_runs(trained, tmp_path, monkeypatch):
    code = fenced_blocks("python")[0].replace(README_MODEL, str(trained["student"]))
    for name in README_CLIPS:
        code = code.replace(name, str(trained[name.removesuffix(".mp4")]))
    namespace, printed = run_block(code, tmp_path, monkeypatch)
    model = namespace["model"]
    assert not model.config.fuse_modalities  # the student the snippet is written for
    probabilities = namespace["outputs"].logits_per_text.softmax(dim=-1)
    assert probabilities.shape == (2, 2)
    torch.testing.assert_close(probabilities.sum(dim=-1), torch.ones(2))
    assert printed.startswith("tensor(")
    # The gallery route scores clip_a against the first text as the joint forward pass does (up to its scale).
    scores = namespace["scores"]
    assert scores.shape == (1, 1)
    text, video = namespace["text_embeds"], namespace["video_embeds"]
    cosine = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T
    logits = namespace["outputs"].logits_per_text
    torch.testing.assert_close(logits[0, 0] / logits.new_tensor(model.logit_scale.exp().item()), cosine[0, 0],
                               rtol=1e-4, atol=1e-5)


def test_metrics_snippet_runs(monkeypatch):
    namespace, printed = run_block(fenced_blocks("python")[1], REPO, monkeypatch)
    result = namespace["metric"].compute(predictions=namespace["similarity_rows"],
                                         references=namespace["relevant_indices"], k_values=[1, 5, 10])
    # By hand: query 0 ranks its item first, query 1 second (0.85 > 0.8), query 2 first (0.5 > 0.45 > 0.4).
    assert result["R@1"] == pytest.approx(200 / 3) and result["R@5"] == result["R@10"] == 100
    assert result["MdR"] == 1 and result["MnR"] == pytest.approx(4 / 3)
    assert ast.literal_eval(printed.strip()) == pytest.approx(result)  # what the snippet printed


# ------------------------------------------------------------------------------------------- shell


def shell_commands() -> list[list[str]]:
    """Each command of the ```bash blocks as tokens (continuations joined, comments dropped, && split)."""
    commands = []
    for block in fenced_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                cut = tokens.index("&&") if "&&" in tokens else len(tokens)
                commands.append(tokens[:cut])
                tokens = tokens[cut + 1:]
    return [command for command in commands if command]


def script_invocations() -> dict[tuple[str, ...], set[str]]:
    """(script, subcommand...) -> the --options the README passes to it."""
    found: dict[tuple[str, ...], set[str]] = {}
    for tokens in shell_commands():
        if tokens[0] in {"python", "python3"} and len(tokens) > 1 and tokens[1].endswith(".py"):
            rest = tokens[1:]
        elif tokens[:2] == ["accelerate", "launch"]:
            rest = tokens[next(i for i, t in enumerate(tokens) if t.endswith(".py")):]
        else:
            continue
        script, arguments = rest[0], rest[1:]
        key = (script, arguments[0]) if script == "search.py" and arguments and not arguments[0].startswith("-") else (script,)
        options = {arg.split("=", 1)[0] for arg in arguments if arg.startswith("--")}
        found.setdefault(key, set()).update(options)
    return found


def help_text(script: str, *subcommand: str, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [script, *subcommand, "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(REPO / script), run_name="__main__")
    assert exit_.value.code in (0, None), f"{script} {' '.join(subcommand)} --help exited {exit_.value.code}"
    return capsys.readouterr().out


def test_shell_commands_name_existing_scripts_and_their_options(monkeypatch, capsys):
    invocations = script_invocations()
    scripts = {key[0] for key in invocations}
    # the README shows every command line of the project: a parsing slip here must not pass silently
    assert {"train.py", "distill.py", "search.py", "app.py", "benchmarks/reproduce.py",
            "dataset_scripts/msrvtt.py", "dataset_scripts/features.py"} <= scripts, scripts
    assert ("search.py", "index") in invocations and ("search.py", "query") in invocations
    for key, options in sorted(invocations.items()):
        script, *subcommand = key
        assert (REPO / script).is_file(), f"README runs {script}, which does not exist"
        text = help_text(script, *subcommand, monkeypatch=monkeypatch, capsys=capsys)
        listed = set(re.findall(r"--[A-Za-z0-9][\w-]*", text))
        unknown = sorted(option for option in options if option not in listed)
        assert not unknown, f"README passes {unknown} to {' '.join(key)}, whose --help does not list them"


def test_console_scripts_named_in_the_readme_exist():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    named = set(re.findall(r"(?<![\w/.-])mckd-[a-z]+(?:-[a-z]+)*", README))
    assert {"mckd-train", "mckd-search", "mckd-app", "mckd-prepare-msrvtt"} <= named
    assert named <= set(scripts), sorted(named - set(scripts))
