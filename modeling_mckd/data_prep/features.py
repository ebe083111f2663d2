"""Pre-extracted frame features -> DatasetDict (the run-time reader is `modeling_mckd.feature_store`).

Two layouts are read:

* the Dual Encoding "BigFile" layout of a collection root::

      <root>/<collection>/FeatureData/<feature>/feature.bin     float32 rows, N x D, row-major
      <root>/<collection>/FeatureData/<feature>/shape.txt       "N D"
      <root>/<collection>/FeatureData/<feature>/id.txt          N space-separated frame ids (video1_0 video1_1 ...)
      <root>/<collection>/FeatureData/<feature>/video2frames.txt  Python dict literal {video: [frame ids]}
      <root>/<collection>/TextData/<collection>.caption.txt    lines "<video_id>#<n> <sentence>"

  (``FeatureData`` and ``TextData`` may also sit directly under ``<root>``, shared by the
  collections);
* a folder of per-video ``<video_id>.npy`` or ``<video_id>.safetensors`` files, each (T, D).

The ``features`` column holds a reference string that
:func:`modeling_mckd.feature_store.load_feature_ref` turns into a float32 ``(T, D)`` array:

* ``bigfile://<percent-quoted absolute FeatureData/<feature> folder>?video=<percent-quoted id>``:
  the rows of the video's frames (order of ``video2frames.txt``), read from the memory-mapped
  ``feature.bin``; without ``video2frames.txt`` every id of ``id.txt`` is a video of one row;
* a plain absolute path of a ``.npy`` (loaded with ``allow_pickle=False``) or ``.safetensors``
  file (its only tensor, or the one named ``features``).

Example::

    python -m dataset_scripts.features --collection_root VisualSearch --feature resnext101-resnet152 \\
        --train_collection msrvtt10ktrain --val_collection msrvtt10kval --test_collection msrvtt10ktest \\
        --output_dir data/msrvtt-features
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from modeling_mckd.data_prep.common import (
    AUDIO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    AnnotationError,
    MissingPolicy,
    MissingVideosError,
    finish_dataset_dict,
    index_files,
    make_row,
    parse_arguments,
    read_text_lines,
    require_file,
    resolve_videos,
    run_cli,
    setup_logging,
)
from modeling_mckd.feature_store import FEATURE_FILE_EXTENSIONS, bigfile_ref, is_bigfile_dir, video_frames

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# side files: video, audio and feature references of each row
# ----------------------------------------------------------------------------------------------


def attach_feature_refs(
    rows: Sequence[dict[str, Any]], features_dir: str | os.PathLike, *, missing: str = "report"
) -> tuple[list[dict[str, Any]], list[str]]:
    """Fill ``features`` with the reference of each video in ``features_dir`` (a BigFile folder or
    a folder of per-video files); videos without features are dropped and reported, or raise
    :class:`MissingVideosError` with ``missing="error"``. Returns (kept rows, missing ids)."""
    features_dir = Path(features_dir).resolve()
    if not features_dir.is_dir():
        raise FileNotFoundError(f"{features_dir}: features folder not found")
    if is_bigfile_dir(features_dir):
        available = video_frames(str(features_dir))
        ref_of = lambda video_id: bigfile_ref(features_dir, video_id) if video_id in available else None
    else:
        files = index_files(features_dir, FEATURE_FILE_EXTENSIONS)
        ref_of = files.get
    kept, missing_ids = [], []
    for row in rows:
        ref = ref_of(row["video_id"])
        if ref is None:
            missing_ids.append(row["video_id"])
        else:
            kept.append({**row, "features": ref})
    if missing_ids:
        shown = ", ".join(missing_ids[:5]) + (", ..." if len(missing_ids) > 5 else "")
        message = f"{len(missing_ids)} annotated video(s) have no features in {features_dir}: {shown}"
        if missing == "error":
            raise MissingVideosError(message)
        logger.warning("%s; written without them (%d kept)", message, len(kept))
    return kept, missing_ids


def attach_side_files(
    rows_by_split: Mapping[str, Sequence[dict[str, Any]]],
    *,
    videos_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    missing: MissingPolicy = "report",
    file_stems: Mapping[str, str] | None = None,
    video_extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Fill ``video``, ``audio`` and ``features`` of every split; return (rows_by_split, notes).

    Videos and features without a file drop their row (or raise with ``missing="error"``);
    a missing audio file leaves ``audio=None`` (audio is optional) but is still reported.
    ``notes`` are one-line human summaries, e.g. for the DatasetDict description.
    """
    notes: list[str] = []
    result: dict[str, list[dict[str, Any]]] = {}
    for split, rows in rows_by_split.items():
        rows = list(rows)
        if videos_dir is not None:
            rows = resolve_videos(rows, videos_dir, extensions=video_extensions, missing=missing, file_stems=file_stems)
            if rows.num_missing:
                notes.append(f"{split}: {rows.num_missing} annotated video(s) without a video file were left out")
        if audio_dir is not None:
            rows = resolve_videos(
                rows, audio_dir, extensions=AUDIO_EXTENSIONS, missing=missing, column="audio", drop_missing=False
            )
            if rows.num_missing:
                notes.append(f"{split}: {rows.num_missing} video(s) have no audio file (audio=None)")
        if features_dir is not None:
            rows, missing_ids = attach_feature_refs(rows, features_dir, missing=missing)
            if missing_ids:
                notes.append(f"{split}: {len(missing_ids)} annotated video(s) without features were left out")
        result[split] = list(rows)
    return result, notes


# ----------------------------------------------------------------------------------------------
# TextData captions
# ----------------------------------------------------------------------------------------------

