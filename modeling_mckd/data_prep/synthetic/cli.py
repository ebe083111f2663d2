"""Command line of the synthetic benchmark: every :class:`SyntheticConfig` field is a flag."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .config import SyntheticConfig, SyntheticOutputExistsError
from .writer import generate_synthetic

DESCRIPTION = "The built-in synthetic text-video retrieval benchmark (the project's embedded default)."

# command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI: every :class:`SyntheticConfig` field is a flag, plus output and run options."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION + " Writes DIR/videos/*.mp4, DIR/audio/*.npy, DIR/MSRVTT_data.json and "
        "DIR/dataset (a DatasetDict for datasets.load_from_disk).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output_dir", "--output-dir", required=True, help="folder to generate into")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if the folder holds another config")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (the output does not depend on it)")
    parser.add_argument(
        "--push-to-hub",
        "--push_to_hub",
        dest="push_to_hub",
        default=None,
        metavar="REPO",
        help="also push the DatasetDict",
    )
    group = parser.add_argument_group("benchmark configuration (SyntheticConfig)")
    hints = typing.get_type_hints(SyntheticConfig)
    for field in dataclasses.fields(SyntheticConfig):
        flags = [f"--{field.name}"] + ([f"--{field.name.replace('_', '-')}"] if "_" in field.name else [])
        hint = hints[field.name]
        kwargs: dict[str, Any] = {"help": field.metadata.get("help", ""), "default": field.default, "dest": field.name}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.name == "hard_negative_attributes":
            kwargs.update(nargs="+", choices=field.metadata["choices"])
        else:
            kwargs["type"] = hint
        group.add_argument(*flags, **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir, overwrite, workers, push_to_hub = (
        args.pop(key) for key in ("output_dir", "overwrite", "workers", "push_to_hub")
    )
    try:
        config = SyntheticConfig(**args)
        dataset = generate_synthetic(output_dir, config, overwrite=overwrite, workers=workers, push_to_hub=push_to_hub)
    except (ValueError, SyntheticOutputExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(dataset)
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
