"""dataset_scripts.vatex, .tgif and .features on fixtures written in the distributed formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from safetensors.numpy import save_file

from modeling_mckd import feature_store as features_module
from modeling_mckd.data_prep.common import AnnotationError, MissingVideosError, expand_captions
from modeling_mckd.data_prep.features import build_features, read_textdata_captions
from modeling_mckd.feature_store import BigFile, bigfile_ref, load_feature_ref, parse_bigfile_ref, read_video2frames
from modeling_mckd.data_prep.tgif import build_tgif, gif_video_id
from modeling_mckd.data_prep.vatex import build_vatex, parse_vatex_video_id

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# VATEX
# --------------------------------------------------------------------------------------------

# YouTube ids with '_' and '-'; zero-padded times as in the real files
TRAIN_IDS = ["Ptf_2VRj-V0_000122_000132", "abc_000001_000011", "-x_y_z_000005_000015"]
VAL_IDS = ["v_a_000000_000010", "v-b_000003_000013", "v_c_c_000020_000030", "vd_000040_000050", "ve_1_11"]


def _vatex_entry(video_id: str, n: int = 10) -> dict:
    return {"videoID": video_id, "enCap": [f"{video_id} english {k}" for k in range(n)], "chCap": [f"{video_id} 中文 {k}" for k in range(n)]}


@pytest.fixture()
def vatex_files(tmp_path):
    training = tmp_path / "vatex_training_v1.0.json"
    validation = tmp_path / "vatex_validation_v1.0.json"
    training.write_text(json.dumps([_vatex_entry(i) for i in TRAIN_IDS]))
    validation.write_text(json.dumps([_vatex_entry(i) for i in VAL_IDS], ensure_ascii=False))
    return training, validation


def test_vatex_video_id_parsing():
    assert parse_vatex_video_id("Ptf_2VRj-V0_000122_000132") == ("Ptf_2VRj-V0", 122, 132)
    assert parse_vatex_video_id("-x_y_z_000005_000015") == ("-x_y_z", 5, 15)
    with pytest.raises(ValueError, match="'<youtube id>_<start>_<end>' expected"):
        parse_vatex_video_id("noTimes")


def test_vatex_default_division(tmp_path, vatex_files):
    training, validation = vatex_files
    result = build_vatex(training, validation, tmp_path / "out")
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert loaded["train"]["video_id"] == TRAIN_IDS
    assert loaded["validation"]["video_id"] == VAL_IDS[:2]  # first half, file order
    assert loaded["test"]["video_id"] == VAL_IDS[2:]
    assert loaded["test"]["captions"][0] == [f"{VAL_IDS[2]} english {k}" for k in range(10)]
    assert len(expand_captions(loaded["train"])) == 30
    assert "first 2 clips" in result["test"].info.description and "not necessarily HGR" in result["test"].info.description
    chinese = build_vatex(training, validation, language="zh")
    assert chinese["train"]["captions"][0][0] == f"{TRAIN_IDS[0]} 中文 0"


def test_vatex_split_lists_txt_and_npy(tmp_path, vatex_files):
    training, validation = vatex_files
    (tmp_path / "val.txt").write_text("vd_000040_000050\nv_a_000000_000010\n")
    np.save(tmp_path / "tst_names.npy", np.array(["ve_1_11", "v-b_000003_000013", "v_c_c_000020_000030"]))
    result = build_vatex(training, validation, val_list=tmp_path / "val.txt", test_list=tmp_path / "tst_names.npy")
    assert result["validation"]["video_id"] == ["vd_000040_000050", "v_a_000000_000010"]
    assert result["test"]["video_id"] == ["ve_1_11", "v-b_000003_000013", "v_c_c_000020_000030"]
    (tmp_path / "val.txt").write_text("vd_000040_000050\nnot_there_1_2\n")
    with pytest.raises(AnnotationError, match=r"val.txt, line 2: 'not_there_1_2' is in neither VATEX JSON"):
        build_vatex(training, validation, val_list=tmp_path / "val.txt", test_list=tmp_path / "tst_names.npy")
    np.save(tmp_path / "objects.npy", np.array([1, 2]))
    with pytest.raises(AnnotationError, match=r"objects.npy: a .npy array of strings expected"):
        build_vatex(training, validation, val_list=tmp_path / "objects.npy", test_list=tmp_path / "tst_names.npy")


@pytest.mark.parametrize(
    "entries, pattern",
    [
        ([{"videoID": "abc_1_2", "enCap": []}], r"item \[0\].enCap: a non-empty list of captions expected"),
        ([_vatex_entry("abc_1_2"), {"videoID": "abc_1_3"}], r"item \[1\]: key 'enCap' missing"),
        ([{"videoID": "abc", "enCap": ["x"]}], r"item \[0\].videoID: 'abc': '<youtube id>_<start>_<end>' expected"),
        ([{"videoID": "abc_1_2", "enCap": ["ok", " "]}], r"item \[0\].enCap\[1\]: a non-empty caption string expected"),
        ({"videoID": "abc_1_2"}, r"top level: a JSON list"),
    ],
)
def test_vatex_malformed(tmp_path, entries, pattern):
    path = tmp_path / "vatex_training_v1.0.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"vatex_training_v1.0.json, " + pattern):
        build_vatex(path, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_vatex_missing_videos(tmp_path, vatex_files):
    training, validation = vatex_files
    videos = tmp_path / "videos"
    videos.mkdir()
    for video_id in TRAIN_IDS[:2] + VAL_IDS:
        (videos / f"{video_id}.mp4").write_bytes(b"\x00")
    result = build_vatex(training, validation, videos_dir=videos)
    assert result["train"]["video_id"] == TRAIN_IDS[:2]
    assert result["train"]["video"][0] == str(videos / f"{TRAIN_IDS[0]}.mp4")
    with pytest.raises(MissingVideosError, match="-x_y_z_000005_000015"):
        build_vatex(training, validation, videos_dir=videos, missing="error")


# --------------------------------------------------------------------------------------------
# TGIF
# --------------------------------------------------------------------------------------------

GIF = "https://38.media.tumblr.com/{}/tumblr_{}_250.gif"


@pytest.fixture()
def tgif_files(tmp_path):
    urls = {name: GIF.format(f"h{n}", name) for n, name in enumerate(["a1", "b2", "c3", "d4"])}
    lines = [f"{urls['a1']}\ta man waves", f"{urls['b2']}\ta cat jumps", f"{urls['a1']}\tsomeone waves hello",
             f"{urls['c3']}\ta car turns", f"{urls['d4']}\ta girl smiles", f"{urls['d4']}\ta woman smiles"]
    tsv = tmp_path / "tgif-v1.0.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text(f"{urls['a1']}\n{urls['b2']}\n")
    (splits / "val.txt").write_text(f"{urls['c3']}\n")
    (splits / "test.txt").write_text(f"{urls['d4']}\n")
    return tsv, splits


def test_tgif(tmp_path, tgif_files):
    tsv, splits = tgif_files
    assert gif_video_id(GIF.format("x", "abc")) == "tumblr_abc_250"
    result = build_tgif(tsv, splits, tmp_path / "out")
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert loaded["train"]["video_id"] == ["tumblr_a1_250", "tumblr_b2_250"]
    assert loaded["train"]["captions"] == [["a man waves", "someone waves hello"], ["a cat jumps"]]
    assert loaded["validation"]["captions"] == [["a car turns"]]
    assert loaded["test"]["captions"] == [["a girl smiles", "a woman smiles"]]
    assert "TGIF" in result["train"].info.description
    gifs = tmp_path / "gifs"
    gifs.mkdir()
    for name in ("tumblr_a1_250", "tumblr_c3_250", "tumblr_d4_250"):
        (gifs / f"{name}.gif").write_bytes(b"GIF89a")
    with_files = build_tgif(tsv, splits, videos_dir=gifs)
    assert with_files["train"]["video"] == [str(gifs / "tumblr_a1_250.gif")]


def test_tgif_malformed(tmp_path, tgif_files):
    tsv, splits = tgif_files
    text = tsv.read_text()
    tsv.write_text(text + "https://x/tumblr_e5.gif no tab here\n")
    with pytest.raises(AnnotationError, match=r"tgif-v1.0.tsv, line 7: '<gif url><TAB><sentence>' expected"):
        build_tgif(tsv, splits)
    tsv.write_text(text + "https://x/tumblr_e5.gif\t \n")
    with pytest.raises(AnnotationError, match=r"tgif-v1.0.tsv, line 7: an empty sentence"):
        build_tgif(tsv, splits)
    tsv.write_text(text)
    (splits / "val.txt").write_text("https://x/tumblr_zz.gif\n")
    with pytest.raises(AnnotationError, match=r"val.txt, line 1: 'https://x/tumblr_zz.gif' has no sentence in"):
        build_tgif(tsv, splits)
    (splits / "val.txt").unlink()
    with pytest.raises(AnnotationError, match=r"val.txt: TGIF validation list not found"):
        build_tgif(tsv, splits)


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------


def _write_bigfile(folder: Path, frames: dict[str, int], dim: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A BigFile with frames named <video>_<k>, rows shuffled; returns the expected (T, D) arrays."""
    rng = np.random.default_rng(seed)
    names = [f"{video}_{k}" for video, count in frames.items() for k in range(count)]
    order = rng.permutation(len(names))  # frames are not stored in video order
    names = [names[i] for i in order]
    matrix = rng.standard_normal((len(names), dim)).astype(np.float32)
    folder.mkdir(parents=True)
    matrix.tofile(folder / "feature.bin")
    (folder / "shape.txt").write_text(f"{len(names)} {dim}\n")
    (folder / "id.txt").write_text(" ".join(names))
    mapping = {video: [f"{video}_{k}" for k in range(count)] for video, count in frames.items()}
    (folder / "video2frames.txt").write_text(repr(mapping))
    row_of = {name: row for row, name in enumerate(names)}
    return {video: matrix[[row_of[f] for f in ids]] for video, ids in mapping.items()}


