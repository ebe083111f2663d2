"""search.py / modeling_mckd.search: index a folder of real mp4 clips with a tiny random model, query it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_mckd import (
    MCKDConfig,
    MCKDModel,
    MCKDProcessor,
    MCKDVideoProcessor,
    build_word_tokenizer,
)
from modeling_mckd.search import (
    EMBEDDINGS_FILE,
    INDEX_JSON,
    IndexError_,
    IndexNotFoundError,
    IndexReport,
    SearchHit,
    VideoIndex,
    VideoSearcher,
    build_faiss_index,
    build_index,
    faiss_available,
)

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = ["a red circle moves left", "a blue square grows", "a green star spins", "a man is cooking"]
TINY = {"num_frames": 4, "projection_dim": 16, "vision_hidden_size": 8, "text_hidden_size": 16}
AUDIO_DIM = 6


def save_tiny_model(folder: Path, config: MCKDConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(CAPTIONS, max_length=12)
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=32, crop_size=32), tokenizer=tokenizer)
    MCKDModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("student"), MCKDConfig.student_preset(vocab_size=32, **TINY))


@pytest.fixture(scope="module")
def other_student_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("other"), MCKDConfig.student_preset(vocab_size=32, **TINY), seed=1)


@pytest.fixture(scope="module")
def audio_teacher_dir(tmp_path_factory) -> Path:
    config = MCKDConfig.teacher_preset(
        vocab_size=32, num_frames=4, projection_dim=16, vision_hidden_size=8, text_hidden_size=16,
        temporal_aggregator="mean", extra_modalities={"audio": {"feature_dim": AUDIO_DIM}}, fuse_modalities=["audio"],
    )
    return save_tiny_model(tmp_path_factory.mktemp("teacher"), config)


def write_clip(path: Path, seed: int, num_frames: int = 6, size: int = 32) -> Path:
    """A real H.264 mp4 of random frames (each clip different, so rankings have no ties)."""
    from modeling_mckd.data_prep.synthetic import write_mp4

    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, frames, fps=6)
    return path


@pytest.fixture(scope="module")
def clip_bank(tmp_path_factory) -> Path:
    """Clips written once and copied per test (encoding is the slow part)."""
    bank = tmp_path_factory.mktemp("bank")
    for seed in range(6):
        write_clip(bank / f"clip{seed}.mp4", seed)
    return bank


@pytest.fixture
def videos(tmp_path, clip_bank) -> Path:
    folder = tmp_path / "videos"
    (folder / "sub").mkdir(parents=True)
    for name in ("clip0.mp4", "clip1.mp4", "clip2.mp4"):
        shutil.copy2(clip_bank / name, folder / name)
    shutil.copy2(clip_bank / "clip3.mp4", folder / "sub" / "clip3.mp4")
    (folder / "notes.txt").write_text("not a video")
    return folder


def load(model_dir: Path):
    return MCKDModel.from_pretrained(model_dir).eval(), MCKDProcessor.from_pretrained(model_dir)


@torch.no_grad()
def reference_video_embeddings(model_dir: Path, paths: list[Path], audio: list[np.ndarray] | None = None) -> torch.Tensor:
    model, processor = load(model_dir)
    inputs = processor(videos=[str(p) for p in paths], audio_features=audio)
    return model.get_video_features(**inputs)


def count_encoded_clips(monkeypatch) -> list[int]:
    """Record the batch size of every call to the model's video tower."""
    calls: list[int] = []
    original = MCKDModel.get_video_features

    def counting(self, *args, **kwargs):
        calls.append(int(kwargs["pixel_values_videos"].shape[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MCKDModel, "get_video_features", counting)
    return calls


def load_cli():
    spec = importlib.util.spec_from_file_location("search_cli", REPO / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ indexing


def test_index_holds_the_models_own_normalised_embeddings(student_dir, videos, tmp_path):
    report = build_index(student_dir, videos, tmp_path / "index", batch_size=3, progress=False)
    assert isinstance(report, IndexReport) and report.num_videos == 4 and report.failed == {} and report.skipped == 0
    index = VideoIndex.load(tmp_path / "index")
    assert index.ids == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "sub/clip3.mp4"]
    assert index.video_root == videos.resolve() and index.model == str(student_dir.resolve())
    expected = reference_video_embeddings(student_dir, [videos / i for i in index.ids])
    torch.testing.assert_close(index.embeddings, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(index.embeddings.norm(dim=1), torch.ones(4))
    info = json.loads((tmp_path / "index" / INDEX_JSON).read_text())
    assert info["dim"] == 16 and info["ids"] == index.ids and info["approximate"] is None and info["complete"]
    # decoding in the calling thread (no decode threads) gives the same rows
    build_index(student_dir, videos, tmp_path / "serial", batch_size=2, num_workers=0, progress=False)
    torch.testing.assert_close(VideoIndex.load(tmp_path / "serial").embeddings, index.embeddings)


def test_query_equals_brute_force_ranking(student_dir, videos, tmp_path):
    build_index(student_dir, videos, tmp_path / "index", progress=False)
    model, processor = load(student_dir)
    paths = sorted(p for p in videos.rglob("*.mp4"))
    with torch.no_grad():
        text = F.normalize(model.get_text_features(**processor(text=CAPTIONS)), dim=-1)
        video = F.normalize(model.get_video_features(**processor(videos=[str(p) for p in paths])), dim=-1)
    scores = text @ video.T
    for use_faiss in ([False, True] if faiss_available() else [False]):
        searcher = VideoSearcher.from_index(tmp_path / "index", use_faiss=use_faiss)
        results = searcher.query_batch(CAPTIONS, k=3)
        for row, hits in zip(scores, results):
            order = torch.argsort(row, descending=True)[:3]
            assert [h.path for h in hits] == [str(paths[i].resolve()) for i in order]
            np.testing.assert_allclose([h.score for h in hits], row[order].numpy(), atol=1e-5)
            assert [h.rank for h in hits] == [1, 2, 3]
    single = searcher.query(CAPTIONS[0], k=10)
    assert len(single) == 4 and isinstance(single[0], SearchHit)  # k larger than the index: all of it
    assert single[0].to_dict() == {"rank": 1, "video_id": single[0].video_id, "path": single[0].path,
                                   "score": single[0].score}


def test_resume_encodes_only_new_and_changed_files(student_dir, videos, tmp_path, clip_bank, monkeypatch):
    calls = count_encoded_clips(monkeypatch)
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False)
    assert sum(calls) == 4

    calls.clear()
    report = build_index(student_dir, videos, out, progress=False)
    assert sum(calls) == 0 and report.skipped == 4 and report.encoded == []

    shutil.copy2(clip_bank / "clip4.mp4", videos / "new.mp4")
    calls.clear()
    report = build_index(student_dir, videos, out, progress=False)
    assert sum(calls) == 1 and report.encoded == ["new.mp4"] and report.num_videos == 5

    # Same name, other bytes: re-encoded, and the row now holds the new content's embedding.
    write_clip(videos / "clip1.mp4", seed=99)
    os.utime(videos / "clip1.mp4", ns=(1, 1))
    (videos / "clip2.mp4").unlink()
    calls.clear()
    report = build_index(student_dir, videos, out, progress=False)
    assert sum(calls) == 1 and report.encoded == ["clip1.mp4"] and report.removed == ["clip2.mp4"]
    index = VideoIndex.load(out)
    assert index.ids == ["clip0.mp4", "clip1.mp4", "new.mp4", "sub/clip3.mp4"]
    expected = reference_video_embeddings(student_dir, [videos / "clip1.mp4"])[0]
    torch.testing.assert_close(index.embeddings[1], expected, atol=1e-5, rtol=1e-4)


def test_interrupted_run_keeps_its_saved_batches(student_dir, videos, tmp_path, monkeypatch):
    from modeling_mckd.search import VideoEncoder

    original, seen = VideoEncoder.embed_items, []

    def interrupt_second_batch(self, items):
        seen.append(len(items))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return original(self, items)

    monkeypatch.setattr(VideoEncoder, "embed_items", interrupt_second_batch)
    out = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        build_index(student_dir, videos, out, batch_size=2, save_every=1, progress=False)
    partial = VideoIndex.load(out)  # what was saved is a valid index
    assert partial.ids == ["clip0.mp4", "clip1.mp4"]
    assert not json.loads((out / INDEX_JSON).read_text())["complete"]

    monkeypatch.setattr(VideoEncoder, "embed_items", original)
    report = build_index(student_dir, videos, out, batch_size=2, progress=False)
    assert report.encoded == ["clip2.mp4", "sub/clip3.mp4"] and report.skipped == 2
    assert not list(out.glob(".tmp-*"))


def test_unreadable_files_are_listed_and_skipped(student_dir, videos, tmp_path):
    (videos / "random.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    data = (videos / "clip0.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (videos / "empty.mov").write_bytes(b"")
    report = build_index(student_dir, videos, tmp_path / "index", batch_size=2, progress=False)
    assert sorted(report.failed) == ["empty.mov", "random.mp4", "truncated.mp4"]
    assert all("decode" in reason for reason in report.failed.values()), report.failed
    index = VideoIndex.load(tmp_path / "index")
    assert index.ids == ["clip0.mp4", "clip1.mp4", "clip2.mp4", "sub/clip3.mp4"]
    assert sorted(entry["video_id"] for entry in index.failed) == sorted(report.failed)


def test_a_folder_of_only_unreadable_files_gives_an_empty_index(student_dir, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.mp4").write_bytes(b"garbage")
    report = build_index(student_dir, tmp_path / "bad", tmp_path / "index", progress=False)
    assert report.num_videos == 0 and list(report.failed) == ["a.mp4"]
    searcher = VideoSearcher.from_index(tmp_path / "index")
    assert len(searcher.index) == 0 and searcher.query("a red circle", k=5) == []


# ------------------------------------------------------------------------------------ the CLI


def test_cli_index_then_query_json(student_dir, videos, tmp_path, capsys):
    cli = load_cli()
    out = tmp_path / "index"
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    assert cli.main(["index", "--model", str(student_dir), "--videos", str(videos), "--out", str(out),
                     "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "broken.mp4" in printed and "4 video(s) indexed" in printed

    assert cli.main(["query", "--index", str(out), "--json", "-k", "3", CAPTIONS[0]]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(Path(h["path"]).is_file() and h["path"].endswith(h["video_id"]) for h in hits)

    assert cli.main(["query", "--index", str(out), "--json", "--top_k", "2", CAPTIONS[1], CAPTIONS[2]]) == 0
    lists = json.loads(capsys.readouterr().out)
    assert len(lists) == 2 and all(len(hits) == 2 for hits in lists)

    assert cli.main(["query", "--index", str(out), CAPTIONS[3]]) == 0
    assert "1." in capsys.readouterr().out

    assert cli.main(["index", "--model", str(student_dir), "--videos", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert "nope" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ search backends


def random_unit(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_faiss_exact_and_torch_fallback_agree(student_dir, videos, tmp_path):
    pytest.importorskip("faiss")
    data, queries = random_unit(2000, 32, 0), random_unit(20, 32, 1)
    ids = [f"v{i}.mp4" for i in range(len(data))]
    with_faiss = VideoIndex(data, ids, faiss_index=build_faiss_index(data))
    plain = VideoIndex(data, ids)
    s1, i1 = with_faiss.search(queries, 10)
    s2, i2 = plain.search(queries, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    brute = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    np.testing.assert_array_equal(i2, brute)

    build_index(student_dir, videos, tmp_path / "index", progress=False)
    assert (tmp_path / "index" / "index.faiss").is_file()
    saved, fallback = VideoIndex.load(tmp_path / "index"), VideoIndex.load(tmp_path / "index", use_faiss=False)
    assert saved.faiss_index is not None and fallback.faiss_index is None
    q = random_unit(3, 16, 2)
    np.testing.assert_array_equal(saved.search(q, 4)[1], fallback.search(q, 4)[1])


@pytest.mark.parametrize("kind, knobs", [("ivf", {"nprobe": 16}), ("hnsw", {"ef_search": 128})])
def test_approximate_indexes_reach_high_recall(kind, knobs):
    pytest.importorskip("faiss")
    data, queries = random_unit(3000, 32, 0), random_unit(50, 32, 1)
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    index = VideoIndex(data, [str(i) for i in range(len(data))],
                       faiss_index=build_faiss_index(data, kind, nlist=32), approximate=kind)
    index.set_search_params(**knobs)
    _, found = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.9, recall


def test_approximate_index_is_saved_with_its_knobs(student_dir, videos, tmp_path):
    faiss = pytest.importorskip("faiss")
    out = tmp_path / "index"
    build_index(student_dir, videos, out, approximate="hnsw", ef_search=40, progress=False)
    info = json.loads((out / INDEX_JSON).read_text())
    assert info["approximate"] == "hnsw" and info["search_params"]["ef_search"] == 40
    index = VideoIndex.load(out)
    assert isinstance(index.faiss_index, faiss.IndexHNSWFlat) and index.faiss_index.hnsw.efSearch == 40
    assert len(VideoSearcher.from_index(out).query(CAPTIONS[0], k=4)) == 4

    report = build_index(student_dir, videos, out, approximate="ivf", nlist=2, nprobe=2, progress=False)
    assert report.encoded == [] and report.approximate == "ivf"  # same embeddings, new faiss index
    index = VideoIndex.load(out)
    assert isinstance(index.faiss_index, faiss.IndexIVFFlat) and index.faiss_index.nprobe == 2


# ------------------------------------------------------------------------------------ audio


def test_audio_fusing_model_needs_audio_dir(audio_teacher_dir, videos, tmp_path):
    with pytest.raises(IndexError_, match="audio_dir"):
        build_index(audio_teacher_dir, videos, tmp_path / "index", progress=False)

    audio_dir = tmp_path / "audio"
    (audio_dir / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    tracks = {}
    for video_id in ("clip0.mp4", "clip1.mp4", "sub/clip3.mp4"):  # clip2 has no audio file
        tracks[video_id] = rng.standard_normal((5, AUDIO_DIM)).astype(np.float32)
        np.save(audio_dir / Path(video_id).with_suffix(".npy"), tracks[video_id])
    report = build_index(audio_teacher_dir, videos, tmp_path / "index", audio_dir=audio_dir, progress=False)
    assert list(report.failed) == ["clip2.mp4"] and "clip2.npy" in report.failed["clip2.mp4"]
    index = VideoIndex.load(tmp_path / "index")
    assert index.ids == list(tracks)
    expected = reference_video_embeddings(audio_teacher_dir, [videos / i for i in tracks], list(tracks.values()))
    torch.testing.assert_close(index.embeddings, expected, atol=1e-5, rtol=1e-4)

    # New audio for one clip changes its embedding: it is re-encoded even though the video is the same.
    np.save(audio_dir / "clip0.npy", rng.standard_normal((7, AUDIO_DIM)).astype(np.float32))
    os.utime(audio_dir / "clip0.npy", ns=(2, 2))
    report = build_index(audio_teacher_dir, videos, tmp_path / "index", audio_dir=audio_dir, progress=False)
    assert report.encoded == ["clip0.mp4"]


# ------------------------------------------------------------------------------------ errors


def test_missing_and_empty_folders(student_dir, videos, tmp_path):
    with pytest.raises(IndexNotFoundError, match="missing"):
        build_index(student_dir, tmp_path / "missing", tmp_path / "index", progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no videos here")
    with pytest.raises(IndexError_, match="no video files"):
        build_index(student_dir, tmp_path / "empty", tmp_path / "index", progress=False)
    with pytest.raises(IndexNotFoundError, match="nowhere"):
        build_index(tmp_path / "nowhere", videos, tmp_path / "index", progress=False)
    with pytest.raises(IndexNotFoundError, match=INDEX_JSON):
        VideoIndex.load(tmp_path / "empty")


def test_resume_with_another_model_is_refused(student_dir, other_student_dir, videos, tmp_path):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False)
    with pytest.raises(IndexError_, match="model_fingerprint") as error:
        build_index(other_student_dir, videos, out, progress=False)
    assert str(out / INDEX_JSON) in str(error.value) and str(student_dir.resolve()) in str(error.value)
    other_videos = tmp_path / "other_videos"
    shutil.copytree(videos, other_videos)
    with pytest.raises(IndexError_, match="video_root"):
        build_index(student_dir, other_videos, out, progress=False)


def test_dimension_mismatches(student_dir, audio_teacher_dir, videos, tmp_path):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False)
    index = VideoIndex.load(out)
    with pytest.raises(IndexError_, match="32-d"):
        index.search(np.zeros((1, 32), np.float32), 3)
    bigger = save_tiny_model(tmp_path / "wide", MCKDConfig.student_preset(vocab_size=32, **{**TINY, "projection_dim": 24}))
    with pytest.raises(IndexError_, match="24-d"):
        VideoSearcher.from_index(out, model=str(bigger))
    with pytest.raises(IndexError_, match="dim"):
        build_index(bigger, videos, out, progress=False)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda info: "{not json", "not valid JSON"),
        (lambda info: json.dumps([1, 2]), "JSON object"),
        (lambda info: json.dumps({**info, "ids": "clip0.mp4"}), "'ids'"),
        (lambda info: json.dumps({**info, "dim": "16"}), "'dim'"),
        (lambda info: json.dumps({k: v for k, v in info.items() if k != "model"}), "'model'"),
        (lambda info: json.dumps({**info, "approximate": "lsh"}), "'approximate'"),
        (lambda info: json.dumps({**info, "format": "pickle"}), "'format'"),
        (lambda info: json.dumps({**info, "ids": info["ids"][:-1]}), "disagree"),
    ],
)
def test_malformed_index_json_is_a_clear_error(student_dir, videos, tmp_path, corrupt, message):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False, use_faiss=False)
    path = out / INDEX_JSON
    path.write_text(corrupt(json.loads(path.read_text())))
    with pytest.raises(IndexError_, match=message) as error:
        VideoIndex.load(out)
    assert str(path) in str(error.value)


def test_corrupt_embeddings_file_is_a_clear_error(student_dir, videos, tmp_path):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False, use_faiss=False)
    (out / EMBEDDINGS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(IndexError_, match=EMBEDDINGS_FILE):
        VideoIndex.load(out)
    with pytest.raises(IndexError_, match=EMBEDDINGS_FILE):  # resuming does not silently start over either
        build_index(student_dir, videos, out, progress=False)


# -- the trust boundary: ids, faiss_file, the model, the output folder (issue 14) -------------------


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda info: {**info, "ids": ["../../../etc/passwd"]}, r"'ids'\[0\] '../../../etc/passwd' must not contain '..'"),
        (lambda info: {**info, "ids": ["/etc/passwd"]}, "not an absolute path"),
        (lambda info: {**info, "ids": ["sub\\..\\..\\x.mp4"]}, "backslash"),
        (lambda info: {**info, "failed": [{"video_id": "../x.mp4", "reason": "r"}]}, "'failed' video_id"),
        (lambda info: {**info, "faiss_file": "../../etc/passwd"}, "'faiss_file' '../../etc/passwd' must be a plain file"),
        (lambda info: {**info, "faiss_file": "/etc/passwd"}, "'faiss_file'"),
        (lambda info: {**info, "complete": "yes"}, "'complete'"),
    ],
)
def test_tampered_index_json_is_refused(student_dir, videos, tmp_path, tamper, message):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False, use_faiss=False)
    path = out / INDEX_JSON
    path.write_text(json.dumps(tamper(json.loads(path.read_text()))))
    with pytest.raises(IndexError_, match=message) as error:
        VideoIndex.load(out)
    assert str(path) in str(error.value)


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_file_linked_out_of_the_index_or_unreadable(student_dir, videos, tmp_path, caplog):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT " * 10)
    (out / "index.faiss").unlink()
    (out / "index.faiss").symlink_to(secret)  # the recorded name, but a link to a file elsewhere
    with pytest.raises(IndexError_, match="'faiss_file' 'index.faiss' resolves outside the index folder"):
        VideoIndex.load(out)
    # a garbage file inside the folder: a warning that names it, never its bytes, and an exact search
    (out / "index.faiss").unlink()
    (out / "index.faiss").write_text("TOP-SECRET-CONTENT " * 10)
    index = VideoIndex.load(out)
    assert "not a readable FAISS index" in caplog.text and "TOP-SECRET" not in caplog.text
    assert index.approximate is None and len(index.search(np.ones((1, 16), np.float32), 2)[1][0]) == 2


def test_query_with_another_model_is_refused(student_dir, other_student_dir, videos, tmp_path):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False, use_faiss=False)
    with pytest.raises(IndexError_, match="model_fingerprint") as error:
        VideoSearcher.from_index(out, model=str(other_student_dir))
    assert str(out / INDEX_JSON) in str(error.value)
    # the recorded folder now holding other weights is caught the same way
    path = out / INDEX_JSON
    path.write_text(json.dumps({**json.loads(path.read_text()), "model": str(other_student_dir)}))
    with pytest.raises(IndexError_, match="model_fingerprint"):
        VideoSearcher.from_index(out)


def test_incomplete_index_is_announced(student_dir, videos, tmp_path, capsys, caplog):
    out = tmp_path / "index"
    build_index(student_dir, videos, out, progress=False, use_faiss=False)
    assert VideoIndex.load(out).complete and VideoIndex.load(out).incomplete_message() is None
    path = out / INDEX_JSON
    path.write_text(json.dumps({**json.loads(path.read_text()), "complete": False}))
    index = VideoIndex.load(out)
    assert not index.complete and "did not finish" in caplog.text
    cli = load_cli()
    assert cli.main(["query", "--index", str(out), "-k", "2", CAPTIONS[0]]) == 0
    err = capsys.readouterr().err
    assert "warning: the index holds 4 video(s) but its build did not finish" in err


def test_index_output_folder_is_guarded(student_dir, videos, tmp_path, monkeypatch, capsys):
    """`search.py index` never writes into the current directory, an input or someone else's folder."""
    cli = load_cli()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    monkeypatch.chdir(mine)
    for out, message in ((".", "is the current directory"), ("..", "above the current directory"),
                         (str(mine), "is the current directory"), (str(videos), "is the input"),
                         (str(student_dir), "is the input")):
        assert cli.main(["index", "--model", str(student_dir), "--videos", str(videos), "--out", out,
                         "--no_progress"]) == 1
        err = capsys.readouterr().err
        assert f"--out {out!r}" in err and message in err
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is not empty and does not hold"):
        build_index(student_dir, videos, mine, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"
    # its own earlier index is resumed in place
    build_index(student_dir, videos, tmp_path / "index", progress=False, use_faiss=False)
    assert build_index(student_dir, videos, tmp_path / "index", progress=False, use_faiss=False).skipped == 4
