"""Benchmark: text-to-video search (modeling_mckd.search), encoding throughput and query latency.

1. **Encoding throughput**, clips/s end to end from files (decode + preprocess + model, the work of
   ``search.py index``, with its decode threads; also without them), the student against the teacher (the baseline, measured in this process on
   the same clips). The default run's models fuse audio, so they also read ``--audio_dir``. Decoding
   alone and the model alone (on clips decoded beforehand) are timed too, to show where time goes.
2. **Query latency**, one query at a time, p50 / p99 over ``--num_queries`` random queries against
   ``--num_vectors`` random L2-normalised embeddings: exact FAISS ``IndexFlatIP`` (the baseline), the
   exact torch matmul + top-k fallback (used without faiss), a naive full numpy argsort, and the
   approximate IVF and HNSW indexes with their recall@10 against the exact top 10.

Random vectors on the sphere have no cluster structure: this is the hardest case for IVF and HNSW,
so their recall here is a floor rather than what real embeddings give.

Usage:
    python benchmarks/bench_search.py                 # default-run models on data/synthetic, 100k vectors
    python benchmarks/bench_search.py --quick         # 32 clips, 20k vectors; tiny stand-ins if runs/ is missing
    python benchmarks/bench_search.py --skip_encoding --num_vectors 1000000
    python benchmarks/bench_search.py --student DIR --teacher DIR --videos DIR --audio_dir DIR
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modeling_mckd.cpu_allocator import tune_cpu_allocator
from modeling_mckd.search import (
    DEFAULT_DECODE_WORKERS,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_HNSW_M,
    VideoEncoder,
    VideoIndex,
    build_faiss_index,
    default_nlist,
    default_nprobe,
    faiss_available,
    fuses_audio,
    list_video_files,
    load_model,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDENT = REPO / "runs/protocol/seed-0/mckd_full_teacher_towers"
DEFAULT_TEACHER = REPO / "runs/protocol/seed-0/teacher"
DEFAULT_VIDEOS = REPO / "data/synthetic/videos"
DEFAULT_AUDIO = REPO / "data/synthetic/audio"


# --------------------------------------------------------------------------------------------
# Stand-ins for --quick on a machine without the default run
# --------------------------------------------------------------------------------------------


def make_standins(folder: Path, num_clips: int) -> tuple[Path, Path, Path, Path]:
    """Random-weight preset models (the default run's sizes) and a folder of small mp4 clips + audio."""
    from modeling_mckd.data_prep.synthetic import write_mp4
    from modeling_mckd import (
        MCKDConfig,
        MCKDModel,
        MCKDProcessor,
        MCKDVideoProcessor,
        build_word_tokenizer,
    )

    tokenizer = build_word_tokenizer(["a red circle moves to the left", "a blue square grows"])
    student, teacher = folder / "student", folder / "teacher"
    for path, config, size in (
        (student, MCKDConfig.student_preset(vocab_size=len(tokenizer), extra_modalities={"audio": {"feature_dim": 32}},
                                            fuse_modalities=["audio"]), 32),
        (teacher, MCKDConfig.teacher_preset(vocab_size=len(tokenizer), extra_modalities={"audio": {"feature_dim": 32}},
                                            fuse_modalities=["audio"]), 64),
    ):
        MCKDModel(config).save_pretrained(path)
        MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=8, size=size, crop_size=size),
                      tokenizer=tokenizer).save_pretrained(path)
    videos, audio = folder / "videos", folder / "audio"
    videos.mkdir()
    audio.mkdir()
    rng = np.random.default_rng(0)
    grid = np.arange(64)
    for i in range(num_clips):
        # a square sliding over a flat background: compresses like the synthetic benchmark's clips
        frames = np.empty((16, 64, 64, 3), np.uint8)
        frames[:] = rng.integers(0, 256, 3, dtype=np.uint8)
        colour, x0 = rng.integers(0, 256, 3, dtype=np.uint8), int(rng.integers(0, 40))
        for t in range(16):
            inside = (np.abs(grid[:, None] - 32) < 8) & (np.abs(grid[None, :] - (x0 + t)) < 8)
            frames[t][inside] = colour
        write_mp4(videos / f"clip{i:04d}.mp4", frames, fps=8)
        np.save(audio / f"clip{i:04d}.npy", rng.standard_normal((16, 32)).astype(np.float32))
    return student, teacher, videos, audio


# --------------------------------------------------------------------------------------------
# 1. Encoding throughput
# --------------------------------------------------------------------------------------------


def _best(timings: dict, key: str, seconds: float) -> None:
    timings[key] = min(timings.get(key, float("inf")), seconds)


