"""dataset_scripts.msrvtt on fixtures in the distributed formats, and on the real CSVs when present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from modeling_mckd.data_prep.common import AnnotationError, MissingVideosError, expand_captions
from modeling_mckd.data_prep.msrvtt import (
    _rows_from_list,
    build_msrvtt,
    load_msrvtt_json,
    main,
    normalize_protocol,
    read_video_list,
)

REPO = Path(__file__).resolve().parents[1]


def shared_benchmarks() -> Path:
    """The real annotation files: $MCKD_SHARED_BENCHMARKS or ../shared/benchmarks of the checkout."""
    return Path(os.environ.get("MCKD_SHARED_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))


REAL = shared_benchmarks() / "msrvtt"
needs_real = pytest.mark.skipif(not (REAL / "MSRVTT_JSFUSION_test.csv").is_file(), reason=f"no real MSR-VTT files in {REAL}")

# 8 videos: video0-3 train, video4 validate, video5-7 test; video i has i % 3 + 1 captions.
SPLIT_OF = ["train"] * 4 + ["validate"] + ["test"] * 3


def _captions(i: int) -> list[str]:
    return [f"clip {i} caption {k}" for k in range(i % 3 + 1)]


def _msrvtt_json(video_ids, sen_start: int = 0) -> dict:
    videos = [{"category": 1, "url": f"https://youtu.be/{i}", "video_id": f"video{i}", "start time": 0.0,
               "end time": 9.0, "split": SPLIT_OF[i], "id": i} for i in video_ids]
    sentences = []
    # interleave videos like the real file, so "source order" is per video, not per line
    for k in range(3):
        for i in video_ids:
            if k < i % 3 + 1:
                sentences.append({"caption": f"clip {i} caption {k}", "video_id": f"video{i}", "sen_id": sen_start + len(sentences)})
    return {"info": {"year": 2016}, "videos": videos, "sentences": sentences}


@pytest.fixture()
def data_json(tmp_path) -> Path:
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(json.dumps(_msrvtt_json(range(8))))
    return path


def _write_csvs(folder: Path, delimiter: str = ",") -> tuple[Path, Path]:
    train = folder / "MSRVTT_train.9k.csv"
    train.write_text("video_id\nvideo0\nvideo1\nvideo2\nvideo4\n")
    test = folder / f"MSRVTT_JSFUSION_test{'_semicolon' if delimiter == ';' else ''}.csv"
    rows = ["key,vid_key,video_id,sentence".replace(",", delimiter)]
    for n, i in enumerate([7, 5, 6]):
        rows.append(delimiter.join([f"ret{n}", f"msr{i}", f"video{i}", f"the one test sentence of {i}"]))
    test.write_text("\n".join(rows) + "\n")
    return train, test


def test_official_protocol(tmp_path, data_json):
    result = build_msrvtt(data_json, "official", tmp_path / "out")
    assert {split: len(ds) for split, ds in result.items()} == {"train": 4, "validation": 1, "test": 3}
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert loaded["train"]["video_id"] == ["video0", "video1", "video2", "video3"]
    assert loaded["train"]["captions"] == [_captions(i) for i in range(4)]
    assert loaded["validation"]["video_id"] == ["video4"] and loaded["validation"]["split"] == ["validation"]
    assert loaded["test"]["captions"] == [_captions(i) for i in (5, 6, 7)]
    assert loaded["test"]["video"] == [None] * 3
    assert len(expand_captions(loaded["test"])) == sum(i % 3 + 1 for i in (5, 6, 7))
    assert "official" in loaded["train"].info.description


def test_videodatainfo_pair_is_merged(tmp_path, data_json):
    train_val = tmp_path / "train_val_videodatainfo.json"
    test = tmp_path / "test_videodatainfo.json"
    train_val.write_text(json.dumps(_msrvtt_json(range(5))))
    test.write_text(json.dumps(_msrvtt_json(range(5, 8), sen_start=100)))
    merged = build_msrvtt([train_val, test], "official")
    single = build_msrvtt(data_json, "official")
    for split in single:
        assert merged[split]["captions"] == single[split]["captions"]
    with pytest.raises(AnnotationError, match=r"video_id 'video0' already listed in .*train_val_videodatainfo.json"):
        load_msrvtt_json([train_val, train_val])


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_1k_a_protocol(tmp_path, data_json, delimiter):
    train_csv, test_csv = _write_csvs(tmp_path, delimiter)
    result = build_msrvtt(data_json, "1k-A", tmp_path / "out", train_csv=train_csv, test_csv=test_csv)
    assert list(result) == ["train", "test"]  # no validation split in 1k-A
    assert result["train"]["video_id"] == ["video0", "video1", "video2", "video4"]
    assert result["train"]["captions"] == [_captions(i) for i in (0, 1, 2, 4)]
    assert result["test"]["video_id"] == ["video7", "video5", "video6"]
    assert result["test"]["captions"] == [[f"the one test sentence of {i}"] for i in (7, 5, 6)]


def test_1k_a_test_only_without_json(tmp_path, caplog):
    _train_csv, test_csv = _write_csvs(tmp_path, ";")
    result = build_msrvtt(None, "1k-A", tmp_path / "out", test_csv=test_csv)
    assert list(result) == ["test"] and len(result["test"]) == 3
    assert "TEST split only" in caplog.text
    assert "test split only" in result["test"].info.description
    with pytest.raises(ValueError, match="needs --annotations MSRVTT_data.json"):
        build_msrvtt(None, "1k-A", train_csv=_train_csv, test_csv=test_csv)


def test_7k_and_miech_protocols(tmp_path, data_json):
    _train, test_csv = _write_csvs(tmp_path)
    train7k = tmp_path / "MSRVTT_train.7k.csv"
    train7k.write_text("video_id\nvideo3\nvideo0\n")
    result = build_msrvtt(data_json, "7k", train_csv=train7k, test_csv=test_csv)
    assert result["train"]["video_id"] == ["video3", "video0"]
    (tmp_path / "miech_train.txt").write_text("video1\nvideo2\n\nvideo3\n")
    (tmp_path / "miech_test.txt").write_text("video6\nvideo5\n")
    bad_list = tmp_path / "bad_list.txt"
    bad_list.write_text("video1\nvideo2 video3\n")
    with pytest.raises(AnnotationError, match=r"bad_list.txt, line 2: one video id per line expected"):
        build_msrvtt(data_json, "miech", miech_lists=[bad_list, tmp_path / "miech_test.txt"])
    result = build_msrvtt(data_json, "miech", miech_lists=[tmp_path / "miech_train.txt", tmp_path / "miech_test.txt"])
    assert result["train"]["video_id"] == ["video1", "video2", "video3"]
    assert result["test"]["captions"] == [_captions(6), _captions(5)]  # every JSON caption
    assert normalize_protocol("1k-a") == "1k-A" and normalize_protocol("1KA") == "1k-A"


def test_videos_audio_missing_report_and_error(tmp_path, data_json, caplog):
    videos = tmp_path / "videos"
    (videos / "TrainValVideo").mkdir(parents=True)
    (videos / "TestVideo").mkdir()
    for i in (0, 1, 3, 4):
        (videos / "TrainValVideo" / f"video{i}.mp4").write_bytes(b"\x00")
    for i in (5, 6, 7):
        (videos / "TestVideo" / f"video{i}.mp4").write_bytes(b"\x00")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "video5.npy").write_bytes(b"\x00")
    result = build_msrvtt(data_json, "official", tmp_path / "out", videos_dir=videos, audio_dir=tmp_path / "audio")
    assert result["train"]["video_id"] == ["video0", "video1", "video3"]  # video2 has no file
    assert result["train"]["video"][2] == str(videos / "TrainValVideo" / "video3.mp4")
    assert result["test"]["audio"] == [str(tmp_path / "audio" / "video5.npy"), None, None]
    assert "1 annotated video(s) have no video file" in caplog.text and "video2" in caplog.text
    assert "train: 1 annotated video(s) without a video file were left out" in result["train"].info.description
    with pytest.raises(MissingVideosError, match="video2"):
        build_msrvtt(data_json, "official", tmp_path / "out2", videos_dir=videos, missing="error")
    assert not (tmp_path / "out2").exists()


# --------------------------------------------------------------------------------------------
# malformed input: one AnnotationError naming the file and the line / key
# --------------------------------------------------------------------------------------------


def _json_with(tmp_path, edit) -> Path:
    data = _msrvtt_json(range(8))
    edit(data)
    path = tmp_path / "MSRVTT_data.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d.pop("sentences"), r"MSRVTT_data.json, key 'sentences': missing"),
        (lambda d: d["videos"][2].update(split="dev"), r"MSRVTT_data.json, key 'videos'\[2\].split: unknown split 'dev'"),
        (lambda d: d["videos"][3].pop("split"), r"key 'videos'\[3\].split: missing"),
        (lambda d: d["sentences"][1].update(caption="  "), r"key 'sentences'\[1\].caption: a non-empty string expected"),
        (lambda d: d["sentences"][0].pop("caption"), r"key 'sentences'\[0\]: key 'caption' missing"),
        (lambda d: d["sentences"].append({"video_id": "video99", "caption": "x"}), r"video 'video99' is not listed"),
        (lambda d: d.update(sentences=[s for s in d["sentences"] if s["video_id"] != "video4"]),
         r"key 'videos'\[4\]: video 'video4' has no sentence; a non-empty caption list expected"),
    ],
)
def test_malformed_json(tmp_path, edit, pattern):
    with pytest.raises(AnnotationError, match=pattern):
        build_msrvtt(_json_with(tmp_path, edit), "official", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_malformed_json_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "MSRVTT_data.json"
    bad.write_text('{"videos": [\n{"video_id": "video0",}\n]}')
    with pytest.raises(AnnotationError, match=r"MSRVTT_data.json, line 2: valid JSON expected"):
        build_msrvtt(bad)
    with pytest.raises(AnnotationError, match=r"nothere.json: MSR-VTT annotation JSON not found"):
        build_msrvtt(tmp_path / "nothere.json")


def test_malformed_csvs(tmp_path, data_json):
    train_csv, test_csv = _write_csvs(tmp_path)
    wrong_column = tmp_path / "wrong_column.csv"
    wrong_column.write_text("key,vid_key,clip,sentence\nret0,msr5,video5,a\n")
    with pytest.raises(AnnotationError, match=r"wrong_column.csv, line 1: a header with a 'video_id' column expected, found columns key, vid_key, clip, sentence"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=wrong_column)
    no_sentence = tmp_path / "no_sentence.csv"
    no_sentence.write_text("key,video_id\nret0,video5\n")
    with pytest.raises(AnnotationError, match=r"no_sentence.csv, header: a 'sentence' column expected"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=no_sentence)
    short_row = tmp_path / "short_row.csv"
    short_row.write_text("key;vid_key;video_id;sentence\nret0;msr5;video5;fine\nret1;msr6\n")
    with pytest.raises(AnnotationError, match=r"short_row.csv, line 3: 4 fields \(key;vid_key;video_id;sentence\) expected, got 2"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=short_row)
    empty_sentence = tmp_path / "empty_sentence.csv"
    empty_sentence.write_text("key,vid_key,video_id,sentence\nret0,msr5,video5,\n")
    with pytest.raises(AnnotationError, match=r"empty_sentence.csv, line 2: an empty sentence for 'video5'"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=empty_sentence)
    unknown_train = tmp_path / "unknown_train.csv"
    unknown_train.write_text("video_id\nvideo0\nvideo42\n")
    with pytest.raises(AnnotationError, match=r"unknown_train.csv, line 3: video 'video42' is not in the annotations"):
        build_msrvtt(data_json, "1k-A", train_csv=unknown_train, test_csv=test_csv)
    overlapping = tmp_path / "overlapping.csv"
    overlapping.write_text("video_id\nvideo0\nvideo5\n")
    with pytest.raises(AnnotationError, match=r"overlapping.csv: 1 train video\(s\) are also test videos"):
        build_msrvtt(data_json, "1k-A", train_csv=overlapping, test_csv=test_csv)
    with pytest.raises(ValueError, match="unknown MSR-VTT protocol 'full'"):
        build_msrvtt(data_json, "full")


def test_csv_sentence_with_unquoted_separator(tmp_path):
    path = tmp_path / "commas.csv"
    path.write_text('key,vid_key,video_id,sentence\nret0,msr1,video1,a man, a dog\nret1,msr2,video2,"quoted, too"\n')
    entries = read_video_list(path)
    assert [(e.video_id, e.sentence, e.line) for e in entries] == [("video1", "a man, a dog", 2), ("video2", "quoted, too", 3)]


def test_cli_in_process_and_annotations_flag_repeated(tmp_path):
    train_val = tmp_path / "train_val_videodatainfo.json"
    test = tmp_path / "test_videodatainfo.json"
    train_val.write_text(json.dumps(_msrvtt_json(range(5))))
    test.write_text(json.dumps(_msrvtt_json(range(5, 8))))
    result = main(["--annotations", str(train_val), "--annotations", str(test), "--output_dir", str(tmp_path / "o1")])
    assert {split: len(ds) for split, ds in result.items()} == {"train": 4, "validation": 1, "test": 3}
    result = main(["--annotations", str(train_val), str(test), "--output-dir", str(tmp_path / "o2")])
    assert len(result["test"]) == 3


@pytest.mark.parametrize("form", ["file", "module"])
def test_cli_help(form):
    command = [sys.executable, str(REPO / "dataset_scripts" / "msrvtt.py")] if form == "file" else [sys.executable, "-m", "dataset_scripts.msrvtt"]
    completed = subprocess.run(command + ["--help"], check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert completed.returncode == 0, completed.stderr
    for flag in ("--annotations", "--protocol", "--train_csv", "--test_csv", "--miech_lists", "--output_dir", "--push-to-hub", "--missing"):
        assert flag in completed.stdout


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("key,vid_key,video_id,sentence\nret0,msr5\n")
    completed = subprocess.run(
        [sys.executable, "-m", "dataset_scripts.msrvtt", "--protocol", "1k-A", "--test_csv", str(bad), "--output_dir", str(tmp_path / "o")],
        check=False, capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert completed.returncode == 2
    assert f"error: {bad}, line 2: 4 fields" in completed.stderr and "Traceback" not in completed.stderr
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------------
# the real files
# --------------------------------------------------------------------------------------------


@needs_real
def test_real_1k_a_test_split(tmp_path):
    result = build_msrvtt(None, "1k-A", tmp_path / "out", test_csv=REAL / "MSRVTT_JSFUSION_test.csv")
    test = datasets.load_from_disk(str(tmp_path / "out"))["test"]
    assert len(test) == 1000 and len(set(test["video_id"])) == 1000
    assert all(len(captions) == 1 for captions in test["captions"])
    assert len(expand_captions(test)) == 1000
    assert test[0]["video_id"] == "video9770" and test[0]["captions"] == ["a person is connecting something to system"]
    # the same file with ';' separators gives the same split
    semicolon = tmp_path / "MSRVTT_JSFUSION_test_semicolon.csv"
    lines = (REAL / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()
    semicolon.write_text("\n".join(line.replace(",", ";") for line in lines) + "\n")
    again = build_msrvtt(None, "1k-A", test_csv=semicolon)["test"]
    assert again["video_id"] == result["test"]["video_id"] and again["captions"] == result["test"]["captions"]


@needs_real
def test_real_train_lists():
    test_ids = {entry.video_id for entry in read_video_list(REAL / "MSRVTT_JSFUSION_test.csv")}
    train9k = [entry.video_id for entry in read_video_list(REAL / "MSRVTT_train.9k.csv")]
    assert len(train9k) == 9000 == len(set(train9k))
    assert not set(train9k) & test_ids
    train7k = [entry.video_id for entry in read_video_list(REAL / "MSRVTT_train.7k.csv")]
    assert len(train7k) == 7010 and set(train7k) == {f"video{i}" for i in range(7010)}


# ----------------------------------------------------------------------------------------------
# bad input: undecodable bytes, silent integrity problems (issue 14)
# ----------------------------------------------------------------------------------------------


def test_non_utf8_json_and_csv_name_the_file_and_line(tmp_path, data_json):
    text = json.dumps(_msrvtt_json(range(8)), indent=1)
    broken = tmp_path / "MSRVTT_data.json"
    position = text.index("clip 3 caption 0")
    broken.write_bytes(text[:position].encode() + b"\xe9" + text[position:].encode())
    line = text.count("\n", 0, position) + 1
    with pytest.raises(AnnotationError, match=rf"MSRVTT_data.json, line {line} \(byte {position}\): UTF-8 text expected, found the byte 0xe9"):
        build_msrvtt(broken)
    data_json.write_text(json.dumps(_msrvtt_json(range(8))))
    train_csv, test_csv = _write_csvs(tmp_path)
    test_csv.write_bytes(b"key,vid_key,video_id,sentence\nret0,msr7,video7,a \xff sentence\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test.csv, byte 49: UTF-8 text expected"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=test_csv)


def test_duplicate_json_key_is_an_error(tmp_path):
    path = tmp_path / "MSRVTT_data.json"
    data = _msrvtt_json(range(4))
    # The second 'sentences' list would silently replace the first one.
    path.write_text(json.dumps(data)[:-1] + ',\n"sentences": []}')
    with pytest.raises(AnnotationError, match=r"MSRVTT_data.json, line 2: key 'sentences' appears twice in one JSON object"):
        build_msrvtt(path)


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    path = tmp_path / "MSRVTT_data.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match=r"MSRVTT_data.json: JSON nested too deeply to parse"):
        build_msrvtt(path)


def test_unbalanced_quote_merging_csv_rows_is_an_error(tmp_path, data_json):
    train_csv, _ = _write_csvs(tmp_path)
    test_csv = tmp_path / "quote.csv"
    # The quote opened on line 3 swallows line 4 (video6) into video5's sentence.
    test_csv.write_text('key,vid_key,video_id,sentence\nret0,msr7,video7,fine\nret1,msr5,video5,"a quote\n'
                        'ret2,msr6,video6,never closed"\nret3,msr3,video3,after\n')
    with pytest.raises(AnnotationError, match=r"quote.csv, line 3: a quoted field runs over lines 3-4 \(unbalanced quote\?\)"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=test_csv)
    # Never closed: every later row becomes part of video5's sentence.
    test_csv.write_text('key,vid_key,video_id,sentence\nret0,msr7,video7,fine\nret1,msr5,video5,"open to the end\n'
                        'ret2,msr6,video6,lost\nret3,msr3,video3,lost too\n')
    with pytest.raises(AnnotationError, match=r"quote.csv, line 3: a quoted field runs over lines 3-5"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=test_csv)


def test_duplicated_test_video_id_is_an_error_and_train_duplicates_warn(tmp_path, data_json, caplog):
    train_csv, test_csv = _write_csvs(tmp_path)
    with open(test_csv, "a") as handle:
        handle.write("ret3,msr5,video5,a second sentence of video5\n")
    with pytest.raises(AnnotationError, match=r"MSRVTT_JSFUSION_test.csv, line 5: video 'video5' listed again \(first at line 3\); each test video once expected"):
        build_msrvtt(data_json, "1k-A", train_csv=train_csv, test_csv=test_csv)
    train_list = tmp_path / "train_with_sentences.csv"
    train_list.write_text("video_id,sentence\nvideo0,one\nvideo1,two\nvideo0,three\n")
    entries = read_video_list(train_list)
    with caplog.at_level("WARNING"):
        rows = _rows_from_list(entries, train_list, "train", None)
    assert [(row["video_id"], row["captions"]) for row in rows] == [("video0", ["one", "three"]), ("video1", ["two"])]
    assert "train_with_sentences.csv, line 4: video 'video0' listed again (first at line 2)" in caplog.text


def test_miech_lists_sharing_a_video_are_an_error(tmp_path, data_json):
    train_list, test_list = tmp_path / "train_list.txt", tmp_path / "test_list.txt"
    train_list.write_text("video0\nvideo1\nvideo5\n")
    test_list.write_text("video5\nvideo6\n")
    with pytest.raises(AnnotationError, match=r"test_list.txt: 1 test video\(s\) are also in the train list .*train_list.txt"):
        build_msrvtt(data_json, "miech", miech_lists=[train_list, test_list])
