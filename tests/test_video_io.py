"""Sampled decoding (video_io.read_frames with indices) is frame-exact against a full decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modeling_mckd.video_io import (
    VideoDecodeError,
    frame_index,
    read_frames,
    sample_frame_indices,
)


def write_gop_video(path: Path, *, seconds: float = 2.5, fps: int = 30, width: int = 96, height: int = 64,
                    keyint: int = 12, bframes: int = 3, open_gop: bool = False, seed: int = 0) -> Path:
    """An H.264 mp4 with B-frames and a short keyframe interval; every frame differs (a moving pattern plus
    noise), so a frame taken from the wrong position cannot match."""
    import av

    if "libx264" not in av.codecs_available:
        pytest.skip("libx264 is not available in this PyAV build")
    rng = np.random.default_rng(seed)
    count = int(seconds * fps)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        params = f"keyint={keyint}:min-keyint={max(keyint // 3, 1)}:bframes={bframes}:scenecut=0"
        stream.options = {"preset": "ultrafast" if bframes == 0 else "veryfast", "crf": "23",
                          "x264-params": params + (":open-gop=1" if open_gop else "")}
        for i in range(count):
            base = (x * 3 + y * 2 + i * 7) % 256
            image = np.stack([base, (base + i * 11) % 256, (x * y + i) % 256], axis=-1)
            image = np.clip(image + rng.integers(-20, 21, size=image.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def gop_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gop")
    return {
        "closed": write_gop_video(folder / "closed.mp4"),
        "open": write_gop_video(folder / "open.mp4", open_gop=True, keyint=10, seed=1),
        "intra_only_p": write_gop_video(folder / "p_only.mp4", bframes=0, keyint=30, seconds=2.0, seed=2),
    }


def forbid_sequential_decoding(monkeypatch):
    """Make the sequential fallback fail, so a test proves the seeking path produced the frames."""
    from modeling_mckd import video_io

    full = video_io._read_frames_pyav_sequential
    monkeypatch.setattr(video_io, "_read_frames_pyav_sequential", lambda path, indices: (
        full(path, None) if indices is None else pytest.fail("fell back to sequential decoding")))


@pytest.mark.parametrize("kind", ["closed", "open", "intra_only_p"])
def test_sampled_decoding_is_frame_exact_against_a_full_decode(gop_videos, kind, monkeypatch):
    path = gop_videos[kind]
    everything = read_frames(path)
    forbid_sequential_decoding(monkeypatch)
    index = frame_index(path)
    assert index is not None and len(index) == len(everything)
    assert index.keyframe_pts.size > 1  # the clip really has several GOPs to seek between
    rng = np.random.default_rng(0)
    cases = [
        sample_frame_indices(len(everything), 8, training=False),
        sample_frame_indices(len(everything), 12, training=True, rng=rng),
        sample_frame_indices(len(everything), 12, training=True, rng=rng),
        np.array([len(everything) - 1, 0, 5, 5, 13]),  # unsorted, repeated, first and last frames
        index.keyframe_pts.searchsorted(index.keyframe_pts[1:3]),  # keyframes themselves
        np.array([9, 10, 11]),  # around a GOP boundary
    ]
    for indices in cases:
        sampled = read_frames(path, indices, index=index)
        assert sampled.shape == (len(indices), *everything.shape[1:])
        np.testing.assert_array_equal(sampled, everything[np.asarray(indices)])


def test_sampled_decoding_matches_on_the_synthetic_benchmark_clips(tmp_path, monkeypatch):
    from modeling_mckd.data_prep.synthetic.writer import write_mp4

    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "synthetic.mp4"
    write_mp4(path, frames, 8)
    everything = read_frames(path)
    forbid_sequential_decoding(monkeypatch)
    for indices in ([0, 15], [1, 3, 5, 7, 9, 11, 13, 15], [15, 2, 2]):
        np.testing.assert_array_equal(read_frames(path, indices), everything[indices])


def test_frame_index_counts_what_a_full_decode_gives(tiny_video_factory):
    video = tiny_video_factory(num_frames=17)
    assert len(frame_index(video)) == 17


def test_requesting_a_frame_past_the_end_names_the_file(gop_videos):
    path = gop_videos["closed"]
    total = len(frame_index(path))
    with pytest.raises(VideoDecodeError, match=f"frame {total} was requested.*{path.name}|{path.name}.*frame {total}"):
        read_frames(path, [0, total])


def test_frame_index_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        frame_index(tmp_path / "missing.mp4")


@pytest.mark.parametrize("cache", [False, True])
def test_training_and_evaluation_items_equal_sampling_a_full_decode(gop_videos, cache):
    """The store's sampled decoding gives the items the old path (decode all, then sample with the same
    generators) gave: same frames, same random crops, for two models of different frame counts."""
    from datasets import Dataset

    from modeling_mckd import MCKDVideoProcessor
    from modeling_mckd.data import ClipStore, InputSpec, RetrievalTrainSet, RetrievalVideoSet, process_clip

    paths = [str(gop_videos["closed"]), str(gop_videos["open"])]
    videos = Dataset.from_dict({"video_id": ["a", "b"], "video": paths, "captions": [["x", "y"], ["z"]]})

    def processor(num_frames, size, crop):
        return type("P", (), {"video_processor": MCKDVideoProcessor(num_frames=num_frames, size=size, crop_size=crop,
                                                                      training_crop="random")})()

    inputs = {"student": InputSpec(processor(8, 32, 24), 8), "teacher": InputSpec(processor(5, 40, 40), 8)}
    train = RetrievalTrainSet(videos, ClipStore(videos, "pixels", cache=cache, frame_cache=False), inputs, seed=7)
    for epoch in (0, 1):
        train.use_epoch(epoch)
        for index in range(2):
            item = train[index]
            rng = np.random.default_rng([7, epoch, index])
            rng.choice(len(videos["captions"][index]), size=1, replace=False)
            frame_seed = rng.integers(2**32)
            everything = read_frames(paths[index])
            for name, spec in inputs.items():
                expected = process_clip(spec.processor, everything, None, training=True,
                                        rng=np.random.default_rng(frame_seed))
                torch_equal = (item["inputs"][name]["clip"] == expected["clip"]).all()
                assert bool(torch_equal), (name, epoch, index)
    evaluation = RetrievalVideoSet(ClipStore(videos, "pixels", cache=cache, frame_cache=False), inputs["student"].processor)
    for position in range(2):
        everything = read_frames(paths[position])
        np.testing.assert_array_equal(evaluation[position]["inputs"]["model"]["frames"],
                                      everything[sample_frame_indices(len(everything), 8)])


def test_with_the_cache_a_short_clip_is_decoded_whole_once_and_a_long_one_only_where_drawn(tiny_video_factory):
    """cache=True: a clip of at most WHOLE_CLIP_FACTOR x the frames first asked of it is decoded in one pass and
    kept whole (later epochs draw from memory); a longer clip keeps only the frames asked for. Either way the
    frames equal a full decode's."""
    from datasets import Dataset

    from modeling_mckd import data as data_module
    from modeling_mckd.data import WHOLE_CLIP_FACTOR, ClipStore

    short = tiny_video_factory("short.mp4", num_frames=4 * WHOLE_CLIP_FACTOR)
    long = tiny_video_factory("long.mp4", num_frames=4 * WHOLE_CLIP_FACTOR + 1)
    videos = Dataset.from_dict({"video_id": ["s", "l"], "video": [str(short), str(long)], "captions": [["x"], ["y"]]})
    store = ClipStore(videos, "pixels", cache=True, frame_cache=False)
    for position, path in enumerate((short, long)):
        data_module._DECODED_FRAMES.pop(str(path), None)
        # four distinct frames: 4 x WHOLE_CLIP_FACTOR is exactly the short clip's length
        np.testing.assert_array_equal(store.frames(position, [3, 0, 3, 9, 12]), read_frames(path)[[3, 0, 3, 9, 12]])
    assert sorted(data_module._DECODED_FRAMES[str(short)]) == list(range(4 * WHOLE_CLIP_FACTOR))
    assert sorted(data_module._DECODED_FRAMES[str(long)]) == [0, 3, 9, 12]
    # a later draw of the short clip is served from memory, equal to the full decode
    np.testing.assert_array_equal(store.frames(0, [15, 1]), read_frames(short)[[15, 1]])
