"""One path from a clip to an embedding, one reader of feature files.

Search (`VideoEncoder`, decoding files itself) and evaluation (`encoding.encode_videos` over a `ClipStore`)
must give the same embeddings, bit for bit, so that an index built by search.py ranks exactly as the
evaluation that measured the model; every audio `.npy` goes through `processing_mckd.load_feature_file`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from modeling_mckd import MCKDConfig, MCKDModel, MCKDProcessor, MCKDVideoProcessor, build_word_tokenizer
from modeling_mckd.data import ClipStore
from modeling_mckd.encoding import encode_videos
from modeling_mckd.processing_mckd import load_feature_file
from modeling_mckd.search import VideoEncoder

AUDIO_DIM = 6
TINY = {"vocab_size": 32, "num_frames": 4, "projection_dim": 16, "vision_hidden_size": 8, "text_hidden_size": 16}


def tiny_model(fuse_audio: bool):
    torch.manual_seed(0)
    if fuse_audio:
        config = MCKDConfig.teacher_preset(**TINY, temporal_aggregator="mean",
                                           extra_modalities={"audio": {"feature_dim": AUDIO_DIM}}, fuse_modalities=["audio"])
    else:
        config = MCKDConfig.student_preset(**TINY)
    # size < the clips' short side: the resize runs, so per-clip and batched preprocessing are really compared
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=24, crop_size=24),
                              tokenizer=build_word_tokenizer(["a red circle", "a blue square"], max_length=8))
    return MCKDModel(config).eval(), processor


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Real mp4s of different lengths (one shorter than num_frames, so padding is exercised) and their audio."""
    from modeling_mckd.data_prep.synthetic import write_mp4

    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths, audio = [], []
    for number, length in enumerate((6, 3, 9, 5, 7)):
        path = folder / f"clip{number}.mp4"
        write_mp4(path, rng.integers(0, 256, (length, 32, 40, 3), dtype=np.uint8), fps=6)
        paths.append(path)
        audio_path = folder / f"clip{number}.npy"
        np.save(audio_path, rng.standard_normal((2 + number, AUDIO_DIM)).astype(np.float32))
        audio.append(audio_path)
    return folder, paths, audio


@pytest.mark.parametrize("fuse_audio", [False, True], ids=["frames", "frames+audio"])
def test_search_embeddings_equal_encode_videos_bit_for_bit(clips, fuse_audio):
    folder, paths, audio = clips
    model, processor = tiny_model(fuse_audio)
    rows = {"video_id": [p.stem for p in paths], "video": [str(p) for p in paths]}
    if fuse_audio:
        rows["audio"] = [str(a) for a in audio]
    store = ClipStore(Dataset.from_dict(rows), "pixels", frame_cache=False)
    reference, failed = encode_videos(model, processor, store, batch_size=2, device="cpu")
    assert failed == 0 and reference.shape == (len(paths), 16)

    for workers in (0, 2):
        encoder = VideoEncoder(model, processor, audio_dir=folder if fuse_audio else None, num_workers=workers)
        embeddings, bad = encoder.encode(paths, batch_size=2)
        assert bad == {}
        assert torch.equal(embeddings, reference)
    # Other batches: the same inputs (padding never reaches a clip's embedding), only the kernels' summation
    # order may move the last bit.
    embeddings, _ = encoder.encode(paths, batch_size=3)
    torch.testing.assert_close(embeddings, reference, rtol=0, atol=1e-6)


def test_load_feature_file_round_trip_and_clear_errors(tmp_path):
    good = tmp_path / "good.npy"
    values = np.arange(12, dtype=np.float64).reshape(4, 3) / 7
    np.save(good, values)
    loaded = load_feature_file(good, feature_dim=3)
    assert loaded.dtype == np.float32 and loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, values.astype(np.float32))

    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"pickled\.npy.*not a readable numeric"):
        load_feature_file(pickled)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an array")
    with pytest.raises(ValueError, match=r"garbage\.npy"):
        load_feature_file(garbage)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"flat\.npy.*\(5,\).*expected \(T, D\)"):
        load_feature_file(flat)
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match=r"empty\.npy.*T >= 1"):
        load_feature_file(empty)
    with pytest.raises(ValueError, match=r"good\.npy.*\(4, 3\).*expected \(T, 5\)"):
        load_feature_file(good, feature_dim=5)
    text = tmp_path / "strings.npy"
    np.save(text, np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"strings\.npy.*expected real numbers"):
        load_feature_file(text)
    with pytest.raises(ValueError, match=r"expected a \.npy"):
        load_feature_file(tmp_path / "audio.txt")
    with pytest.raises(FileNotFoundError, match=r"missing\.npy"):
        load_feature_file(tmp_path / "missing.npy")


def test_every_reader_of_audio_files_names_the_bad_file(tmp_path):
    from modeling_mckd.probes import load_modality

    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    rows = Dataset.from_dict({"video_id": ["v"], "video": [None], "features": ["f"], "audio": [str(bad)]})
    with pytest.raises(ValueError, match=r"bad\.npy"):
        ClipStore(rows, "features").audio(0)
    with pytest.raises(ValueError, match=r"bad\.npy"):
        load_modality(rows, "audio")
    _, processor = tiny_model(False)
    with pytest.raises(ValueError, match=r"bad\.npy"):
        processor(audio_features=[str(bad)])
