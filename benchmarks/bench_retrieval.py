"""Benchmark: counting-based chunked retrieval metrics vs the usual full-argsort implementation.

Both run in this process on the same similarity matrix. For every case it times

* ``core ranks``       ``compute_ranks`` for t2v and v2t (best caption) from the full matrix: the same
                       work the baselines do;
* ``core full``        ``evaluate_retrieval(similarity=...)``: ranks + R@K/MdR/MnR + v2t mAP;
* ``core embeds``      ``evaluate_retrieval(text_embeds, video_embeds)``: also computes the similarities,
                       chunk by chunk, so the full matrix never exists;
* ``torch argsort``    ``torch.argsort`` of the whole matrix (and of its transpose), then the position of
                       the relevant item(s) in each sorted row;
* ``numpy argsort``    ``np.argsort`` of each full row, then the same look-up (the CLIP4Clip-style code).

Peak extra memory is the rise of the process's resident-set high-water mark (Linux ``VmHWM``, reset
before each run through ``/proc/self/clear_refs``) over the resident set just before the run: it sees
torch and numpy allocations alike. Inputs (the matrix, the embeddings) exist before the run and are not
counted. Where ``clear_refs`` cannot be written the column falls back to ``tracemalloc`` (numpy only).
The script re-executes itself once with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc hands every
buffer over 128 KiB back to the system when freed: otherwise a run could reuse pages an earlier run
left resident and look free.

Usage:
    python benchmarks/bench_retrieval.py                    # 1k, msvd, 10k
    python benchmarks/bench_retrieval.py --quick            # 1k and msvd only, one repeat
    python benchmarks/bench_retrieval.py --sizes 10k,2000x500
    python benchmarks/bench_retrieval.py --huge             # + 100k x 100k from embeddings (core only)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modeling_mckd.retrieval import compute_ranks, evaluate_retrieval


MSVD_TEST_CAPTIONS = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "msvd" / "textdata" / "msvdtest.caption.txt"
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Memory measurement
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _can_reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


RSS_METHOD = _can_reset_high_water_mark()


def measure(fn, repeats: int):
    """(best seconds over ``repeats``, peak extra MiB of the first run, fn's result)."""
    gc.collect()
    if RSS_METHOD:
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current RSS
    else:
        tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    best = time.perf_counter() - start
    if RSS_METHOD:
        peak = (_status_kib("VmHWM") - before) / 1024
    else:
        peak = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
    for _ in range(repeats - 1):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best, peak, result


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    text_to_video: np.ndarray
    num_videos: int
    note: str


def msvd_caption_counts() -> tuple[np.ndarray, str]:
    """Captions per test video from the real MSVD file when present, else 27,767 spread over 670."""
    if MSVD_TEST_CAPTIONS.is_file():
        counts = Counter(line.split(" ", 1)[0].rsplit("#", 1)[0]
                         for line in MSVD_TEST_CAPTIONS.read_text(encoding="utf-8").splitlines() if line.strip())
        return np.array(list(counts.values())), "real MSVD test caption counts"
    counts = np.full(670, 27767 // 670)
    counts[: 27767 - counts.sum()] += 1
    return counts, "27,767 captions spread evenly (MSVD file not found)"


def make_case(name: str, rng: np.random.Generator) -> Case:
    if name == "msvd":
        counts, note = msvd_caption_counts()
        return Case("27,767x670 (MSVD test)", np.repeat(np.arange(len(counts)), counts), len(counts), note)
    named = {"1k": (1000, 1000, "MSR-VTT 1k-A size"), "10k": (10000, 10000, "")}
    if name in named:
        texts, videos, note = named[name]
    else:
        try:
            texts, videos = (int(v) for v in name.lower().split("x"))
        except ValueError:
            raise SystemExit(f"--sizes: {name!r} is not 1k, msvd, 10k or TEXTSxVIDEOS") from None
        note = ""
    if texts % videos:
        raise SystemExit(f"--sizes: {name!r}: the number of texts must be a multiple of the number of videos")
    mapping = np.repeat(np.arange(videos), texts // videos)
    return Case(f"{texts:,}x{videos:,}", mapping, videos, note or f"{texts // videos} caption(s) per video")


def embeddings(case: Case, dim: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm video embeddings and captions = their video + noise: a model of moderate quality."""
    videos = torch.from_numpy(rng.standard_normal((case.num_videos, dim), dtype=np.float32))
    videos = torch.nn.functional.normalize(videos, dim=1)
    noise = torch.from_numpy(rng.standard_normal((len(case.text_to_video), dim), dtype=np.float32))
    texts = torch.nn.functional.normalize(videos[torch.from_numpy(case.text_to_video)] + 0.12 * noise, dim=1)
    return texts, videos


# --------------------------------------------------------------------------------------------
# Baselines: the usual implementation sorts every full row
# --------------------------------------------------------------------------------------------


def argsort_ranks_torch(similarity: torch.Tensor, text_to_video: torch.Tensor):
    order = torch.argsort(similarity, dim=1, descending=True)
    t2v = (order == text_to_video[:, None]).int().argmax(dim=1)
    del order
    order = torch.argsort(similarity.T, dim=1, descending=True)  # video queries x all captions
    relevant_in_order = text_to_video[order] == torch.arange(similarity.shape[1])[:, None]
    v2t = relevant_in_order.int().argmax(dim=1)  # first (best-ranked) caption of the video
    return t2v.numpy(), v2t.numpy()


def argsort_ranks_numpy(similarity: np.ndarray, text_to_video: np.ndarray):
    order = np.argsort(-similarity, axis=1)
    t2v = np.argmax(order == text_to_video[:, None], axis=1)
    del order
    order = np.argsort(-similarity.T, axis=1)
    v2t = np.argmax(text_to_video[order] == np.arange(similarity.shape[1])[:, None], axis=1)
    return t2v, v2t


# --------------------------------------------------------------------------------------------


def run_case(case: Case, args, rng) -> list[tuple]:
    texts, videos = embeddings(case, args.dim, rng)
    similarity = texts @ videos.T
    mapping = torch.from_numpy(case.text_to_video)
    captions_of_video = [[] for _ in range(case.num_videos)]
    for caption, video in enumerate(case.text_to_video):
        captions_of_video[video].append(caption)
    repeats = args.repeats or (3 if similarity.numel() <= 30_000_000 else 1)

    def core_ranks():
        return (compute_ranks(similarity, mapping, chunk_size=args.chunk_size),
                compute_ranks(similarity.T, captions_of_video, chunk_size=args.chunk_size))

    rows = []
    core_time, core_peak, (t2v, v2t) = measure(core_ranks, repeats)
    rows.append(("core ranks", core_time, core_peak, None))
    full_time, full_peak, _ = measure(
        lambda: evaluate_retrieval(similarity=similarity, text_to_video=mapping, chunk_size=args.chunk_size), repeats)
    rows.append(("core full (+mAP)", full_time, full_peak, None))
    embed_time, embed_peak, _ = measure(
        lambda: evaluate_retrieval(texts, videos, mapping, chunk_size=args.chunk_size), repeats)
    rows.append(("core embeds (+matmul)", embed_time, embed_peak, None))
    if not args.no_baseline:
        torch_time, torch_peak, (bt2v, bv2t) = measure(lambda: argsort_ranks_torch(similarity, mapping), repeats)
        mismatches = int((bt2v != t2v).sum() + (bv2t != v2t).sum())
        rows.append(("torch argsort", torch_time, torch_peak, mismatches))
        if not args.no_numpy:
            array = similarity.numpy()
            numpy_time, numpy_peak, (nt2v, nv2t) = measure(lambda: argsort_ranks_numpy(array, case.text_to_video),
                                                           repeats)
            rows.append(("numpy argsort", numpy_time, numpy_peak, int((nt2v != t2v).sum() + (nv2t != v2t).sum())))
    return rows


def print_case(case: Case, rows: list[tuple], chunk_size: int) -> None:
    gallery = max(len(case.text_to_video), case.num_videos)
    bound = chunk_size * gallery * 4 / MIB
    print(f"\n## {case.name}  ({case.note}; chunk_size={chunk_size}; chunk x gallery float32 = {bound:.0f} MiB)")
    core_time = rows[0][1]
    print(f"{'method':<24}{'time (s)':>10}{'argsort/this':>14}{'peak extra (MiB)':>18}{'rank mismatches':>17}")
    baselines = {name: t for name, t, _, _ in rows if "argsort" in name}
    for name, seconds, peak, mismatches in rows:
        if "argsort" in name:
            ratio = f"x{seconds / core_time:.1f} slower"
        else:
            best = min(baselines.values()) if baselines else None
            ratio = f"{best / seconds:.1f}x" if best else "-"
        print(f"{name:<24}{seconds:>10.3f}{ratio:>14}{peak:>18.0f}{'' if mismatches is None else mismatches:>17}")


def run_huge(args, rng) -> None:
    size, dim = args.huge_size, args.huge_dim
    print(f"\n## {size:,}x{size:,} from embeddings (dim {dim}, one caption per video; core only: the full "
          f"matrix would take {size * size * 4 / 2**30:.0f} GiB)")
    case = Case("huge", np.arange(size), size, "")
    texts, videos = embeddings(case, dim, rng)
    seconds, peak, metrics = measure(lambda: evaluate_retrieval(texts, videos, chunk_size=args.chunk_size), 1)
    print(f"evaluate_retrieval: {seconds:.1f} s, peak extra {peak:.0f} MiB "
          f"(chunk x gallery float32 = {args.chunk_size * size * 4 / MIB:.0f} MiB); "
          f"t2v_R@1 {metrics['t2v_R@1']:.2f}, v2t_R@1 {metrics['v2t_R@1']:.2f}")


def main() -> None:
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and sys.platform.startswith("linux"):
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,msvd,10k",
                        help="comma-separated cases: 1k, msvd, 10k or TEXTSxVIDEOS (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1k and msvd only, one repeat, no numpy baseline")
    parser.add_argument("--huge", action="store_true", help="also run 100k x 100k from embeddings (core only)")
    parser.add_argument("--huge-size", type=int, default=100_000)
    parser.add_argument("--huge-dim", type=int, default=32)
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension of the cases")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=0, help="best of N runs (default 3 up to 30M scores, else 1)")
    parser.add_argument("--no-baseline", action="store_true", help="skip both argsort baselines")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy argsort baseline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.no_numpy = "1k,msvd", 1, True

    rng = np.random.default_rng(args.seed)
    print(f"# bench_retrieval: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print("# memory: " + ("rise of VmHWM over VmRSS (reset via /proc/self/clear_refs)" if RSS_METHOD
                          else "tracemalloc peak (numpy allocations only)"))
    print("# ratio column: fastest argsort baseline time / this method's time")
    for name in args.sizes.split(","):
        case = make_case(name.strip(), rng)
        print_case(case, run_case(case, args, rng), args.chunk_size)
        gc.collect()
    if args.huge:
        run_huge(args, rng)


if __name__ == "__main__":
    main()
