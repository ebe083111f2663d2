"""TGIF -> DatasetDict (one row per GIF).

Reads ``tgif-v1.0.tsv`` (``<gif url>\\t<sentence>`` per line, no header; a GIF may have several
lines) with ``splits/train.txt``, ``splits/val.txt``, ``splits/test.txt`` (one GIF URL per line).
The video id is the URL's basename without extension (``tumblr_xxx``), which is also how the GIF
files are named (``<video_id>.gif`` under ``--videos_dir``).

Example::

    python -m dataset_scripts.tgif --tsv tgif-v1.0.tsv --splits_dir splits --output_dir data/tgif
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


from datasets import DatasetDict

from modeling_mckd.data_prep.common import (
    AnnotationError,
    finish_dataset_dict,
    make_row,
    parse_arguments,
    read_text_lines,
    run_cli,
    setup_logging,
)
from modeling_mckd.data_prep.features import attach_side_files

logger = logging.getLogger(__name__)

SPLIT_FILES: dict[str, str] = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def gif_video_id(url: str) -> str:
    """``https://.../tumblr_abc.gif`` -> ``tumblr_abc`` (a bare file name works too)."""
    name = posixpath.basename(unquote(urlparse(url.strip()).path))
    stem = posixpath.splitext(name)[0]
    if not stem:
        raise ValueError(f"{url!r}: a GIF URL ending in a file name expected")
    return stem


def read_tgif_tsv(path: str | os.PathLike) -> dict[str, list[str]]:
    """video id -> sentences (file order) of ``tgif-v1.0.tsv``. Lines are grouped by the URL's
    basename (the GIF's name), so one GIF served from two tumblr hosts stays one video."""
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(read_text_lines(path, "TGIF TSV"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise AnnotationError(path, f"line {number}", f"'<gif url><TAB><sentence>' expected ({len(parts)} tab-separated fields found)")
        url, sentence = parts[0].strip(), parts[1].strip()
        if not sentence:
            raise AnnotationError(path, f"line {number}", "an empty sentence; a caption expected")
        try:
            video_id = gif_video_id(url)
        except ValueError as error:
            raise AnnotationError(path, f"line {number}", str(error)) from None
        captions.setdefault(video_id, []).append(sentence)
    if not captions:
        raise AnnotationError(path, None, "no line; '<gif url><TAB><sentence>' lines expected")
    return captions


def build_tgif_rows(tsv: str | os.PathLike, splits_dir: str | os.PathLike) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Per-split rows (no file columns yet) and a description."""
    captions = read_tgif_tsv(tsv)
    rows: dict[str, list[dict[str, Any]]] = {}
    listed_in: dict[str, tuple[Path, int]] = {}
    for split, name in SPLIT_FILES.items():
        path = Path(splits_dir) / name
        seen: set[str] = set()
        split_rows = []
        for number, line in enumerate(read_text_lines(path, f"TGIF {split} list"), start=1):
            if not line.strip():
                continue
            try:
                video_id = gif_video_id(line)
            except ValueError as error:
                raise AnnotationError(path, f"line {number}", str(error)) from None
            if video_id in seen:
                raise AnnotationError(path, f"line {number}", f"{video_id!r} listed twice")
            if video_id in listed_in:  # a GIF in two splits leaks test GIFs into training
                first_path, first_number = listed_in[video_id]
                raise AnnotationError(path, f"line {number}", f"{video_id!r} is also in {first_path} (line {first_number}); disjoint splits expected")
            listed_in[video_id] = (path, number)
            if video_id not in captions:
                raise AnnotationError(path, f"line {number}", f"{line.strip()!r} has no sentence in {tsv}")
            seen.add(video_id)
            split_rows.append(make_row(video_id, captions[video_id], split))
        if not split_rows:
            raise AnnotationError(path, None, "no GIF listed; one GIF URL per line expected")
        rows[split] = split_rows
    counts = ", ".join(f"{split}: {len(r)} GIFs / {sum(len(row['captions']) for row in r)} sentences" for split, r in rows.items())
    return rows, f"TGIF; sentences from {tsv}, splits from {splits_dir} ({counts})."


def build_tgif(
    tsv: str | os.PathLike,
    splits_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    videos_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    missing: str = "report",
    push_to_hub: str | None = None,
    private: bool = False,
    media_root: str | os.PathLike | None = None,
    embed_media: bool = False,
) -> DatasetDict:
    """Build the TGIF DatasetDict and save it to ``output_dir`` (when given)."""
    rows, description = build_tgif_rows(tsv, splits_dir)
    rows, notes = attach_side_files(rows, videos_dir=videos_dir, audio_dir=audio_dir, features_dir=features_dir, missing=missing)
    if notes:
        description += " " + "; ".join(notes) + "."
    return finish_dataset_dict(
        rows, output_dir, description=description, push_to_hub=push_to_hub, private=private,
        media_root=media_root, embed_media=embed_media, benchmark="tgif",
    )


@dataclasses.dataclass
class TGIFArguments:
    """TGIF specific arguments."""

    tsv: str = dataclasses.field(metadata={"help": "tgif-v1.0.tsv"})
    splits_dir: str = dataclasses.field(metadata={"help": "the splits/ folder with train.txt, val.txt, test.txt"})


def main(argv: Sequence[str] | None = None) -> DatasetDict:
    """Command line entry point."""
    args, common = parse_arguments(TGIFArguments, argv, description=__doc__.split("\n\n")[0])
    setup_logging()
    result = build_tgif(
        args.tsv,
        args.splits_dir,
        common.output_dir,
        **common.builder_kwargs(),
    )
    print(result)
    return result


if __name__ == "__main__":
    run_cli(main)