def test_bigfile_reads_memory_mapped(tmp_path):
    folder = tmp_path / "FeatureData" / "resnet"
    expected = _write_bigfile(folder, {"video1": 3, "video2": 1, "video_10": 2})
    bigfile = BigFile(folder)
    assert isinstance(bigfile.matrix, np.memmap)
    for video, array in expected.items():
        ref = bigfile_ref(folder, video)
        assert parse_bigfile_ref(ref) == (str(folder.resolve()), video)
        loaded = load_feature_ref(ref)
        assert loaded.dtype == np.float32 and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
    with pytest.raises(KeyError, match="video99"):
        load_feature_ref(bigfile_ref(folder, "video99"))


def test_bigfile_errors(tmp_path):
    folder = tmp_path / "f"
    _write_bigfile(folder, {"v": 2})
    (folder / "shape.txt").write_text("2 4\n")
    with pytest.raises(AnnotationError, match=r"feature.bin: 32 bytes of float32 expected for shape 2 x 4, found 24"):
        BigFile(folder)
    (folder / "shape.txt").write_text("3 3\n")
    with pytest.raises(AnnotationError, match=r"id.txt: 3 ids expected \(shape.txt\), found 2"):
        BigFile(folder)
    (folder / "shape.txt").write_text("two three\n")
    with pytest.raises(AnnotationError, match=r"shape.txt, line 1: two integers 'N D' expected"):
        BigFile(folder)


