"""What an index folder holds: its file names, format constants and errors, and the checked readers.

``index.json`` and ``embeddings.safetensors`` are read here, validated field by field (plain JSON
and safetensors: never eval'd or unpickled); every id and the ``faiss_file`` name are checked to stay
inside their folders before any path is built from them. Writers replace files atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")
INDEX_JSON = "index.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
FAISS_FILE = "index.faiss"
INDEX_FORMAT = "mckd-video-index"
INDEX_VERSION = 1
APPROXIMATE_KINDS = ("ivf", "hnsw")
DEFAULT_DECODE_WORKERS = 2  # decoding threads; more gave little on 2 cores (docs/search.md)
FAISS_THREADED_BATCH = 20  # query batches below this size search single-threaded (see _faiss_search)
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128


class IndexError_(ValueError):
    """An index folder, its inputs or its use is wrong; the message names the file or field."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """A folder or file the index needs does not exist."""


# --------------------------------------------------------------------------------------------
# Small helpers: atomic writes, faiss, model loading
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` then rename over ``path``: readers see the old or the new file, never half."""
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers create 0600 files; index files are plain data
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _write_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Reading and validating an index folder
# --------------------------------------------------------------------------------------------


def id_problem(video_id: object) -> str | None:
    """Why ``video_id`` is not a safe id (a relative posix path below the video folder), or None.

    Checked on the text alone, before any path is built from it: an id from a tampered index.json
    must not reach outside its folder (``..``, an absolute path, a backslash, a NUL byte).
    Symlinks are checked against the disk by :func:`path_inside`.
    """
    if not isinstance(video_id, str) or not video_id:
        return "must be a non-empty string"
    if "\\" in video_id or "\0" in video_id:
        return "must not contain a backslash or a NUL byte"
    if video_id.startswith("/"):
        return "must be relative to the video folder, not an absolute path"
    if any(part in ("", ".", "..") for part in video_id.split("/")):
        return "must not contain '..', '.' or empty path parts"
    return None


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name inside the index folder (the ``faiss_file`` field), or None."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return "must be a plain file name inside the index folder"
    return None


def path_inside(root: Path, relative: str) -> Path | None:
    """``root / relative`` resolved (symlinks followed), or None when it lands outside ``root``."""
    real_root = Path(root).resolve()
    target = (real_root / relative).resolve()
    return target if target != real_root and target.is_relative_to(real_root) else None


def _bad(path: Path, message: str) -> IndexError_:
    return IndexError_(f"{path}: {message}")


def _require(data: dict, key: str, kind, path: Path, optional: bool = False):
    if key not in data:
        if optional:
            return None
        raise _bad(path, f"missing field {key!r}")
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _bad(path, f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def read_index_json(index_dir: str | os.PathLike) -> dict:
    """Parse and validate ``index.json`` (plain JSON: never eval'd or unpickled)."""
    path = Path(index_dir) / INDEX_JSON
    if not path.is_file():
        raise IndexNotFoundError(f"{path}: no such file; is {Path(index_dir)} an index folder written by `search.py index`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad(path, f"not valid JSON ({error}); delete the folder and index again") from error
    if not isinstance(data, dict):
        raise _bad(path, f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != INDEX_FORMAT:
        raise _bad(path, f"field 'format' must be {INDEX_FORMAT!r}, got {data.get('format')!r}")
    version = _require(data, "version", int, path)
    if version > INDEX_VERSION:
        raise _bad(path, f"index version {version} is newer than this code understands ({INDEX_VERSION})")
    _require(data, "model", str, path)
    _require(data, "model_fingerprint", str, path)
    _require(data, "video_root", str, path)
    _require(data, "audio_dir", str, path, optional=True)
    dim = _require(data, "dim", int, path)
    if dim <= 0:
        raise _bad(path, f"field 'dim' must be positive, got {dim}")
    ids = _require(data, "ids", list, path)
    for position, video_id in enumerate(ids):
        problem = id_problem(video_id)
        if problem is not None:
            raise _bad(path, f"field 'ids'[{position}] {_short(video_id)} {problem}")
    failed = _require(data, "failed", list, path)
    for entry in failed:
        if not isinstance(entry, dict) or not isinstance(entry.get("video_id"), str) or not isinstance(entry.get("reason"), str):
            raise _bad(path, "field 'failed' must be a list of {'video_id': str, 'reason': str, ...}")
        problem = id_problem(entry["video_id"])
        if problem is not None:
            raise _bad(path, f"field 'failed' video_id {_short(entry['video_id'])} {problem}")
    approximate = _require(data, "approximate", str, path, optional=True)
    if approximate is not None and approximate not in APPROXIMATE_KINDS:
        raise _bad(path, f"field 'approximate' must be null, 'ivf' or 'hnsw', got {approximate!r}")
    search_params = _require(data, "search_params", dict, path, optional=True) or {}
    for key, value in search_params.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _bad(path, f"field 'search_params.{key}' must be a positive integer, got {value!r}")
    faiss_file = _require(data, "faiss_file", str, path, optional=True)
    if faiss_file is not None and file_name_problem(faiss_file):
        raise _bad(path, f"field 'faiss_file' {_short(faiss_file)} {file_name_problem(faiss_file)}")
    _require(data, "complete", bool, path, optional=True)
    return data


def _short(value: object) -> str:
    """A field's value for an error message, cut short (a tampered file may hold anything)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def read_embeddings(index_dir: str | os.PathLike) -> tuple[torch.Tensor, list[list]]:
    """``(embeddings (N, D) float32, rows [[id, size, mtime_ns, audio_size, audio_mtime_ns], ...])``."""
    path = Path(index_dir) / EMBEDDINGS_FILE
    if not path.is_file():
        raise IndexNotFoundError(f"{path}: no such file; the index folder is incomplete, run `search.py index` again")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            embeddings = handle.get_tensor("embeddings") if "embeddings" in set(handle.keys()) else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _bad(path, f"not a readable safetensors file ({error})") from error
    if embeddings is None or embeddings.dim() != 2:
        raise _bad(path, "expected a 2-D tensor named 'embeddings'")
    try:
        rows = json.loads(metadata.get("videos", ""))
    except json.JSONDecodeError as error:
        raise _bad(path, f"metadata 'videos' is not valid JSON ({error})") from error
    if not isinstance(rows, list) or not all(
        isinstance(r, list) and len(r) == 5 and isinstance(r[0], str) for r in rows
    ):
        raise _bad(path, "metadata 'videos' must be a list of [id, size, mtime_ns, audio_size, audio_mtime_ns]")
    if len(rows) != embeddings.shape[0]:
        raise _bad(path, f"metadata lists {len(rows)} videos but the tensor has {embeddings.shape[0]} rows")
    return embeddings.float(), rows

