"""The frame cache: build, resume, staleness, and transparent use by ClipStore."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from datasets import Dataset

from modeling_mckd.data import ClipStore
from modeling_mckd.frame_cache import (
    FrameCache,
    StaleFrameCacheError,
    build_frame_cache,
    cached_positions,
    main,
    resize_shortest_side,
)
from modeling_mckd.video_io import read_frames


def videos_table(paths):
    return Dataset.from_dict({"video_id": [p.stem for p in paths], "video": [str(p) for p in paths],
                              "captions": [["a clip"] for _ in paths]})


@pytest.fixture
def two_clips(tiny_video_factory):
    return [tiny_video_factory("a.mp4", num_frames=20, height=48, width=64),
            tiny_video_factory("b.mp4", num_frames=12, height=48, width=64)]


def test_cached_positions_keep_every_frame_or_a_fixed_rate():
    np.testing.assert_array_equal(cached_positions(5, 30.0, 0), np.arange(5))
    np.testing.assert_array_equal(cached_positions(30, 30.0, 5), [0, 6, 12, 18, 24])
    np.testing.assert_array_equal(cached_positions(10, 10.0, 4), [0, 2, 5, 8])  # round(2.5) = 2 (to even), 7.5 -> 8
    np.testing.assert_array_equal(cached_positions(3, None, 5), np.arange(3))


def test_build_stores_resized_frames_and_the_store_reads_them(tmp_path, two_clips):
    cache, counts = build_frame_cache([str(p) for p in two_clips], tmp_path / "cache", size=32, progress=False)
    assert counts == {"built": 2, "skipped": 0, "rebuilt": 0, "failed": 0}
    full = read_frames(two_clips[0])
    expected = resize_shortest_side(full, 32)
    assert expected.shape == (20, 32, 43, 3)  # 48x64 -> shortest side 32, width round(64 * 32 / 48) = 43
    entry = FrameCache.open(tmp_path / "cache").entry(two_clips[0])
    assert entry.num_frames == 20
    np.testing.assert_array_equal(entry.frames([3, 0, 19, 3]), expected[[3, 0, 19, 3]])
    # transparent use: the store counts and reads the cached frames, not the source
    store = ClipStore(videos_table(two_clips), input_mode="pixels", frame_cache=tmp_path / "cache")
    assert store.frame_count(1) == 12
    np.testing.assert_array_equal(store.frames(0, [1, 2]), expected[[1, 2]])


def test_the_environment_variable_selects_the_cache(tmp_path, two_clips, monkeypatch):
    build_frame_cache([str(two_clips[0])], tmp_path / "cache", size=24, progress=False)
    monkeypatch.setenv("MCKD_FRAME_CACHE", str(tmp_path / "cache"))
    store = ClipStore(videos_table(two_clips), input_mode="pixels")
    assert store.frames(0, [0]).shape == (1, 24, 32, 3)
    assert store.frames(1, [0]).shape == (1, 48, 64, 3)  # not cached: decoded from the source


def test_a_resumed_build_skips_what_is_cached_and_rebuilds_what_changed(tmp_path, two_clips, tiny_video_factory):
    out = tmp_path / "cache"
    build_frame_cache([str(two_clips[0])], out, size=32, progress=False)  # an interrupted build
    first_file = out / "clips" / json.loads((out / "manifest.json").read_text())["clips"][str(two_clips[0])]["file"]
    first_mtime = first_file.stat().st_mtime_ns
    _, counts = build_frame_cache([str(p) for p in two_clips], out, size=32, progress=False)
    assert counts == {"built": 1, "skipped": 1, "rebuilt": 0, "failed": 0}
    assert first_file.stat().st_mtime_ns == first_mtime  # not rewritten
    # the source changes (another length): reading refuses, a rebuild redoes that clip only
    tiny_video_factory("b.mp4", num_frames=7, height=48, width=64)
    stamp = os.stat(two_clips[1])
    os.utime(two_clips[1], ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    with pytest.raises(StaleFrameCacheError, match="b.mp4 changed since it was cached"):
        FrameCache.open(out).entry(two_clips[1])
    _, counts = build_frame_cache([str(p) for p in two_clips], out, size=32, progress=False)
    assert counts == {"built": 0, "skipped": 1, "rebuilt": 1, "failed": 0}
    assert FrameCache.open(out).entry(two_clips[1]).num_frames == 7


def test_cli_and_bad_inputs(tmp_path, two_clips, capsys):
    from datasets import DatasetDict

    DatasetDict({"train": videos_table(two_clips)}).save_to_disk(str(tmp_path / "dd"))
    assert main(["--dataset", str(tmp_path / "dd"), "--size", "16", "--out", str(tmp_path / "c"),
                 "--no_progress"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"built": 2, "skipped": 0, "rebuilt": 0, "failed": 0}
    with pytest.raises(ValueError, match="size 16, fps 0.0, not size 32"):
        build_frame_cache([str(two_clips[0])], tmp_path / "c", size=32, progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({"version": 1, "size": "224", "fps": 0, "clips": {}}))
    with pytest.raises(ValueError, match="manifest.json: field `size` must be a int"):
        FrameCache.open(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="no frame cache here"):
        FrameCache.open(tmp_path / "nothing")


def test_a_cache_smaller_than_a_models_input_is_refused_naming_both_sizes(tmp_path, two_clips):
    from modeling_mckd import MCKDProcessor, MCKDVideoProcessor, build_word_tokenizer
    from modeling_mckd.data import InputSpec, RetrievalTrainSet, RetrievalVideoSet

    def processor(size):
        video = MCKDVideoProcessor(num_frames=2, size=size, crop_size=size)
        return MCKDProcessor(video_processor=video, tokenizer=build_word_tokenizer(["a clip"]))

    build_frame_cache([str(p) for p in two_clips], tmp_path / "cache", size=32, progress=False)
    videos = videos_table(two_clips)
    store = ClipStore(videos, input_mode="pixels", frame_cache=tmp_path / "cache")
    student, teacher = processor(32), processor(48)
    # the student's own size is served; the teacher's 48 px would be upsampled from 32 px frames
    RetrievalTrainSet(videos, store, {"student": InputSpec(student, 8)})
    RetrievalVideoSet(store, student)
    with pytest.raises(ValueError, match=r"resized to a shortest side of 32 px, but the teacher's processor needs 48 px"):
        RetrievalTrainSet(videos, store, {"student": InputSpec(student, 8), "teacher": InputSpec(teacher, 8)})
    with pytest.raises(ValueError, match="needs 48 px: build a cache at --size 48"):
        RetrievalVideoSet(store, teacher)
    # without a cache the same teacher reads the source
    RetrievalVideoSet(ClipStore(videos, input_mode="pixels", frame_cache=False), teacher)