def test_video2frames_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "video2frames.txt"
    path.write_text(f"{{'v': __import__('os').system('touch {marker}')}}")
    with pytest.raises(AnnotationError, match=r"video2frames.txt.*a Python dict literal"):
        read_video2frames(path)
    assert not marker.exists()
    path.write_text("{'v': ['v_0'],\n 'w': []}")
    with pytest.raises(AnnotationError, match=r"video2frames.txt, key 'w': an empty frame list"):
        read_video2frames(path)


def test_video2frames_reads_exactly_the_dict_of_lists_shape(tmp_path):
    path = tmp_path / "video2frames.txt"
    mapping = {"video1": ["video1_0", "video1_1"], "v'q": ['a"b', "c\\d", "é"], "}": ["["]}
    path.write_text(repr(mapping) + "\n", encoding="utf-8")
    assert read_video2frames(path) == mapping
    # what Python accepts beside repr's spelling: tuples, trailing commas, comments, line breaks, double quotes
    path.write_text('{"a": ("a_0", "a_1",),  # first\n "b": [\n  "b_0",\n ],\n}\n')
    assert read_video2frames(path) == {"a": ["a_0", "a_1"], "b": ["b_0"]}


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("[" * 200_000 + "]" * 200_000, r"line 1: .*expected: '\{', found '\['"),  # RecursionError/MemoryError before
        ("{'v': " + "[" * 200_000, r"line 1: .*expected: a frame id string, found '\['"),
        ("{'v': ['v_0'],\n 'w': [['w_0']]}", r"line 2: .*expected: a frame id string, found '\['"),
        ("{'v': ['v_0'],\n 'w': 3}", r"line 2: .*expected, found '3\}'"),
        ("{'v': ['v_0']", r"line 1: .*expected: ',' or '\}', found the end of the file"),
        ("{'v': ['v_0']} {}", r"line 1: .*expected: nothing after the closing '\}', found '\{'"),
        ("{1: ['v_0']}", r"line 1: .*expected, found \S1: "),
    ],
)
def test_video2frames_malformed_is_an_error_naming_the_line(tmp_path, text, pattern):
    path = tmp_path / "video2frames.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=r"video2frames.txt, " + pattern):
        read_video2frames(path)


