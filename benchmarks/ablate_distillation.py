#!/usr/bin/env python
"""Distillation ablation on the synthetic default: what each part of the student recipe adds.

    python benchmarks/ablate_distillation.py --teacher runs/default/seed-0/teacher --seed 0

Each variant is a full MCKD student (ranking + kd + discrimination, settings from
configs/synthetic_student.yaml) with one thing changed; a no-teacher student (kd_weight 0) is the
reference. Prints a table of validation and test results and writes it to OUTPUT_DIR/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from reproduce import train_student, train_students_in_parallel  # noqa: E402


# name -> extra command-line arguments over configs/synthetic_student.yaml. Each variant names its
# distillation settings in full, so the table does not change meaning when the config's defaults do.
# (The earlier table of distillation forms, weights and temperatures is in docs/results.md; its
# variants are a matter of --kd_mode / --kd_weight / --kd_temperature / --disc_weight.)
DEFAULT = ["--kd_mode", "kl+relation", "--kd_weight", "2", "--disc_weight", "1", "--kd_parts", "true",
           "--init_from_teacher", "text,audio", "--freeze_from_teacher", "false"]
VARIANTS = {
    "no teacher (kd_weight 0)": ["--kd_weight", "0", "--init_from_teacher", ""],
    "default: kl+relation w2, kd_parts, towers from the teacher": DEFAULT,
    "without kd_parts": [*DEFAULT, "--kd_parts", "false"],
    "without the teacher's towers": [*DEFAULT, "--init_from_teacher", ""],
    "without either (fused-embedding distillation only)": [*DEFAULT, "--kd_parts", "false", "--init_from_teacher", ""],
    "teacher's towers frozen": [*DEFAULT, "--freeze_from_teacher", "true"],
    "kl only (no relation), kd_parts, towers": [*DEFAULT, "--kd_mode", "kl"],
    "default without discrimination": [*DEFAULT, "--disc_weight", "0"],
}
# validation first: it is what a setting should be chosen by; test is what gets reported
COLUMNS = ["validation_t2v_R@1", "validation_rsum", "test_t2v_R@1", "test_t2v_R@5", "test_t2v_R@10", "test_v2t_R@1",
           "test_v2t_R@5", "test_rsum", "test_visual_only_t2v_R@1", "test_audio_only_t2v_R@1"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic_dir", default="data/synthetic")
    parser.add_argument("--output_dir", default="runs/ablation")
    parser.add_argument("--variants", nargs="*", default=None, help="names of VARIANTS to run (default: all)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="students trained at once, each in its own one-thread process")
    args = parser.parse_args(argv)
    names = args.variants or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    jobs = {}
    for index, name in enumerate(names):
        output_dir = Path(args.output_dir) / f"variant-{index}"
        argv = ["--config", str(REPO / "configs/synthetic_student.yaml"), "--output_dir", str(output_dir),
                "--teacher", args.teacher, "--seed", str(args.seed), "--synthetic_dir", args.synthetic_dir,
                "--report_to", "none", "--disable_tqdm", "true", *VARIANTS[name]]
        jobs[name] = (argv, 1.0, 1.0)
    if args.workers > 1 and len(jobs) > 1:
        rows = train_students_in_parallel(args.seed, jobs, args.workers)
    else:
        rows = {name: train_student(*job) for name, job in jobs.items()}
    lines = ["| variant | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name in names:
        result = rows[name]
        lines.append(f"| {name} | " + " | ".join(f"{result[c]:.1f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "ablation.md").write_text(table + "\n")
    (Path(args.output_dir) / "ablation.json").write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
