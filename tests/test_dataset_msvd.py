"""dataset_scripts.msvd: every caption source (by content), splits, vidN mapping, unsafe pickles, real files."""

from __future__ import annotations

import itertools
import json
import os
import pickle
from pathlib import Path

import datasets
import pytest

from modeling_mckd.data_prep.common import AnnotationError, expand_captions
from modeling_mckd.data_prep.msvd import (
    UnsafePickleError,
    build_msvd,
    detect_caption_format,
    main,
    read_caption_file,
    read_captions_pickle,
)


def shared_benchmarks() -> Path:
    """The real annotation files: $MCKD_SHARED_BENCHMARKS or ../shared/benchmarks of the checkout."""
    return Path(os.environ.get("MCKD_SHARED_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))


REAL = shared_benchmarks() / "msvd"
needs_real = pytest.mark.skipif(not (REAL / "captions_msvd.json").is_file(), reason=f"no real MSVD files in {REAL}")

# clip ids in the real style: YouTube ids with '_' and '-'
CLIPS = {
    "train": ["-4wsuPCjDBc_5_15", "a_b-c_d_10_20", "zz9_1_2"],
    "validation": ["val_clip_3_9"],
    "test": ["t-1_0_4", "t_2_7_8"],
}
CAPTIONS = {clip: [f"{clip} says {k}" for k in range(1 + n % 3)] for n, clip in enumerate(itertools.chain(*CLIPS.values()))}
LIST_NAMES = {"train": "train_list.txt", "validation": "val_list.txt", "test": "test_list.txt"}


@pytest.fixture()
def splits_dir(tmp_path) -> Path:
    folder = tmp_path / "splits"
    folder.mkdir()
    for split, name in LIST_NAMES.items():
        (folder / name).write_text("\n".join(CLIPS[split]) + "\n")
    return folder


def _expected(result):
    for split, clips in CLIPS.items():
        assert result[split]["video_id"] == clips
        assert result[split]["captions"] == [CAPTIONS[clip] for clip in clips]


def _write_textdata(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": "msvdtrain", "validation": "msvdval", "test": "msvdtest"}
    for split, clips in CLIPS.items():
        lines = [f"{clip}#{k} {caption}" for clip in clips for k, caption in enumerate(CAPTIONS[clip])]
        (folder / f"{names[split]}.caption.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_json_source_with_splits(tmp_path, splits_dir):
    source = tmp_path / "captions_msvd.json"
    source.write_text(json.dumps({**CAPTIONS, "unused_clip_1_2": ["not in any split"]}))
    result = build_msvd(source, splits_dir, tmp_path / "out")
    _expected(datasets.load_from_disk(str(tmp_path / "out")))
    assert "json caption file" in result["train"].info.description and str(source) in result["train"].info.description


def test_pickle_of_token_lists(tmp_path, splits_dir):
    source = tmp_path / "raw-captions.pkl"
    source.write_bytes(pickle.dumps({clip: [caption.split() for caption in captions] for clip, captions in CAPTIONS.items()}))
    assert detect_caption_format(source) == "pickle"
    _expected(build_msvd(source, splits_dir))
    # protocol 0 pickles (text opcodes) are recognised too
    source.write_bytes(pickle.dumps({clip: [c.split() for c in captions] for clip, captions in CAPTIONS.items()}, protocol=0))
    assert detect_caption_format(source) == "pickle"
    _expected(build_msvd(source, splits_dir))


class _Exploit:
    """Unpickling this with plain pickle.load would run os.system(touch <marker>)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, splits_dir, protocol):
    marker = tmp_path / "pwned"
    source = tmp_path / "raw-captions.pkl"
    source.write_bytes(pickle.dumps({"-4wsuPCjDBc_5_15": [["a", "b"]], "x": _Exploit(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"raw-captions.pkl: refusing to load the global (posix|os|nt)\.system"):
        build_msvd(source, splits_dir, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_pickle_with_wrong_shape(tmp_path):
    source = tmp_path / "raw-captions.pkl"
    source.write_bytes(pickle.dumps({"clip_1_2": [["ok"]], "clip_3_4": [("a", 1)]}))
    with pytest.raises(AnnotationError, match=r"raw-captions.pkl, key 'clip_3_4'\[0\]: a list of token strings expected"):
        read_captions_pickle(source)
    source.write_bytes(pickle.dumps({"clip_1_2": []}))
    with pytest.raises(AnnotationError, match=r"key 'clip_1_2': a non-empty list"):
        read_captions_pickle(source)


def test_all_video_descriptions(tmp_path, splits_dir):
    source = tmp_path / "AllVideoDescriptions.txt"
    lines = ["# Microsoft Research Video Description Corpus", "# VideoID Description", ""]
    lines += [f"{clip} {caption}" for clip, captions in CAPTIONS.items() for caption in captions]
    source.write_text("\n".join(lines) + "\n")
    assert detect_caption_format(source) == "all_video_descriptions"
    result = build_msvd(source, splits_dir)
    _expected(result)
    assert "all_video_descriptions caption file" in result["test"].info.description
    source.write_text("# header\nclip_1_2 fine\nclip_only\n")
    with pytest.raises(AnnotationError, match=r"AllVideoDescriptions.txt, line 3: '<clip_id> <sentence>' expected"):
        build_msvd(source, splits_dir)


def test_textdata_folder_and_files_give_the_splits(tmp_path, splits_dir):
    folder = _write_textdata(tmp_path / "collection" / "TextData")
    for source in (folder, folder.parent, sorted(folder.glob("*.caption.txt"))):
        result = build_msvd(source)
        _expected(result)
        assert "TextData caption files" in result["train"].info.description
    _expected(build_msvd(folder, splits_dir))  # consistent lists are accepted
    (splits_dir / "val_list.txt").write_text("another_clip_1_2\n")
    with pytest.raises(AnnotationError, match=r"val_list.txt: the validation clips differ"):
        build_msvd(folder, splits_dir)
    only_test = build_msvd(folder / "msvdtest.caption.txt")
    assert list(only_test) == ["test"]


def test_format_is_recognised_by_content_not_extension(tmp_path, splits_dir):
    disguised = tmp_path / "captions.txt"
    disguised.write_text(json.dumps(CAPTIONS))
    assert detect_caption_format(disguised) == "json"
    _expected(build_msvd(disguised, splits_dir))
    textdata = tmp_path / "all.json"
    textdata.write_text("\n".join(f"{clip}#{k} {c}" for clip, cs in CAPTIONS.items() for k, c in enumerate(cs)))
    assert detect_caption_format(textdata) == "textdata"
    _expected(build_msvd(textdata, splits_dir))


def test_youtube_mapping_finds_vidN_files(tmp_path, splits_dir, caplog):
    source = tmp_path / "captions_msvd.json"
    source.write_text(json.dumps(CAPTIONS))
    mapping = tmp_path / "youtube_mapping.txt"
    clips = list(itertools.chain(*CLIPS.values()))
    mapping.write_text("".join(f"{clip} vid{n + 1}\n" for n, clip in enumerate(clips)))
    videos = tmp_path / "YouTubeClips"
    videos.mkdir()
    for n, clip in enumerate(clips):
        if clip != "zz9_1_2":  # one video is missing
            (videos / f"vid{n + 1}.avi").write_bytes(b"\x00")
    result = build_msvd(source, splits_dir, youtube_mapping=mapping, videos_dir=videos)
    assert result["train"]["video_id"] == ["-4wsuPCjDBc_5_15", "a_b-c_d_10_20"]
    assert result["train"]["video"] == [str(videos / "vid1.avi"), str(videos / "vid2.avi")]
    assert result["test"]["video"] == [str(videos / "vid5.avi"), str(videos / "vid6.avi")]
    assert "zz9_1_2" in caplog.text
    mapping.write_text("clip_1_2 vid1 extra\n")
    with pytest.raises(AnnotationError, match=r"youtube_mapping.txt, line 1: '<clip_id> vid<N>' expected"):
        build_msvd(source, splits_dir, youtube_mapping=mapping, videos_dir=videos)


def test_malformed_msvd_inputs(tmp_path, splits_dir):
    source = tmp_path / "captions_msvd.json"
    source.write_text(json.dumps({**CAPTIONS, "t_2_7_8": []}))
    with pytest.raises(AnnotationError, match=r"captions_msvd.json, key 't_2_7_8': a non-empty list"):
        build_msvd(source, splits_dir)
    source.write_text(json.dumps({k: v for k, v in CAPTIONS.items() if k != "t-1_0_4"}))
    with pytest.raises(AnnotationError, match=r"test_list.txt, line 1: clip 't-1_0_4' has no caption in"):
        build_msvd(source, splits_dir)
    source.write_text(json.dumps(CAPTIONS))
    (splits_dir / "train_list.txt").unlink()
    with pytest.raises(AnnotationError, match=r"train_list.txt: train split list not found"):
        build_msvd(source, splits_dir)
    with pytest.raises(ValueError, match="give --splits_dir"):
        build_msvd(source)
    bad_textdata = tmp_path / "msvdtest.caption.txt"
    bad_textdata.write_text("t-1_0_4#0 fine\nt-1_0_4#1\n")
    with pytest.raises(AnnotationError, match=r"msvdtest.caption.txt, line 2: '<video_id>#<n> <sentence>' expected"):
        build_msvd(bad_textdata)
    with pytest.raises(AnnotationError, match=r"missing.pkl: caption file not found"):
        build_msvd(tmp_path / "missing.pkl", splits_dir)


def test_cli(tmp_path, splits_dir):
    folder = _write_textdata(tmp_path / "TextData")
    result = main(["--captions", str(folder), "--output_dir", str(tmp_path / "out")])
    _expected(result)
    assert sorted(datasets.load_from_disk(str(tmp_path / "out"))) == ["test", "train", "validation"]


# --------------------------------------------------------------------------------------------
# the real files
# --------------------------------------------------------------------------------------------


@needs_real
def test_real_textdata_keeps_every_caption(tmp_path):
    result = build_msvd(REAL / "textdata", None, tmp_path / "out")
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert {split: len(loaded[split]) for split in loaded} == {"train": 1200, "validation": 100, "test": 670}
    assert {split: sum(map(len, loaded[split]["captions"])) for split in loaded} == {"train": 48779, "validation": 4291, "test": 27767}
    assert len(expand_captions(loaded["test"])) == 27767
    assert "TextData" in result["test"].info.description
    # the TextData splits are the official lists
    _expected_lists = {s: (REAL / n).read_text().split() for s, n in LIST_NAMES.items()}
    assert {s: set(loaded[s]["video_id"]) for s in loaded} == {s: set(v) for s, v in _expected_lists.items()}
    assert build_msvd(REAL / "textdata", REAL)["validation"].num_rows == 100  # consistent with --splits_dir


@needs_real
def test_real_json_keeps_every_caption():
    result = build_msvd(REAL / "captions_msvd.json", REAL)
    assert {split: len(result[split]) for split in result} == {"train": 1200, "validation": 100, "test": 670}
    assert {split: sum(map(len, result[split]["captions"])) for split in result} == {"train": 48774, "validation": 4290, "test": 27763}
    assert result["train"]["video_id"][0] == "-4wsuPCjDBc_5_15"
    assert "captions_msvd.json" in result["train"].info.description


# ----------------------------------------------------------------------------------------------
# bad input: pickle bombs, undecodable bytes, silent integrity problems (issue 14)
# ----------------------------------------------------------------------------------------------


def _unicode(text: str) -> bytes:
    data = text.encode()
    return pickle.BINUNICODE + len(data).to_bytes(4, "little") + data


def _bomb(keys: int = 10, width: int = 1000) -> bytes:
    """A ~5 kB pickle whose dict of `keys` clips, each `width` captions of the same token list of
    `width` references to one `width`-character token, joins to keys * width**3 characters (10 GB)."""
    token_list = pickle.EMPTY_LIST + pickle.BINPUT + b"\x02" + pickle.MARK + pickle.BINGET * 0
    token_list += pickle.BINGET.join([b""] + [b"\x01"] * width) + pickle.APPENDS
    captions = pickle.EMPTY_LIST + pickle.BINPUT + b"\x03" + pickle.MARK + token_list
    captions += (pickle.BINGET + b"\x02") * (width - 1) + pickle.APPENDS
    body = _unicode("a" * width) + pickle.BINPUT + b"\x01" + pickle.POP  # the shared token, memo 1
    body += pickle.MARK + _unicode("clip_0_1") + captions
    for key in range(1, keys):
        body += _unicode(f"clip_{key}_1") + pickle.BINGET + b"\x03"
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + body + pickle.SETITEMS + pickle.STOP


def test_pickle_bomb_stops_before_expanding(tmp_path):
    bomb = _bomb()
    assert len(bomb) < 10_000
    # The crafted stream is a valid pickle that shares one list 999 times per clip: unbounded, the
    # reader would join 10 * 1000 * 1000 tokens of 1000 characters (10 GB).
    shared = pickle.loads(bomb)
    assert len(shared) == 10 and shared["clip_9_1"] is shared["clip_0_1"] and shared["clip_0_1"][5] is shared["clip_0_1"][0]
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(bomb)
    with pytest.raises(UnsafePickleError, match=r"raw-captions.pkl: a list or dict referenced twice \(memo reuse\)"):
        read_captions_pickle(path)


def test_pickle_caption_text_is_bounded(tmp_path, monkeypatch):
    """Strings may be shared (pickle memoizes tokens), so the joined text is bounded as well."""
    import modeling_mckd.data_prep.msvd as msvd

    token = "w" * 100
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({f"clip_{n}_1": [[token] * 10 for _ in range(10)] for n in range(5)}))
    assert len(read_captions_pickle(path)) == 5  # 50,500 characters: fine under the default bound
    monkeypatch.setattr(msvd, "MAX_PICKLE_CAPTION_CHARACTERS", 20_000)
    with pytest.raises(AnnotationError, match=r"raw-captions.pkl, key 'clip_1_1'\[9\]: the captions exceed 20,000 characters"):
        read_captions_pickle(path)


def test_non_utf8_json_and_lists_name_the_file(tmp_path, splits_dir):
    source = tmp_path / "captions_msvd.json"
    source.write_bytes(b'{"a_1_2": ["fine"],\n "b_1_2": ["caf\xe9 au lait"]}')
    with pytest.raises(AnnotationError, match=r"captions_msvd.json, line 2 \(byte 35\): UTF-8 text expected, found the byte 0xe9"):
        build_msvd(source, splits_dir)
    source.write_text(json.dumps(CAPTIONS))
    (splits_dir / "val_list.txt").write_bytes(b"val_clip_3_9\n\xff\xfe\n")
    with pytest.raises(AnnotationError, match=r"val_list.txt, byte 13: UTF-8 text expected"):
        build_msvd(source, splits_dir)


def test_non_utf8_textdata_and_descriptions_name_the_file(tmp_path):
    folder = _write_textdata(tmp_path / "TextData")
    (folder / "msvdval.caption.txt").write_bytes(b"val_clip_3_9#0 a \x80 caption\n")
    with pytest.raises(AnnotationError, match=r"msvdval.caption.txt, byte 17: UTF-8 text expected"):
        build_msvd(folder)
    descriptions = tmp_path / "AllVideoDescriptions.txt"
    descriptions.write_bytes(b"# header\nclip_1_2 a \xc3 man\n")
    with pytest.raises(AnnotationError, match=r"AllVideoDescriptions.txt, byte 20: UTF-8 text expected"):
        read_caption_file(descriptions)


def test_duplicate_json_key_is_an_error(tmp_path, splits_dir):
    source = tmp_path / "captions_msvd.json"
    text = json.dumps(CAPTIONS, indent=1)[:-2] + ',\n "zz9_1_2": ["a second list for the same clip"]\n}'
    source.write_text(text)
    line = text.count("\n", 0, text.rindex('"zz9_1_2"')) + 1
    with pytest.raises(AnnotationError, match=rf"captions_msvd.json, line {line}: key 'zz9_1_2' appears twice in one JSON object"):
        build_msvd(source, splits_dir)


def test_clip_in_two_split_lists_is_an_error(tmp_path, splits_dir):
    source = tmp_path / "captions_msvd.json"
    source.write_text(json.dumps(CAPTIONS))
    (splits_dir / "test_list.txt").write_text("t-1_0_4\nt_2_7_8\nzz9_1_2\n")
    with pytest.raises(AnnotationError, match=r"test_list.txt, line 3: clip 'zz9_1_2' is also in .*train_list.txt \(line 3\)"):
        build_msvd(source, splits_dir)


def test_clip_in_two_textdata_splits_is_an_error(tmp_path):
    folder = _write_textdata(tmp_path / "TextData")
    with open(folder / "msvdtest.caption.txt", "a") as handle:
        handle.write("val_clip_3_9#9 the validation clip again\n")
    with pytest.raises(AnnotationError, match=r"msvdtest.caption.txt: clip 'val_clip_3_9' also has captions in the validation file"):
        build_msvd(folder)
