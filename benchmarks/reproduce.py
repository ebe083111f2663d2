#!/usr/bin/env python
"""The embedded default: synthetic benchmark -> teacher -> four students -> comparison table.

    python benchmarks/reproduce.py                       # one seed (0), prints the table
    python benchmarks/reproduce.py --seeds 0 1 2         # regenerates docs/results.md
    python benchmarks/reproduce.py --seeds 3 --quick     # any other list: prints only

Rows: teacher; student ranking-only; student + distillation; student + discrimination; full MCKD
student (ranking + distillation + discrimination). Columns: t2v and v2t R@1/5/10, MdR, rsum, the
parameter count and the video-encoding throughput (clips/s, measured here, same process, on
already-decoded clips so the decoder is not what is timed).

Every model folder it writes (``runs/default/seed-S/<name>``) is Hub-ready: weights, processor,
model card and all_results.json. Model and optimisation settings come from
``configs/synthetic_teacher.yaml`` and ``configs/synthetic_student.yaml``, the same files a user
passes to train.py / distill.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_mckd.arguments import (  # noqa: E402
    DataArguments,
    DistillArguments,
    ModelArguments,
    RunArguments,
    parse_arguments,
)
from modeling_mckd.cpu_allocator import tune_cpu_allocator  # noqa: E402
from modeling_mckd.runner import run_student, run_teacher  # noqa: E402


STUDENTS = {
    # name: (kd_weight multiplier, disc_weight multiplier) applied to the config's weights
    "student ranking-only": (0.0, 0.0),
    "student + distillation": (1.0, 0.0),
    "student + discrimination": (0.0, 1.0),
    "MCKD student (full)": (1.0, 1.0),
}
COLUMNS = ["t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_MdR", "rsum"]
OFFICIAL_SEEDS = [0, 1, 2]


def slug(name: str) -> str:
    """'MCKD student (full)' -> 'mckd_student_full': the model's folder name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@torch.no_grad()
def video_throughput(model_dir: Path, dataset_dir: Path, split: str = "test", batch_size: int = 64,
                     repeats: int = 3) -> float:
    """Clips per second through preprocessing and the video tower on decoded, cached clips (not the decoder):
    the best of ``repeats`` passes over the split, since a single pass of a small student varied by 20 %."""
    from datasets import load_from_disk

    from modeling_mckd import MCKDModel, MCKDProcessor
    from modeling_mckd.data import ClipStore
    from modeling_mckd.training import encode_videos

    model = MCKDModel.from_pretrained(model_dir).eval()
    processor = MCKDProcessor.from_pretrained(model_dir)
    videos = load_from_disk(str(dataset_dir))[split]
    store = ClipStore(videos, input_mode=processor.video_processor.input_mode, cache=True)
    encode_videos(model, processor, store, batch_size, "cpu")  # fills the cache, warms up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode_videos(model, processor, store, batch_size, "cpu")
        seconds.append(time.perf_counter() - start)
    return len(videos) / min(seconds)


def finished(model_dir: Path) -> bool:
    """A model folder that a completed run wrote (all_results.json is written last but one)."""
    return (model_dir / "all_results.json").is_file() and (model_dir / "model.safetensors").is_file()


def train_student(argv: list[str], kd: float, disc: float) -> dict:
    """One student of the table: the config's kd / disc weights times the row's multipliers."""
    parsed = parse_arguments((ModelArguments, DataArguments, RunArguments, DistillArguments), argv,
                             defaults={"model_preset": "student"})
    distill_args = parsed[3]
    distill_args.kd_weight *= kd
    distill_args.disc_weight *= disc
    if not distill_args.kd_weight:
        # a student trained without a teacher takes nothing from it, not even its towers
        distill_args.teacher = None
        distill_args.init_from_teacher = ""
    return run_student(*parsed[:3], distill_args)


def _student_worker(argv: list[str], kd: float, disc: float) -> dict:
    # Small models use cores better as one-thread processes side by side than as one process
    # with several threads (measured: two one-thread students finish in about the time of one
    # two-thread student).
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    return train_student([*argv, "--disable_tqdm", "true"], kd, disc)


