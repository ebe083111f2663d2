"""Shared schema and helpers of the dataset preparation CLIs.

One file over ~600 lines, for now: the sharing half (media records, shareable copies, dataset card,
export, push, ``write_dataset_dict``) needs the schema (``SPLITS``, ``validate_rows``) and the CLI half
needs the writing, so a split that keeps these names importable from here without an import cycle is
three modules (schema <- sharing <- common re-exporting both); not done yet.

Every preparation script turns the files a benchmark is distributed with into one
``datasets.DatasetDict`` with the columns of :data:`DATASET_FEATURES` (one row per video) and
writes it with :func:`write_dataset_dict`. :func:`expand_captions` turns such a split into one row
per caption for training.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
from datasets import Dataset, DatasetDict, Features, List, Value

from modeling_mckd.media import (
    MEDIA_COLUMNS,
    MediaPathError,
    is_absolute_reference,
    relative_reference,
    resolve_reference,
    split_bigfile_ref,
    write_media_record,
)
from modeling_mckd.output_guard import check_output_dir, is_saved_dataset_dict, path_arguments

logger = logging.getLogger(__name__)

#: Split names, in the order they are written.
SPLITS: tuple[str, ...] = ("train", "validation", "test")

#: Column types of every per-video split (see docs/datasets.md).
DATASET_FEATURES = Features(
    {
        "video_id": Value("string"),
        "video": Value("string"),
        "captions": List(Value("string")),
        "audio": Value("string"),
        "features": Value("string"),
        "split": Value("string"),
    }
)

#: Column types of :func:`expand_captions` output.
CAPTION_FEATURES = Features(
    {
        "video_index": Value("int64"),
        "video_id": Value("string"),
        "caption": Value("string"),
        "caption_index": Value("int64"),
        "video": Value("string"),
        "audio": Value("string"),
        "features": Value("string"),
        "split": Value("string"),
    }
)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".gif")
AUDIO_EXTENSIONS: tuple[str, ...] = (".npy",)
MissingPolicy = Literal["report", "error"]


class AnnotationError(ValueError):
    """An annotation file is missing, malformed or inconsistent.

    ``AnnotationError(path, where, expected)`` builds the message ``"<path>, <where>: <expected>"``
    (``where`` is e.g. ``"line 12"`` or ``"key 'videos'[3].split"``). A single argument is used as
    the whole message.
    """

    def __init__(self, path: str | os.PathLike | None, where: str | None = None, expected: str | None = None):
        self.path = None if path is None else str(path)
        self.where = where
        self.expected = expected
        if where is None and expected is None:
            message = self.path or "invalid annotations"
        else:
            location = ", ".join(part for part in (self.path, where) if part)
            message = f"{location}: {expected}" if expected else location
        super().__init__(message)


class MissingVideosError(ValueError):
    """Annotated videos (or their audio / feature files) are absent and ``missing="error"`` was asked."""


class HubPushError(RuntimeError):
    """``push_to_hub`` failed (offline, no token, no network...); the local copy is already written."""


def require_file(path: str | os.PathLike, what: str = "annotation file") -> Path:
    """Return ``path`` as a Path, or raise AnnotationError when it is not an existing file."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, None, f"{what} not found" if not path.exists() else f"{what} expected, found a directory")
    return path


def read_text_lines(path: str | os.PathLike, what: str = "annotation file") -> list[str]:
    """Lines of a UTF-8 text file without their line ends (a BOM is dropped); line i is number i+1."""
    path = require_file(path, what)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise AnnotationError(path, f"byte {error.start}", "UTF-8 text expected") from None
    return text.splitlines()


# ----------------------------------------------------------------------------------------------
# rows
# ----------------------------------------------------------------------------------------------


def make_row(
    video_id: str,
    captions: Sequence[str],
    split: str,
    *,
    video: str | None = None,
    audio: str | None = None,
    features: str | None = None,
) -> dict[str, Any]:
    """One per-video row with every column of :data:`DATASET_FEATURES`."""
    return {
        "video_id": str(video_id),
        "video": video,
        "captions": list(captions),
        "audio": audio,
        "features": features,
        "split": split,
    }


