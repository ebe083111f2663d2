"""Refuse output folders whose replacement would destroy files the project did not write.

Writers that replace or write into a whole folder (``write_dataset_dict``, the search index builder)
call :func:`check_output_dir` first. A folder may be used when it is absent or empty, or when it
holds what the project wrote there before (recognised by ``is_own``: a saved DatasetDict, a search
index). Whatever it holds, the current directory, a folder above it, the filesystem root, the home
folder (or a folder above it) and any input of the command (or a folder that contains one) are
refused: replacing them would take the user's other files, or the inputs, with them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


class OutputFolderError(ValueError):
    """An output folder cannot be used; the one-line message names it and says why."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _contains(folder: Path, path: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def check_output_dir(
    output_dir: str | os.PathLike,
    *,
    is_own: Callable[[Path], bool] | None = None,
    inputs: Iterable[str | os.PathLike | None] = (),
    what: str = "--output_dir",
    expected: str = "an empty folder or one this command wrote before",
) -> Path:
    """Return ``output_dir`` resolved, or raise :class:`OutputFolderError` when writing it is unsafe.

    ``is_own(path)`` says whether an existing, non-empty folder holds the project's own earlier
    output (None: no non-empty folder is accepted). ``inputs`` are the command's input files and
    folders (None entries are skipped): the output may be neither one of them nor a folder
    containing one. ``what`` names the option in messages, ``expected`` what would be accepted.
    """
    given = str(output_dir)
    # a link is refused: replacing "it" would replace the folder it points at, elsewhere
    is_link = Path(output_dir).expanduser().is_symlink()
    folder = _resolved(output_dir)
    cwd = Path.cwd().resolve()
    if folder == Path(folder.anchor):
        raise OutputFolderError(f"{what} {given!r} is the filesystem root; choose a new folder for the output")
    if _contains(folder, cwd):
        where = "the current directory" if folder == cwd else f"a folder above the current directory ({cwd})"
        raise OutputFolderError(f"{what} {given!r} is {where}; choose a new folder for the output")
    home = Path.home().resolve()
    if _contains(folder, home):
        where = "the home folder" if folder == home else f"a folder above the home folder ({home})"
        raise OutputFolderError(f"{what} {given!r} is {where}; choose a new folder for the output")
    for source in inputs:
        if source is None or str(source) == "":
            continue
        source_path = _resolved(source)
        if _contains(folder, source_path):
            relation = "is" if folder == source_path else "contains"
            raise OutputFolderError(
                f"{what} {given!r} {relation} the input {str(source)!r}; writing there would replace it, "
                "choose a separate folder for the output"
            )
    if is_link or (folder.exists() and not folder.is_dir()):
        raise OutputFolderError(f"{what} {given!r} exists and is not a plain folder; expected {expected}")
    if folder.is_dir() and any(folder.iterdir()) and not (is_own is not None and is_own(folder)):
        raise OutputFolderError(
            f"{what} {given!r} is not empty and does not hold this command's earlier output; "
            f"expected {expected} (nothing was changed)"
        )
    return folder


def is_saved_dataset_dict(folder: Path) -> bool:
    """Whether ``folder`` holds exactly a ``DatasetDict.save_to_disk`` layout and nothing else.

    ``dataset_dict.json`` lists the splits; each split is a folder with ``state.json``. Any other
    entry (a note, an annotation file) means the folder is also someone else's: not ours to replace.
    """
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits")
    except (OSError, ValueError, AttributeError):
        return False
    if not isinstance(splits, list) or not all(isinstance(name, str) for name in splits):
        return False
    for entry in folder.iterdir():
        if entry.name == "dataset_dict.json":
            continue
        if entry.name not in splits or entry.is_symlink() or not (entry / "state.json").is_file():
            return False
    return True


def path_arguments(values: Iterable) -> list[str]:
    """The values among ``values`` (strings or lists of strings) that name existing files or folders."""
    found: list[str] = []
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, (str, os.PathLike)) and str(item) and Path(item).expanduser().exists():
                found.append(os.fspath(item))
    return found


__all__ = ["OutputFolderError", "check_output_dir", "is_saved_dataset_dict", "path_arguments"]
