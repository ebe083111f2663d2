"""VATEX -> DatasetDict (one row per clip), 25,991 / 1,500 / 1,500 clips.

Reads ``vatex_training_v1.0.json`` and ``vatex_validation_v1.0.json`` as distributed: JSON lists
of ``{"videoID": "<youtube id>_<start>_<end>", "enCap": [10 English captions], "chCap": [...]}``.
The video id is parsed with ``rsplit('_', 2)`` because YouTube ids contain ``_``.

Splits (the usual retrieval split, after HGR, Chen et al. CVPR 2020): train = every clip of the
training JSON (25,991); the 3,000 clips of the validation JSON are divided into 1,500
validation + 1,500 test. HGR divided them at random and distributed its lists; without them, this
script takes the FIRST half of the validation JSON (file order) as validation and the SECOND half
as test, which is deterministic but is not guaranteed to be HGR's division. Give HGR's lists (or
any) with ``--val_list`` / ``--test_list`` (and optionally ``--train_list``) to reproduce it.

Example::

    python -m dataset_scripts.vatex --training_json vatex_training_v1.0.json \\
        --validation_json vatex_validation_v1.0.json --output_dir data/vatex
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal


import numpy as np
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
from modeling_mckd.data_prep.msrvtt import read_json_file

logger = logging.getLogger(__name__)

CAPTION_KEYS: dict[str, str] = {"en": "enCap", "zh": "chCap"}


def parse_vatex_video_id(video_id: str) -> tuple[str, int, int]:
    """``"<youtube id>_<start>_<end>"`` -> (youtube id, start s, end s); ValueError otherwise."""
    parts = video_id.rsplit("_", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{video_id!r}: '<youtube id>_<start>_<end>' expected")
    return parts[0], int(parts[1]), int(parts[2])


def read_vatex_json(path: str | os.PathLike, language: str = "en") -> dict[str, list[str]]:
    """videoID -> captions of ``language`` (``enCap`` / ``chCap``) of a VATEX JSON, in file order."""
    if language not in CAPTION_KEYS:
        raise ValueError(f"unknown language {language!r}: expected one of {', '.join(CAPTION_KEYS)}")
    key = CAPTION_KEYS[language]
    data = read_json_file(path, "VATEX JSON")
    if not isinstance(data, list):
        raise AnnotationError(path, "top level", f"a JSON list of {{'videoID', '{key}'}} objects expected, got {type(data).__name__}")
    clips: dict[str, list[str]] = {}
    for index, entry in enumerate(data):
        where = f"item [{index}]"
        if not isinstance(entry, dict) or "videoID" not in entry:
            raise AnnotationError(path, where, "an object with a 'videoID' key expected")
        video_id = entry["videoID"]
        try:
            parse_vatex_video_id(str(video_id))
        except ValueError as error:
            raise AnnotationError(path, f"{where}.videoID", str(error)) from None
        if key not in entry:
            raise AnnotationError(path, where, f"key {key!r} missing for {video_id!r} (the public test JSON has no captions)")
        captions = entry[key]
        if not isinstance(captions, list) or not captions:
            raise AnnotationError(path, f"{where}.{key}", f"a non-empty list of captions expected for {video_id!r}")
        for position, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise AnnotationError(path, f"{where}.{key}[{position}]", f"a non-empty caption string expected, got {caption!r}")
        if video_id in clips:
            raise AnnotationError(path, f"{where}.videoID", f"{video_id!r} listed twice")
        clips[video_id] = captions
    return clips


def read_id_list(path: str | os.PathLike) -> list[tuple[str, str]]:
    """[(video id, where)] of a split list: text (one id per line) or a ``.npy`` array of strings
    (loaded with ``allow_pickle=False``)."""
    path = require_file(path, "split list")
    if path.suffix == ".npy":
        try:
            names = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise AnnotationError(path, None, f"a .npy array of strings expected ({error})") from None
        if names.dtype.kind not in "US":
            raise AnnotationError(path, None, f"a .npy array of strings expected, got dtype {names.dtype}")
        return [(str(name.decode() if isinstance(name, bytes) else name), f"item [{i}]") for i, name in enumerate(names.ravel())]
    entries = []
    for number, line in enumerate(read_text_lines(path, "split list"), start=1):
        if line.strip():
            if len(line.split()) != 1:
                raise AnnotationError(path, f"line {number}", f"one video id per line expected, got {line!r}")
            entries.append((line.strip(), f"line {number}"))
    return entries


def build_vatex_rows(
    training_json: str | os.PathLike | None,
    validation_json: str | os.PathLike | None,
    *,
    train_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    language: str = "en",
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Per-split rows (no file columns yet) and a description of the split used."""
    if training_json is None and validation_json is None:
        raise ValueError("give --training_json and/or --validation_json")
    if (val_list is None) != (test_list is None):
        raise ValueError("give both --val_list and --test_list, or neither (default division of the validation JSON)")
    training = read_vatex_json(training_json, language) if training_json is not None else {}
    validation = read_vatex_json(validation_json, language) if validation_json is not None else {}
    overlap = set(training) & set(validation)
    if overlap:
        raise AnnotationError(validation_json, None, f"{len(overlap)} clip(s) also in {training_json}, e.g. {sorted(overlap)[:3]}")
    every = {**training, **validation}
    rows: dict[str, list[dict[str, Any]]] = {}

    listed_in: dict[str, tuple[str, str]] = {}  # video id -> (list, where) of its first split list

    def from_list(list_path, split):
        result, seen = [], set()
        for video_id, where in read_id_list(list_path):
            if video_id in seen:
                raise AnnotationError(list_path, where, f"{video_id!r} listed twice")
            if video_id in listed_in:
                first_list, first_where = listed_in[video_id]
                raise AnnotationError(list_path, where, f"{video_id!r} is also in {first_list} ({first_where}); disjoint splits expected")
            listed_in[video_id] = (str(list_path), where)
            if video_id not in every:
                raise AnnotationError(list_path, where, f"{video_id!r} is in neither VATEX JSON given")
            seen.add(video_id)
            result.append(make_row(video_id, every[video_id], split))
        return result

    if train_list is not None:
        rows["train"] = from_list(train_list, "train")
    elif training:
        rows["train"] = [make_row(video_id, captions, "train") for video_id, captions in training.items()]
        listed_in.update({video_id: (str(training_json), "the training JSON") for video_id in training})
    if val_list is not None:
        rows["validation"] = from_list(val_list, "validation")
        rows["test"] = from_list(test_list, "test")
        division = f"validation / test from the lists {val_list} / {test_list}"
    elif validation:
        ids = list(validation)
        half = len(ids) // 2
        rows["validation"] = [make_row(video_id, validation[video_id], "validation") for video_id in ids[:half]]
        rows["test"] = [make_row(video_id, validation[video_id], "test") for video_id in ids[half:]]
        division = (
            f"validation = first {half} clips of {validation_json} (file order), test = the last {len(ids) - half} "
            "(deterministic; not necessarily HGR's random division)"
        )
    else:
        division = "no validation JSON: train only"
    counts = ", ".join(f"{split}: {len(split_rows)}" for split, split_rows in rows.items())
    description = f"VATEX ({CAPTION_KEYS[language]} captions); train = {train_list or training_json}; {division} ({counts} clips)."
    return {split: split_rows for split, split_rows in rows.items() if split_rows}, description


