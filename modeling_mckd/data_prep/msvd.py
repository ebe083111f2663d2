"""MSVD (Youtube2Text) -> DatasetDict (one row per clip), 1,200 / 100 / 670 clips.

``--captions`` is recognised by its content, not its extension:

* a JSON object clip id -> list of caption strings (``captions_msvd.json``);
* a pickle of clip id -> list of token lists (``raw-captions.pkl``), read with a restricted
  unpickler that builds nothing but dicts, lists and strings;
* ``AllVideoDescriptions.txt`` (Microsoft's file: ``#`` header lines, then ``<clip_id> <sentence>``);
* TextData caption files (``<clip_id>#<n> <sentence>``): one file, the per-split files
  ``msvd{train,val,test}.caption.txt`` (several paths) or a folder holding them; per-split files
  give the splits themselves.

Otherwise the splits come from ``--splits_dir`` (``train_list.txt``, ``val_list.txt``,
``test_list.txt``, one clip id per line). ``--youtube_mapping youtube_mapping.txt`` (lines
``<clip_id> vid<N>``) finds videos stored as ``vid<N>.avi``.

Example::

    python -m dataset_scripts.msvd --captions captions_msvd.json --splits_dir msvd \\
        --output_dir data/msvd
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
from modeling_mckd.data_prep.features import attach_side_files, read_textdata_captions
from modeling_mckd.data_prep.msrvtt import read_json_file

logger = logging.getLogger(__name__)

SPLIT_LIST_FILES: dict[str, str] = {"train": "train_list.txt", "validation": "val_list.txt", "test": "test_list.txt"}
CAPTION_FORMATS: tuple[str, ...] = ("json", "pickle", "all_video_descriptions", "textdata")
_TEXTDATA_LINE = re.compile(r"^[^#\s]+#\S+\s+\S")
_TEXTDATA_SPLIT = re.compile(r"(train|val|valid|validation|test)\.caption\.txt$")
_SPLIT_NAMES = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation", "test": "test"}


# ----------------------------------------------------------------------------------------------
# caption sources
# ----------------------------------------------------------------------------------------------


class UnsafePickleError(AnnotationError):
    """A caption pickle asked for a Python object other than dict / list / str."""


#: Bound on the caption text a pickle may expand to (MSVD's captions hold ~2.8 M characters).
MAX_PICKLE_CAPTION_CHARACTERS = 200_000_000
_CONTAINERS = (list, dict, tuple, set, frozenset, bytearray)


def _refuse_shared_container(opcode_loader):
    """Wrap a memo-get / DUP opcode: a container may be built once but never referenced again.

    A pickle "bomb" is a small file whose lists refer to one list again and again (by the memo or
    DUP), so that walking it builds gigabytes. ``pickle.dump`` of real caption data never shares a
    list or dict, so any shared container is refused as soon as the opcode fetches it (strings may
    be shared: tokens are; their total length is bounded when the captions are joined).
    """

    def load(self):
        opcode_loader(self)
        if isinstance(self.stack[-1], _CONTAINERS) and self.stack[-1] != ():
            raise UnsafePickleError(
                self._path, None,
                "a list or dict referenced twice (memo reuse); caption pickles never share containers, and sharing "
                "is how a pickle bomb expands a small file into gigabytes",
            )

    return load


class _CaptionUnpickler(pickle._Unpickler):
    """Builds only what pickle opcodes build without a global: dicts, lists, strings (and
    tuples / numbers, rejected afterwards by the shape check). Every global lookup (classes,
    functions such as ``os.system``) and every persistent id is refused before anything runs,
    and a container is never referenced twice (see :func:`_refuse_shared_container`). The pure
    Python unpickler is used because only its opcode table can be hooked (MSVD-sized: ~6 s once, on a busy 2-core machine)."""

    dispatch = dict(pickle._Unpickler.dispatch)
    for _opcode in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET, pickle.DUP):
        dispatch[_opcode[0]] = _refuse_shared_container(pickle._Unpickler.dispatch[_opcode[0]])
    del _opcode

    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        raise UnsafePickleError(
            self._path, None, f"refusing to load the global {module}.{name}: a caption pickle may hold only dicts, lists and strings"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(self._path, None, f"refusing the persistent id {pid!r}: only dicts, lists and strings are accepted")


def read_captions_pickle(path: str | os.PathLike) -> dict[str, list[str]]:
    """``raw-captions.pkl``: clip id -> list of token lists (each joined with spaces) or strings."""
    path = require_file(path, "caption pickle")
    try:
        data = _CaptionUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # a truncated / corrupt stream can fail in many ways
        raise AnnotationError(path, None, f"a pickle of dict clip id -> list of token lists expected ({type(error).__name__}: {error})") from error
    if not isinstance(data, dict):
        raise AnnotationError(path, "top level", f"a dict clip id -> list of token lists expected, got {type(data).__name__}")
    captions: dict[str, list[str]] = {}
    characters = 0
    for clip_id, entries in data.items():
        if not isinstance(clip_id, str):
            raise AnnotationError(path, f"key {clip_id!r}", "a string clip id expected")
        if not isinstance(entries, list) or not entries:
            raise AnnotationError(path, f"key {clip_id!r}", "a non-empty list of captions (token lists) expected")
        sentences = []
        for position, entry in enumerate(entries):
            if isinstance(entry, str):
                characters += len(entry)
            elif isinstance(entry, list) and all(isinstance(token, str) for token in entry):
                characters += sum(len(token) + 1 for token in entry)  # counted before joining: nothing big is built
            else:
                raise AnnotationError(path, f"key {clip_id!r}[{position}]", f"a list of token strings expected, got {entry!r}"[:200])
            if characters > MAX_PICKLE_CAPTION_CHARACTERS:
                raise AnnotationError(
                    path, f"key {clip_id!r}[{position}]",
                    f"the captions exceed {MAX_PICKLE_CAPTION_CHARACTERS:,} characters; a caption pickle of a benchmark's size expected",
                )
            if isinstance(entry, str):
                sentence = entry
            elif isinstance(entry, list):
                sentence = " ".join(entry)
            else:
                raise AnnotationError(path, f"key {clip_id!r}[{position}]", f"a list of token strings expected, got {entry!r}"[:200])
            if not sentence.strip():
                raise AnnotationError(path, f"key {clip_id!r}[{position}]", "an empty caption; a non-empty token list expected")
            sentences.append(sentence)
        captions[clip_id] = sentences
    return captions


def read_captions_json(path: str | os.PathLike) -> dict[str, list[str]]:
    """``captions_msvd.json``: a JSON object clip id -> non-empty list of caption strings."""
    data = read_json_file(path, "caption JSON")
    if not isinstance(data, dict):
        raise AnnotationError(path, "top level", f"a JSON object clip id -> list of captions expected, got {type(data).__name__}")
    for clip_id, captions in data.items():
        if not isinstance(captions, list) or not captions:
            raise AnnotationError(path, f"key {clip_id!r}", "a non-empty list of caption strings expected")
        for position, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise AnnotationError(path, f"key {clip_id!r}[{position}]", f"a non-empty caption string expected, got {caption!r}")
    return data


def read_all_video_descriptions(path: str | os.PathLike) -> dict[str, list[str]]:
    """``AllVideoDescriptions.txt``: ``#`` header lines, then ``<clip_id> <sentence>`` lines."""
    path = require_file(path, "AllVideoDescriptions.txt")
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(read_text_lines(path), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(None, 1)
        if len(parts) != 2:
            raise AnnotationError(path, f"line {number}", f"'<clip_id> <sentence>' expected, got {line[:80]!r}")
        captions.setdefault(parts[0], []).append(parts[1].strip())
    if not captions:
        raise AnnotationError(path, None, "no description line; '<clip_id> <sentence>' lines expected")
    return captions


def detect_caption_format(path: str | os.PathLike) -> str:
    """One of :data:`CAPTION_FORMATS`, from the first bytes / lines of the file (not its name)."""
    path = require_file(path, "caption file")
    with open(path, "rb") as handle:
        head = handle.read(4096)
    # Protocol 2+ pickles start with PROTO (0x80); protocol 0/1 dicts with '(' or '}'.
    if head[:1] in (b"\x80", b"(", b"}"):
        return "pickle"
    text = head.decode("utf-8-sig", errors="replace").lstrip()
    if text.startswith("{"):
        return "json"
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return "textdata" if _TEXTDATA_LINE.match(line) else "all_video_descriptions"
    raise AnnotationError(path, None, "cannot recognise the caption format: a JSON object, a pickle, AllVideoDescriptions.txt or TextData lines expected")


def read_caption_file(path: str | os.PathLike) -> tuple[dict[str, list[str]], str]:
    """(clip id -> captions, format name) of a caption file of any supported format."""
    kind = detect_caption_format(path)
    reader = {
        "json": read_captions_json,
        "pickle": read_captions_pickle,
        "all_video_descriptions": read_all_video_descriptions,
        "textdata": read_textdata_captions,
    }[kind]
    return reader(path), kind


def textdata_split_files(paths: Sequence[str | os.PathLike]) -> dict[str, Path] | None:
    """Split -> TextData file when ``paths`` is a TextData folder (or a folder holding
    ``TextData/``) or several ``*{train,val,test}.caption.txt`` files; None otherwise."""
    paths = [Path(path) for path in paths]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0] / "TextData" if (paths[0] / "TextData").is_dir() else paths[0]
        candidates = sorted(folder.glob("*.caption.txt"))
        if not candidates:
            raise AnnotationError(folder, None, "no *.caption.txt file in this folder; TextData caption files expected")
    elif len(paths) > 1:
        candidates = paths
    elif _TEXTDATA_SPLIT.search(paths[0].name) and detect_caption_format(paths[0]) == "textdata":
        candidates = paths  # one per-split file, e.g. msvdtest.caption.txt alone
    else:
        return None
    files: dict[str, Path] = {}
    for candidate in candidates:
        match = _TEXTDATA_SPLIT.search(candidate.name)
        if match is None:
            if len(paths) > 1:
                raise AnnotationError(candidate, None, "several caption files are per-split TextData files named *{train,val,test}.caption.txt")
            continue
        split = _SPLIT_NAMES[match.group(1)]
        if split in files:
            raise AnnotationError(candidate, None, f"a second {split} caption file (first: {files[split]})")
        files[split] = require_file(candidate, "TextData caption file")
    if not files:
        raise AnnotationError(paths[0], None, "no *{train,val,test}.caption.txt file found")
    return {split: files[split] for split in ("train", "validation", "test") if split in files}


