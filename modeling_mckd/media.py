"""Media references of a dataset: paths relative to a media root, embedded clip bytes and arrays.

A prepared dataset's ``video``, ``audio`` and ``features`` columns refer to files. To make a
dataset usable on another disk they are written relative to a *media root* (``videos/x.mp4``,
``bigfile://FeatureData/resnet?video=x``), and for media that may be redistributed the clip
bytes (``datasets.Video(decode=False)``: ``{"bytes", "path"}``) and small arrays (audio features
``(T, D)`` as nested float32 lists) are stored in the dataset itself.

:func:`resolve_media_columns` turns any of these forms back into the plain absolute path
strings that the readers (``ClipStore``, ``feature_store``) expect: relative paths are joined to
the root (a path escaping it is refused, naming split, row and column), embedded bytes and
arrays are written once per process to a private temporary folder.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

logger = logging.getLogger(__name__)

#: The media record of a saved DatasetDict, in each split folder (beside state.json: the top
#: level must stay a plain save_to_disk layout, which output_guard recognises as ours).
MEDIA_RECORD_NAME = "mckd_media.json"
MEDIA_COLUMNS: tuple[str, ...] = ("video", "audio", "features")
_BIGFILE_SCHEME = "bigfile://"  # feature_store.BIGFILE_SCHEME; not imported: feature_store -> data_prep.common -> here


class MediaPathError(ValueError):
    """A media reference is absolute or leaves the media root (``..``), or cannot be resolved."""


# ----------------------------------------------------------------------------------------------
# relative <-> absolute
# ----------------------------------------------------------------------------------------------


def split_bigfile_ref(ref: str) -> tuple[str, str] | None:
    """(folder, still-quoted ``video=`` value) of a ``bigfile://`` reference, or None for a plain path."""
    if not ref.startswith(_BIGFILE_SCHEME) or "?video=" not in ref:
        return None
    folder, query = ref[len(_BIGFILE_SCHEME) :].rsplit("?video=", 1)
    return unquote(folder), query


def relative_reference(value: str, media_root: str | os.PathLike, *, where: str) -> str:
    """``value`` (an absolute path or ``bigfile://`` reference) relative to ``media_root``, POSIX style.

    Raises :class:`MediaPathError` naming ``where`` when the file is not under ``media_root``.
    """
    bigfile = split_bigfile_ref(value)
    path = Path(os.path.abspath(bigfile[0] if bigfile else value))
    relative = None
    # Compare as written first (keeps a symlinked clip's own name), then with links resolved.
    for root, candidate in ((Path(os.path.abspath(media_root)), path), (Path(media_root).resolve(), path.resolve())):
        try:
            relative = PurePosixPath(candidate.relative_to(root).as_posix())
            break
        except ValueError:
            continue
    if relative is None or ".." in relative.parts:
        raise MediaPathError(
            f"{where}: {value!r} is not under the media root {os.path.abspath(media_root)}; "
            "choose a media root holding every media folder"
        )
    if bigfile:
        return f"{_BIGFILE_SCHEME}{quote(str(relative))}?video={bigfile[1]}"
    return str(relative)


def _checked_relative(relative: str, where: str) -> PurePosixPath:
    """The relative part of a stored reference, refusing absolute and ``..`` paths."""
    # Both separators count: a Windows-style "..\\x" must not slip through on POSIX.
    normalised = relative.replace("\\", "/")
    candidate = PurePosixPath(normalised)
    if not normalised or candidate.is_absolute() or (len(normalised) > 1 and normalised[1] == ":"):
        raise MediaPathError(f"{where}: {relative!r} is an absolute path; a path relative to the media root expected")
    if ".." in candidate.parts:
        raise MediaPathError(f"{where}: {relative!r} leaves the media root ('..'); a path inside it expected")
    return candidate


def is_absolute_reference(value: str) -> bool:
    bigfile = split_bigfile_ref(value)
    text = bigfile[0] if bigfile else value
    return text.startswith("/") or text.startswith("\\") or (len(text) > 1 and text[1] == ":")


