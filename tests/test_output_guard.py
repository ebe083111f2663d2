"""No command that writes a folder may destroy what the project did not write (issue 14, item 2).

Every dataset CLI is driven in process with tiny generated annotations: it must refuse the current
directory, a folder above it, an input folder and a non-empty folder it did not write, leaving every
file byte for byte as it was, and still replace its own earlier output.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from modeling_mckd.data_prep.common import make_row, run_cli, write_dataset_dict
from modeling_mckd.output_guard import OutputFolderError, check_output_dir, is_saved_dataset_dict


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: file -> bytes, folder -> None."""
    return {
        path.relative_to(folder).as_posix(): (path.read_bytes() if path.is_file() else None)
        for path in sorted(folder.rglob("*"))
    }


def foreign_folder(folder: Path) -> Path:
    """A folder of someone's own files (and a subfolder), which no writer may remove."""
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub" / "annotations.csv").write_text("video_id\nv1\n")
    return folder


# -- the tiny inputs of each CLI -----------------------------------------------------------------


def msrvtt_args(inputs: Path) -> list[str]:
    videos = [{"video_id": f"video{i}", "split": split, "id": i} for i, split in enumerate(["train", "validate", "test"])]
    sentences = [{"caption": f"clip {i}", "video_id": f"video{i}", "sen_id": i} for i in range(3)]
    path = inputs / "MSRVTT_data.json"
    path.write_text(json.dumps({"videos": videos, "sentences": sentences}))
    return ["--annotations", str(path)]


def msvd_args(inputs: Path) -> list[str]:
    folder = inputs / "TextData"
    folder.mkdir()
    for name, clip in (("msvdtrain", "a_1_2"), ("msvdval", "b_3_4"), ("msvdtest", "c_5_6")):
        (folder / f"{name}.caption.txt").write_text(f"{clip}#0 a caption of {clip}\n")
    return ["--captions", str(folder)]


def vatex_args(inputs: Path) -> list[str]:
    def entry(video_id):
        return {"videoID": video_id, "enCap": [f"{video_id} says {k}" for k in range(10)]}

    training, validation = inputs / "vatex_training.json", inputs / "vatex_validation.json"
    training.write_text(json.dumps([entry("abc_000001_000011"), entry("def_000002_000012")]))
    validation.write_text(json.dumps([entry(f"v{n}_000000_000010") for n in range(4)]))
    return ["--training_json", str(training), "--validation_json", str(validation)]


def tgif_args(inputs: Path) -> list[str]:
    gif = "https://38.media.tumblr.com/{}/tumblr_{}_250.gif"
    urls = [gif.format(f"h{n}", name) for n, name in enumerate(["a1", "b2", "c3"])]
    tsv = inputs / "tgif.tsv"
    tsv.write_text("".join(f"{url}\tcaption {n}\n" for n, url in enumerate(urls)))
    splits = inputs / "splits"
    splits.mkdir()
    for name, url in zip(("train", "val", "test"), urls):
        (splits / f"{name}.txt").write_text(url + "\n")
    return ["--tsv", str(tsv), "--splits_dir", str(splits)]


def cli_main(name: str):
    from importlib import import_module

    return import_module(f"modeling_mckd.data_prep.{name}").main


DATASET_CLIS = {"msrvtt": msrvtt_args, "msvd": msvd_args, "vatex": vatex_args, "tgif": tgif_args}


@pytest.fixture(params=sorted(DATASET_CLIS))
def cli(request, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return request.param, DATASET_CLIS[request.param](inputs), inputs


def run_refused(capsys, main, argv) -> str:
    """Run the CLI as its script does; return its one-line error (exit status 2)."""
    capsys.readouterr()  # drop what earlier runs printed (progress bars)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --output_dir ") and "\n" not in err
    return err


def test_dataset_clis_refuse_the_current_directory_and_above(cli, tmp_path, monkeypatch, capsys):
    name, argv, _inputs = cli
    work = foreign_folder(tmp_path / "work")
    monkeypatch.chdir(work)
    before, around = snapshot(work), snapshot(tmp_path)
    assert "is the current directory" in run_refused(capsys, cli_main(name), [*argv, "--output_dir", "."])
    assert "above the current directory" in run_refused(capsys, cli_main(name), [*argv, "--output_dir", ".."])
    assert snapshot(work) == before and snapshot(tmp_path) == around


def test_dataset_clis_refuse_a_foreign_folder_and_their_inputs(cli, tmp_path, capsys):
    name, argv, inputs = cli
    foreign = foreign_folder(tmp_path / "mine")
    before, input_files = snapshot(foreign), snapshot(inputs)
    err = run_refused(capsys, cli_main(name), [*argv, "--output_dir", str(foreign)])
    assert str(foreign) in err and "is not empty" in err
    assert snapshot(foreign) == before
    # the folder holding the annotations, and the annotation file itself
    assert "contains the input" in run_refused(capsys, cli_main(name), [*argv, "--output_dir", str(inputs)])
    assert "is the input" in run_refused(capsys, cli_main(name), [*argv, "--output_dir", argv[1]])
    assert snapshot(inputs) == input_files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "mine"]  # no staging folder left


