"""The command lines, installed as console scripts (``[project.scripts]`` in pyproject.toml).

==========================  ===================================  ======================================
console script              from a checkout                      entry point
==========================  ===================================  ======================================
``mckd-train``              ``python train.py``                  :func:`train_main` (:func:`train`)
``mckd-distill``            ``python distill.py``                :func:`distill_main` (:func:`distill`)
``mckd-search``             ``python search.py``                 :func:`search_main` (:func:`search`)
``mckd-app``                ``python app.py``                    :func:`app_main` (`modeling_mckd.app`)
``mckd-prepare-msrvtt``     ``python dataset_scripts/msrvtt.py`` :func:`prepare_msrvtt_main`
``mckd-prepare-msvd``       ``python dataset_scripts/msvd.py``   :func:`prepare_msvd_main`
``mckd-prepare-vatex``      ``python dataset_scripts/vatex.py``  :func:`prepare_vatex_main`
``mckd-prepare-tgif``       ``python dataset_scripts/tgif.py``   :func:`prepare_tgif_main`
``mckd-prepare-features``   ``python dataset_scripts/features.py`` :func:`prepare_features_main`
``mckd-prepare-synthetic``  ``python dataset_scripts/synthetic.py`` :func:`prepare_synthetic_main`
==========================  ===================================  ======================================

Dataset preparation is one script per benchmark rather than one ``mckd-prepare <benchmark>``: each maps
one to one onto its ``dataset_scripts/`` file and its module's ``main``, so ``--help`` shows that
benchmark's own options at once and nothing dispatches in between.

``train`` / ``distill`` / ``search`` take ``argv`` and return (results, exit status) without touching
logging, for tests and notebooks; the ``*_main`` functions are what a console script calls: they set up
logging and turn the expected problems (a corrupt checkpoint, a refused output folder, a missing file)
into one line on stderr and exit status 2 (search: 1) instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

def _program(default: str) -> str:
    """The name the user typed (``mckd-train`` or ``train.py``), for error messages."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.endswith(".py") or name.startswith("mckd-") else default


def _setup_training_logging() -> None:
    from .runner import is_main_process

    # under accelerate launch, only the main process logs INFO lines
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _print_results(results: dict) -> None:
    from .runner import is_main_process

    if is_main_process():  # under accelerate launch, one copy of the results
        print(json.dumps({k: v for k, v in results.items() if not isinstance(v, (list, dict))}, indent=2, default=float))


def _teacher_arguments(argv: Sequence[str] | None) -> tuple:
    from .arguments import DataArguments, ModelArguments, RunArguments, TeacherArguments, parse_arguments

    return parse_arguments((ModelArguments, DataArguments, RunArguments, TeacherArguments),
                           None if argv is None else list(argv))


def _student_arguments(argv: Sequence[str] | None) -> tuple:
    from .arguments import DataArguments, DistillArguments, ModelArguments, RunArguments, parse_arguments

    return parse_arguments((ModelArguments, DataArguments, RunArguments, DistillArguments),
                           None if argv is None else list(argv), defaults={"model_preset": "student"})


def _run_teacher(arguments: tuple) -> dict:
    from .runner import run_teacher

    results = run_teacher(*arguments)
    _print_results(results)
    return results


def _run_student(arguments: tuple) -> dict:
    from .runner import run_student

    results = run_student(*arguments)
    _print_results(results)
    return results


def train(argv: Sequence[str] | None = None) -> dict:
    """Train a teacher (``train.py`` / ``mckd-train``); prints and returns the results."""
    return _run_teacher(_teacher_arguments(argv))


def distill(argv: Sequence[str] | None = None) -> dict:
    """Distil a student (``distill.py`` / ``mckd-distill``); prints and returns the results."""
    return _run_student(_student_arguments(argv))


def _run_training(parse, run, argv: Sequence[str] | None, program: str) -> int:
    from .output_guard import OutputFolderError
    from .training import CorruptCheckpointError

    _setup_training_logging()
    program = _program(program)
    try:
        arguments = parse(argv)  # a bad --config or an option of the other script: ValueError / FileNotFoundError
    except (ValueError, FileNotFoundError) as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    try:
        run(arguments)
    except (CorruptCheckpointError, OutputFolderError, FileNotFoundError) as error:
        # the user's input, not the code: a missing dataset or checkpoint, a refused output folder
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-train``: :func:`train` with logging; expected problems are one line on stderr (status 2)."""
    return _run_training(_teacher_arguments, _run_teacher, argv, "mckd-train")


def distill_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-distill``: :func:`distill` with logging; expected problems are one line on stderr (status 2)."""
    return _run_training(_student_arguments, _run_student, argv, "mckd-distill")