def validate_rows(rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Check split names, required columns, unique ids and non-empty captions (raises ValueError)."""
    for split, rows in rows_by_split.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
        seen: set[str] = set()
        for index, row in enumerate(rows):
            missing_columns = [name for name in ("video_id", "captions") if name not in row]
            if missing_columns:
                raise ValueError(f"split {split!r}, row {index}: missing column(s) {missing_columns}")
            video_id = row["video_id"]
            if not isinstance(video_id, str) or not video_id:
                raise ValueError(f"split {split!r}, row {index}: video_id must be a non-empty string, got {video_id!r}")
            if video_id in seen:
                raise ValueError(f"split {split!r}: video_id {video_id!r} appears twice (one row per video expected)")
            seen.add(video_id)
            captions = row["captions"]
            if isinstance(captions, str) or not captions:
                raise ValueError(
                    f"split {split!r}, video {video_id!r}: captions must be a non-empty list of strings, got {captions!r}"
                )
            if not all(isinstance(caption, str) for caption in captions):
                raise ValueError(f"split {split!r}, video {video_id!r}: every caption must be a string")
            for name in ("video", "audio", "features"):
                value = row.get(name)
                if value is not None and not isinstance(value, (str, os.PathLike)):
                    raise ValueError(f"split {split!r}, video {video_id!r}: {name} must be a path string or None, got {value!r}")
            if row.get("split", split) != split:
                raise ValueError(f"split {split!r}, video {video_id!r}: row says split={row['split']!r}")


# ----------------------------------------------------------------------------------------------
# files on disk
# ----------------------------------------------------------------------------------------------


class ResolvedRows(list):
    """The rows kept by :func:`resolve_videos`, with the ids left out in ``missing_video_ids``.

    A plain ``list`` of row dicts otherwise; ``num_missing`` is ``len(missing_video_ids)``.
    """

    missing_video_ids: list[str]

    def __init__(self, rows: Iterable[dict[str, Any]] = (), missing_video_ids: Iterable[str] = ()):
        super().__init__(rows)
        self.missing_video_ids = list(missing_video_ids)

    @property
    def num_missing(self) -> int:
        return len(self.missing_video_ids)


def index_files(directory: str | os.PathLike, extensions: Sequence[str]) -> dict[str, str]:
    """Map file stem -> absolute path for files under ``directory`` (recursive) with ``extensions``.

    Distributions split videos into sub-folders (e.g. MSR-VTT ``TrainValVideo/`` and ``TestVideo/``),
    hence the recursive walk. When a stem exists with several extensions, the earlier extension in
    ``extensions`` wins, so the result does not depend on the directory order.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: directory not found")
    rank = {extension.lower(): position for position, extension in enumerate(extensions)}
    found: dict[str, tuple[int, str]] = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            stem, extension = os.path.splitext(name)
            position = rank.get(extension.lower())
            if position is None:
                continue
            path = os.path.abspath(os.path.join(root, name))
            previous = found.get(stem)
            if previous is None or (position, path) < previous:
                found[stem] = (position, path)
    return {stem: path for stem, (_position, path) in found.items()}


def _describe_missing(ids: Sequence[str], what: str, directory: Any) -> str:
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    return f"{len(ids)} annotated video(s) have no {what} in {directory}: {shown}"


def resolve_videos(
    rows: Iterable[dict[str, Any]],
    videos_dir: str | os.PathLike | None,
    *,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    missing: MissingPolicy = "report",
    file_stems: Mapping[str, str] | None = None,
    column: str = "video",
    drop_missing: bool = True,
) -> ResolvedRows:
    """Fill ``row[column]`` with the path of ``<video_id>.<ext>`` found under ``videos_dir``.

    Annotated videos without a file are counted, reported with ``logging.warning`` and dropped
    (the returned :class:`ResolvedRows` lists them in ``missing_video_ids``); with ``missing="error"``
    a :class:`MissingVideosError` naming the first few ids is raised instead. ``file_stems`` maps a
    video id to the file stem on disk when they differ (MSVD ``vidN`` files). With
    ``drop_missing=False`` the rows are kept with ``None`` (used for optional audio files).
    ``videos_dir=None`` returns the rows unchanged.
    """
    rows = list(rows)
    if videos_dir is None:
        return ResolvedRows(rows)
    if missing not in ("report", "error"):
        raise ValueError(f"missing must be 'report' or 'error', got {missing!r}")
    available = index_files(videos_dir, extensions)
    kept: list[dict[str, Any]] = []
    missing_ids: list[str] = []
    for row in rows:
        stem = file_stems.get(row["video_id"], row["video_id"]) if file_stems is not None else row["video_id"]
        path = available.get(stem)
        if path is None:
            missing_ids.append(row["video_id"])
            if drop_missing:
                continue
        kept.append({**row, column: path})
    what = "video file" if column == "video" else f"{column} file ({'/'.join(extensions)})"
    if missing_ids:
        message = _describe_missing(missing_ids, what, videos_dir)
        if missing == "error":
            raise MissingVideosError(message)
        action = "written without them" if drop_missing else f"written with {column}=None"
        logger.warning("%s; %s (%d kept)", message, action, len(kept) - (0 if drop_missing else len(missing_ids)))
    return ResolvedRows(kept, missing_ids)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def _generate_rows(rows: Sequence[Mapping[str, Any]], split: str) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield {
            "video_id": row["video_id"],
            "video": _optional_str(row.get("video")),
            "captions": list(row["captions"]),
            "audio": _optional_str(row.get("audio")),
            "features": _optional_str(row.get("features")),
            "split": split,
        }


def _optional_str(value: Any) -> str | None:
    return None if value is None else os.fspath(value)


def make_dataset_dict(rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]], *, description: str = "") -> DatasetDict:
    """Build the DatasetDict in memory (no file written); splits in :data:`SPLITS` order."""
    validate_rows(rows_by_split)
    built = DatasetDict()
    for split in SPLITS:
        if split in rows_by_split:
            dataset = Dataset.from_list(
                list(_generate_rows(rows_by_split[split], split)), features=DATASET_FEATURES, split=datasets.NamedSplit(split)
            )
            dataset.info.description = description
            built[split] = dataset
    return built


