"""Pre-extracted frame features -> DatasetDict, and the ``features`` column reader.

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

The ``features`` column holds a reference string that :func:`load_feature_ref` turns into a
float32 ``(T, D)`` array:

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

import ast
import dataclasses
import functools
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote


import numpy as np
from datasets import DatasetDict

from modeling_mckd.data_prep.common import (
    AnnotationError,
    MissingVideosError,
    attach_side_files,
    finish_dataset_dict,
    index_files,
    make_row,
    parse_arguments,
    read_text_lines,
    require_file,
    run_cli,
    setup_logging,
)

logger = logging.getLogger(__name__)

BIGFILE_SCHEME = "bigfile://"
FEATURE_FILE_EXTENSIONS: tuple[str, ...] = (".npy", ".safetensors")


# ----------------------------------------------------------------------------------------------
# BigFile
# ----------------------------------------------------------------------------------------------


class BigFile:
    """A Dual Encoding feature folder, ``feature.bin`` memory-mapped (never read whole)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory).resolve()
        shape_path = require_file(self.directory / "shape.txt", "BigFile shape.txt")
        id_path = require_file(self.directory / "id.txt", "BigFile id.txt")
        bin_path = require_file(self.directory / "feature.bin", "BigFile feature.bin")
        fields = shape_path.read_text(encoding="utf-8").split()
        if len(fields) != 2 or not all(field.isdigit() for field in fields):
            raise AnnotationError(shape_path, "line 1", f"two integers 'N D' expected, got {' '.join(fields)!r}")
        self.num_rows, self.dim = int(fields[0]), int(fields[1])
        self.names: list[str] = id_path.read_text(encoding="utf-8").split()
        if len(self.names) != self.num_rows:
            raise AnnotationError(id_path, None, f"{self.num_rows} ids expected (shape.txt), found {len(self.names)}")
        expected_bytes = self.num_rows * self.dim * 4
        if bin_path.stat().st_size != expected_bytes:
            raise AnnotationError(
                bin_path, None, f"{expected_bytes} bytes of float32 expected for shape {self.num_rows} x {self.dim}, found {bin_path.stat().st_size}"
            )
        self.index: dict[str, int] = {}
        for row, name in enumerate(self.names):
            if name in self.index:
                raise AnnotationError(id_path, f"id {name!r}", "listed twice; unique ids expected")
            self.index[name] = row
        self.matrix = np.memmap(bin_path, dtype=np.float32, mode="r", shape=(self.num_rows, self.dim))

    def read(self, names: Sequence[str]) -> np.ndarray:
        """float32 (len(names), D) copy of the rows of ``names`` (KeyError names the first unknown id)."""
        try:
            rows = np.fromiter((self.index[name] for name in names), dtype=np.int64, count=len(names))
        except KeyError as error:
            raise KeyError(f"{self.directory / 'id.txt'}: no id {error.args[0]!r}") from None
        return np.asarray(self.matrix[rows], dtype=np.float32)


def read_video2frames(path: str | os.PathLike) -> dict[str, list[str]]:
    """Parse ``video2frames.txt`` (a Python dict literal) with ``ast.literal_eval`` (never eval)."""
    path = require_file(path, "video2frames.txt")
    text = path.read_text(encoding="utf-8")
    try:
        value = ast.literal_eval(text.strip())
    except (SyntaxError, ValueError) as error:
        where = f"line {error.lineno}" if getattr(error, "lineno", None) else None
        raise AnnotationError(path, where, f"a Python dict literal {{video_id: [frame ids]}} expected ({error})") from None
    if not isinstance(value, dict):
        raise AnnotationError(path, None, f"a dict {{video_id: [frame ids]}} expected, got {type(value).__name__}")
    for video_id, frames in value.items():
        if not isinstance(video_id, str) or not isinstance(frames, (list, tuple)) or not all(isinstance(f, str) for f in frames):
            raise AnnotationError(path, f"key {video_id!r}", "a string video id mapped to a list of frame id strings expected")
        if not frames:
            raise AnnotationError(path, f"key {video_id!r}", "an empty frame list; at least one frame id expected")
    return {video_id: list(frames) for video_id, frames in value.items()}


@functools.lru_cache(maxsize=32)
def open_bigfile(directory: str) -> BigFile:
    """Process-wide cached :class:`BigFile` of an absolute folder."""
    return BigFile(directory)


@functools.lru_cache(maxsize=32)
def video_frames(directory: str) -> dict[str, list[str]]:
    """Cached video -> frame ids of a BigFile folder (``id.txt`` ids as one-frame videos without
    ``video2frames.txt``). Every frame must be in ``id.txt`` (AnnotationError otherwise)."""
    bigfile = open_bigfile(directory)
    path = Path(directory) / "video2frames.txt"
    if not path.exists():
        return {name: [name] for name in bigfile.names}
    mapping = read_video2frames(path)
    for video_id, frames in mapping.items():
        absent = [frame for frame in frames if frame not in bigfile.index]
        if absent:
            raise AnnotationError(path, f"key {video_id!r}", f"frame id {absent[0]!r} is not in {Path(directory) / 'id.txt'}")
    return mapping


def is_bigfile_dir(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds a BigFile (``feature.bin``)."""
    return (Path(directory) / "feature.bin").is_file()


def bigfile_ref(directory: str | os.PathLike, video_id: str) -> str:
    """The ``features`` reference of ``video_id`` in the BigFile folder ``directory``."""
    return f"{BIGFILE_SCHEME}{quote(str(Path(directory).resolve()))}?video={quote(video_id, safe='')}"


def parse_bigfile_ref(ref: str) -> tuple[str, str]:
    """(absolute folder, video id) of a ``bigfile://`` reference."""
    if not ref.startswith(BIGFILE_SCHEME) or "?video=" not in ref:
        raise ValueError(f"{ref!r}: 'bigfile://<folder>?video=<id>' expected")
    folder, video = ref[len(BIGFILE_SCHEME) :].rsplit("?video=", 1)
    return unquote(folder), unquote(video)


def load_feature_ref(ref: str) -> np.ndarray:
    """The float32 ``(T, D)`` frame features a ``features`` column value refers to.

    ``bigfile://...`` references read the video's rows from the memory-mapped BigFile (folder
    and index cached per process); a ``.npy`` / ``.safetensors`` path loads that file (a 1-D
    vector becomes one row).
    """
    if ref.startswith(BIGFILE_SCHEME):
        folder, video_id = parse_bigfile_ref(ref)
        frames = video_frames(folder).get(video_id)
        if frames is None:
            raise KeyError(f"{folder}: video {video_id!r} is in neither video2frames.txt nor id.txt")
        return open_bigfile(folder).read(frames)
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"{ref}: feature file not found")
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if len(tensors) == 1:
            array = next(iter(tensors.values()))
        elif "features" in tensors:
            array = tensors["features"]
        else:
            raise ValueError(f"{path}: one tensor or a tensor named 'features' expected, found {sorted(tensors)}")
    else:
        raise ValueError(f"{ref!r}: a bigfile:// reference or a .npy / .safetensors path expected")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{path}: a (T, D) array expected, got shape {array.shape}")
    return np.asarray(array, dtype=np.float32)


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
    return finish_dataset_dict(rows_by_split, output_dir, description=description, push_to_hub=push_to_hub, private=private)


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
