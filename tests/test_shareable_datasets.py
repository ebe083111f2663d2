"""Shareable datasets: relative media paths, embedded media, the dataset card, and a dataset pushed
to the loopback Hub stand-in (tests/hub_server.py) that trains after its media folder is gone."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import datasets
import numpy as np
import pytest
import yaml

from modeling_mckd.arguments import DataArguments
from modeling_mckd.data_prep.common import (
    DATASET_FEATURES,
    export_dataset_folder,
    infer_media_root,
    make_row,
    write_dataset_dict,
)
from modeling_mckd.media import (
    MEDIA_RECORD_NAME,
    MediaPathError,
    decode_video_bytes,
    read_media_record,
    relative_reference,
    resolve_media_columns,
    resolve_reference,
)
from modeling_mckd.runner import load_run_dataset

_spec = importlib.util.spec_from_file_location("mckd_hub_server_share", Path(__file__).with_name("hub_server.py"))
hub_server = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = hub_server  # dataclasses look their module up while the file runs
_spec.loader.exec_module(hub_server)

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_ShareTestTokenNeverPrinted0123456789abcdef"


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    # load_dataset(folder) prepares Arrow files in the cache: keep them inside the test's folder.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def _media(root: Path) -> dict[str, Path]:
    """videos/v1.mp4, videos/v2.mp4 (dummy bytes), audio/v1.npy under ``root``."""
    (root / "videos").mkdir(parents=True)
    (root / "audio").mkdir()
    (root / "videos" / "v1.mp4").write_bytes(b"clip-1")
    (root / "videos" / "v2.mp4").write_bytes(b"clip-2")
    np.save(root / "audio" / "v1.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    return {"v1": root / "videos" / "v1.mp4", "v2": root / "videos" / "v2.mp4", "a1": root / "audio" / "v1.npy"}


def _rows(files: dict[str, Path]) -> dict[str, list[dict]]:
    return {
        "train": [make_row("v1", ["a cat"], "train", video=str(files["v1"]), audio=str(files["a1"]))],
        "test": [make_row("v2", ["a dog"], "test", video=str(files["v2"]))],
    }


# -- references -------------------------------------------------------------------------------


def test_relative_references_round_trip(tmp_path):
    root = tmp_path / "media"
    assert relative_reference(str(root / "videos" / "a b.mp4"), root, where="w") == "videos/a b.mp4"
    assert resolve_reference("videos/a b.mp4", tmp_path / "elsewhere", where="w") == str(tmp_path / "elsewhere" / "videos" / "a b.mp4")
    ref = f"bigfile://{quote(str(root / 'FeatureData' / 'res net'))}?video=v%231"
    relative = relative_reference(ref, root, where="w")
    assert relative == "bigfile://FeatureData/res%20net?video=v%231"
    assert resolve_reference(relative, tmp_path / "new", where="w") == (
        f"bigfile://{quote(str((tmp_path / 'new' / 'FeatureData' / 'res net')))}?video=v%231"
    )
    with pytest.raises(MediaPathError, match="row 3.*not under the media root"):
        relative_reference(str(tmp_path / "other" / "x.mp4"), root, where="split 'train', row 3, column 'video'")


def test_infer_media_root_is_the_folder_holding_the_media_folders(tmp_path):
    files = _media(tmp_path / "m")
    assert infer_media_root(_rows(files)) == str(tmp_path / "m")
    only_videos = {"test": [make_row("v2", ["x"], "test", video=str(files["v2"]))]}
    assert infer_media_root(only_videos) == str(tmp_path / "m")  # --videos_dir's parent
    assert infer_media_root({"test": [make_row("v", ["x"], "test")]}) is None


@pytest.mark.parametrize(
    "value, column, message",
    [
        ("../secret.mp4", "video", "leaves the media root"),
        ("videos/../../secret.mp4", "video", "leaves the media root"),
        ("..\\secret.mp4", "audio", "leaves the media root"),
        ("/etc/passwd", "video", "absolute path"),
        ("C:/Windows/x.mp4", "video", "absolute path"),
        ("bigfile://..%2FFeatureData?video=v", "features", "leaves the media root"),
        ("bigfile://%2Fetc?video=v", "features", "absolute path"),
    ],
)
def test_escaping_paths_are_refused_naming_row_and_column(tmp_path, value, column, message):
    rows = [make_row("ok", ["x"], "test"), make_row("bad", ["y"], "test", **{column: value})]
    dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(rows, features=DATASET_FEATURES)})
    with pytest.raises(MediaPathError, match=rf"split 'test', row 1, column '{column}'.*{message}"):
        resolve_media_columns(dataset, media_root=tmp_path, allow_absolute=False)


# -- local folders ----------------------------------------------------------------------------


def test_relative_folder_round_trip_after_moving_the_media(tmp_path):
    files = _media(tmp_path / "media")
    written = write_dataset_dict(_rows(files), tmp_path / "media" / "dataset", media_root=tmp_path / "media",
                                 benchmark="msrvtt", description="d")
    assert written["train"]["video"] == ["videos/v1.mp4"] and written["train"]["audio"] == ["audio/v1.npy"]
    assert written["test"].info.description == "d"
    record = read_media_record(tmp_path / "media" / "dataset")
    assert record == {"paths": "relative", "media_root": str(tmp_path / "media"), "benchmark": "msrvtt"}
    assert (tmp_path / "media" / "dataset" / "train" / MEDIA_RECORD_NAME).is_file()

    # The recorded root exists: used by default.
    here = load_run_dataset(DataArguments(dataset=str(tmp_path / "media" / "dataset")))
    assert here["train"]["video"] == [str(tmp_path / "media" / "videos" / "v1.mp4")]
    # Moved as a whole: the recorded root is gone, the dataset folder's parent is the root.
    shutil.move(tmp_path / "media", tmp_path / "moved")
    moved = load_run_dataset(DataArguments(dataset=str(tmp_path / "moved" / "dataset")))
    assert moved["train"]["video"] == [str(tmp_path / "moved" / "videos" / "v1.mp4")]
    assert np.load(moved["train"]["audio"][0]).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert Path(moved["test"]["video"][0]).read_bytes() == b"clip-2"
    # An explicit --media_root wins.
    shutil.copytree(tmp_path / "moved" / "videos", tmp_path / "third" / "videos")
    third = load_run_dataset(DataArguments(dataset=str(tmp_path / "moved" / "dataset"), media_root=str(tmp_path / "third")))
    assert third["test"]["video"] == [str(tmp_path / "third" / "videos" / "v2.mp4")]


def test_absolute_folder_keeps_loading_and_is_rerooted_by_media_root(tmp_path, caplog):
    files = _media(tmp_path / "media")
    write_dataset_dict(_rows(files), tmp_path / "ds")  # default: absolute paths, root recorded
    assert read_media_record(tmp_path / "ds")["media_root"] == str(tmp_path / "media")
    with caplog.at_level(logging.WARNING):
        loaded = load_run_dataset(DataArguments(dataset=str(tmp_path / "ds")))
    assert loaded["train"]["video"] == [str(files["v1"])]
    assert "not shareable" not in caplog.text  # it records its root: movable with --media_root
    rerooted = load_run_dataset(DataArguments(dataset=str(tmp_path / "ds"), media_root=str(tmp_path / "new")))
    assert rerooted["train"]["audio"] == [str(tmp_path / "new" / "audio" / "v1.npy")]

    # An old folder (no record): loads as it is, with one warning.
    old = datasets.load_from_disk(str(tmp_path / "ds"))
    old.save_to_disk(str(tmp_path / "old"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        legacy = load_run_dataset(DataArguments(dataset=str(tmp_path / "old")))
    assert legacy["train"]["video"] == [str(files["v1"])]
    assert len([r for r in caplog.records if "not shareable" in r.getMessage()]) == 1


def test_hub_layout_folder_never_loads_absolute_paths(tmp_path):
    files = _media(tmp_path / "media")
    rows = _rows(files)
    dataset = datasets.DatasetDict({s: datasets.Dataset.from_list(r, features=DATASET_FEATURES) for s, r in rows.items()})
    folder = export_dataset_folder(dataset, tmp_path / "hub", "me/ds", media_root=tmp_path / "media", benchmark="msvd")
    loaded = load_run_dataset(DataArguments(dataset=str(folder), media_root=str(tmp_path / "media")))
    assert loaded["train"]["video"] == [str(files["v1"])]
    # A tampered shard with an absolute path is refused.
    # A tampered shard with an absolute path is refused (a copy: load_dataset caches per folder).
    tampered_folder = Path(shutil.copytree(folder, tmp_path / "tampered"))
    tampered = dataset["test"].map(lambda row: {"video": "/etc/passwd"})
    tampered.to_parquet(str(tampered_folder / "data" / "test-00000-of-00001.parquet"))
    with pytest.raises(MediaPathError, match="split 'test', row 0, column 'video'.*absolute"):
        load_run_dataset(DataArguments(dataset=str(tampered_folder), media_root=str(tmp_path / "media")))


def test_embedded_export_and_in_memory_decode(tmp_path):
    from conftest import decoded_frame_index, write_tiny_video

    root = tmp_path / "media"
    (root / "videos").mkdir(parents=True)
    clip = write_tiny_video(root / "videos" / "v1.mp4", num_frames=6, height=32, width=32)
    original = clip.read_bytes()
    rows = [make_row("v1", ["a"], "train", video=str(clip))]
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=DATASET_FEATURES)})
    folder = export_dataset_folder(dataset, tmp_path / "hub", "me/ds", media_root=root, embed_media=True)
    shutil.rmtree(root)
    value = datasets.load_dataset(str(folder))["train"][0]["video"]
    assert value == {"bytes": original, "path": "videos/v1.mp4"}
    frames = decode_video_bytes(value["bytes"], indices=[0, 5])
    assert [decoded_frame_index(frame) for frame in frames] == [0, 5]
    # Resolved for the readers without any media root.
    resolved = resolve_media_columns(datasets.load_dataset(str(folder)), media_root=None)
    assert Path(resolved["train"]["video"][0]).read_bytes() == original


# -- push, fetch elsewhere, train ---------------------------------------------------------------

PUSH_SCRIPT = r"""
import sys
from modeling_mckd.data_prep.common import run_cli
from modeling_mckd.data_prep.synthetic import generate_synthetic
run_cli(lambda: generate_synthetic(sys.argv[1], seed=1, num_train=8, num_val=2, num_test=2, num_frames=8,
                                   frame_size=32, workers=1, push_to_hub="someone/mckd-synthetic-tiny"))