# ----------------------------------------------------------------------------------------------
# sharing: relative media paths, embedded media, the dataset card and the push
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BenchmarkInfo:
    """What a dataset card says about the benchmark a dataset was prepared from."""

    pretty_name: str
    homepage: str
    citation: str
    license: str | None = None  # only where the benchmark states one


BENCHMARKS: dict[str, BenchmarkInfo] = {
    "msrvtt": BenchmarkInfo(
        "MSR-VTT", "https://www.microsoft.com/en-us/research/publication/msr-vtt-a-large-video-description-dataset-for-bridging-video-and-language/",
        "@inproceedings{xu2016msrvtt,\n  title={MSR-VTT: A Large Video Description Dataset for Bridging Video and Language},\n"
        "  author={Xu, Jun and Mei, Tao and Yao, Ting and Rui, Yong},\n  booktitle={CVPR},\n  year={2016}\n}",
    ),
    "msvd": BenchmarkInfo(
        "MSVD", "https://www.cs.utexas.edu/~ml/clamp/videoDescription/",
        "@inproceedings{chen2011msvd,\n  title={Collecting Highly Parallel Data for Paraphrase Evaluation},\n"
        "  author={Chen, David L. and Dolan, William B.},\n  booktitle={ACL},\n  year={2011}\n}",
    ),
    "vatex": BenchmarkInfo(
        "VATEX", "https://eric-xw.github.io/vatex-website/",
        "@inproceedings{wang2019vatex,\n  title={VATEX: A Large-Scale, High-Quality Multilingual Dataset for Video-and-Language Research},\n"
        "  author={Wang, Xin and Wu, Jiawei and Chen, Junkun and Li, Lei and Wang, Yuan-Fang and Wang, William Yang},\n"
        "  booktitle={ICCV},\n  year={2019}\n}",
        license="cc-by-4.0",
    ),
    "tgif": BenchmarkInfo(
        "TGIF", "https://github.com/raingo/TGIF-Release",
        "@inproceedings{li2016tgif,\n  title={TGIF: A New Dataset and Benchmark on Animated GIF Description},\n"
        "  author={Li, Yuncheng and Song, Yale and Cao, Liangliang and Tetreault, Joel and Goldberg, Larry and Jaimes, Alejandro and Luo, Jiebo},\n"
        "  booktitle={CVPR},\n  year={2016}\n}",
    ),
    "features": BenchmarkInfo(
        "Pre-extracted features (Dual Encoding layout)", "https://github.com/danieljf24/dual_encoding",
        "@inproceedings{dong2019dual,\n  title={Dual Encoding for Zero-Example Video Retrieval},\n"
        "  author={Dong, Jianfeng and Li, Xirong and Xu, Chaoxi and Ji, Shouling and He, Yuan and Yang, Gang and Wang, Xun},\n"
        "  booktitle={CVPR},\n  year={2019}\n}",
    ),
    "synthetic": BenchmarkInfo(
        "MCKD synthetic text-video benchmark", "", "(generated by modeling_mckd.data_prep.synthetic; no publication)",
        license="apache-2.0",
    ),
}

#: Arrays (audio, frame features) are embedded only when every row's is at most this size.
MAX_EMBEDDED_ARRAY_BYTES = 1 << 20