def resolve_reference(value: str, media_root: str | os.PathLike, *, where: str) -> str:
    """The absolute form of a relative path or ``bigfile://`` reference under ``media_root``."""
    root = Path(media_root).resolve()
    bigfile = split_bigfile_ref(value)
    relative = _checked_relative(bigfile[0] if bigfile else value, where)
    absolute = root.joinpath(*relative.parts)
    if bigfile:
        return f"{_BIGFILE_SCHEME}{quote(str(absolute))}?video={bigfile[1]}"
    return str(absolute)


# ----------------------------------------------------------------------------------------------
# embedded media
# ----------------------------------------------------------------------------------------------

_EXTRACTED_DIR: Path | None = None


def extracted_media_dir() -> Path:
    """This process's private folder for embedded media (removed when the process exits)."""
    global _EXTRACTED_DIR
    if _EXTRACTED_DIR is None or not _EXTRACTED_DIR.is_dir():
        _EXTRACTED_DIR = Path(tempfile.mkdtemp(prefix="mckd-media-"))
        atexit.register(shutil.rmtree, str(_EXTRACTED_DIR), True)
    return _EXTRACTED_DIR


def _safe_name(name: str) -> str:
    return "".join(character if character.isalnum() or character in "-_." else "_" for character in name)[:120] or "clip"


def extract_bytes(data: bytes, split: str, row: int, name: str) -> str:
    """Write embedded clip ``data`` to the per-process folder; return its absolute path."""
    suffix = Path(name).suffix if Path(name).suffix else ".mp4"
    path = extracted_media_dir() / split / f"{row:07d}-{_safe_name(Path(name).stem)}{_safe_name(suffix)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def extract_array(array: Any, split: str, row: int, column: str, *, where: str) -> str:
    """Write an embedded ``(T, D)`` array as float32 ``.npy``; return its absolute path."""
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise MediaPathError(f"{where}: an embedded (T, D) float array expected ({error})") from None
    if values.ndim != 2:
        raise MediaPathError(f"{where}: an embedded (T, D) array expected, got shape {values.shape}")
    path = extracted_media_dir() / split / column / f"{row:07d}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, values, allow_pickle=False)
    return str(path)


