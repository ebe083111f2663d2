"""The run-time feature store: the ``features`` column's references and the files they point at.

Training and evaluation read pre-extracted frame features through :func:`load_feature_ref`, which
turns a reference string into a float32 ``(T, D)`` array:

* ``bigfile://<percent-quoted absolute FeatureData/<feature> folder>?video=<percent-quoted id>``:
  the rows of the video's frames (order of ``video2frames.txt``), read from the memory-mapped
  ``feature.bin`` of a Dual Encoding "BigFile" folder::

      FeatureData/<feature>/feature.bin       float32 rows, N x D, row-major
      FeatureData/<feature>/shape.txt         "N D"
      FeatureData/<feature>/id.txt            N space-separated frame ids (video1_0 video1_1 ...)
      FeatureData/<feature>/video2frames.txt  Python dict literal {video: [frame ids]} (read with
                                              ast.literal_eval, never eval); without it every id
                                              of id.txt is a video of one row

* a plain absolute path of a ``.npy`` (loaded with ``allow_pickle=False``) or ``.safetensors``
  file (its only tensor, or the one named ``features``).

Building datasets that hold such references is `modeling_mckd.data_prep.features`.
"""

from __future__ import annotations

import ast
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from .data_prep.common import AnnotationError, require_file

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


__all__ = [
    "BIGFILE_SCHEME",
    "BigFile",
    "FEATURE_FILE_EXTENSIONS",
    "bigfile_ref",
    "is_bigfile_dir",
    "load_feature_ref",
    "open_bigfile",
    "parse_bigfile_ref",
    "read_video2frames",
    "video_frames",
]
