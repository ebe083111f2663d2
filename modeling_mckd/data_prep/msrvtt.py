"""MSR-VTT -> DatasetDict (one row per video), for the official, 1k-A, 7k and Miech protocols.

Reads the files as distributed (see docs/datasets.md):

* ``MSRVTT_data.json``, or ``train_val_videodatainfo.json`` + ``test_videodatainfo.json``
  (same layout: ``videos`` entries with ``video_id`` and ``split``; ``sentences`` entries with
  ``video_id``, ``caption``, ``sen_id``; several files are merged);
* ``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv`` (header ``video_id``) and
  ``MSRVTT_JSFUSION_test.csv`` (header ``key,vid_key,video_id,sentence``, ``,`` or ``;``
  separated) for the 1k-A and 7k protocols.

Example::

    python -m dataset_scripts.msrvtt --annotations MSRVTT_data.json --protocol 1k-A \\
        --train_csv MSRVTT_train.9k.csv --test_csv MSRVTT_JSFUSION_test.csv --output_dir data/msrvtt-1kA
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal


from datasets import DatasetDict

from modeling_mckd.data_prep.common import (
    AnnotationError,
    finish_dataset_dict,
    make_row,
    parse_arguments,
    read_text_lines,
    require_file,
    run_cli,
    setup_logging,
)
from modeling_mckd.data_prep.features import attach_side_files

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("official", "1k-A", "7k", "miech")
#: ``split`` values of the MSR-VTT JSON -> DatasetDict split.
OFFICIAL_SPLITS: dict[str, str] = {"train": "train", "validate": "validation", "test": "test"}


@dataclasses.dataclass
class MSRVTTAnnotations:
    """Videos and captions read from one or more MSR-VTT JSON files (source order kept)."""

    files: list[str]
    #: video_id -> value of its ``split`` field (None when absent)
    split_of: dict[str, str | None]
    #: video_id -> (file, key) where the video entry was read, for error messages
    origin: dict[str, tuple[str, str]]
    #: video_id -> captions in the order of ``sentences``
    captions: dict[str, list[str]]


def _as_paths(annotations: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    if annotations is None:
        return []
    if isinstance(annotations, (str, os.PathLike)):
        return [Path(annotations)]
    return [Path(path) for path in annotations]


class _DuplicateKeyError(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(key)
        obj[key] = value
    return obj


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parse a UTF-8 JSON annotation file (a BOM is dropped), strictly.

    Every failure is an :class:`AnnotationError` naming the file and line: bytes that are not
    UTF-8, invalid JSON, nesting too deep to parse, and a key repeated inside one object (plain
    ``json`` keeps the last value and silently drops the others, e.g. a clip's first caption list).
    Shared by the MSVD, MSR-VTT and VATEX readers.
    """
    path = require_file(path, what)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise AnnotationError(
            path, f"line {line} (byte {error.start})", f"UTF-8 text expected, found the byte 0x{raw[error.start]:02x} ({what})"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as error:
        raise AnnotationError(path, f"line {error.lineno}", f"valid JSON expected ({error.msg})") from None
    except RecursionError:
        raise AnnotationError(path, None, f"JSON nested too deeply to parse; a {what} expected") from None
    except _DuplicateKeyError as error:
        # Name the line of the second occurrence of the key when it can be found textually.
        spelled = re.compile(re.escape(json.dumps(error.key)) + r"\s*:")
        found = list(spelled.finditer(text))
        where = f"line {text.count(chr(10), 0, found[1].start()) + 1}" if len(found) > 1 else None
        raise AnnotationError(
            path, where, f"key {error.key!r} appears twice in one JSON object; unique keys expected (JSON would keep only the last)"
        ) from None


def load_msrvtt_json(annotations: str | os.PathLike | Sequence[str | os.PathLike]) -> MSRVTTAnnotations:
    """Read and merge MSR-VTT annotation JSON files (``videos`` + ``sentences`` layout).

    Raises :class:`AnnotationError` naming the file and key for a missing key, a wrong type, a
    video listed twice (also across files) or a sentence of an unlisted video.
    """
    paths = _as_paths(annotations)
    if not paths:
        raise ValueError("no MSR-VTT annotation file given")
    result = MSRVTTAnnotations(files=[str(path) for path in paths], split_of={}, origin={}, captions={})
    for path in paths:
        data = read_json_file(path, "MSR-VTT annotation JSON")
        if not isinstance(data, dict):
            raise AnnotationError(path, "top level", f"a JSON object with keys 'videos' and 'sentences' expected, got {type(data).__name__}")
        for key in ("videos", "sentences"):
            if key not in data:
                raise AnnotationError(path, f"key {key!r}", f"missing; a JSON object with keys 'videos' and 'sentences' expected (found {sorted(data)[:6]})")
            if not isinstance(data[key], list):
                raise AnnotationError(path, f"key {key!r}", f"a list expected, got {type(data[key]).__name__}")
        file_videos: set[str] = set()
        for index, entry in enumerate(data["videos"]):
            where = f"key 'videos'[{index}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("video_id"), str) or not entry["video_id"]:
                raise AnnotationError(path, where, "an object with a string 'video_id' expected")
            video_id = entry["video_id"]
            if video_id in result.origin:
                first_file, first_key = result.origin[video_id]
                raise AnnotationError(path, where, f"video_id {video_id!r} already listed in {first_file} at {first_key}; give each video once")
            split = entry.get("split")
            if split is not None and not isinstance(split, str):
                raise AnnotationError(path, f"{where}.split", f"a string expected, got {split!r}")
            result.split_of[video_id] = split
            result.origin[video_id] = (str(path), where)
            result.captions[video_id] = []
            file_videos.add(video_id)
        for index, entry in enumerate(data["sentences"]):
            where = f"key 'sentences'[{index}]"
            if not isinstance(entry, dict):
                raise AnnotationError(path, where, "an object with 'video_id' and 'caption' expected")
            for key in ("video_id", "caption"):
                if key not in entry:
                    raise AnnotationError(path, f"{where}", f"key {key!r} missing (expected 'video_id', 'caption', 'sen_id')")
            video_id, caption = entry["video_id"], entry["caption"]
            if not isinstance(caption, str) or not caption.strip():
                raise AnnotationError(path, f"{where}.caption", f"a non-empty string expected, got {caption!r}")
            if video_id not in result.captions:
                raise AnnotationError(path, f"{where}.video_id", f"video {video_id!r} is not listed under 'videos'")
            result.captions[video_id].append(caption)
    return result


@dataclasses.dataclass
class ListEntry:
    """One video of a split list (a CSV row or a text line)."""

    video_id: str
    sentence: str | None
    line: int


def _detect_delimiter(header: str) -> str:
    counts = {delimiter: header.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_video_list(path: str | os.PathLike, *, what: str = "video list") -> list[ListEntry]:
    """Read a split list: a CSV with a ``video_id`` column (``,``/``;``/tab separated, optional
    ``sentence`` column) or a text file with one video id per line.

    A CSV is recognised by a first line that has a ``video_id`` field. When the last column is
    ``sentence`` and a row has extra fields (an unquoted separator inside the sentence), the
    extra fields are joined back into the sentence.
    """
    path = require_file(path, what)
    lines = read_text_lines(path, what)
    first = next((number for number, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise AnnotationError(path, None, f"empty file; a {what} expected")
    header_line = lines[first]
    delimiter = _detect_delimiter(header_line)
    header = [name.strip().strip('"') for name in header_line.split(delimiter)]
    entries: list[ListEntry] = []
    if "video_id" not in header and len(header) > 1:
        raise AnnotationError(
            path, f"line {first + 1}", f"a header with a 'video_id' column expected, found columns {', '.join(header)}"
        )
    if "video_id" not in header:
        # Plain list: one id per line. A header-less CSV or a wrong header lands here.
        for number, line in enumerate(lines, start=1):
            video_id = line.strip()
            if not video_id:
                continue
            if re.search(r"[\s,;]", video_id):
                raise AnnotationError(
                    path,
                    f"line {number}",
                    f"one video id per line expected (or a CSV whose header has a 'video_id' column), got {line!r}",
                )
            entries.append(ListEntry(video_id, None, number))
        return entries
    id_column = header.index("video_id")
    sentence_column = header.index("sentence") if "sentence" in header else None
    reader = csv.reader(lines[first + 1 :], delimiter=delimiter)
    previous_line_num = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise AnnotationError(path, f"line {first + 2 + previous_line_num}", f"a CSV row expected ({error})") from None
        number = first + 2 + previous_line_num  # the line this row starts on
        if reader.line_num - previous_line_num > 1 or any("\n" in field or "\r" in field for field in row):
            # A quote that is never closed swallows the following lines into one field: refuse,
            # since those rows (videos) would silently disappear.
            raise AnnotationError(
                path,
                f"line {number}",
                f"a quoted field runs over lines {number}-{first + 1 + reader.line_num} (unbalanced quote?); one row per line expected",
            )
        previous_line_num = reader.line_num
        if not row or all(not field.strip() for field in row):
            continue
        if len(row) != len(header):
            if sentence_column == len(header) - 1 and len(row) > len(header):
                row = row[: len(header) - 1] + [delimiter.join(row[len(header) - 1 :])]
            else:
                raise AnnotationError(path, f"line {number}", f"{len(header)} fields ({delimiter.join(header)}) expected, got {len(row)}: {row!r}")
        video_id = row[id_column].strip()
        if not video_id:
            raise AnnotationError(path, f"line {number}", "an empty video_id; a video id expected")
        sentence = None
        if sentence_column is not None:
            sentence = row[sentence_column].strip()
            if not sentence:
                raise AnnotationError(path, f"line {number}", f"an empty sentence for {video_id!r}; a caption expected")
        entries.append(ListEntry(video_id, sentence, number))
    if not entries:
        raise AnnotationError(path, None, f"no video listed under the header; a {what} expected")
    return entries


def _rows_from_list(
    entries: list[ListEntry], list_path: Path, split: str, annotations: MSRVTTAnnotations | None
) -> list[dict[str, Any]]:
    """Rows of one split: sentences of the list when it has them, else the JSON captions."""
    order: list[str] = []
    captions: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for entry in entries:
        if entry.video_id not in captions:
            order.append(entry.video_id)
            captions[entry.video_id] = []
            first_line[entry.video_id] = entry.line
        elif entry.sentence is not None:
            # A test list (JSFUSION 1k-A) has one sentence per video: a repeated video_id changes
            # the benchmark (fewer test videos, two queries for one), so it is an error there; a
            # training list may legitimately give several sentences of a video, so only warn.
            message = f"video {entry.video_id!r} listed again (first at line {first_line[entry.video_id]})"
            if split == "test":
                raise AnnotationError(list_path, f"line {entry.line}", f"{message}; each test video once expected")
            logger.warning("%s, line %d: %s; its sentences are merged", list_path, entry.line, message)
        if entry.sentence is not None:
            captions[entry.video_id].append(entry.sentence)
        else:
            if annotations is None:
                raise AnnotationError(
                    list_path, f"line {entry.line}", "no caption column: the captions of this list come from MSRVTT_data.json (--annotations)"
                )
            if captions[entry.video_id]:
                raise AnnotationError(list_path, f"line {entry.line}", f"video {entry.video_id!r} listed twice")
            if entry.video_id not in annotations.captions:
                raise AnnotationError(
                    list_path, f"line {entry.line}", f"video {entry.video_id!r} is not in the annotations ({', '.join(annotations.files)})"
                )
            found = annotations.captions[entry.video_id]
            if not found:
                file, key = annotations.origin[entry.video_id]
                raise AnnotationError(file, key, f"video {entry.video_id!r} has no sentence; a non-empty caption list expected")
            captions[entry.video_id].extend(found)
    return [make_row(video_id, captions[video_id], split) for video_id in order]


def _official_rows(annotations: MSRVTTAnnotations) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}
    for video_id, raw_split in annotations.split_of.items():
        file, key = annotations.origin[video_id]
        if raw_split is None:
            raise AnnotationError(file, f"{key}.split", "missing; the official protocol needs 'train', 'validate' or 'test'")
        split = OFFICIAL_SPLITS.get(raw_split)
        if split is None:
            raise AnnotationError(file, f"{key}.split", f"unknown split {raw_split!r}; expected 'train', 'validate' or 'test'")
        captions = annotations.captions[video_id]
        if not captions:
            raise AnnotationError(file, key, f"video {video_id!r} has no sentence; a non-empty caption list expected")
        rows[split].append(make_row(video_id, captions, split))
    return {split: split_rows for split, split_rows in rows.items() if split_rows}


def normalize_protocol(protocol: str) -> str:
    """Canonical protocol name (``1k-a``, ``1kA``... -> ``1k-A``); ValueError when unknown."""
    canonical = {name.lower().replace("-", ""): name for name in PROTOCOLS}
    name = canonical.get(str(protocol).lower().replace("-", "").replace("_", ""))
    if name is None:
        raise ValueError(f"unknown MSR-VTT protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return name


def build_msrvtt_rows(
    annotations: str | os.PathLike | Sequence[str | os.PathLike] | None,
    protocol: str = "official",
    *,
    train_csv: str | os.PathLike | None = None,
    test_csv: str | os.PathLike | None = None,
    miech_lists: Sequence[str | os.PathLike] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Per-split rows (no file columns yet) and a description of what was read."""
    protocol = normalize_protocol(protocol)
    paths = _as_paths(annotations)
    loaded = load_msrvtt_json(paths) if paths else None
    sources = f"annotations {', '.join(map(str, paths))}" if paths else "no annotation JSON"
    if protocol == "official":
        if loaded is None:
            raise ValueError("the official protocol needs --annotations (MSRVTT_data.json or the *_videodatainfo.json files)")
        rows = _official_rows(loaded)
        description = f"MSR-VTT, official protocol (split field of the JSON); {sources}."
    elif protocol in ("1k-A", "7k"):
        if test_csv is None:
            raise ValueError(f"the {protocol} protocol needs --test_csv (MSRVTT_JSFUSION_test.csv)")
        rows = {}
        notes = []
        if train_csv is not None:
            if loaded is None:
                raise ValueError(
                    f"--train_csv {train_csv} needs --annotations MSRVTT_data.json: the training captions live there; "
                    "leave out --train_csv to build the test split only"
                )
            train_entries = read_video_list(train_csv, what="MSR-VTT train CSV")
            rows["train"] = _rows_from_list(train_entries, Path(train_csv), "train", loaded)
            notes.append(f"train: {len(rows['train'])} videos of {train_csv} with every JSON caption")
        else:
            logger.warning("no --train_csv: building the %s TEST split only (no train split)", protocol)
            notes.append("test split only: no train list was given")
        test_entries = read_video_list(test_csv, what="MSR-VTT test CSV")
        if test_entries[0].sentence is None:
            raise AnnotationError(test_csv, "header", "a 'sentence' column expected (key,vid_key,video_id,sentence)")
        rows["test"] = _rows_from_list(test_entries, Path(test_csv), "test", None)
        if "train" in rows:
            overlap = {row["video_id"] for row in rows["train"]} & {row["video_id"] for row in rows["test"]}
            if overlap:
                raise AnnotationError(train_csv, None, f"{len(overlap)} train video(s) are also test videos, e.g. {sorted(overlap)[:3]}; disjoint lists expected")
        notes.append(f"test: {len(rows['test'])} videos of {test_csv}, captions from its sentence column")
        description = f"MSR-VTT, {protocol} protocol (no validation split); {sources}; " + "; ".join(notes) + "."
    else:  # miech
        if not miech_lists or len(miech_lists) != 2:
            raise ValueError("the miech protocol needs --miech_lists TRAIN_LIST TEST_LIST (two files)")
        rows = {}
        for split, list_path in zip(("train", "test"), miech_lists):
            entries = read_video_list(list_path, what=f"Miech {split} list")
            rows[split] = _rows_from_list(entries, Path(list_path), split, loaded)
        overlap = {row["video_id"] for row in rows["train"]} & {row["video_id"] for row in rows["test"]}
        if overlap:
            raise AnnotationError(
                miech_lists[1], None, f"{len(overlap)} test video(s) are also in the train list {miech_lists[0]}, e.g. {sorted(overlap)[:3]}; disjoint lists expected"
            )
        description = f"MSR-VTT, miech protocol: train {miech_lists[0]}, test {miech_lists[1]}; {sources}."
    return rows, description


def build_msrvtt(
    annotations: str | os.PathLike | Sequence[str | os.PathLike] | None,
    protocol: str = "official",
    output_dir: str | os.PathLike | None = None,
    *,
    videos_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    train_csv: str | os.PathLike | None = None,
    test_csv: str | os.PathLike | None = None,
    miech_lists: Sequence[str | os.PathLike] | None = None,
    missing: str = "report",
    push_to_hub: str | None = None,
    private: bool = False,
    media_root: str | os.PathLike | None = None,
    embed_media: bool = False,
) -> DatasetDict:
    """Build the MSR-VTT DatasetDict of ``protocol`` and save it to ``output_dir`` (when given).

    * ``official``: ``split`` field of each JSON video (train / validate / test -> train / validation / test).
    * ``1k-A`` / ``7k``: train = the videos of ``train_csv`` (9k or 7k list) with their JSON
      captions; test = ``test_csv`` (JSFusion), one caption per video from its ``sentence``
      column; no validation split. Without ``annotations`` and ``train_csv`` only the test split
      is built (a warning says so).
    * ``miech``: ``miech_lists = (train_list, test_list)``, each a text file with one video id
      per line or a CSV with a ``video_id`` column (and optionally ``sentence``, whose sentences
      then replace the JSON captions).

    ``videos_dir`` / ``audio_dir`` / ``features_dir`` fill the ``video`` / ``audio`` /
    ``features`` columns (see :func:`modeling_mckd.data_prep.common.attach_side_files`).
    """
    rows, description = build_msrvtt_rows(
        annotations, protocol, train_csv=train_csv, test_csv=test_csv, miech_lists=miech_lists
    )
    rows, notes = attach_side_files(
        rows, videos_dir=videos_dir, audio_dir=audio_dir, features_dir=features_dir, missing=missing
    )
    if notes:
        description += " " + "; ".join(notes) + "."
    return finish_dataset_dict(
        rows, output_dir, description=description, push_to_hub=push_to_hub, private=private,
        media_root=media_root, embed_media=embed_media, benchmark="msrvtt",
    )


@dataclasses.dataclass
class MSRVTTArguments:
    """MSR-VTT specific arguments."""

    annotations: list[str] = dataclasses.field(
        default_factory=list,
        metadata={
            "help": "MSRVTT_data.json, or train_val_videodatainfo.json test_videodatainfo.json (several paths and/or "
            "the flag repeated; merged)",
            "action": "extend",
        },
    )
    protocol: Literal["official", "1k-A", "7k", "miech"] = dataclasses.field(
        default="official", metadata={"help": "official (6,513/497/2,990), 1k-A (9k train + JSFusion 1k test), 7k, miech"}
    )
    train_csv: str | None = dataclasses.field(default=None, metadata={"help": "MSRVTT_train.9k.csv or MSRVTT_train.7k.csv"})
    test_csv: str | None = dataclasses.field(default=None, metadata={"help": "MSRVTT_JSFUSION_test.csv (',' or ';' separated)"})
    miech_lists: list[str] = dataclasses.field(
        default_factory=list,
        metadata={"help": "miech protocol: TRAIN_LIST TEST_LIST (one video id per line, or a CSV with a video_id column)"},
    )


def main(argv: Sequence[str] | None = None) -> DatasetDict:
    """Command line entry point."""
    args, common = parse_arguments(MSRVTTArguments, argv, description=__doc__.split("\n\n")[0])
    setup_logging()
    result = build_msrvtt(
        args.annotations or None,
        args.protocol,
        common.output_dir,
        train_csv=args.train_csv,
        test_csv=args.test_csv,
        miech_lists=args.miech_lists or None,
        **common.builder_kwargs(),
    )
    print(result)
    return result


if __name__ == "__main__":
    run_cli(main)