# ---------------------------------------------------------------------------------------------- search

SEARCH_DESCRIPTION = "Search a folder of videos by text with a trained MCKD model."
SEARCH_EPILOG = """examples:
  %(prog)s index --model runs/protocol/seed-0/mckd_full_teacher_towers --videos my_videos/ --out my_index
  %(prog)s query --index my_index "a red circle moves to the left"
  %(prog)s query --index my_index -k 10 --json "a dog runs" "a man is cooking"

`index` is resumable (rerun it after adding files: only new or changed files are encoded) and lists
the files it could not read. A model that fuses audio into its video embedding (the default-run
teacher) also needs --audio_dir with one <video stem>.npy per video. See docs/search.md."""


def build_search_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``search.py`` / ``mckd-search`` (subcommands ``index`` and ``query``)."""
    from .search import APPROXIMATE_KINDS, DEFAULT_DECODE_WORKERS, DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, DEFAULT_HNSW_M

    parser = argparse.ArgumentParser(prog=prog, description=SEARCH_DESCRIPTION, epilog=SEARCH_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode every video of a folder into an index folder")
    index.add_argument("--model", required=True, help="model folder or Hub id (from_pretrained)")
    index.add_argument("--videos", required=True, help="folder of video files (searched recursively)")
    index.add_argument("--out", required=True, help="index folder to create or resume")
    index.add_argument("--audio_dir", default=None,
                       help="<video stem>.npy audio features, for a model that fuses audio (e.g. the teacher)")
    index.add_argument("--batch_size", type=int, default=16, help="videos encoded at once (default 16)")
    index.add_argument("--approximate", choices=APPROXIMATE_KINDS, default=None,
                       help="approximate FAISS index for large collections (default: exact inner product)")
    index.add_argument("--nlist", type=int, default=None, help="ivf: number of cells (default about 4 sqrt(N))")
    index.add_argument("--nprobe", type=int, default=None, help="ivf: cells probed per query (default nlist/8)")
    index.add_argument("--hnsw_m", type=int, default=DEFAULT_HNSW_M, help="hnsw: links per node")
    index.add_argument("--ef_construction", type=int, default=DEFAULT_EF_CONSTRUCTION,
                       help="hnsw: candidate list size while building")
    index.add_argument("--ef_search", type=int, default=DEFAULT_EF_SEARCH, help="hnsw: candidate list size per query")
    index.add_argument("--save_every", type=int, default=20, help="save progress every N batches")
    index.add_argument("--num_workers", type=int, default=DEFAULT_DECODE_WORKERS,
                       help="threads decoding clips ahead of the model (0: none)")
    index.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    index.add_argument("--no_faiss", action="store_true", help="do not write index.faiss even if faiss is installed")
    index.add_argument("--no_progress", action="store_true", help="no progress bar")

    query = commands.add_parser("query", help="print the videos that best match one or more sentences")
    query.add_argument("queries", nargs="+", help="the sentence(s) to search for")
    query.add_argument("--index", required=True, help="index folder written by the `index` command")
    query.add_argument("-k", "--top_k", type=int, default=5, help="results per query (default 5)")
    query.add_argument("--json", action="store_true",
                       help="print JSON: a list of hits for one query, a list of such lists for several")
    query.add_argument("--model", default=None, help="override the model recorded in the index")
    query.add_argument("--nprobe", type=int, default=None, help="ivf: cells probed (more: better recall, slower)")
    query.add_argument("--ef_search", type=int, default=None, help="hnsw: candidates per query")
    query.add_argument("--exact", action="store_true", help="ignore faiss: exact torch search")
    query.add_argument("--device", default="cpu", help="torch device of the model (default cpu)")
    return parser


def _search_index(args) -> int:
    from .search import build_index

    report = build_index(
        args.model, args.videos, args.out, batch_size=args.batch_size, approximate=args.approximate,
        audio_dir=args.audio_dir, device=args.device, progress=not args.no_progress, nlist=args.nlist,
        nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, ef_search=args.ef_search,
        save_every=args.save_every, use_faiss=False if args.no_faiss else None,
        num_workers=args.num_workers,
    )
    if report.failed:
        print(f"{len(report.failed)} file(s) could not be read and were skipped (listed in index.json):")
        for video_id, reason in report.failed.items():
            print(f"  {video_id}: {reason}")
    print(report.summary())
    return 0


def _search_query(args, program: str) -> int:
    from .search import IndexError_, VideoSearcher

    if args.top_k <= 0:
        raise IndexError_(f"-k/--top_k must be positive, got {args.top_k}")
    searcher = VideoSearcher.from_index(args.index, model=args.model, device=args.device,
                                        use_faiss=False if args.exact else None)
    searcher.index.set_search_params(nprobe=args.nprobe, ef_search=args.ef_search)
    incomplete = searcher.index.incomplete_message()
    if incomplete:
        print(f"{program} query: warning: {incomplete}", file=sys.stderr)
    results = searcher.query_batch(args.queries, k=args.top_k)
    if args.json:
        lists = [[hit.to_dict() for hit in hits] for hits in results]
        print(json.dumps(lists[0] if len(lists) == 1 else lists, indent=1))
        return 0
    for text, hits in zip(args.queries, results):
        print(f"{text!r}:")
        if not hits:
            print("  (no results: the index is empty)")
        for hit in hits:
            print(f"  {hit.rank:>3}. {hit.score:.4f}  {hit.video_id}")
    return 0


def search(argv: Sequence[str] | None = None) -> int:
    """``search.py index|query ...``: the exit status; expected problems are one line on stderr (status 1)."""
    from .cpu_allocator import tune_cpu_allocator
    from .output_guard import OutputFolderError
    from .search import IndexError_

    program = _program("mckd-search")
    args = build_search_parser(program).parse_args(None if argv is None else list(argv))
    tune_cpu_allocator()  # encoding reuses freed memory instead of page-faulting fresh pages (about 2x on CPU)
    try:
        return _search_index(args) if args.command == "index" else _search_query(args, program)
    except (IndexError_, OutputFolderError, FileNotFoundError) as error:
        # expected problems (a wrong folder, a mismatched model, a corrupt index): one line, no traceback
        print(f"{program} {args.command}: error: {error}", file=sys.stderr)
        return 1


def search_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-search``: :func:`search` with logging set up (no per-file progress bars of the weights)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader announces which build it picked
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file loaded would bury the results
    return search(argv)


# ---------------------------------------------------------------------------------------------- app


def app_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-app``: the search page (`modeling_mckd.app`, which needs the ``app`` extra: gradio)."""
    try:
        from . import app
    except ImportError as error:
        if getattr(error, "name", None) and error.name.split(".")[0] == "gradio":
            print(f"{_program('mckd-app')}: error: the search page needs gradio: pip install 'mckd[app]'", file=sys.stderr)
            return 2
        raise
    app.main(None if argv is None else list(argv))
    return 0


