#!/usr/bin/env python
"""Distillation ablation on the synthetic default: other distillation forms, weights, temperatures.

    python benchmarks/ablate_distillation.py --teacher runs/default/seed-0/teacher --seed 0

Each variant is a full MCKD student (ranking + kd + discrimination, settings from
configs/synthetic_student.yaml) with one thing changed; a no-teacher student (kd_weight 0) is the
reference. Prints a table of test-split results and writes it to OUTPUT_DIR/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_mckd.arguments import (  # noqa: E402
    DataArguments,
    DistillArguments,
    ModelArguments,
    RunArguments,
    parse_arguments,
)
from modeling_mckd.runner import run_student  # noqa: E402


# name -> extra command-line arguments over configs/synthetic_student.yaml
VARIANTS = {
    "no teacher (kd_weight 0)": ["--kd_weight", "0"],
    "kl, tau 0.05, weight 1 (default)": [],
    "kl, weight 5": ["--kd_weight", "5"],
    "kl, tau 0.1": ["--kd_temperature", "0.1"],
    "pearson": ["--kd_mode", "pearson"],
    "relation": ["--kd_mode", "relation"],
    "kl+relation, weight 2": ["--kd_mode", "kl+relation", "--kd_weight", "2"],
    "ranking + kl weight 10, no discrimination": ["--kd_weight", "10", "--disc_weight", "0"],
}
COLUMNS = ["t2v_R@1", "t2v_R@5", "t2v_R@10", "v2t_R@1", "v2t_R@5", "rsum"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic_dir", default="data/synthetic")
    parser.add_argument("--output_dir", default="runs/ablation")
    parser.add_argument("--variants", nargs="*", default=None, help="names of VARIANTS to run (default: all)")
    args = parser.parse_args(argv)
    names = args.variants or list(VARIANTS)
    rows = {}
    for index, name in enumerate(names):
        output_dir = Path(args.output_dir) / f"variant-{index}"
        parsed = parse_arguments(
            (ModelArguments, DataArguments, RunArguments, DistillArguments),
            ["--config", str(REPO / "configs/synthetic_student.yaml"), "--output_dir", str(output_dir),
             "--teacher", args.teacher, "--seed", str(args.seed), "--synthetic_dir", args.synthetic_dir,
             "--report_to", "none", "--disable_tqdm", "true", *VARIANTS[name]],
            defaults={"model_preset": "student"},
        )
        if not parsed[3].kd_weight:
            parsed[3].teacher = None
        print(f"{name} -> {output_dir}", flush=True)
        rows[name] = run_student(*parsed)
    lines = ["| variant | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for name, result in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{result[f'test_{c}']:.1f}" for c in COLUMNS) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "ablation.md").write_text(table + "\n")
    (Path(args.output_dir) / "ablation.json").write_text(json.dumps(rows, indent=2, default=float))


if __name__ == "__main__":
    main()
