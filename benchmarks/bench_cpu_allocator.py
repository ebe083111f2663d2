"""What `tune_cpu_allocator` buys: video encoding and training steps with glibc's default malloc settings
against the tuned ones, on the default's trained models.

    python benchmarks/bench_cpu_allocator.py                       # models of runs/protocol/seed-0
    python benchmarks/bench_cpu_allocator.py --models runs/protocol/seed-1 --train_steps 30

The allocator is process-wide and cannot be put back, so each setting runs in a fresh child process
(this script with --child); the parent prints both and their ratio. Encoding is measured as
`benchmarks/reproduce.py` measures it (decoded, cached test clips, preprocessing and the video tower,
best of 3 passes); a training step is the teacher's contrastive step at the default config, after
two warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def measure(models: Path, synthetic_dir: Path, train_steps: int, tuned: bool) -> dict:
    import resource

    import torch

    from modeling_mckd.cpu_allocator import tune_cpu_allocator

    applied = tune_cpu_allocator() if tuned else False
    from reproduce import video_throughput

    dataset_dir = synthetic_dir / "dataset"
    result = {"tuned": applied}
    for name in ("teacher", "mckd_full_teacher_towers"):
        result[f"{name}_clips_per_s"] = video_throughput(models / name, dataset_dir)

    from modeling_mckd.arguments import DataArguments, ModelArguments, RunArguments, TeacherArguments, parse_arguments
    from modeling_mckd.runner import build_model_and_processor, load_run_dataset
    from modeling_mckd.objectives import TeacherObjective
    from modeling_mckd.training import RetrievalTrainer

    model_args, data_args, run_args, _ = parse_arguments(
        (ModelArguments, DataArguments, RunArguments, TeacherArguments),  # the config sets train.py's options too
        ["--config", str(REPO / "configs/synthetic_teacher.yaml"), "--synthetic_dir", str(synthetic_dir),
         "--output_dir", "/tmp/bench_cpu_allocator", "--disable_tqdm", "true", "--tune_cpu_allocator", "false"],
    )
    datasets = load_run_dataset(data_args)
    model, processor = build_model_and_processor(model_args, data_args, datasets[data_args.train_split])
    # the trainer builds the train set and its collator exactly as train.py does
    trainer = RetrievalTrainer(model=model, processor=processor, objective=TeacherObjective(), datasets=datasets,
                               run_args=run_args, data_args=data_args, track_config={})
    objective, optimizer = TeacherObjective(), torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = iter(torch.utils.data.DataLoader(trainer.train_set, batch_size=run_args.per_device_train_batch_size,
                                               sampler=trainer.sampler, collate_fn=trainer.collator))
    seconds = []
    for step in range(train_steps + 2):
        batch = next(batches)
        start = time.perf_counter()
        loss, _ = objective(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    result["teacher_train_step_s"] = sum(seconds) / len(seconds)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="runs/protocol/seed-0", help="a seed folder written by reproduce.py")
    parser.add_argument("--synthetic_dir", default="data/synthetic")
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Path(args.models), Path(args.synthetic_dir), args.train_steps, args.child == "tuned")))
        return
    results = {}
    for setting in ("default", "tuned"):
        child = subprocess.run(
            [sys.executable, __file__, "--child", setting, "--models", args.models, "--synthetic_dir",
             args.synthetic_dir, "--train_steps", str(args.train_steps)],
            capture_output=True, text=True, check=True,
        )
        results[setting] = json.loads(child.stdout.strip().splitlines()[-1])
    default, tuned = results["default"], results["tuned"]
    print(f"allocator tuned in the second child: {tuned['tuned']}")
    print("| measure | default malloc | tuned | ratio |")
    print("|---|---|---|---|")
    for key, label, higher_is_better in (
        ("teacher_clips_per_s", "teacher encoding, clips/s", True),
        ("mckd_full_teacher_towers_clips_per_s", "student encoding, clips/s", True),
        ("teacher_train_step_s", "teacher training step, s", False),
        ("peak_rss_mb", "peak RSS of the child, MB", False),
    ):
        ratio = tuned[key] / default[key] if higher_is_better else default[key] / tuned[key]
        print(f"| {label} | {default[key]:.3f} | {tuned[key]:.3f} | {ratio:.2f}x |")
    student_over_teacher = {s: results[s]["mckd_full_teacher_towers_clips_per_s"] / results[s]["teacher_clips_per_s"]
                            for s in results}
    print(f"student / teacher encoding: {student_over_teacher['default']:.2f}x with the default malloc, "
          f"{student_over_teacher['tuned']:.2f}x tuned")


if __name__ == "__main__":
    main()