# ---------------------------------------------------------------------------------------------- datasets


def _prepare(module_name: str, argv: Sequence[str] | None) -> int:
    import importlib

    from .data_prep.common import run_cli

    main = importlib.import_module(f"modeling_mckd.data_prep.{module_name}").main
    run_cli(lambda: main(None if argv is None else list(argv)))  # bad input: one line, status 2
    return 0


def prepare_msrvtt_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-prepare-msrvtt``: MSR-VTT as a DatasetDict (`modeling_mckd.data_prep.msrvtt`)."""
    return _prepare("msrvtt", argv)


def prepare_msvd_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-prepare-msvd``: MSVD as a DatasetDict (`modeling_mckd.data_prep.msvd`)."""
    return _prepare("msvd", argv)


def prepare_vatex_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-prepare-vatex``: VATEX as a DatasetDict (`modeling_mckd.data_prep.vatex`)."""
    return _prepare("vatex", argv)


def prepare_tgif_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-prepare-tgif``: TGIF as a DatasetDict (`modeling_mckd.data_prep.tgif`)."""
    return _prepare("tgif", argv)


def prepare_features_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-prepare-features``: pre-extracted frame features as a DatasetDict (`modeling_mckd.data_prep.features`)."""
    return _prepare("features", argv)


def prepare_synthetic_main(argv: Sequence[str] | None = None) -> int:
    """``mckd-prepare-synthetic``: the generated synthetic benchmark (`modeling_mckd.data_prep.synthetic`)."""
    from .data_prep.synthetic import main

    return main(None if argv is None else list(argv))


# (console script, entry point) of every command line, for pyproject.toml and its test
CONSOLE_SCRIPTS = {
    "mckd-train": "train_main",
    "mckd-distill": "distill_main",
    "mckd-search": "search_main",
    "mckd-app": "app_main",
    "mckd-prepare-msrvtt": "prepare_msrvtt_main",
    "mckd-prepare-msvd": "prepare_msvd_main",
    "mckd-prepare-vatex": "prepare_vatex_main",
    "mckd-prepare-tgif": "prepare_tgif_main",
    "mckd-prepare-features": "prepare_features_main",
    "mckd-prepare-synthetic": "prepare_synthetic_main",
}