def encoding_rows(args) -> list[dict]:
    paths = [Path(args.videos) / i for i in list_video_files(args.videos)[: args.num_clips]]
    if not paths:
        raise SystemExit(f"no video files in {args.videos}")
    setups = []
    for name, model_dir in (("teacher", args.teacher), ("student", args.student)):
        model, processor = load_model(model_dir)
        audio_dir = args.audio_dir if fuses_audio(model) else None
        encoder = VideoEncoder(model, processor, audio_dir=audio_dir, num_workers=args.num_workers)
        _, failed = encoder.encode(paths[: args.batch_size], args.batch_size)  # warm-up: allocator, lazy inits
        if failed:
            raise SystemExit(f"{name}: clips failed to encode: {list(failed.items())[:2]}")
        setups.append((name, model, processor, encoder, VideoEncoder(model, processor, audio_dir, num_workers=0), {}))
    # Best of `repeats`, teacher and student interleaved, so a busy moment on a shared machine
    # does not land on one model only.
    for _ in range(args.repeats):
        for _name, _model, _processor, encoder, sequential, timings in setups:
            started = time.perf_counter()
            encoder.encode(paths, args.batch_size)
            _best(timings, "e2e", time.perf_counter() - started)
            started = time.perf_counter()
            sequential.encode(paths, args.batch_size)
            _best(timings, "serial", time.perf_counter() - started)
            started = time.perf_counter()
            items = [encoder.load_item(p, p.name) for p in paths]
            _best(timings, "decode", time.perf_counter() - started)
            started = time.perf_counter()
            for start in range(0, len(items), args.batch_size):
                encoder.embed_items(items[start : start + args.batch_size])
            _best(timings, "model_only", time.perf_counter() - started)
    rows = []
    for name, model, processor, _, _, timings in setups:
        row = {key: len(paths) / seconds for key, seconds in timings.items()}
        row.update(model=name, params=sum(p.numel() for p in model.video_encoder_parameters()),
                   frames=f"{processor.video_processor.num_frames}x{processor.video_processor.crop_size}px",
                   audio=fuses_audio(model))
        rows.append(row)
    return rows


def print_encoding(rows: list[dict], args) -> None:
    base = rows[0]["e2e"]
    print(f"\n### Encoding throughput ({args.num_clips} clips from {args.videos}, batch {args.batch_size})\n")
    print(f"| model | frames | video-tower params | fuses audio | end to end clips/s ({args.num_workers} decode threads) "
          "| end to end, no decode threads | decode+preprocess only (1 thread) | model only | end to end vs teacher |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['frames']} | {row['params']:,} | {'yes' if row['audio'] else 'no'} | "
              f"{row['e2e']:.1f} | {row['serial']:.1f} | {row['decode']:.1f} | {row['model_only']:.1f} | "
              f"{row['e2e'] / base:.2f}x |")


# --------------------------------------------------------------------------------------------
# 2. Query latency
# --------------------------------------------------------------------------------------------