def decode_video_bytes(data: bytes, indices: Any = None) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of an in-memory clip (PyAV reading an ``io.BytesIO``).

    ``indices`` picks decoded frames by position (all frames when None). For readers that would
    rather not go through a temporary file.
    """
    import av

    wanted = None if indices is None else sorted({int(index) for index in indices})
    frames: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            raise ValueError("embedded clip: no video stream")
        for position, frame in enumerate(container.decode(video=0)):
            if wanted is None or position in wanted:
                frames[position] = frame.to_ndarray(format="rgb24")
            if wanted is not None and position >= wanted[-1]:
                break
    if not frames:
        raise ValueError("embedded clip: no decodable frame")
    order = sorted(frames) if indices is None else [int(index) for index in indices]
    missing = [index for index in order if index not in frames]
    if missing:
        raise ValueError(f"embedded clip: frame {missing[0]} requested but the clip has {len(frames)} decoded frames")
    return np.stack([frames[index] for index in order])


# ----------------------------------------------------------------------------------------------
# the record of a prepared dataset
# ----------------------------------------------------------------------------------------------


def read_media_record(dataset_dir: str | os.PathLike) -> dict | None:
    """The media record of a saved DatasetDict folder (its first split's ``mckd_media.json``), or None.

    Keys: ``paths`` ("relative" or "absolute": how the media columns were written),
    ``media_root`` (the root at preparation time), ``benchmark``. A malformed record is an
    error naming the file.
    """
    dataset_dir = Path(dataset_dir)
    try:
        splits = json.loads((dataset_dir / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for split in splits if isinstance(splits, list) else []:
        path = dataset_dir / str(split) / MEDIA_RECORD_NAME
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise MediaPathError(f"{path}: a JSON object expected ({error})") from None
        if not isinstance(record, dict) or record.get("paths") not in ("relative", "absolute"):
            raise MediaPathError(f"{path}, key 'paths': \"relative\" or \"absolute\" expected")
        if record.get("media_root") is not None and not isinstance(record["media_root"], str):
            raise MediaPathError(f"{path}, key 'media_root': a string expected, got {record['media_root']!r}")
        return record
    return None


def write_media_record(dataset_dir: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Write ``record`` into every split folder of the saved DatasetDict ``dataset_dir``."""
    dataset_dir = Path(dataset_dir)
    splits = json.loads((dataset_dir / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    for split in splits:
        (dataset_dir / split / MEDIA_RECORD_NAME).write_text(json.dumps(dict(record), indent=2) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# the load-time resolution
# ----------------------------------------------------------------------------------------------


def _resolve_value(value: Any, column: str, *, split: str, row: int, media_root: Path | None,
                   allow_absolute: bool, recorded_root: Path | None) -> str | None:
    where = f"split {split!r}, row {row}, column {column!r}"
    if value is None:
        return None
    if isinstance(value, Mapping):  # datasets.Video(decode=False): {"bytes", "path"}
        data, name = value.get("bytes"), value.get("path")
        if data is not None:
            return extract_bytes(data, split, row, name or f"row{row}.mp4")
        value = name
        if value is None:
            return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return extract_array(value, split, row, column, where=where)
    if not isinstance(value, str):
        raise MediaPathError(f"{where}: a path string, embedded bytes or an array expected, got {type(value).__name__}")
    if is_absolute_reference(value):
        if not allow_absolute:
            raise MediaPathError(f"{where}: {value!r} is an absolute path; a path relative to the media root expected")
        if media_root is not None and recorded_root is not None:
            # A folder written with absolute paths and moved with its media: re-root it.
            return resolve_reference(relative_reference(value, recorded_root, where=where), media_root, where=where)
        return value
    if media_root is None:
        raise MediaPathError(f"{where}: {value!r} is relative to a media root; give one (--media_root DIR)")
    return resolve_reference(value, media_root, where=where)


def resolve_media_columns(dataset_dict, *, media_root: str | os.PathLike | None, allow_absolute: bool = False,
                          recorded_root: str | os.PathLike | None = None):
    """A DatasetDict whose ``video`` / ``audio`` / ``features`` are absolute path strings (or None).

    Relative references are joined to ``media_root``; embedded bytes and arrays are extracted to
    :func:`extracted_media_dir`. Absolute paths are refused unless ``allow_absolute`` (a local
    folder this package wrote); with ``recorded_root`` (its root at preparation time) and a
    ``media_root`` they are moved from the one to the other. Splits without any media column
    are returned as they are.
    """
    from datasets import DatasetDict, Features, Value

    root = None if media_root is None else Path(media_root).resolve()
    recorded = None if recorded_root is None else Path(recorded_root)
    resolved = DatasetDict()
    for split, dataset in dataset_dict.items():
        columns = [name for name in MEDIA_COLUMNS if name in dataset.column_names]
        if not columns:
            resolved[split] = dataset
            continue
        values = {
            column: [
                _resolve_value(value, column, split=split, row=row, media_root=root,
                               allow_absolute=allow_absolute, recorded_root=recorded)
                for row, value in enumerate(dataset[column])
            ]
            for column in columns
        }
        if all(dataset.features[column] == Value("string") for column in columns) and all(
            values[column] == dataset[column] for column in columns
        ):
            resolved[split] = dataset  # nothing to change (absolute paths used as they are)
            continue
        features = Features({name: (Value("string") if name in columns else feature) for name, feature in dataset.features.items()})
        table = {name: (values[name] if name in columns else dataset[name]) for name in dataset.column_names}
        from datasets import Dataset

        rebuilt = Dataset.from_dict(table, features=features, split=dataset.split)
        rebuilt.info.description = dataset.info.description
        resolved[split] = rebuilt
    return resolved


__all__ = [
    "MEDIA_COLUMNS",
    "MEDIA_RECORD_NAME",
    "MediaPathError",
    "decode_video_bytes",
    "extract_array",
    "extract_bytes",
    "extracted_media_dir",
    "is_absolute_reference",
    "read_media_record",
    "relative_reference",
    "resolve_media_columns",
    "resolve_reference",
    "split_bigfile_ref",
    "write_media_record",
]