def _media_values(rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]]) -> Iterator[str]:
    for rows in rows_by_split.values():
        for row in rows:
            for column in MEDIA_COLUMNS:
                value = row.get(column)
                if value is not None:
                    yield os.fspath(value)


def _media_folder(value: str) -> str:
    bigfile = split_bigfile_ref(value)
    return bigfile[0] if bigfile else os.path.dirname(os.path.abspath(value))


def infer_media_root(rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]]) -> str | None:
    """The default media root: the deepest folder holding the parent of every media folder.

    One ``--videos_dir`` gives its parent; ``videos/`` and ``audio/`` side by side give the folder
    holding both. None when no row has media or a value is already relative.
    """
    folders = {_media_folder(value) for value in _media_values(rows_by_split) if is_absolute_reference(value)}
    if not folders:
        return None
    return os.path.commonpath([os.path.dirname(folder) for folder in folders])


def _media_record(rows_by_split, media_root, benchmark) -> dict[str, Any]:
    if media_root is not None:
        if not Path(media_root).is_dir():
            raise FileNotFoundError(f"--media_root {media_root}: folder not found")
        root = os.path.abspath(media_root)
    else:
        root = infer_media_root(rows_by_split)
    return {"paths": "relative" if media_root is not None else "absolute", "media_root": root, "benchmark": benchmark}


