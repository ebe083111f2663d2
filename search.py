#!/usr/bin/env python
"""Search a folder of videos by text with a trained MCKD model.

    python search.py index --model runs/protocol/seed-0/mckd_full_teacher_towers --videos my_videos/ --out my_index
    python search.py query --index my_index "a red circle moves to the left"
    python search.py query --index my_index -k 10 --json "a dog runs" "a man is cooking"

`index` is resumable (rerun it after adding files: only new or changed files are encoded) and lists
the files it could not read. A model that fuses audio into its video embedding (the default-run
teacher) also needs `--audio_dir` with one `<video stem>.npy` per video. See docs/search.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from modeling_mckd.cpu_allocator import tune_cpu_allocator
from modeling_mckd.output_guard import OutputFolderError
from modeling_mckd.search import (
    APPROXIMATE_KINDS,
    DEFAULT_DECODE_WORKERS,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_EF_SEARCH,
    DEFAULT_HNSW_M,
    IndexError_,
    VideoSearcher,
    build_index,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="encode every video of a folder into an index folder")
    index.add_argument("--model", required=True, help="model folder or Hub id (from_pretrained)")
    index.add_argument("--videos", required=True, help="folder of video files (searched recursively)")
    index.add_argument("--out", required=True, help="index folder to create or resume")
    index.add_argument("--audio_dir", default=None,
                       help="<video stem>.npy audio features, for a model that fuses audio (e.g. the teacher)")
    index.add_argument("--batch_size", type=int, default=16)
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
    index.add_argument("--device", default="cpu")
    index.add_argument("--no_faiss", action="store_true", help="do not write index.faiss even if faiss is installed")
    index.add_argument("--no_progress", action="store_true", help="no progress bar")

    query = commands.add_parser("query", help="print the videos that best match one or more sentences")
    query.add_argument("queries", nargs="+", help="the sentence(s) to search for")
    query.add_argument("--index", required=True, help="index folder written by `search.py index`")
    query.add_argument("-k", "--top_k", type=int, default=5, help="results per query (default 5)")
    query.add_argument("--json", action="store_true",
                       help="print JSON: a list of hits for one query, a list of such lists for several")
    query.add_argument("--model", default=None, help="override the model recorded in the index")
    query.add_argument("--nprobe", type=int, default=None, help="ivf: cells probed (more: better recall, slower)")
    query.add_argument("--ef_search", type=int, default=None, help="hnsw: candidates per query")
    query.add_argument("--exact", action="store_true", help="ignore faiss: exact torch search")
    query.add_argument("--device", default="cpu")
    return parser


def run_index(args) -> int:
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


def run_query(args) -> int:
    if args.top_k <= 0:
        raise IndexError_(f"-k/--top_k must be positive, got {args.top_k}")
    searcher = VideoSearcher.from_index(args.index, model=args.model, device=args.device,
                                        use_faiss=False if args.exact else None)
    searcher.index.set_search_params(nprobe=args.nprobe, ef_search=args.ef_search)
    incomplete = searcher.index.incomplete_message()
    if incomplete:
        print(f"search.py query: warning: {incomplete}", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_cpu_allocator()  # encoding reuses freed memory instead of page-faulting fresh pages (about 2x on CPU)
    try:
        return run_index(args) if args.command == "index" else run_query(args)
    except (IndexError_, OutputFolderError, FileNotFoundError) as error:
        # expected problems (a wrong folder, a mismatched model, a corrupt index): one line, no traceback
        print(f"search.py {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader announces which build it picked
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per weight file loaded would bury the results
    sys.exit(main())