def read_split_lists(splits_dir: str | os.PathLike) -> dict[str, list[tuple[str, int]]]:
    """Split -> [(clip id, line number)] from train_list.txt / val_list.txt / test_list.txt."""
    splits: dict[str, list[tuple[str, int]]] = {}
    for split, name in SPLIT_LIST_FILES.items():
        path = Path(splits_dir) / name
        entries = []
        for number, line in enumerate(read_text_lines(path, f"{split} split list"), start=1):
            clip_id = line.strip()
            if not clip_id:
                continue
            if len(clip_id.split()) != 1:
                raise AnnotationError(path, f"line {number}", f"one clip id per line expected, got {line!r}")
            entries.append((clip_id, number))
        if not entries:
            raise AnnotationError(path, None, "no clip id; one clip id per line expected")
        splits[split] = entries
    # A clip in two splits leaks test (or validation) clips into training: an error, not a warning.
    listed_in: dict[str, tuple[Path, int]] = {}
    for split, entries in splits.items():
        path = Path(splits_dir) / SPLIT_LIST_FILES[split]
        for clip_id, number in entries:
            first = listed_in.setdefault(clip_id, (path, number))
            if first[0] != path:
                raise AnnotationError(
                    path, f"line {number}", f"clip {clip_id!r} is also in {first[0]} (line {first[1]}); disjoint splits expected"
                )
    return splits