_CAPTION_LINE = re.compile(r"^(?P<video>[^#\s]+)#(?P<suffix>\S+)\s+(?P<sentence>\S.*)$")


def read_textdata_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a TextData caption file (``<video_id>#<n> <sentence>`` per line, split on the first
    whitespace; Dual Encoding's ``video0#enc#0`` ids work too) into video -> captions, in file order."""
    path = require_file(path, "TextData caption file")
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(read_text_lines(path, "TextData caption file"), start=1):
        if not line.strip():
            continue
        match = _CAPTION_LINE.match(line.strip())
        if match is None:
            raise AnnotationError(path, f"line {number}", f"'<video_id>#<n> <sentence>' expected, got {line[:80]!r}")
        captions.setdefault(match["video"], []).append(match["sentence"].strip())
    if not captions:
        raise AnnotationError(path, None, "no caption line; '<video_id>#<n> <sentence>' lines expected")
    return captions


# ----------------------------------------------------------------------------------------------
# collections -> DatasetDict
# ----------------------------------------------------------------------------------------------


def _first_existing(candidates: Sequence[Path], what: str, directory: bool = False) -> Path:
    for candidate in candidates:
        if (candidate.is_dir() if directory else candidate.is_file()):
            return candidate
    raise AnnotationError(candidates[0], None, f"{what} not found (also tried: {', '.join(map(str, candidates[1:])) or 'nothing else'})")


def collection_paths(collection_root: str | os.PathLike, collection: str, feature: str | None) -> tuple[Path, Path | None]:
    """(caption file, feature folder or None) of ``collection`` under ``collection_root``."""
    root = Path(collection_root)
    caption_file = _first_existing(
        [root / collection / "TextData" / f"{collection}.caption.txt", root / "TextData" / f"{collection}.caption.txt"],
        "TextData caption file",
    )
    feature_dir = None
    if feature is not None:
        feature_dir = _first_existing(
            [root / collection / "FeatureData" / feature, root / "FeatureData" / feature], f"FeatureData/{feature} folder", directory=True
        )
    return caption_file, feature_dir


def build_features(
    collection_root: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    feature: str | None = None,
    train_collection: str | None = None,
    val_collection: str | None = None,
    test_collection: str | None = None,
    features_dir: str | os.PathLike | None = None,
    videos_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    missing: str = "report",
    push_to_hub: str | None = None,
    private: bool = False,
    media_root: str | os.PathLike | None = None,
    embed_media: bool = False,
) -> DatasetDict:
    """DatasetDict of the given collections (train / validation / test) of a Dual Encoding root.

    Captions come from each collection's ``TextData/<collection>.caption.txt``; ``features`` refers
    to ``FeatureData/<feature>`` of the collection (or ``features_dir`` for every split: a BigFile
    folder or a folder of per-video ``.npy`` / ``.safetensors``). Videos without features are
    reported and left out (``missing="error"`` raises).
    """
    collections = {"train": train_collection, "validation": val_collection, "test": test_collection}
    collections = {split: name for split, name in collections.items() if name}
    if not collections:
        raise ValueError("give at least one of --train_collection, --val_collection, --test_collection")
    if feature is None and features_dir is None:
        raise ValueError("give --feature NAME (FeatureData/NAME of each collection) or --features_dir")
    rows_by_split: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    for split, collection in collections.items():
        caption_file, feature_dir = collection_paths(collection_root, collection, None if features_dir else feature)
        captions = read_textdata_captions(caption_file)
        rows = [make_row(video_id, video_captions, split) for video_id, video_captions in captions.items()]
        kept, missing_ids = attach_feature_refs(rows, features_dir or feature_dir, missing=missing)
        if missing_ids:
            notes.append(f"{split}: {len(missing_ids)} captioned video(s) without features were left out")
        rows_by_split[split] = kept
        notes.append(
            f"{split}: collection {collection}, captions {caption_file} ({sum(len(c) for c in captions.values())}), "
            f"features {features_dir or feature_dir}"
        )
    rows_by_split, side_notes = attach_side_files(rows_by_split, videos_dir=videos_dir, audio_dir=audio_dir, missing=missing)
    description = "Pre-extracted features (Dual Encoding layout); " + "; ".join(notes + side_notes) + "."
    return finish_dataset_dict(
        rows_by_split, output_dir, description=description, push_to_hub=push_to_hub, private=private,
        media_root=media_root, embed_media=embed_media, benchmark="features",
    )


@dataclasses.dataclass
class FeatureArguments:
    """Feature-collection specific arguments."""

    collection_root: str = dataclasses.field(metadata={"help": "the folder holding the collections (Dual Encoding 'rootpath')"})
    feature: str | None = dataclasses.field(default=None, metadata={"help": "feature name: FeatureData/<feature> of each collection"})
    train_collection: str | None = dataclasses.field(default=None, metadata={"help": "e.g. msrvtt10ktrain"})
    val_collection: str | None = dataclasses.field(default=None, metadata={"help": "e.g. msrvtt10kval"})
    test_collection: str | None = dataclasses.field(default=None, metadata={"help": "e.g. msrvtt10ktest"})


def main(argv: Sequence[str] | None = None) -> DatasetDict:
    """Command line entry point."""
    args, common = parse_arguments(FeatureArguments, argv, description=__doc__.split("\n\n")[0])
    setup_logging()
    result = build_features(
        args.collection_root,
        common.output_dir,
        feature=args.feature,
        train_collection=args.train_collection,
        val_collection=args.val_collection,
        test_collection=args.test_collection,
        **common.builder_kwargs(),
    )
    print(result)
    return result


if __name__ == "__main__":
    run_cli(main)