def build_vatex(
    training_json: str | os.PathLike | None,
    validation_json: str | os.PathLike | None,
    output_dir: str | os.PathLike | None = None,
    *,
    train_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    language: str = "en",
    videos_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    missing: str = "report",
    push_to_hub: str | None = None,
    private: bool = False,
    media_root: str | os.PathLike | None = None,
    embed_media: bool = False,
) -> DatasetDict:
    """Build the VATEX DatasetDict (see the module docstring for the split) and save it to
    ``output_dir`` (when given). Video files are ``<videoID>.<ext>`` under ``videos_dir``."""
    rows, description = build_vatex_rows(
        training_json, validation_json, train_list=train_list, val_list=val_list, test_list=test_list, language=language
    )
    rows, notes = attach_side_files(rows, videos_dir=videos_dir, audio_dir=audio_dir, features_dir=features_dir, missing=missing)
    if notes:
        description += " " + "; ".join(notes) + "."
    return finish_dataset_dict(
        rows, output_dir, description=description, push_to_hub=push_to_hub, private=private,
        media_root=media_root, embed_media=embed_media, benchmark="vatex",
    )


@dataclasses.dataclass
class VATEXArguments:
    """VATEX specific arguments."""

    training_json: str | None = dataclasses.field(default=None, metadata={"help": "vatex_training_v1.0.json"})
    validation_json: str | None = dataclasses.field(default=None, metadata={"help": "vatex_validation_v1.0.json"})
    train_list: str | None = dataclasses.field(default=None, metadata={"help": "optional train id list (.txt one id per line, or .npy of strings)"})
    val_list: str | None = dataclasses.field(default=None, metadata={"help": "validation id list, e.g. HGR's (with --test_list)"})
    test_list: str | None = dataclasses.field(default=None, metadata={"help": "test id list, e.g. HGR's (with --val_list)"})
    language: Literal["en", "zh"] = dataclasses.field(default="en", metadata={"help": "captions: en (enCap) or zh (chCap)"})


def main(argv: Sequence[str] | None = None) -> DatasetDict:
    """Command line entry point."""
    args, common = parse_arguments(VATEXArguments, argv, description=__doc__.split("\n\n")[0])
    setup_logging()
    result = build_vatex(
        args.training_json,
        args.validation_json,
        common.output_dir,
        train_list=args.train_list,
        val_list=args.val_list,
        test_list=args.test_list,
        language=args.language,
        **common.builder_kwargs(),
    )
    print(result)
    return result


if __name__ == "__main__":
    run_cli(main)
