"""The command lines (`modeling_mckd.cli`): every option has help, the console scripts of pyproject.toml
exist, and expected problems are one line on stderr with a non-zero status, not a traceback."""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from pathlib import Path

import pytest
from transformers import HfArgumentParser

from modeling_mckd import arguments, cli

REPO = Path(__file__).resolve().parents[1]
TRAIN_TYPES = (arguments.ModelArguments, arguments.DataArguments, arguments.RunArguments, arguments.TeacherArguments)
DISTILL_TYPES = (arguments.ModelArguments, arguments.DataArguments, arguments.RunArguments, arguments.DistillArguments)


@pytest.mark.parametrize("script, types", [("train.py", TRAIN_TYPES), ("distill.py", DISTILL_TYPES)])
def test_every_option_of_the_training_scripts_has_help(script, types):
    parser = HfArgumentParser(types)
    options = [action for action in parser._actions if action.option_strings and action.dest != "help"]
    assert len(options) >= 40  # the parser really holds the dataclasses' fields
    missing = [action.option_strings[0] for action in options
               if not (action.help or "").strip() or action.help == argparse_suppress()]
    assert not missing, f"{script} --help: options without help: {missing}"


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


def test_every_argument_dataclass_field_has_help():
    # every dataclass of arguments.py, including ones a script does not parse yet
    classes = [value for value in vars(arguments).values()
               if dataclasses.is_dataclass(value) and value.__module__ == arguments.__name__]
    assert {c.__name__ for c in classes} >= {"DataArguments", "ModelArguments", "RunArguments", "DistillArguments"}
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
               if not str(f.metadata.get("help", "")).strip()]
    assert not missing, missing


def test_console_scripts_of_pyproject_are_the_cli_entry_points():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {name: f"modeling_mckd.cli:{function}" for name, function in cli.CONSOLE_SCRIPTS.items()}
    assert {"mckd-train", "mckd-distill", "mckd-search", "mckd-app"} <= set(scripts)
    for function in cli.CONSOLE_SCRIPTS.values():
        assert callable(getattr(cli, function)), function


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("train_main", "--teacher_part_pairs"),
        ("distill_main", "--kd_weight"),
        ("search_main", "{index,query}"),
        ("prepare_msrvtt_main", "--output_dir"),
        ("prepare_msvd_main", "--output_dir"),
        ("prepare_vatex_main", "--output_dir"),
        ("prepare_tgif_main", "--output_dir"),
        ("prepare_features_main", "--output_dir"),
        ("prepare_synthetic_main", "--output_dir"),
    ],
)
def test_help_of_each_entry_point(entry, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        getattr(cli, entry)(["--help"])
    assert exit_.value.code == 0
    assert expected in capsys.readouterr().out


def test_training_input_errors_are_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mckd-train"])
    assert cli.train_main(["--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"mckd-train: error: --config {tmp_path / 'missing.yaml'}: no such file"]
    monkeypatch.setattr(sys, "argv", ["distill.py"])
    assert cli.distill_main(["--teacher_part_pairs", "false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distill.py: error: --teacher_part_pairs is an option of train.py") and err.count("\n") == 1


def test_search_errors_are_one_line_with_status_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mckd-search"])
    assert cli.search(["query", "--index", str(tmp_path / "nowhere"), "a dog"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mckd-search query: error:") and "nowhere" in err[0]


def test_prepare_errors_are_one_line_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.prepare_tgif_main(["--tsv", str(tmp_path / "missing.tsv"), "--splits_dir", str(tmp_path),
                               "--output_dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing.tsv" in err[0]


def test_app_entry_point_refuses_a_missing_index(tmp_path):
    pytest.importorskip("gradio")
    with pytest.raises(SystemExit, match="nowhere.*does not exist"):
        cli.app_main(["--index", str(tmp_path / "nowhere")])
