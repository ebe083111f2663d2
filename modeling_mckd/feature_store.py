"""The run-time feature store: the ``features`` column's references and the files they point at.

Training and evaluation read pre-extracted frame features through :func:`load_feature_ref`, which
turns a reference string into a float32 ``(T, D)`` array:

* ``bigfile://<percent-quoted absolute FeatureData/<feature> folder>?video=<percent-quoted id>``:
  the rows of the video's frames (order of ``video2frames.txt``), read from the memory-mapped
  ``feature.bin`` of a Dual Encoding "BigFile" folder::

      FeatureData/<feature>/feature.bin       float32 rows, N x D, row-major
      FeatureData/<feature>/shape.txt         "N D"
      FeatureData/<feature>/id.txt            N space-separated frame ids (video1_0 video1_1 ...)
      FeatureData/<feature>/video2frames.txt  Python dict literal {video: [frame ids]} (parsed as
                                              that shape only, never evaluated); without it every id
                                              of id.txt is a video of one row

* a plain absolute path of a ``.npy`` (loaded with ``allow_pickle=False``) or ``.safetensors``
  file (its only tensor, or the one named ``features``).

Building datasets that hold such references is `modeling_mckd.data_prep.features`.
"""

from __future__ import annotations

import ast
import functools
import os
import re
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
        fields = read_utf8(shape_path).split()
        if len(fields) != 2 or not all(field.isdigit() for field in fields):
            raise AnnotationError(shape_path, "line 1", f"two integers 'N D' expected, got {' '.join(fields)!r}")
        self.num_rows, self.dim = int(fields[0]), int(fields[1])
        self.names: list[str] = read_utf8(id_path).split()
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


def read_utf8(path: Path) -> str:
    """A feature folder's text file; undecodable bytes are an AnnotationError naming the file and byte offset."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise AnnotationError(path, f"byte {error.start}", "UTF-8 text expected") from None


# video2frames.txt is a Python dict literal of lists of strings. It is parsed here, token by token without
# recursion, instead of by ast.literal_eval: a nested or huge literal is an error naming the line, never a
# RecursionError/MemoryError from Python's parser, and nothing but that one shape is accepted.
_V2F_TOKEN = re.compile(
    r"""\s+|\#[^\n]*|(?P<string>[rRuU]?(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"))|(?P<punct>[{}\[\]():,])"""
)
_V2F_CLOSE = {"[": "]", "(": ")"}


def _video2frames_tokens(path: Path, text: str):
    """(kind, value, offset) of each string and punctuation mark; anything else is an AnnotationError."""
    position = 0
    while position < len(text):
        match = _V2F_TOKEN.match(text, position)
        if match is None:
            line = text.count("\n", 0, position) + 1
            found = text[position:position + 20].split("\n")[0]
            raise AnnotationError(path, f"line {line}",
                                  f"a Python dict literal {{video_id: [frame ids]}} expected, found {found!r}")
        if match.group("string") is not None:
            token = match.group("string")
            # a lone string literal: literal_eval of it is bounded (no nesting) and handles escapes
            value = token[1:-1] if "\\" not in token and token[0] in "'\"" else ast.literal_eval(token)
            yield "string", value, position
        elif match.group("punct") is not None:
            yield "punct", match.group("punct"), position
        position = match.end()
    yield "end", None, position


def read_video2frames(path: str | os.PathLike) -> dict[str, list[str]]:
    """Parse ``video2frames.txt``, a Python dict literal ``{video_id: [frame ids]}`` (never evaluated).

    Only that shape is read: string keys, each mapped to a list (or tuple) of frame id strings.
    """
    path = require_file(path, "video2frames.txt")
    text = read_utf8(path)
    tokens = _video2frames_tokens(path, text)

    def fail(offset: int, expected: str, found) -> AnnotationError:
        line = text.count("\n", 0, offset) + 1
        shown = "the end of the file" if found is None else repr(found)
        return AnnotationError(path, f"line {line}",
                               f"a Python dict literal {{video_id: [frame ids]}} expected: {expected}, found {shown}")

    def take(expected: str, *accepted: str) -> tuple[str, str | None]:
        """The next token, which must be a string (when "string" is accepted) or one of the accepted marks."""
        kind, value, offset = next(tokens)
        if not ((kind == "string" and "string" in accepted) or (kind == "punct" and value in accepted)):
            raise fail(offset, expected, value)
        return kind, value

    mapping: dict[str, list[str]] = {}
    take("'{'", "{")
    kind, value = take("a video id string or '}'", "string", "}")
    while kind == "string":
        video_id = value
        take("':'", ":")
        _, opening = take("'[' opening the frame list", "[", "(")
        closing = _V2F_CLOSE[opening]
        frames: list[str] = []
        kind, value = take("a frame id string", "string", closing)
        while kind == "string":
            frames.append(value)
            _, mark = take(f"',' or {closing!r}", ",", closing)
            if mark == closing:
                break
            kind, value = take(f"a frame id string or {closing!r}", "string", closing)
        if not frames:
            raise AnnotationError(path, f"key {video_id!r}", "an empty frame list; at least one frame id expected")
        mapping[video_id] = frames  # a repeated key keeps the last value, as a dict literal does
        _, mark = take("',' or '}'", ",", "}")
        if mark == "}":
            break
        kind, value = take("a video id string or '}'", "string", "}")
    kind, value, offset = next(tokens)
    if kind != "end":
        raise fail(offset, "nothing after the closing '}'", value)
    return mapping


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