def test_feature_text_files_that_are_not_utf8_name_the_file(tmp_path):
    folder = tmp_path / "f"
    _write_bigfile(folder, {"v": 2})
    (folder / "video2frames.txt").write_bytes(b"{'v': ['v_0', '\xff\xfe']}")
    with pytest.raises(AnnotationError, match=r"video2frames.txt, byte 15: UTF-8 text expected"):
        read_video2frames(folder / "video2frames.txt")
    (folder / "id.txt").write_bytes(b"v_0 v_\xe9")
    with pytest.raises(AnnotationError, match=r"id.txt, byte 6: UTF-8 text expected"):
        BigFile(folder)


def test_per_video_npy_and_safetensors(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(folder / "a.npy", a)
    b = np.ones((4, 3), dtype=np.float32)
    save_file({"features": b, "mask": np.ones(4, dtype=np.float32)}, str(folder / "b.safetensors"))
    loaded_a = load_feature_ref(str(folder / "a.npy"))
    assert loaded_a.dtype == np.float32
    np.testing.assert_array_equal(loaded_a, a.astype(np.float32))
    np.testing.assert_array_equal(load_feature_ref(str(folder / "b.safetensors")), b)
    np.save(folder / "c.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_feature_ref(str(folder / "c.npy"))  # object arrays need pickle: refused


def _dual_encoding_root(root: Path) -> dict[str, dict[str, np.ndarray]]:
    expected = {}
    for split, collection, videos in [("train", "coll_train", {"video0": 2, "video1": 3}), ("test", "coll_test", {"video7": 1, "video8": 2})]:
        expected[collection] = _write_bigfile(root / collection / "FeatureData" / "rn", videos, seed=len(collection))
        (root / collection / "TextData").mkdir()
        lines = [f"{video}#enc#{k} {video} sentence {k}" for video in videos for k in range(2)]
        if collection == "coll_test":
            lines.append("video9#enc#0 a video without features")
        (root / collection / "TextData" / f"{collection}.caption.txt").write_text("\n".join(lines) + "\n")
    return expected


def test_build_features_collections(tmp_path, caplog):
    expected = _dual_encoding_root(tmp_path / "root")
    result = build_features(tmp_path / "root", tmp_path / "out", feature="rn", train_collection="coll_train", test_collection="coll_test")
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert list(loaded) == ["train", "test"]
    assert loaded["train"]["video_id"] == ["video0", "video1"] and loaded["train"]["video"] == [None, None]
    assert loaded["train"]["captions"][1] == ["video1 sentence 0", "video1 sentence 1"]
    assert loaded["test"]["video_id"] == ["video7", "video8"]  # video9 has no features
    assert "video9" in caplog.text
    assert "1 captioned video(s) without features were left out" in result["test"].info.description
    for split, collection in (("train", "coll_train"), ("test", "coll_test")):
        for row in loaded[split]:
            np.testing.assert_array_equal(load_feature_ref(row["features"]), expected[collection][row["video_id"]])
    with pytest.raises(MissingVideosError, match="video9"):
        build_features(tmp_path / "root", feature="rn", test_collection="coll_test", missing="error")
    with pytest.raises(AnnotationError, match=r"coll_val.caption.txt: TextData caption file not found"):
        build_features(tmp_path / "root", feature="rn", val_collection="coll_val")


def test_features_dir_for_other_benchmarks(tmp_path):
    """--features_dir with per-video files on an MSR-VTT-style build (vatex here)."""
    training = tmp_path / "vatex_training_v1.0.json"
    training.write_text(json.dumps([_vatex_entry(i, 2) for i in TRAIN_IDS]))
    feats = tmp_path / "feats"
    feats.mkdir()
    for n, video_id in enumerate(TRAIN_IDS[:2]):
        np.save(feats / f"{video_id}.npy", np.full((n + 1, 4), n, dtype=np.float32))
    result = build_vatex(training, None, features_dir=feats)
    assert result["train"]["video_id"] == TRAIN_IDS[:2]
    assert load_feature_ref(result["train"]["features"][1]).shape == (2, 4)


def test_textdata_reader(tmp_path):
    path = tmp_path / "c.caption.txt"
    path.write_text("v1#0 first one\nv2#enc#0 other\n\nv1#1  second  \n")
    assert read_textdata_captions(path) == {"v1": ["first one", "second"], "v2": ["other"]}


def test_bigfile_cache_is_per_process(tmp_path):
    folder = tmp_path / "f"
    _write_bigfile(folder, {"v": 2})
    features_module.open_bigfile.cache_clear()
    load_feature_ref(bigfile_ref(folder, "v"))
    load_feature_ref(bigfile_ref(folder, "v"))
    assert features_module.open_bigfile.cache_info().hits >= 1 and features_module.open_bigfile.cache_info().misses == 1


@pytest.mark.parametrize("script", ["vatex", "tgif", "features", "msvd"])
def test_cli_help(script):
    completed = subprocess.run([sys.executable, str(REPO / "dataset_scripts" / f"{script}.py"), "--help"],
                               check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert completed.returncode == 0, completed.stderr
    assert "--output_dir" in completed.stdout and "--push-to-hub" in completed.stdout


def test_command_lines_build_the_same_datasets_as_the_functions(tmp_path, vatex_files, tgif_files):
    """Each CLI's main() passes its options through to its build_* function."""
    from modeling_mckd.data_prep import features as features_cli
    from modeling_mckd.data_prep import tgif as tgif_cli
    from modeling_mckd.data_prep import vatex as vatex_cli

    training, validation = vatex_files
    vatex = vatex_cli.main(["--training_json", str(training), "--validation_json", str(validation),
                            "--output_dir", str(tmp_path / "vatex")])
    assert {split: len(rows) for split, rows in vatex.items()} == {
        split: len(rows) for split, rows in build_vatex(training, validation).items()
    }
    tsv, splits = tgif_files
    tgif = tgif_cli.main(["--tsv", str(tsv), "--splits_dir", str(splits), "--output_dir", str(tmp_path / "tgif"),
                          "--missing", "report"])
    assert tgif["test"]["captions"] == [["a girl smiles", "a woman smiles"]]
    _dual_encoding_root(tmp_path / "root")
    built = features_cli.main(["--collection_root", str(tmp_path / "root"), "--feature", "rn",
                               "--train_collection", "coll_train", "--output_dir", str(tmp_path / "features")])
    assert built["train"]["video_id"] == ["video0", "video1"]
    assert datasets.load_from_disk(str(tmp_path / "features"))["train"]["video_id"] == ["video0", "video1"]


# --------------------------------------------------------------------------------------------
# bad input: undecodable bytes, silent integrity problems (issue 14)
# --------------------------------------------------------------------------------------------


def test_vatex_non_utf8_json_names_file_and_line(tmp_path, vatex_files):
    training, validation = vatex_files
    text = json.dumps([_vatex_entry(i) for i in TRAIN_IDS], indent=1)
    position = text.index("english 4")
    training.write_bytes(text[:position].encode() + b"\xff" + text[position:].encode())
    line = text.count("\n", 0, position) + 1
    with pytest.raises(AnnotationError, match=rf"vatex_training_v1.0.json, line {line} \(byte {position}\): UTF-8 text expected"):
        build_vatex(training, validation)


def test_vatex_duplicate_json_key_is_an_error(tmp_path, vatex_files):
    training, validation = vatex_files
    entry = json.dumps(_vatex_entry(TRAIN_IDS[0]))
    # A second "enCap" in one object would silently replace the first caption list.
    training.write_text("[" + entry[:-1] + ',\n "enCap": ["replaced"]}]')
    with pytest.raises(AnnotationError, match=r"vatex_training_v1.0.json, line 2: key 'enCap' appears twice"):
        build_vatex(training, validation)


def test_vatex_clip_in_two_splits_is_an_error(tmp_path, vatex_files):
    training, validation = vatex_files
    (tmp_path / "val.txt").write_text("\n".join(VAL_IDS[:2]) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(VAL_IDS[1:]) + "\n")
    with pytest.raises(AnnotationError, match=rf"test.txt, line 1: '{VAL_IDS[1]}' is also in .*val.txt \(line 2\)"):
        build_vatex(training, validation, val_list=tmp_path / "val.txt", test_list=tmp_path / "test.txt")
    # The training JSON's clips are the train split: a validation list naming one is a leak too.
    (tmp_path / "val.txt").write_text(f"{VAL_IDS[0]}\n{TRAIN_IDS[2]}\n")
    (tmp_path / "test.txt").write_text("\n".join(VAL_IDS[1:]) + "\n")
    with pytest.raises(AnnotationError, match=rf"val.txt, line 2: '{TRAIN_IDS[2]}' is also in .*vatex_training_v1.0.json \(the training JSON\)"):
        build_vatex(training, validation, val_list=tmp_path / "val.txt", test_list=tmp_path / "test.txt")


def test_tgif_non_utf8_names_the_file(tmp_path, tgif_files):
    tsv, splits = tgif_files
    tsv.write_bytes(tsv.read_bytes() + b"https://x/tumblr_e5.gif\ta caf\xe9\n")
    with pytest.raises(AnnotationError, match=r"tgif-v1.0.tsv, byte \d+: UTF-8 text expected"):
        build_tgif(tsv, splits)
    tsv.write_bytes(tsv.read_bytes().replace(b"\xe9", b"e"))
    (splits / "val.txt").write_bytes(b"\xc3(\n")
    with pytest.raises(AnnotationError, match=r"val.txt, byte 0: UTF-8 text expected"):
        build_tgif(tsv, splits)


def test_tgif_gif_in_two_splits_is_an_error(tmp_path, tgif_files):
    tsv, splits = tgif_files
    with open(splits / "test.txt", "a") as handle:
        handle.write(GIF.format("h9", "b2") + "\n")  # the train GIF b2, from another host
    with pytest.raises(AnnotationError, match=r"test.txt, line 2: 'tumblr_b2_250' is also in .*train.txt \(line 2\)"):
        build_tgif(tsv, splits)