def train_students_in_parallel(seed: int, jobs: dict[str, tuple], workers: int) -> dict[str, dict]:
    """Train the students in ``workers`` processes; one progress bar counts finished students."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_all_start_methods, get_context

    from tqdm.auto import tqdm

    print(f"[seed {seed}] {len(jobs)} students, {workers} at a time: " + ", ".join(jobs), flush=True)
    # Forked workers share this process's decoded clips (modeling_mckd.data keeps them per process;
    # the teacher has just decoded every split) copy-on-write: no second decode, no second copy.
    # The children set one torch thread before any op, as DataLoader workers do after a fork.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    rows = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method)) as pool:
        futures = {pool.submit(_student_worker, *job): name for name, job in jobs.items()}
        with tqdm(total=len(futures), desc=f"seed {seed} students", unit="model") as bar:
            for future in as_completed(futures):
                rows[futures[future]] = future.result()
                bar.set_postfix_str(f"done: {futures[future]}")
                bar.update()
    return rows


def run_seed(seed: int, args) -> dict[str, dict]:
    root = Path(args.output_dir) / f"seed-{seed}"
    common = ["--seed", str(seed), "--synthetic_dir", args.synthetic_dir, "--report_to", "none"]
    if args.quick:
        common += ["--synthetic_num_train", "300", "--synthetic_num_val", "60", "--synthetic_num_test", "100",
                   "--num_train_epochs", "3"]
    if args.disable_tqdm:
        common += ["--disable_tqdm", "true"]
    rows = {}
    teacher_dir = root / "teacher"
    model_args, data_args, run_args = parse_arguments(
        (ModelArguments, DataArguments, RunArguments),
        ["--config", str(REPO / "configs/synthetic_teacher.yaml"), "--output_dir", str(teacher_dir), *common],
    )
    if (args.reuse_teachers or args.resume) and finished(teacher_dir):
        # The teacher of this seed was trained by an earlier run.
        print(f"[seed {seed}] reusing the teacher in {teacher_dir}", flush=True)
        rows["teacher"] = json.loads((teacher_dir / "all_results.json").read_text())
    else:
        print(f"[seed {seed}] teacher -> {teacher_dir}", flush=True)
        rows["teacher"] = run_teacher(model_args, data_args, run_args)
    dataset_dir = Path(args.synthetic_dir) / "dataset"
    jobs = {}
    for name, (kd, disc) in STUDENTS.items():
        output_dir = root / slug(name)
        if args.resume and finished(output_dir):
            print(f"[seed {seed}] reusing {name} in {output_dir}", flush=True)
            rows[name] = json.loads((output_dir / "all_results.json").read_text())
            continue
        argv = ["--config", str(REPO / "configs/synthetic_student.yaml"), "--output_dir", str(output_dir),
                "--teacher", str(teacher_dir), *common]
        jobs[name] = (argv, kd, disc)
    if args.student_workers > 1 and len(jobs) > 1:
        rows.update(train_students_in_parallel(seed, jobs, args.student_workers))
    else:
        for name, (argv, kd, disc) in jobs.items():
            print(f"[seed {seed}] {name} -> {argv[3]}", flush=True)
            rows[name] = train_student(argv, kd, disc)
    rows = {name: rows[name] for name in ["teacher", *STUDENTS]}  # table order
    for name, result in rows.items():
        folder = teacher_dir if name == "teacher" else root / slug(name)
        result["clips_per_s"] = video_throughput(folder, dataset_dir)
    return rows


def _mean_std(values: list[float]) -> str:
    """A table cell: the mean over seeds, with the sample std when there are several."""
    mean = statistics.fmean(values)
    return f"{mean:.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{mean:.1f}"


def format_table(per_seed: dict[int, dict[str, dict]]) -> str:
    names = list(next(iter(per_seed.values())))
    header = ["model", *COLUMNS, "params", "clips/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for key in [*[f"test_{c}" for c in COLUMNS], "num_parameters", "clips_per_s"]:
            values = [per_seed[s][name][key] for s in per_seed]
            cells.append(f"{int(statistics.fmean(values)):,}" if key == "num_parameters" else _mean_std(values))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PART_COLUMNS = ("t2v_R@1", "visual_only_t2v_R@1", "audio_only_t2v_R@1", "visual_only_rsum", "audio_only_rsum")


def format_parts_table(per_seed: dict[int, dict[str, dict]]) -> str | None:
    """What each part of a fused video embedding retrieves alone (test split). Models trained before the
    per-part evaluation existed have no such numbers: they are left out, and with none left so is the table."""
    names = [name for name in next(iter(per_seed.values()))
             if all(f"test_{PART_COLUMNS[1]}" in per_seed[s][name] for s in per_seed)]
    if not names:
        return None
    header = ["model", "t2v_R@1 (fused)", "t2v_R@1 visual only", "t2v_R@1 audio only", "rsum visual only",
              "rsum audio only"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for key in PART_COLUMNS:
            cells.append(_mean_std([per_seed[s][name][f"test_{key}"] for s in per_seed]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_report(per_seed: dict[int, dict[str, dict]]) -> list[str]:
    """The goals of the default setting, each with what this run measured."""
    def r1(name):
        return [per_seed[s][name]["test_t2v_R@1"] for s in per_seed]

    full, ranking, disc, teacher = r1("MCKD student (full)"), r1("student ranking-only"), r1("student + discrimination"), r1("teacher")
    speed = statistics.fmean(per_seed[s]["MCKD student (full)"]["clips_per_s"] / per_seed[s]["teacher"]["clips_per_s"] for s in per_seed)
    gain = statistics.fmean(full) - statistics.fmean(ranking)
    gain_disc = statistics.fmean(full) - statistics.fmean(disc)
    ratio = statistics.fmean(full) / max(statistics.fmean(teacher), 1e-9)
    t_r5 = statistics.fmean(per_seed[s]["teacher"]["test_t2v_R@5"] for s in per_seed)
    return [
        f"- full MCKD vs ranking-only, t2v R@1: {gain:+.1f} points (goal >= +5, ranges "
        f"{'do not overlap' if min(full) > max(ranking) else 'overlap'}): {'met' if gain >= 5 and min(full) > max(ranking) else 'NOT met'}",
        f"- full MCKD vs ranking + discrimination (no teacher), t2v R@1: {gain_disc:+.1f} points (goal >= +2): {'met' if gain_disc >= 2 else 'NOT met'}",
        f"- full MCKD / teacher t2v R@1: {100 * ratio:.0f} % (goal >= 90 %): {'met' if ratio >= 0.9 else 'NOT met'}",
        f"- student video encoding speed-up over the teacher: {speed:.1f}x (goal >= 5x): {'met' if speed >= 5 else 'NOT met'}",
        f"- teacher t2v R@5: {t_r5:.1f} (must stay well below 100 so models can be told apart)",
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--output_dir", default="runs/default")
    parser.add_argument("--synthetic_dir", default="data/synthetic")
    parser.add_argument("--quick", action="store_true", help="a small, few-epoch run to check the pipeline")
    parser.add_argument("--disable_tqdm", action="store_true")
    parser.add_argument("--student_workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="students trained at once, each in its own one-thread process (1: one after another)")
    parser.add_argument("--reuse_teachers", action="store_true",
                        help="keep each seed's teacher from an earlier run (in --output_dir) and retrain the students")
    parser.add_argument("--resume", action="store_true",
                        help="keep every model (teacher or student) that an earlier run finished in --output_dir; "
                             "train only the missing ones (throughput is always re-measured here)")
    parser.add_argument("--results_doc", default=str(REPO / "docs" / "results.md"))
    args = parser.parse_args(argv)
    if args.quick and args.synthetic_dir == parser.get_default("synthetic_dir"):
        args.synthetic_dir += "-quick"  # a different benchmark size: keep the full one intact
    logging.basicConfig(level=logging.WARNING)
    # every model trains and is timed under the same allocator (run_teacher / run_student set it too)
    tune_cpu_allocator()
    start = time.time()
    per_seed, seed_minutes = {}, {}
    for seed in args.seeds:
        seed_start = time.time()
        per_seed[seed] = run_seed(seed, args)
        seed_minutes[seed] = (time.time() - seed_start) / 60
        print(f"[seed {seed}] done in {seed_minutes[seed]:.1f} min", flush=True)
    table = format_table(per_seed)
    parts = format_parts_table(per_seed)
    if parts:
        table += ("\n\nEach part of the fused video embedding alone (test t2v R@1 and rsum; chance R@1 is "
                  f"{100 / _num_test_videos(per_seed):.1f}):\n\n" + parts)
    goals = goal_report(per_seed)
    minutes = (time.time() - start) / 60
    print("\nTest split of the synthetic benchmark (" + ", ".join(f"seed {s}" for s in args.seeds) + "):\n")
    print(table)
    print("\n" + "\n".join(goals))
    per_seed_text = ", ".join(f"seed {s}: {m:.1f}" for s, m in seed_minutes.items())
    print(f"\nwall time: {minutes:.1f} min ({per_seed_text}); model folders in {args.output_dir}")
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "results.json").write_text(json.dumps(per_seed, indent=2, default=float))
    if sorted(args.seeds) == OFFICIAL_SEEDS and not args.quick:
        write_results_doc(Path(args.results_doc), table, goals, minutes, reused=args.reuse_teachers or args.resume)
        print(f"wrote {args.results_doc}")


def _num_test_videos(per_seed: dict[int, dict[str, dict]]) -> int:
    first = next(iter(next(iter(per_seed.values())).values()))
    return int(first.get("test_num_videos", 500))


BEGIN_MARK = "<!-- reproduce.py: begin (generated, do not edit between the marks) -->"
END_MARK = "<!-- reproduce.py: end -->"


def write_results_doc(path: Path, table: str, goals: list[str], minutes: float, reused: bool = False) -> None:
    """Replace the generated block of ``path`` (between the marks), keeping the hand-written text around it."""
    block = (
        BEGIN_MARK + "\n\n"
        "Regenerate with `python benchmarks/reproduce.py --seeds 0 1 2` (mean ± std over the three "
        "seeds, test split; model settings in `configs/synthetic_*.yaml`). "
        f"This run took {minutes:.0f} minutes on the machine that produced it"
        + (" (reusing models that an earlier run had finished: `--resume` / `--reuse_teachers`)" if reused else "")
        + ".\n\n" + table + "\n\n**Goals**\n\n" + "\n".join(goals) + "\n\n" + END_MARK
    )
    text = path.read_text() if path.is_file() else "# Results on the synthetic default\n\n"
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