def unit_vectors(rows: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def time_single_queries(search, queries: np.ndarray, k: int, warmup: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Latencies (ms) of ``search(one_query (1, D), k)`` for each query, and the indices found (Q, k)."""
    for query in queries[:warmup]:
        search(query[None], k)
    times, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, indices = search(query[None], k)
        times.append((time.perf_counter() - started) * 1e3)
        found.append(np.asarray(indices).reshape(-1)[:k])
    return np.array(times), np.stack(found)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, exact)]))


def naive_argsort(data: np.ndarray):
    def search(query, k):
        scores = query @ data.T
        order = np.argsort(-scores, axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), order
    return search


def latency_rows(args) -> list[dict]:
    data, queries = unit_vectors(args.num_vectors, args.dim, 0), unit_vectors(args.num_queries, args.dim, 1)
    k = 10
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :k]
    ids = [str(i) for i in range(len(data))]
    # (name, build seconds, search(query, k), knobs set on the index right before timing)
    methods: list[tuple[str, float, object, dict]] = []
    if faiss_available():
        started = time.perf_counter()
        flat = build_faiss_index(data)
        flat_build = time.perf_counter() - started
        methods.append(("faiss IndexFlatIP, all faiss threads (exact)", flat_build, flat.search, {}))
        methods.append(("VideoIndex: IndexFlatIP, 1 thread per query (exact)", flat_build,
                        VideoIndex(data, ids, faiss_index=flat), {}))
    torch_index = VideoIndex(data, ids)
    methods.append(("torch matmul + topk (exact, no faiss)", 0.0, torch_index, {}))
    methods.append(("numpy full argsort (naive)", 0.0, naive_argsort(data), {}))
    if faiss_available():
        nlist = args.nlist or default_nlist(len(data))
        started = time.perf_counter()
        ivf = VideoIndex(data, ids, faiss_index=build_faiss_index(data, "ivf", nlist=nlist), approximate="ivf")
        ivf_build = time.perf_counter() - started
        for nprobe in sorted({args.nprobe or default_nprobe(nlist), *args.nprobe_sweep}):
            methods.append((f"faiss IVF nlist={nlist} nprobe={nprobe}", ivf_build, ivf, {"nprobe": nprobe}))
        started = time.perf_counter()
        hnsw = VideoIndex(data, ids, approximate="hnsw", faiss_index=build_faiss_index(
            data, "hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction))
        hnsw_build = time.perf_counter() - started
        for ef in sorted(set(args.ef_sweep)):
            methods.append((f"faiss HNSW M={args.hnsw_m} efSearch={ef}", hnsw_build, hnsw, {"ef_search": ef}))
    rows = []
    for name, build, searcher, knobs in methods:
        if isinstance(searcher, VideoIndex):
            searcher.set_search_params(**knobs)
            searcher = searcher.search
        times, found = time_single_queries(searcher, queries, k)
        rows.append({"method": name, "build": build, "p50": float(np.percentile(times, 50)),
                     "p99": float(np.percentile(times, 99)), "recall": recall_at(found, exact)})
    return rows


def print_latency(rows: list[dict], args) -> None:
    base = rows[0]["p50"]
    print(f"\n### Query latency ({args.num_vectors:,} random unit vectors, dim {args.dim}, "
          f"{args.num_queries} single queries, top 10)\n")
    print(f"| method | build s | p50 ms | p99 ms | p50 vs {rows[0]['method'].split(' (')[0]} | recall@10 |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['method']} | {row['build']:.2f} | {row['p50']:.3f} | {row['p99']:.3f} | "
              f"{base / row['p50']:.2f}x | {row['recall']:.3f} |")


# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default=str(DEFAULT_STUDENT))
    parser.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    parser.add_argument("--videos", default=str(DEFAULT_VIDEOS))
    parser.add_argument("--audio_dir", default=str(DEFAULT_AUDIO), help="audio features, for models that fuse audio (the default run's)")
    parser.add_argument("--num_clips", type=int, default=None, help="clips encoded per model (default 128, quick 32)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=DEFAULT_DECODE_WORKERS, help="decode threads")
    parser.add_argument("--repeats", type=int, default=3, help="encoding timings: best of this many")
    parser.add_argument("--num_vectors", type=int, default=None, help="default 100000, quick 20000")
    parser.add_argument("--dim", type=int, default=None, help="default: the student's projection dim (64)")
    parser.add_argument("--num_queries", type=int, default=None, help="default 500, quick 200")
    parser.add_argument("--nlist", type=int, default=None)
    parser.add_argument("--nprobe", type=int, default=None)
    parser.add_argument("--nprobe_sweep", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--hnsw_m", type=int, default=DEFAULT_HNSW_M)
    parser.add_argument("--ef_construction", type=int, default=DEFAULT_EF_CONSTRUCTION)
    parser.add_argument("--ef_sweep", type=int, nargs="*", default=[64, 128, 256])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip_encoding", action="store_true")
    parser.add_argument("--skip_latency", action="store_true")
    args = parser.parse_args(argv)
    args.num_clips = args.num_clips or (32 if args.quick else 128)
    args.num_vectors = args.num_vectors or (20_000 if args.quick else 100_000)
    args.num_queries = args.num_queries or (200 if args.quick else 500)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    allocator = "tuned" if tune_cpu_allocator() else "default"  # as train.py / search.py run
    faiss_threads = "n/a"
    if faiss_available():
        import faiss

        faiss_threads = faiss.omp_get_max_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), faiss threads {faiss_threads}, malloc {allocator}")
    with tempfile.TemporaryDirectory() as scratch:
        missing = [p for p in (args.student, args.teacher, args.videos) if not Path(p).exists()]
        if missing and not args.skip_encoding:
            if not args.quick:
                raise SystemExit(f"not found: {missing}; run benchmarks/reproduce.py first, point the flags "
                                 "elsewhere, or use --quick for random stand-ins")
            print(f"(--quick: {missing} not found; random-weight preset models and {args.num_clips} generated clips)")
            args.student, args.teacher, args.videos, args.audio_dir = map(str, make_standins(Path(scratch), args.num_clips))
        if args.dim is None:
            from transformers import AutoConfig

            import modeling_mckd  # noqa: F401  (registers the config class)

            args.dim = AutoConfig.from_pretrained(args.student).projection_dim if Path(args.student).exists() else 64
        if not args.skip_encoding:
            print_encoding(encoding_rows(args), args)
    if not args.skip_latency:
        rows = latency_rows(args)
        print_latency(rows, args)
        exact = [r for r in rows if "(exact" in r["method"]]
        print("\nexact search p99: " + ", ".join(f"{r['method']} {r['p99']:.2f} ms" for r in exact)
              + " (goal: below 20 ms)")


if __name__ == "__main__":
    main()