def test_dataset_clis_replace_their_own_output_only(cli, tmp_path, capsys):
    name, argv, _inputs = cli
    out = tmp_path / "out"
    first = cli_main(name)([*argv, "--output_dir", str(out)])
    assert is_saved_dataset_dict(out)
    (out / "train" / "state.json").touch()  # a rerun must replace the folder, not merge into it
    second = cli_main(name)([*argv, "--output_dir", str(out)])
    assert {s: len(d) for s, d in second.items()} == {s: len(d) for s, d in first.items()}
    assert sorted(datasets.load_from_disk(str(out))) == sorted(first)
    # someone's file inside the dataset folder makes it theirs too: refused, kept
    (out / "README.md").write_text("my notes on this dataset\n")
    before = snapshot(out)
    assert "is not empty" in run_refused(capsys, cli_main(name), [*argv, "--output_dir", str(out)])
    assert snapshot(out) == before


# -- write_dataset_dict and the guard itself -------------------------------------------------------

ROWS = {"train": [make_row("v1", ["a caption"], "train")]}


def test_write_dataset_dict_refuses_home_root_and_non_folders(tmp_path, monkeypatch):
    home = foreign_folder(tmp_path / "home")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputFolderError, match="is the home folder"):
        write_dataset_dict(ROWS, home)
    with pytest.raises(OutputFolderError, match="above the home folder"):
        write_dataset_dict(ROWS, tmp_path)
    with pytest.raises(OutputFolderError, match="filesystem root"):
        write_dataset_dict(ROWS, "/")
    a_file = tmp_path / "elsewhere.txt"
    a_file.write_text("data")
    monkeypatch.setenv("HOME", str(tmp_path / "nobody"))
    with pytest.raises(OutputFolderError, match="not a plain folder"):
        write_dataset_dict(ROWS, a_file)
    link = tmp_path / "link"
    link.symlink_to(home, target_is_directory=True)
    with pytest.raises(OutputFolderError, match="not a plain folder"):
        write_dataset_dict(ROWS, link)
    assert a_file.read_text() == "data" and (home / "notes.txt").read_text() == "my notes\n"
    with pytest.raises(OutputFolderError, match="contains the input"):
        write_dataset_dict(ROWS, tmp_path / "new", inputs=[tmp_path / "new" / "videos"])


def test_guard_accepts_absent_empty_and_own_folders(tmp_path):
    assert check_output_dir(tmp_path / "absent") == (tmp_path / "absent").resolve()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty") == (tmp_path / "empty").resolve()
    write_dataset_dict(ROWS, tmp_path / "ds")
    assert check_output_dir(tmp_path / "ds", is_own=is_saved_dataset_dict) == (tmp_path / "ds").resolve()
    with pytest.raises(OutputFolderError, match="is not empty"):
        check_output_dir(tmp_path / "ds")  # without is_own nothing non-empty is accepted
    # a dataset_dict.json naming a split that is not there, or a split folder that is a link: not ours
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    (tmp_path / "fake" / "train").symlink_to(tmp_path / "ds" / "train")
    assert not is_saved_dataset_dict(tmp_path / "fake")
    (tmp_path / "fake" / "dataset_dict.json").write_text("not json")
    assert not is_saved_dataset_dict(tmp_path / "fake")


# -- the synthetic benchmark -----------------------------------------------------------------------

SYNTHETIC_TINY = ["--num_train", "2", "--num_val", "1", "--num_test", "1", "--num_frames", "4",
                  "--frame_size", "16", "--workers", "1"]


def test_synthetic_refuses_the_current_directory_with_files(tmp_path, monkeypatch, capsys):
    from modeling_mckd.data_prep import synthetic

    work = foreign_folder(tmp_path / "work")
    monkeypatch.chdir(work)
    before = snapshot(work)
    assert synthetic.main(["--output_dir", ".", *SYNTHETIC_TINY]) == 2
    assert synthetic.main(["--output_dir", str(foreign_folder(tmp_path / "mine")), *SYNTHETIC_TINY]) == 2
    err = capsys.readouterr().err
    assert "is the current directory" in err and "synthetic benchmark folder" in err
    assert snapshot(work) == before


@pytest.mark.parametrize("where", [".", "elsewhere"])
def test_synthetic_overwrite_never_deletes_a_folder_it_did_not_write(tmp_path, monkeypatch, where):
    from modeling_mckd.data_prep import synthetic

    work = tmp_path / "work"
    (work / "videos").mkdir(parents=True)
    (work / "videos" / "holiday.mp4").write_bytes(b"my video")
    monkeypatch.chdir(work if where == "." else tmp_path)
    code = synthetic.main(["--output_dir", "." if where == "." else str(work), "--overwrite", *SYNTHETIC_TINY])
    assert code != 0
    assert (work / "videos" / "holiday.mp4").read_bytes() == b"my video"
    assert sorted(p.name for p in work.rglob("*")) == ["holiday.mp4", "videos"]