def read_youtube_mapping(path: str | os.PathLike) -> dict[str, str]:
    """``youtube_mapping.txt``: clip id -> file stem (``vid<N>``), from ``<clip_id> vid<N>`` lines."""
    path = require_file(path, "youtube_mapping.txt")
    mapping: dict[str, str] = {}
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AnnotationError(path, f"line {number}", f"'<clip_id> vid<N>' expected, got {line!r}")
        mapping[parts[0]] = parts[1]
    return mapping


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------


def build_msvd_rows(
    captions: str | os.PathLike | Sequence[str | os.PathLike], splits_dir: str | os.PathLike | None = None
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Per-split rows (no file columns yet) and a description naming the caption source."""
    caption_paths = [Path(captions)] if isinstance(captions, (str, os.PathLike)) else [Path(path) for path in captions]
    if not caption_paths:
        raise ValueError("no caption source given (--captions)")
    for path in caption_paths:  # name a missing caption source before anything else
        if not path.exists():
            raise AnnotationError(path, None, "caption file not found")
    split_lists = read_split_lists(splits_dir) if splits_dir is not None else None
    per_split = textdata_split_files(caption_paths)
    rows: dict[str, list[dict[str, Any]]] = {}
    if per_split is not None:
        split_of_clip: dict[str, str] = {}
        for split in ("train", "validation", "test"):
            if split not in per_split:
                continue
            captions_of = read_textdata_captions(per_split[split])
            if split_lists is not None and set(captions_of) != {clip for clip, _ in split_lists[split]}:
                listed = {clip for clip, _ in split_lists[split]}
                raise AnnotationError(
                    Path(splits_dir) / SPLIT_LIST_FILES[split],
                    None,
                    f"the {split} clips differ from {per_split[split]} ({len(listed - set(captions_of))} listed without captions, "
                    f"{len(set(captions_of) - listed)} captioned but not listed); the same clips expected",
                )
            for clip in captions_of:
                if clip in split_of_clip:
                    raise AnnotationError(
                        per_split[split], None,
                        f"clip {clip!r} also has captions in the {split_of_clip[clip]} file {per_split[split_of_clip[clip]]}; disjoint splits expected",
                    )
                split_of_clip[clip] = split
            rows[split] = [make_row(clip, clip_captions, split) for clip, clip_captions in captions_of.items()]
        source = "TextData caption files " + ", ".join(f"{split}: {path}" for split, path in per_split.items())
    else:
        caption_file = caption_paths[0]
        captions_of, kind = read_caption_file(caption_file)
        if split_lists is None:
            raise ValueError(f"{caption_file} ({kind}) holds no splits: give --splits_dir with train_list.txt, val_list.txt, test_list.txt")
        for split, entries in split_lists.items():
            list_path = Path(splits_dir) / SPLIT_LIST_FILES[split]
            seen: set[str] = set()
            split_rows = []
            for clip, number in entries:
                if clip in seen:
                    raise AnnotationError(list_path, f"line {number}", f"clip {clip!r} listed twice")
                seen.add(clip)
                if clip not in captions_of:
                    raise AnnotationError(list_path, f"line {number}", f"clip {clip!r} has no caption in {caption_file}")
                split_rows.append(make_row(clip, captions_of[clip], split))
            rows[split] = split_rows
        source = f"{kind} caption file {caption_file} with the split lists of {splits_dir}"
    counts = ", ".join(f"{split}: {len(r)} clips / {sum(len(row['captions']) for row in r)} captions" for split, r in rows.items())
    return rows, f"MSVD; captions from {source}; every caption of that source kept ({counts})."


def build_msvd(
    captions: str | os.PathLike | Sequence[str | os.PathLike],
    splits_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    *,
    youtube_mapping: str | os.PathLike | None = None,
    videos_dir: str | os.PathLike | None = None,
    audio_dir: str | os.PathLike | None = None,
    features_dir: str | os.PathLike | None = None,
    missing: str = "report",
    push_to_hub: str | None = None,
    private: bool = False,
    media_root: str | os.PathLike | None = None,
    embed_media: bool = False,
) -> DatasetDict:
    """Build the MSVD DatasetDict and save it to ``output_dir`` (when given).

    ``captions``: a caption file of any format (recognised by content), or TextData per-split
    files / folder (which then define the splits). ``splits_dir``: the folder of
    ``train_list.txt``, ``val_list.txt``, ``test_list.txt`` (required unless TextData splits).
    ``youtube_mapping``: ``youtube_mapping.txt`` when the videos are stored as ``vid<N>.*``.
    The description (``DatasetInfo.description``, also logged) names the caption source read.
    """
    rows, description = build_msvd_rows(captions, splits_dir)
    file_stems = read_youtube_mapping(youtube_mapping) if youtube_mapping is not None else None
    if file_stems is not None and videos_dir is None:
        logger.info("--youtube_mapping is only used to find the video files (--videos_dir)")
    rows, notes = attach_side_files(
        rows, videos_dir=videos_dir, audio_dir=audio_dir, features_dir=features_dir, missing=missing, file_stems=file_stems
    )
    if notes:
        description += " " + "; ".join(notes) + "."
    return finish_dataset_dict(
        rows, output_dir, description=description, push_to_hub=push_to_hub, private=private,
        media_root=media_root, embed_media=embed_media, benchmark="msvd",
    )


@dataclasses.dataclass
class MSVDArguments:
    """MSVD specific arguments."""

    captions: list[str] = dataclasses.field(
        metadata={
            "help": "captions_msvd.json, raw-captions.pkl, AllVideoDescriptions.txt, or TextData "
            "msvd{train,val,test}.caption.txt files / their folder (format recognised by content)"
        }
    )
    splits_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder with train_list.txt, val_list.txt, test_list.txt"}
    )
    youtube_mapping: str | None = dataclasses.field(
        default=None, metadata={"help": "youtube_mapping.txt (<clip_id> vid<N>) when the videos are named vid<N>"}
    )


def main(argv: Sequence[str] | None = None) -> DatasetDict:
    """Command line entry point."""
    args, common = parse_arguments(MSVDArguments, argv, description=__doc__.split("\n\n")[0])
    setup_logging()
    result = build_msvd(
        args.captions,
        args.splits_dir,
        common.output_dir,
        youtube_mapping=args.youtube_mapping,
        **common.builder_kwargs(),
    )
    print(result)
    return result


if __name__ == "__main__":
    run_cli(main)
