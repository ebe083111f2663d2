"""MCKDProcessor, MCKDVideoProcessor, video_io and the word tokenizer, on real mp4 files written by PyAV."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer

from modeling_mckd import MCKDProcessor, MCKDVideoProcessor, VideoDecodeError, build_word_tokenizer
from modeling_mckd.video_io import (
    count_frames,
    read_audio_track,
    read_frames,
    read_video,
    sample_frame_indices,
    segment_bounds,
)

CAPTIONS = ["A man is cooking.", "a dog runs, fast!", "A man and a dog"]


def make_processor(**video_kwargs) -> MCKDProcessor:
    settings = dict(num_frames=4, size=64, crop_size=64)
    settings.update(video_kwargs)
    return MCKDProcessor(video_processor=MCKDVideoProcessor(**settings), tokenizer=build_word_tokenizer(CAPTIONS))


def normalised(level: float) -> float:
    return (level / 255 - 0.5) / 0.5


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize(
    "num_total, num_frames, expected",
    [
        (20, 4, [2, 7, 12, 17]),  # segments of 5: centres
        (10, 4, [1, 3, 6, 8]),  # segments [0,2) [2,5) [5,7) [7,10)
        (9, 3, [1, 4, 7]),
        (8, 8, list(range(8))),
        (5, 8, list(range(5))),  # shorter than num_frames: every frame, padded later
        (1, 4, [0]),
    ],
)
def test_uniform_sampling_takes_segment_centres(num_total, num_frames, expected):
    assert sample_frame_indices(num_total, num_frames).tolist() == expected


def test_random_sampling_stays_inside_each_segment_and_covers_it():
    start, end = segment_bounds(23, 4)
    assert start.tolist() == [0, 5, 11, 17] and end.tolist() == [5, 11, 17, 23]
    rng = np.random.default_rng(0)
    seen = [set() for _ in range(4)]
    for _ in range(300):
        indices = sample_frame_indices(23, 4, training=True, rng=rng)
        assert ((indices >= start) & (indices < end)).all()
        for segment, index in enumerate(indices):
            seen[segment].add(int(index))
    assert [sorted(s) for s in seen] == [list(range(a, b)) for a, b in zip(start, end)]
    first = sample_frame_indices(100, 8, training=True, rng=np.random.default_rng(7))
    again = sample_frame_indices(100, 8, training=True, rng=np.random.default_rng(7))
    assert first.tolist() == again.tolist()


def test_sampling_rejects_bad_counts():
    with pytest.raises(ValueError, match="num_total"):
        sample_frame_indices(0, 4)
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(10, 0)


# ------------------------------------------------------------------------------------------------ decoding
def test_read_frames_returns_the_requested_frames(tiny_video_factory):
    video = tiny_video_factory(num_frames=20)
    assert count_frames(video) == 20
    frames = read_frames(video, [0, 5, 19, 3])
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8
    assert [tiny_video_factory.decoded_frame_index(f) for f in frames] == [0, 5, 19, 3]
    everything = read_frames(video)
    assert [tiny_video_factory.decoded_frame_index(f) for f in everything] == list(range(20))
    clip = read_video(video, num_frames=4)
    assert [tiny_video_factory.decoded_frame_index(f) for f in clip] == [2, 7, 12, 17]


def test_missing_file_raises_video_decode_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "clip.mp4"
    with pytest.raises(VideoDecodeError, match="nowhere/clip.mp4") as info:
        read_video(missing, 4)
    assert isinstance(info.value, FileNotFoundError)
    assert str(missing) in str(info.value)
    with pytest.raises(VideoDecodeError, match="clip.mp4"):
        make_processor()(videos=[str(missing)])


def test_truncated_mp4_raises_video_decode_error(tiny_video_factory):
    video = tiny_video_factory("full.mp4", num_frames=20)
    data = video.read_bytes()
    truncated = video.with_name("truncated.mp4")
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: it is lost
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        read_video(truncated, 4)
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        make_processor()(videos=[str(truncated)])


def test_truncated_faststart_mp4_fails_when_missing_frames_are_needed(tiny_video_factory):
    # moov up front: the header still promises 40 frames, the data for the second half is gone
    video = tiny_video_factory("fast.mp4", num_frames=40, faststart=True)
    data = video.read_bytes()
    truncated = video.with_name("fast_truncated.mp4")
    truncated.write_bytes(data[: len(data) // 2])
    assert count_frames(truncated) == 40
    with pytest.raises(VideoDecodeError, match="fast_truncated.mp4.*stream ends"):
        read_video(truncated, 8)


def test_non_video_bytes_raise_video_decode_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 50)
    with pytest.raises(VideoDecodeError, match="junk.mp4"):
        count_frames(junk)


def test_read_audio_track(tiny_video_factory):
    silent = tiny_video_factory("silent.mp4", num_frames=10)
    assert read_audio_track(silent) is None
    with_audio = tiny_video_factory("audio.mp4", num_frames=20, fps=10, with_audio=True)
    samples, rate = read_audio_track(with_audio)
    assert rate == 16000 and samples.shape[0] == 1
    assert abs(samples.shape[1] - 2 * 16000) < 2048  # 2 s, give or take codec padding
    spectrum = np.abs(np.fft.rfft(samples[0, 4000:20000]))
    peak_hz = np.argmax(spectrum) * rate / 16000
    assert abs(peak_hz - 440) < 5


# ------------------------------------------------------------------------------------------------ processor
def test_processor_on_a_real_mp4_samples_and_normalises(tiny_video_factory):
    video = tiny_video_factory(num_frames=20)
    batch = make_processor()(text=["a man is cooking", "a dog"], videos=[str(video)])
    assert batch["pixel_values_videos"].shape == (1, 4, 3, 64, 64)
    assert batch["pixel_values_videos"].dtype == torch.float32
    assert batch["video_mask"].tolist() == [[1, 1, 1, 1]] and batch["video_mask"].dtype == torch.long
    per_frame = batch["pixel_values_videos"][0].mean(dim=(1, 2, 3))
    expected = torch.tensor([normalised(tiny_video_factory.frame_level(i)) for i in (2, 7, 12, 17)])
    torch.testing.assert_close(per_frame, expected, rtol=0, atol=4 / 255)  # lossy H.264, flat frames
    assert batch["input_ids"].shape[0] == 2 and set(batch) == {
        "input_ids", "attention_mask", "pixel_values_videos", "video_mask"
    }


def test_short_video_is_padded_and_masked(tiny_video_factory):
    short = tiny_video_factory("short.mp4", num_frames=3)
    long = tiny_video_factory("long.mp4", num_frames=20)
    batch = make_processor(num_frames=8)(videos=[str(short), str(long)])
    assert batch["pixel_values_videos"].shape == (2, 8, 3, 64, 64)
    assert batch["video_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8]
    assert torch.count_nonzero(batch["pixel_values_videos"][0, 3:]) == 0
    per_frame = batch["pixel_values_videos"][0, :3].mean(dim=(1, 2, 3))
    expected = torch.tensor([normalised(tiny_video_factory.frame_level(i)) for i in range(3)])
    torch.testing.assert_close(per_frame, expected, rtol=0, atol=4 / 255)


def test_resize_shortest_edge_then_centre_crop_on_a_decoded_array():
    # 40x80 frame: left half black, right half white; resize to shortest edge 20 -> 20x40, crop 20
    frame = np.zeros((1, 40, 80, 3), dtype=np.uint8)
    frame[:, :, 40:] = 255
    processor = MCKDVideoProcessor(num_frames=1, size=20, crop_size=20, do_normalize=False)
    pixels = processor(videos=[frame])["pixel_values_videos"]
    assert pixels.shape == (1, 1, 3, 20, 20)
    row = pixels[0, 0, 0, 10]
    torch.testing.assert_close(row[:9], torch.zeros(9), rtol=0, atol=1e-6)
    torch.testing.assert_close(row[11:], torch.ones(9), rtol=0, atol=1e-6)


def test_random_crop_in_training_and_centre_crop_in_evaluation():
    # column c holds the value c: the first output column tells the crop offset
    frame = np.tile(np.arange(48, dtype=np.uint8)[None, None, :, None], (1, 32, 1, 3))
    processor = MCKDVideoProcessor(num_frames=1, size=None, crop_size=32, training_crop="random",
                                   do_rescale=False, do_normalize=False)
    evaluation = processor.preprocess_frames(frame)
    assert evaluation[0, 0, 0, 0].item() == 8  # (48 - 32) // 2
    offsets = {int(processor.preprocess_frames(frame, training=True, rng=np.random.default_rng(s))[0, 0, 0, 0])
               for s in range(40)}
    assert offsets <= set(range(17)) and len(offsets) > 5


def _random_clip(frames, height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("training", [False, True])
def test_batched_preprocessing_equals_one_clip_at_a_time(training):
    """preprocess_clips batches clips of one shape into one resize; each result must be bit-identical to
    preprocess_frames on that clip alone (mixed shapes, an antialiased downscale and a crop)."""
    processor = MCKDVideoProcessor(num_frames=4, size=20, crop_size=16)
    clips = [_random_clip(4, 40, 48, 0), _random_clip(2, 40, 48, 1), _random_clip(4, 40, 48, 2),
             _random_clip(4, 24, 24, 3), _random_clip(2, 40, 48, 4)]
    batched = processor.preprocess_clips(clips, training=training)
    one_by_one = [processor.preprocess_frames(clip, training=training) for clip in clips]
    assert [tuple(t.shape) for t in batched] == [(4, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16), (4, 3, 16, 16),
                                                 (2, 3, 16, 16)]
    for got, expected in zip(batched, one_by_one):
        assert torch.equal(got, expected)
    # the processor's batch API goes through it, padding the shorter clips
    pixels = processor(videos=clips)["pixel_values_videos"]
    assert torch.equal(pixels[1, :2], one_by_one[1]) and pixels[1, 2:].eq(0).all()


def test_uint8_frames_are_resized_as_uint8_within_one_level_of_a_float_resize():
    import torch.nn.functional as F

    clip = _random_clip(3, 64, 48, 9)
    processor = MCKDVideoProcessor(num_frames=3, size=32, crop_size=32, do_normalize=False)
    got = processor.preprocess_frames(clip)
    as_float = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
    expected = F.interpolate(as_float, size=(43, 32), mode="bilinear", align_corners=False, antialias=True)[:, :, 5:37]
    assert got.shape == (3, 3, 32, 32)
    torch.testing.assert_close(got * 255, (got * 255).round(), rtol=0, atol=1e-4)  # whole uint8 levels
    assert (got * 255 - expected).abs().max() < 1.0  # uint8 arithmetic (fixed-point weights): under one level
    # frames that are not uint8 keep the float path
    torch.testing.assert_close(processor.preprocess_frames(clip.astype(np.float32)), expected / 255)


def test_batched_preprocessing_keeps_one_random_crop_per_clip():
    clips = [np.tile(np.arange(48, dtype=np.uint8)[None, None, :, None], (1, 32, 1, 3))] * 6
    processor = MCKDVideoProcessor(num_frames=1, size=None, crop_size=32, training_crop="random",
                                   do_rescale=False, do_normalize=False)
    batched = processor.preprocess_clips(clips, training=True, rng=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    for got, clip in zip(batched, clips):
        assert torch.equal(got, processor.preprocess_frames(clip, training=True, rng=rng))
    assert len({int(t[0, 0, 0, 0]) for t in batched}) > 1  # not one crop for all
    with pytest.raises(ValueError, match=r"frames must be \(T, H, W, 3\)"):
        processor.preprocess_clips([np.zeros((4, 8, 8), dtype=np.uint8)])


def test_training_sampling_is_seeded(tiny_video_factory):
    video = tiny_video_factory(num_frames=20)
    processor = make_processor()
    first = processor(videos=[str(video)], training=True, seed=3)["pixel_values_videos"]
    again = processor(videos=[str(video)], training=True, seed=3)["pixel_values_videos"]
    assert torch.equal(first, again)
    frames = [processor(videos=[str(video)], training=True, seed=s)["pixel_values_videos"] for s in range(6)]
    assert any(not torch.equal(frames[0], other) for other in frames[1:])


def test_feature_inputs_are_sampled_and_padded_like_frames(tmp_path):
    long = np.arange(10 * 6, dtype=np.float32).reshape(10, 6)
    short = np.ones((3, 6), dtype=np.float32)
    processor = make_processor(input_mode="features")
    batch = processor(video_features=[long, short])
    assert batch["video_features"].shape == (2, 4, 6)
    assert torch.equal(batch["video_features"][0], torch.from_numpy(long[[1, 3, 6, 8]]))
    assert batch["video_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert torch.count_nonzero(batch["video_features"][1, 3]) == 0
    np.save(tmp_path / "clip.npy", long)
    from_file = processor(videos=[str(tmp_path / "clip.npy")])
    assert torch.equal(from_file["video_features"][0], batch["video_features"][0])
    with pytest.raises(ValueError, match=r"\.npy"):
        processor(videos=[str(tmp_path / "clip.pkl")])


def test_audio_features_are_padded_to_the_longest_track():
    batch = make_processor()(audio_features=[np.ones((5, 3)), 2 * np.ones((2, 3))])
    assert batch["audio_features"].shape == (2, 5, 3) and batch["audio_features"].dtype == torch.float32
    assert batch["audio_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert batch["audio_features"][1, :2].eq(2).all() and batch["audio_features"][1, 2:].eq(0).all()


def test_pad_and_stack_is_exposed_for_the_trainer():
    processor = MCKDVideoProcessor(num_frames=4)
    batch, mask = processor.pad_and_stack([torch.ones(2, 3, 8, 8), torch.ones(4, 3, 8, 8)])
    assert batch.shape == (2, 4, 3, 8, 8) and mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match="padded length"):
        processor.pad_and_stack([torch.ones(5, 3, 8, 8)])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(num_frames=0), "num_frames"),
        (dict(size=0), "size"),
        (dict(size=32, crop_size=48), "crop_size"),
        (dict(training_crop="left"), "training_crop"),
        (dict(input_mode="audio"), "input_mode"),
        (dict(backend="ffmpeg"), "backend"),
        (dict(image_mean=[0.5, 0.5], image_std=[0.5, 0.5, 0.5]), "image_mean"),
        (dict(image_std=[0.5, 0.0, 0.5]), "image_std"),
    ],
)
def test_video_processor_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MCKDVideoProcessor(**kwargs)


def test_processor_save_and_auto_load_round_trip(tmp_path, tiny_video_factory):
    video = tiny_video_factory(num_frames=12)
    processor = make_processor(num_frames=5, size=48, crop_size=32, training_crop="random")
    processor.save_pretrained(tmp_path / "proc")
    loaded = AutoProcessor.from_pretrained(tmp_path / "proc")
    assert type(loaded) is MCKDProcessor and type(loaded.video_processor) is MCKDVideoProcessor
    assert loaded.video_processor.to_dict() == processor.video_processor.to_dict()
    a = processor(text=["a man"], videos=[str(video)])
    b = loaded(text=["a man"], videos=[str(video)])
    assert all(torch.equal(a[key], b[key]) for key in a)
    standalone = MCKDVideoProcessor.from_pretrained(tmp_path / "proc")
    assert standalone.crop_size == 32 and standalone.training_crop == "random"


# ------------------------------------------------------------------------------------------------ tokenizer
def test_word_tokenizer_vocabulary_and_special_tokens():
    tokenizer = build_word_tokenizer(CAPTIONS, max_length=6)
    vocab = tokenizer.get_vocab()
    # specials first, then by frequency (a:4, man:2, dog:2 ...), ties alphabetical
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")] == [0, 1, 2, 3]
    assert vocab["a"] == 4 and vocab["dog"] == 5 and vocab["man"] == 6
    encoded = tokenizer(["A MAN, cooking!", "zebra"], padding=True, truncation=True)
    assert encoded["input_ids"][0] == [2, vocab["a"], vocab["man"], vocab[","], vocab["cooking"], 3]
    assert encoded["input_ids"][1] == [2, 1, 3, 0, 0, 0]  # unknown word, then padding
    assert encoded["attention_mask"][1] == [1, 1, 1, 0, 0, 0]
    truncated = tokenizer("a man and a dog runs fast", truncation=True)["input_ids"]
    assert len(truncated) == 6 and truncated[0] == 2 and truncated[-1] == 3
    assert "token_type_ids" not in encoded


def test_word_tokenizer_options_and_save_load(tmp_path):
    capped = build_word_tokenizer(CAPTIONS, vocab_size=7)
    assert len(capped) == 7 and set(capped.get_vocab()) == {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog", "man"}
    frequent = build_word_tokenizer(CAPTIONS, min_frequency=2)
    assert set(frequent.get_vocab()) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]"} == {"a", "dog", "man"}
    tokenizer = build_word_tokenizer(CAPTIONS)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["A dog is cooking.", "unknown words here"]
    assert loaded(texts, padding=True)["input_ids"] == tokenizer(texts, padding=True)["input_ids"]
    with pytest.raises(ValueError, match="vocab_size"):
        build_word_tokenizer(CAPTIONS, vocab_size=3)
    with pytest.raises(ValueError, match="max_length"):
        build_word_tokenizer(CAPTIONS, max_length=2)
