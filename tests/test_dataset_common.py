"""dataset_scripts.common: schema, atomic writing, caption expansion, file resolution, CLI options."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from modeling_mckd.data_prep.common import (
    CAPTION_FEATURES,
    DATASET_FEATURES,
    AnnotationError,
    MissingVideosError,
    add_common_arguments,
    common_arguments_from_namespace,
    expand_captions,
    index_files,
    make_dataset_dict,
    make_row,
    resolve_videos,
    write_dataset_dict,
)
from modeling_mckd.data_prep.features import attach_side_files

REPO = Path(__file__).resolve().parents[1]


def _rows():
    return {
        "train": [make_row("v1", ["a cat runs", "a cat is running"], "train"), make_row("v2", ["a dog"], "train")],
        "test": [make_row("v3", ["red ball", "a ball", "ball bounces"], "test", audio="/x/v3.npy")],
    }


def test_features_schema():
    assert list(DATASET_FEATURES) == ["video_id", "video", "captions", "audio", "features", "split"]
    assert isinstance(DATASET_FEATURES["captions"], datasets.List)
    assert DATASET_FEATURES["captions"].feature == datasets.Value("string")


def test_write_round_trip_and_description(tmp_path):
    out = tmp_path / "ds"
    written = write_dataset_dict(_rows(), out, description="made by the test")
    loaded = datasets.load_from_disk(str(out))
    assert list(loaded) == ["train", "test"]
    assert loaded["train"].features == DATASET_FEATURES
    assert loaded["train"]["video_id"] == ["v1", "v2"]
    assert loaded["train"]["captions"] == [["a cat runs", "a cat is running"], ["a dog"]]
    assert loaded["test"][0] == {
        "video_id": "v3",
        "video": None,
        "captions": ["red ball", "a ball", "ball bounces"],
        "audio": "/x/v3.npy",
        "features": None,
        "split": "test",
    }
    assert loaded["test"].info.description == "made by the test"
    assert written["train"]["video_id"] == ["v1", "v2"]
    # nothing but the output folder is left next to it (no staging / cache folders)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ds"]


def test_write_replaces_existing_only_when_complete(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    write_dataset_dict(_rows(), out)
    original_save = datasets.DatasetDict.save_to_disk

    def save_then_fail(self, path, **kwargs):  # a crash after (part of) the new copy is on disk
        original_save(self, path, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_dataset_dict({"train": [make_row("w1", ["new"], "train")]}, out)
    monkeypatch.undo()
    assert datasets.load_from_disk(str(out))["train"]["video_id"] == ["v1", "v2"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ds"]
    # a complete new write replaces it
    write_dataset_dict({"validation": [make_row("n1", ["new"], "validation")]}, out)
    assert list(datasets.load_from_disk(str(out))) == ["validation"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ({"dev": [make_row("a", ["x"], "dev")]}, "unknown split 'dev'"),
        ({"train": [make_row("a", [], "train")]}, "non-empty list"),
        ({"train": [make_row("a", ["x"], "train"), make_row("a", ["y"], "train")]}, "appears twice"),
        ({"train": [make_row("a", ["x"], "test")]}, "row says split='test'"),
        ({"train": []}, "no row"),
        ({"train": [{**make_row("a", ["x"], "train"), "video": {"not": "a path"}}]}, "video must be a path string"),
    ],
)
def test_write_rejects_bad_rows(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        write_dataset_dict(rows, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_expand_captions_counts_and_order(tmp_path):
    per_video = write_dataset_dict(_rows(), tmp_path / "ds")
    expanded = expand_captions(per_video["train"])
    assert expanded.features == CAPTION_FEATURES
    assert len(expanded) == 3 == sum(len(c) for c in per_video["train"]["captions"])
    assert expanded["video_index"] == [0, 0, 1]
    assert expanded["caption_index"] == [0, 1, 0]
    assert expanded["caption"] == ["a cat runs", "a cat is running", "a dog"]
    assert expanded["video_id"] == ["v1", "v1", "v2"]
    test = expand_captions(make_dataset_dict(_rows())["test"])
    assert test["audio"] == ["/x/v3.npy"] * 3 and test["caption_index"] == [0, 1, 2]


def test_index_files_recursive_and_extension_preference(tmp_path):
    (tmp_path / "TrainValVideo").mkdir()
    (tmp_path / "TestVideo").mkdir()
    for name in ["TrainValVideo/video0.mp4", "TrainValVideo/video0.avi", "TestVideo/video9.webm", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    found = index_files(tmp_path, (".mp4", ".avi", ".webm"))
    assert found == {"video0": str(tmp_path / "TrainValVideo/video0.mp4"), "video9": str(tmp_path / "TestVideo/video9.webm")}
    with pytest.raises(FileNotFoundError, match="nope"):
        index_files(tmp_path / "nope", (".mp4",))


def test_resolve_videos_report_and_error(tmp_path, caplog):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "vid7.avi").write_bytes(b"x")
    rows = [make_row("a", ["x"], "train"), make_row("b", ["y"], "train"), make_row("clip7", ["z"], "train")]
    with caplog.at_level(logging.WARNING):
        kept = resolve_videos(rows, tmp_path, file_stems={"clip7": "vid7"})
    assert [row["video_id"] for row in kept] == ["a", "clip7"]
    assert kept[1]["video"] == str(tmp_path / "vid7.avi")
    assert kept.missing_video_ids == ["b"] and kept.num_missing == 1
    assert "1 annotated video(s) have no video file" in caplog.text
    with pytest.raises(MissingVideosError, match=r"1 annotated video\(s\).*b"):
        resolve_videos(rows, tmp_path, missing="error", file_stems={"clip7": "vid7"})
    assert resolve_videos(rows, None) == rows


def test_attach_side_files_audio_is_optional(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "a.npy").write_bytes(b"x")
    rows = {"train": [make_row("a", ["x"], "train"), make_row("b", ["y"], "train")]}
    result, notes = attach_side_files(rows, audio_dir=tmp_path / "audio")
    assert [row["audio"] for row in result["train"]] == [str(tmp_path / "audio" / "a.npy"), None]
    assert notes == ["train: 1 video(s) have no audio file (audio=None)"]
    with pytest.raises(MissingVideosError):
        attach_side_files(rows, audio_dir=tmp_path / "audio", missing="error")


def test_annotation_error_message():
    error = AnnotationError("/d/f.csv", "line 3", "2 fields expected")
    assert str(error) == "/d/f.csv, line 3: 2 fields expected"
    assert isinstance(error, ValueError) and error.path == "/d/f.csv" and error.where == "line 3"
    assert str(AnnotationError("just a message")) == "just a message"


def test_common_arguments():
    parser = add_common_arguments(argparse.ArgumentParser())
    namespace = parser.parse_args(["--output_dir", "o", "--push-to-hub", "me/ds", "--missing", "error", "--private"])
    common = common_arguments_from_namespace(namespace)
    assert (common.output_dir, common.push_to_hub, common.missing, common.private) == ("o", "me/ds", "error", True)
    assert common_arguments_from_namespace(parser.parse_args(["--output_dir", "o", "--push_to_hub", "x/y"])).push_to_hub == "x/y"
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --output_dir is required


def test_push_to_hub_offline_fails_clearly(tmp_path):
    """With HF_HUB_OFFLINE=1 the push fails at once with one line; the local copy is complete."""
    csv = tmp_path / "test.csv"
    csv.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a man sings\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(
        [sys.executable, "-m", "dataset_scripts.msrvtt", "--protocol", "1k-A", "--test_csv", str(csv),
         "--output_dir", str(tmp_path / "out"), "--push-to-hub", "someone/mckd-test"],
        check=False, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert "pushing" in completed.stderr and "someone/mckd-test" in completed.stderr and "offline" in completed.stderr.lower()
    assert "Traceback" not in completed.stderr
    assert datasets.load_from_disk(str(tmp_path / "out"))["test"]["captions"] == [["a man sings"]]