def relative_rows(rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]], media_root: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Copies of the rows with every media path relative to ``media_root`` (MediaPathError if one is outside)."""
    result: dict[str, list[dict[str, Any]]] = {}
    for split, rows in rows_by_split.items():
        converted = []
        for index, row in enumerate(rows):
            row = dict(row)
            for column in MEDIA_COLUMNS:
                value = row.get(column)
                if value is not None:
                    row[column] = relative_reference(os.fspath(value), media_root, where=f"split {split!r}, row {index}, column {column!r}")
            converted.append(row)
        result[split] = converted
    return result


def _load_array(value: str) -> Any:
    """The array of a ``.npy`` media file, or None for other references (BigFile, safetensors:
    kept as paths; feature_store is not imported here, it imports this module)."""
    import numpy as np

    return np.load(value, allow_pickle=False, mmap_mode="r") if value.endswith(".npy") else None


def shareable_dataset_dict(
    dataset_dict: DatasetDict, media_root: str | os.PathLike | None, *, embed_media: bool = False,
    max_array_bytes: int = MAX_EMBEDDED_ARRAY_BYTES,
) -> tuple[DatasetDict, list[str]]:
    """The copy of ``dataset_dict`` that can be shared: media paths relative to ``media_root``.

    With ``embed_media`` the ``video`` column becomes ``datasets.Video(decode=False)`` holding each
    clip's bytes (and its relative path), and ``audio`` / ``features`` become float32 ``(T, D)``
    arrays (nested lists) when every row's is a ``.npy`` file of at most ``max_array_bytes`` (else
    they stay relative paths). Returns (the copy, the columns embedded). Relative values already in
    ``dataset_dict`` are read under ``media_root``.
    """
    import numpy as np
    from datasets import Video

    embedded: list[str] = []
    result = DatasetDict()
    for split, dataset in dataset_dict.items():
        absolute: dict[str, list[str | None]] = {}
        for column in MEDIA_COLUMNS:
            values = list(dataset[column]) if column in dataset.column_names else [None] * len(dataset)
            converted = []
            for index, value in enumerate(values):
                where = f"split {split!r}, row {index}, column {column!r}"
                if value is not None and not is_absolute_reference(value):
                    if media_root is None:
                        raise MediaPathError(f"{where}: {value!r} is relative; give the media root it is relative to")
                    value = resolve_reference(value, media_root, where=where)
                converted.append(value)
            absolute[column] = converted
        columns: dict[str, list] = {}
        for column, values in absolute.items():
            if any(value is not None for value in values) and media_root is None:
                raise MediaPathError(f"split {split!r}: column {column!r} holds paths but no media root is known; give --media_root")
            columns[column] = [
                None if value is None
                else relative_reference(value, media_root, where=f"split {split!r}, row {index}, column {column!r}")
                for index, value in enumerate(values)
            ]
        features = dict(DATASET_FEATURES)
        if embed_media:
            if any(value is not None for value in absolute["video"]):
                columns["video"] = [
                    None if value is None else {"bytes": Path(value).read_bytes(), "path": relative}
                    for value, relative in zip(absolute["video"], columns["video"])
                ]
                features["video"] = Video(decode=False)
                embedded.append("video")
            for column in ("audio", "features"):
                present = [value for value in absolute[column] if value is not None]
                if not present:
                    continue
                arrays = [None if value is None else _load_array(value) for value in absolute[column]]
                if any(array is None for array, value in zip(arrays, absolute[column]) if value is not None):
                    logger.info("split %s: %s holds references other than .npy files; kept as relative paths", split, column)
                    continue
                if max(array.nbytes for array in arrays if array is not None) > max_array_bytes:
                    logger.info("split %s: %s arrays are over %d bytes; kept as relative paths", split, column, max_array_bytes)
                    continue
                columns[column] = [None if array is None else np.asarray(array, dtype=np.float32).reshape(array.shape[0], -1).tolist() for array in arrays]
                features[column] = List(List(Value("float32")))
                embedded.append(column)
        table = {name: columns[name] if name in columns else list(dataset[name]) for name in DATASET_FEATURES if name in dataset.column_names or name in columns}
        result[split] = Dataset.from_dict(table, features=Features({name: features[name] for name in table}), split=datasets.NamedSplit(split))
        result[split].info.description = dataset.info.description
    return result, sorted(set(embedded), key=MEDIA_COLUMNS.index)


def render_dataset_card(
    dataset_dict: DatasetDict, repo_id: str, *, benchmark: str | None = None, description: str = "",
    embedded: Sequence[str] = (), relative_columns: Sequence[str] = (),
):
    """The README.md dataset card (a ``huggingface_hub.DatasetCard``) of a pushed dataset."""
    from huggingface_hub import DatasetCard, DatasetCardData

    info = BENCHMARKS.get(benchmark or "")
    counts = {split: len(dataset) for split, dataset in dataset_dict.items()}
    captions = {split: sum(len(c) for c in dataset["captions"]) for split, dataset in dataset_dict.items()}
    total = sum(counts.values())
    size = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K" if total < 100_000 else "100K<n<1M"
    data = DatasetCardData(
        license=info.license if info else None,
        task_categories=["text-to-video"],
        language=["en"],
        tags=["text-video-retrieval", "mckd", "video"],
        size_categories=[size],
        pretty_name=info.pretty_name if info else repo_id.split("/")[-1],
        configs=[{
            "config_name": "default",
            "data_files": [{"split": split, "path": f"data/{split}-*"} for split in dataset_dict],
        }],
        mckd_media={"embedded": list(embedded), "relative": list(relative_columns)},
    )
    rows = "\n".join(f"| {split} | {counts[split]} | {captions[split]} |" for split in dataset_dict)
    # The preparation notes name files of the author's disk: keep their names, not where they were.
    description = re.sub(r"(?<![\w.])/(?:[^\s,;:()'\"]+/)+([^\s,;:()'\"/]+)", r"\1", description)
    media_lines = []
    if embedded:
        media_lines.append(f"Embedded in the Parquet files (no media folder needed): {', '.join(f'`{c}`' for c in embedded)}.")
    if relative_columns:
        media_lines.append(
            f"Paths relative to a media root that you provide: {', '.join(f'`{c}`' for c in relative_columns)} "
            "(obtain the media files from the benchmark's distribution and lay them out as the paths say)."
        )
    media_text = " ".join(media_lines) or "No media column is filled (captions only)."
    source = (
        (f"Prepared from [{info.pretty_name}]({info.homepage}) with `modeling_mckd.data_prep`." if info.homepage
         else f"{info.pretty_name}, written by `modeling_mckd.data_prep`.") if info
        else "Prepared with `modeling_mckd.data_prep`."
    )
    citation = f"```bibtex\n{info.citation}\n```" if info and info.citation.startswith("@") else (info.citation if info else "")
    content = f"""---
{data.to_yaml()}
---

# {data.pretty_name}

Text-video retrieval data for MCKD (multimodal contrastive knowledge distillation, the `mckd` package).
{source}

{description.strip()}

## Splits

| split | videos | captions |
|-------|--------|----------|
{rows}

One row per video: `video_id`, `video`, `captions` (every caption of the video), `audio`, `features`, `split`.

## Media

{media_text}

## Loading

```python
from datasets import load_dataset
dataset = load_dataset("{repo_id}")
```

Train on it with this package (relative paths are resolved against `--media_root`, embedded clips are
extracted to a private temporary folder):

```
python train.py --dataset {repo_id}{" --media_root /path/to/media" if relative_columns else ""} --output_dir outputs/teacher
```

## Citation