"""


def test_synthetic_push_fetch_elsewhere_and_train(tmp_path):
    source = tmp_path / "author" / "synthetic"
    with hub_server.HubStandIn() as server:
        env = {k: v for k, v in os.environ.items()
               if k not in {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"} and "proxy" not in k.lower()}
        env.update(HF_ENDPOINT=server.url, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "home"), HF_TOKEN=TOKEN,
                   HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1", NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost", PYTHONPATH=str(REPO), HF_DATASETS_CACHE=str(tmp_path / "cache"))
        completed = subprocess.run([sys.executable, "-c", PUSH_SCRIPT, str(source)], env=env, capture_output=True,
                                   text=True, timeout=300, cwd=str(tmp_path))
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert TOKEN not in completed.stdout + completed.stderr
        stored = dict(server.repos["someone/mckd-synthetic-tiny"].branches["main"])
    assert sorted(stored) == ["README.md", "data/test-00000-of-00001.parquet",
                              "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"]

    card = stored["README.md"].decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["license"] == "apache-2.0" and metadata["task_categories"] == ["text-to-video"]
    assert metadata["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "validation", "path": "data/validation-*"},
        {"split": "test", "path": "data/test-*"}]}]
    assert metadata["mckd_media"] == {"embedded": ["video", "audio"], "relative": []}
    assert "| train | 8 |" in card and "load_dataset(\"someone/mckd-synthetic-tiny\")" in card
    assert not [name for name, data in stored.items() if str(source).encode() in data]  # nothing of the author's disk

    original = datasets.load_from_disk(str(source / "dataset"))
    clip_bytes = {vid: Path(path).read_bytes() for vid, path in zip(original["train"]["video_id"], original["train"]["video"])}
    audio = {vid: np.load(path) for vid, path in zip(original["train"]["video_id"], original["train"]["audio"])}
    shutil.rmtree(tmp_path / "author")  # the media are gone: only the pushed files remain

    fetched = tmp_path / "user" / "mckd-synthetic-tiny"
    for name, data in stored.items():
        (fetched / name).parent.mkdir(parents=True, exist_ok=True)
        (fetched / name).write_bytes(data)
    data_args = DataArguments(dataset=str(fetched))
    loaded = load_run_dataset(data_args)
    assert {split: len(loaded[split]) for split in loaded} == {"train": 8, "validation": 2, "test": 2}
    for vid, video, audio_path in zip(loaded["train"]["video_id"], loaded["train"]["video"], loaded["train"]["audio"]):
        assert Path(video).read_bytes() == clip_bytes[vid]
        np.testing.assert_array_equal(np.load(audio_path), audio[vid])

    from modeling_mckd.arguments import ModelArguments, RunArguments
    from modeling_mckd.runner import run_teacher

    tiny_teacher = {"num_frames": 4, "projection_dim": 16, "vision_hidden_size": 8, "text_hidden_size": 16,
                    "temporal_aggregator": "mean"}
    results = run_teacher(
        ModelArguments(model_overrides=json.dumps(tiny_teacher), image_size=32),
        data_args,
        RunArguments(output_dir=str(tmp_path / "run"), max_steps=2, per_device_train_batch_size=4,
                     per_device_eval_batch_size=4, eval_strategy="no", report_to="none", disable_tqdm=True,
                     warmup_ratio=0.0, seed=0),
    )
    assert results["global_step"] == 2
    history = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert len(history) == 2 and all(np.isfinite(row["loss"]) for row in history)