{citation}
"""
    return DatasetCard(content)


def export_dataset_folder(
    dataset_dict: DatasetDict, folder: str | os.PathLike, repo_id: str, *, media_root: str | os.PathLike | None,
    benchmark: str | None = None, embed_media: bool = False, description: str = "",
) -> Path:
    """Write the Hub layout of ``dataset_dict`` into ``folder``: ``data/<split>-00000-of-00001.parquet``
    (relative media paths or embedded media, see :func:`shareable_dataset_dict`) and ``README.md``."""
    folder = Path(folder)
    shared, embedded = shareable_dataset_dict(dataset_dict, media_root, embed_media=embed_media)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, dataset in shared.items():
        dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    relative_columns = [
        column for column in MEDIA_COLUMNS
        if column not in embedded and any(any(v is not None for v in ds[column]) for ds in shared.values())
    ]
    card = render_dataset_card(
        shared, repo_id, benchmark=benchmark, description=description, embedded=embedded, relative_columns=relative_columns
    )
    card.save(str(folder / "README.md"))
    return folder


def push_dataset_dict(
    dataset_dict: DatasetDict,
    repo_id: str,
    *,
    private: bool = False,
    source: str = "dataset",
    media_root: str | os.PathLike | None = None,
    benchmark: str | None = None,
    embed_media: bool = False,
    description: str | None = None,
) -> None:
    """Push a shareable copy of ``dataset_dict`` to the Hub dataset repo ``repo_id`` in one commit.

    The copy (:func:`export_dataset_folder`) holds media paths relative to ``media_root`` (default:
    :func:`infer_media_root` of its rows), or the media themselves with ``embed_media``, and a
    dataset card. Any failure becomes a one-line :class:`HubPushError` whose message never holds
    the token: it goes through ``modeling_mckd.hub.call_hub``, which redacts it (and any
    Authorization header a server echoes) and chains no cause that still has it.
    """
    from modeling_mckd.hub import call_hub  # here, not at the top: the Hub client is only needed to push

    if media_root is None:
        media_root = infer_media_root({split: dataset.select_columns([c for c in MEDIA_COLUMNS if c in dataset.column_names]).to_list()
                                       for split, dataset in dataset_dict.items()})
    if description is None:
        description = next((dataset.info.description for dataset in dataset_dict.values()), "") or ""

    with tempfile.TemporaryDirectory(prefix="mckd-dataset-push-") as staging:
        # Built before any network call: a path outside the media root is a data error, not a Hub one.
        export_dataset_folder(dataset_dict, staging, repo_id, media_root=media_root, benchmark=benchmark,
                              embed_media=embed_media, description=description)

        def upload():
            from huggingface_hub import HfApi

            api = HfApi(library_name="mckd")
            repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_url.repo_id, folder_path=staging, repo_type="dataset",
                              commit_message=f"Upload {benchmark or 'MCKD'} dataset")
            return repo_url.repo_id

        full_id = call_hub(upload, failure=f"pushing {source} to the Hub dataset repo {repo_id!r} failed", error_type=HubPushError)
    logger.info("pushed to https://huggingface.co/datasets/%s", full_id)


_DATASET_OUTPUT_EXPECTED = "a new or empty folder, or a dataset this command saved there before"


def write_dataset_dict(
    rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]],
    output_dir: str | os.PathLike,
    *,
    description: str = "",
    push_to_hub: str | None = None,
    private: bool = False,
    inputs: Sequence[str | os.PathLike | None] = (),
    media_root: str | os.PathLike | None = None,
    benchmark: str | None = None,
    embed_media: bool = False,
) -> DatasetDict:
    """Write one split per key of ``rows_by_split`` to ``output_dir`` and return it, loaded back.

    Splits are built with ``Dataset.from_generator`` and :data:`DATASET_FEATURES`, saved with
    ``save_to_disk`` into a temporary sibling folder (its generator cache lives in there too, so
    nothing leaks into ``HF_DATASETS_CACHE``) and renamed into place only once complete; an
    existing ``output_dir`` is replaced at that moment, never half-overwritten. ``description`` is
    stored in each split's ``DatasetInfo.description``. With ``push_to_hub="user/name"`` the
    written DatasetDict is then pushed (a failure raises :class:`HubPushError`; the local copy
    stays).

    Only a folder that is absent, empty or a DatasetDict saved before (and nothing else) is
    replaced; the current directory, a folder above it, the home folder and ``inputs`` (or a
    folder holding one) are refused with an :class:`~modeling_mckd.output_guard.OutputFolderError`
    before anything is written.

    Media columns: with ``media_root`` they hold paths relative to it; without, absolute paths
    (readable as they are by anything calling ``load_from_disk``). Either way ``mckd_media.json``
    beside ``dataset_dict.json`` records the media root (``media_root`` or
    :func:`infer_media_root`) and the benchmark, so the folder can be moved with its media and
    loaded with ``--media_root``, and a push writes a relative (``embed_media``: embedded) copy.
    """
    output_dir = check_output_dir(
        output_dir, is_own=is_saved_dataset_dict, inputs=inputs, expected=_DATASET_OUTPUT_EXPECTED
    )
    validate_rows(rows_by_split)
    if not rows_by_split:
        raise ValueError("no split to write: rows_by_split is empty")
    for split, rows in rows_by_split.items():
        if not rows:
            raise ValueError(f"split {split!r} has no row to write (every video missing?)")
    record = _media_record(rows_by_split, media_root, benchmark)
    if media_root is not None:
        rows_by_split = relative_rows(rows_by_split, media_root)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        built = DatasetDict()
        for split in SPLITS:
            if split not in rows_by_split:
                continue
            rows = rows_by_split[split]
            dataset = Dataset.from_generator(
                _generate_rows,
                features=DATASET_FEATURES,
                cache_dir=str(staging / "cache"),
                gen_kwargs={"rows": rows, "split": split},
                split=datasets.NamedSplit(split),
                # The content fingerprint would pickle every row; the staging folder is private.
                fingerprint=f"mckd-{split}-{staging.name}",
            )
            dataset.info.description = description
            built[split] = dataset
        data_dir = staging / "data"
        built.save_to_disk(str(data_dir))
        del built
        write_media_record(data_dir, record)
        backup = None
        if output_dir.exists():
            backup = staging / "previous"
            os.replace(output_dir, backup)
        os.replace(data_dir, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = datasets.load_from_disk(str(output_dir))
    counts = ", ".join(f"{split}: {len(result[split])} videos" for split in result)
    logger.info("wrote %s (%s)", output_dir, counts)
    if push_to_hub:
        push_dataset_dict(
            result, push_to_hub, private=private, source=f"{output_dir} (written completely)",
            media_root=record["media_root"], benchmark=benchmark, embed_media=embed_media, description=description,
        )
    return result


# ----------------------------------------------------------------------------------------------
# training view
# ----------------------------------------------------------------------------------------------


def _expand_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in CAPTION_FEATURES}
    for position, video_index in enumerate(indices):
        for caption_index, caption in enumerate(batch["captions"][position]):
            out["video_index"].append(video_index)
            out["caption"].append(caption)
            out["caption_index"].append(caption_index)
            for name in ("video_id", "video", "audio", "features", "split"):
                out[name].append(batch[name][position] if name in batch else None)
    return out


def expand_captions(dataset: Dataset, *, keep_in_memory: bool = False) -> Dataset:
    """One row per caption: ``video_index`` (row of ``dataset``), ``video_id``, ``caption``,
    ``caption_index`` (position in the video's caption list), and ``video``, ``audio``,
    ``features``, ``split`` carried over. Rows keep the video order, then the caption order."""
    if "captions" not in dataset.column_names or "video_id" not in dataset.column_names:
        raise ValueError(f"expand_captions needs 'video_id' and 'captions' columns, got {dataset.column_names}")
    return dataset.map(
        _expand_batch,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        features=CAPTION_FEATURES,
        keep_in_memory=keep_in_memory,
        desc="expanding captions",
    )


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CommonArguments:
    """Arguments every preparation CLI takes (added by :func:`add_common_arguments`)."""

    output_dir: str
    videos_dir: str | None = None
    audio_dir: str | None = None
    features_dir: str | None = None
    missing: MissingPolicy = "report"
    push_to_hub: str | None = None
    private: bool = False
    media_root: str | None = None
    embed_media: bool = False

    def input_paths(self) -> list[str]:
        """The media folders given (an output folder must not be one of them or hold one)."""
        return [path for path in (self.videos_dir, self.audio_dir, self.features_dir) if path]

    def builder_kwargs(self) -> dict:
        """The keyword arguments every ``build_*`` function takes besides its annotations."""
        return {
            "videos_dir": self.videos_dir, "audio_dir": self.audio_dir, "features_dir": self.features_dir,
            "missing": self.missing, "push_to_hub": self.push_to_hub, "private": self.private,
            "media_root": self.media_root, "embed_media": self.embed_media,
        }


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --output_dir (required), --videos_dir, --audio_dir, --features_dir, --missing,
    --push-to-hub/--push_to_hub, --private, --media_root and --embed_media to ``parser`` (an
    argparse or HfArgumentParser)."""
    group = parser.add_argument_group("output and media files")
    group.add_argument("--output_dir", "--output-dir", required=True, help="where the DatasetDict is saved (save_to_disk)")
    group.add_argument(
        "--videos_dir",
        "--videos-dir",
        default=None,
        help="folder (searched recursively) with <video_id>.{mp4,avi,webm,mkv,gif}; without it `video` is null",
    )
    group.add_argument(
        "--audio_dir", "--audio-dir", default=None, help="folder with <video_id>.npy audio features (float32 (T_a, D_a))"
    )
    group.add_argument(
        "--features_dir",
        "--features-dir",
        default=None,
        help="pre-extracted frame features: a BigFile folder FeatureData/<name> or a folder of <video_id>.npy/.safetensors",
    )
    group.add_argument(
        "--missing",
        choices=("report", "error"),
        default="report",
        help="annotated videos without a file: 'report' (warn, count, write the others) or 'error'",
    )
    group.add_argument(
        "--push-to-hub", "--push_to_hub", dest="push_to_hub", default=None, metavar="REPO", help="also push to this Hub dataset repo"
    )
    group.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    group.add_argument(
        "--media_root",
        "--media-root",
        default=None,
        help="write video/audio/features paths relative to this folder (shareable; give the same or a moved copy "
        "to train.py --media_root); default: absolute paths, the parent of the media folders is recorded",
    )
    group.add_argument(
        "--embed_media",
        "--embed-media",
        action="store_true",
        help="with --push-to-hub: put the clip bytes and small audio/feature arrays in the pushed dataset "
        "(only for media you may redistribute)",
    )
    return parser


def common_arguments_from_namespace(namespace: argparse.Namespace) -> CommonArguments:
    """Pick the :class:`CommonArguments` fields out of a parsed namespace."""
    names = [field.name for field in dataclasses.fields(CommonArguments)]
    return CommonArguments(**{name: getattr(namespace, name) for name in names})


def parse_arguments(script_arguments: type, argv: Sequence[str] | None = None, *, description: str | None = None):
    """Parse ``argv`` into ``(script_arguments instance, CommonArguments)`` with an HfArgumentParser."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(script_arguments, description=description)
    add_common_arguments(parser)
    script_args, namespace = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    common = common_arguments_from_namespace(namespace)
    # Before any annotation is read: an output folder that would swallow an input or foreign files
    # is refused in a second, not after the whole build.
    inputs = path_arguments([*dataclasses.asdict(script_args).values(), *common.input_paths()])
    check_output_dir(common.output_dir, is_own=is_saved_dataset_dict, inputs=inputs, expected=_DATASET_OUTPUT_EXPECTED)
    return script_args, common


def setup_logging() -> None:
    """INFO-level logging for the CLIs (the warnings about missing files must be seen)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def run_cli(main) -> None:
    """Run a CLI ``main()``; annotation problems exit with status 2 and their one-line message."""
    import sys

    try:
        main()
    except (AnnotationError, MissingVideosError, HubPushError, FileNotFoundError, ValueError) as error:
        # ValueError covers OutputFolderError: a refused --output_dir is a one-line error too
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def finish_dataset_dict(
    rows_by_split: Mapping[str, Sequence[Mapping[str, Any]]],
    output_dir: str | os.PathLike | None,
    *,
    description: str = "",
    push_to_hub: str | None = None,
    private: bool = False,
    media_root: str | os.PathLike | None = None,
    embed_media: bool = False,
    benchmark: str | None = None,
) -> DatasetDict:
    """:func:`write_dataset_dict` when ``output_dir`` is given, else build in memory (and push).

    ``media_root`` / ``embed_media`` / ``benchmark``: see :func:`write_dataset_dict` and
    :func:`push_dataset_dict`.
    """
    logger.info("%s", description)
    if output_dir is not None:
        return write_dataset_dict(
            rows_by_split, output_dir, description=description, push_to_hub=push_to_hub, private=private,
            media_root=media_root, embed_media=embed_media, benchmark=benchmark,
        )
    if media_root is not None:
        rows_by_split = relative_rows(rows_by_split, media_root)
    result = make_dataset_dict(rows_by_split, description=description)
    if push_to_hub:
        push_dataset_dict(
            result, push_to_hub, private=private, source="the in-memory DatasetDict", media_root=media_root,
            benchmark=benchmark, embed_media=embed_media, description=description,
        )
    return result
