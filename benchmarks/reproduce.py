#!/usr/bin/env python
"""The default job, as a protocol that cannot see test: tune on tuning seeds (validation only), freeze,
then train and test every row once on the reported seeds.

    python benchmarks/reproduce.py                         # tune on seed 100, report seed 0
    python benchmarks/reproduce.py --seeds 0 1 2 3 4       # the issue's table (writes docs/results.md)
    python benchmarks/reproduce.py --frozen runs/protocol/frozen.json --seeds 5   # reuse a frozen choice
    python benchmarks/reproduce.py --quick                 # tiny benchmark, 2 epochs, tiny grid: the pipeline

Phase 1 (tuning): for each tuning seed (``--tuning_seeds``, default from the protocol file: 100), a dataset of
its own (``synthetic_seed`` = seed), a teacher of its own, and every student row at every point of its grid
(``configs/protocol.yaml``: the same number of points for every row, the same fixed epochs). These runs are
given no test split (``--test_split ""``), so nothing in them computes a test metric. Each row's point with
the best mean validation score over the tuning seeds is frozen into ``OUTPUT/frozen.json`` with the grid and
every validation number.

Phase 2 (reported): refuses a reported seed that is also a tuning seed, reads only the frozen file, and for
each reported seed generates its dataset, trains its teacher and every row once; each model is evaluated on
test once (by the run), then its test similarity matrix is saved (``test_similarity.npy``) for the
hard-negative subset, and its video encoding is timed. Rows, statistics and goals: ``mckd_protocol.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mckd_protocol as protocol  # noqa: E402
from memory_watch import PhasePeaks, TreeMemorySampler  # noqa: E402
from mckd_protocol import TEACHER  # noqa: E402
from modeling_mckd.visual_part import VISUAL_PART_DIR  # noqa: E402
from modeling_mckd.cpu_allocator import release_free_memory  # noqa: E402
from modeling_mckd.arguments import (  # noqa: E402
    DataArguments,
    DistillArguments,
    ModelArguments,
    RunArguments,
    TeacherArguments,
    parse_arguments,
)


STUDENT_CONFIG = REPO / "configs" / "synthetic_student.yaml"
TEACHER_CONFIG = REPO / "configs" / "synthetic_teacher.yaml"
PROTOCOL_FILE = REPO / "configs" / "protocol.yaml"
QUICK_PROTOCOL_FILE = REPO / "configs" / "protocol_quick.yaml"
ISSUE_SEEDS = [0, 1, 2, 3, 4]  # the seeds whose table is written into docs/results.md
MEMORY_PHASES_FILE = "memory_phases.json"  # a reported seed's peak memory in each of its phases (report_seed)


# --------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------


def make_deterministic(threads: int) -> None:
    """A fixed thread count (not the machine's core count) and deterministic kernels, so that the same
    command on the same kind of machine gives the same numbers."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (it can be set once)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


ARGV_RECORD = "protocol_argv.json"  # the command line a protocol run was started with, in its folder


def finished(model_dir: Path) -> bool:
    """A model folder that a completed run wrote."""
    return (model_dir / "all_results.json").is_file() and (model_dir / "model.safetensors").is_file()


def reusable(model_dir: Path, argv: list[str]) -> bool:
    """A finished folder that ``--resume`` may reuse for ``argv``: one whose recorded command line is ``argv``.
    A folder from before the record existed is reused as before; one started with other settings (a grid
    point that moved to another index, a re-tuned row) is not: it is trained again."""
    if not finished(model_dir):
        return False
    record = model_dir / ARGV_RECORD
    if not record.is_file():
        return True
    try:
        return json.loads(record.read_text()) == argv
    except json.JSONDecodeError:
        return False


def record_argv(model_dir: Path, argv: list[str]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / ARGV_RECORD).write_text(json.dumps(argv) + "\n")


def teacher_run(argv: list[str]) -> dict:
    from modeling_mckd.runner import run_teacher

    return run_teacher(*parse_arguments((ModelArguments, DataArguments, RunArguments, TeacherArguments), argv))


def student_run(argv: list[str]) -> dict:
    from modeling_mckd.runner import run_student

    return run_student(*parse_arguments((ModelArguments, DataArguments, RunArguments, DistillArguments), argv,
                                        defaults={"model_preset": "student"}))


def _student_worker(argv: list[str]) -> dict:
    # Small models use cores better as one-thread processes side by side than as one multi-thread process;
    # one thread each also makes a student's numbers independent of how many run at once.
    make_deterministic(1)
    logging.basicConfig(level=logging.WARNING)
    return student_run(argv)


class Phases:
    """The two phases. ``teacher_fn`` / ``student_fn`` take a command line (the arguments train.py / distill.py
    take) and return all_results; ``measure_fn(model_dir, dataset_dir, hard_videos)`` returns the extra
    columns of a reported model. The tests inject recording fakes for all three."""

    def __init__(self, args, teacher_fn: Callable = teacher_run, student_fn: Callable = student_run,
                 measure_fn: Callable | None = None):
        self.args = args
        self.teacher_fn, self.student_fn = teacher_fn, student_fn
        self.measure_fn = measure_fn if measure_fn is not None else measure_model
        real = student_fn is student_run and teacher_fn is teacher_run and measure_fn is None
        self.parallel = student_fn is student_run and args.student_workers > 1
        # Each seed in a fresh process. modeling_mckd.data keeps every clip it decodes in a process-wide cache
        # keyed by file (so the models of one seed decode each clip once), and each seed has files of its own:
        # in one process the run's memory grew from seed to seed (about 0.25 GB a seed in the 5-seed run).
        # A seed's process takes its clips, and the rest of its heap, with it when it ends. The tests' fakes
        # run in this process.
        self.isolate = real and not getattr(args, "same_process", False)
        self.reused_seeds: set[int] = set()  # seeds with a model reused by --resume (their run is not timed whole)

    def common(self, seed: int, benchmark: dict, tuning: bool) -> list[str]:
        argv = ["--seed", str(seed), "--synthetic_seed", str(seed),
                "--synthetic_dir", str(Path(self.args.synthetic_dir) / f"seed-{seed}"), "--report_to", "none"]
        for key, value in benchmark.items():
            argv += [f"--{key}", str(value)]
        if tuning:
            argv += ["--test_split", ""]  # tuning runs never evaluate test (finish_run skips an empty split)
        if self.args.disable_tqdm:
            argv += ["--disable_tqdm", "true"]
        return argv

    def teacher(self, root: Path, seed: int, benchmark: dict, teacher_epochs: float | None, tuning: bool) -> tuple[Path, dict]:
        folder = root / TEACHER
        argv = ["--config", str(TEACHER_CONFIG), "--output_dir", str(folder), *self.common(seed, benchmark, tuning)]
        if teacher_epochs:
            argv += ["--num_train_epochs", str(teacher_epochs)]
        visual = folder / VISUAL_PART_DIR
        if self.args.resume and reusable(folder, argv) and (finished(visual) or not self.teacher_is_visual_part()):
            print(f"[seed {seed}] reusing the teacher in {folder}", flush=True)
            self.reused_seeds.add(seed)
            result = json.loads((folder / "all_results.json").read_text())
        else:
            print(f"[seed {seed}] teacher -> {folder}", flush=True)
            record_argv(folder, argv)
            result = self.teacher_fn(argv)
        if finished(visual) and self.teacher_is_visual_part():
            # The teacher config saves the frames + text model inside the fused teacher: that is the teacher the
            # students distil from and the table reports (its results are the visual part's own retrieval).
            return visual, json.loads((visual / "all_results.json").read_text())
        return folder, result

    @staticmethod
    def teacher_is_visual_part() -> bool:
        """The teacher config saves its visual part (``save_visual_part``): the protocol's teacher is that part."""
        return bool(_config_value(TEACHER_CONFIG, "save_visual_part", False))

    def student_argv(self, row: protocol.Row, settings: dict, output_dir: Path, teacher_dir: Path, seed: int,
                     benchmark: dict, epochs: float, tuning: bool) -> list[str]:
        argv = ["--config", str(STUDENT_CONFIG), "--output_dir", str(output_dir), *self.common(seed, benchmark, tuning),
                "--num_train_epochs", str(epochs), *protocol.row_overrides(row, self.config_init_from_teacher())]
        if row.needs_teacher:
            argv += ["--teacher", str(teacher_dir)]
        return argv + protocol.point_argv(settings)

    @staticmethod
    def config_init_from_teacher() -> str:
        """The student config's towers copied from the teacher: it names the headline's initialisation."""
        return _config_value(STUDENT_CONFIG, "init_from_teacher", "")

    def run_students(self, seed: int, jobs: dict[str, list[str]]) -> dict[str, dict]:
        """Each job once; finished folders are reused with --resume."""
        results, todo = {}, {}
        for key, argv in jobs.items():
            folder = Path(argv[argv.index("--output_dir") + 1])
            if self.args.resume and reusable(folder, argv):
                results[key] = json.loads((folder / "all_results.json").read_text())
            else:
                record_argv(folder, argv)
                todo[key] = argv
        print(f"[seed {seed}] {len(todo)} student runs ({len(results)} reused)", flush=True)
        if results:
            self.reused_seeds.add(seed)
        if self.parallel and len(todo) > 1:
            results.update(_in_parallel(todo, self.args.student_workers))
        else:
            for key, argv in todo.items():
                results[key] = self.student_fn(argv)
        return results

    # -- phase 1 ---------------------------------------------------------------------------

    def in_seed_process(self, method: str, *method_args):
        """``getattr(self, method)(*method_args)``, in a fresh process when ``self.isolate``."""
        if not self.isolate:
            return getattr(self, method)(*method_args)
        result, reused = _in_fresh_process(_seed_worker, self.args, method, *method_args)
        self.reused_seeds.update(reused)
        return result

    def tune_seed(self, spec: protocol.ProtocolSpec, seed: int, rows: list[protocol.Row],
                  folder: str = "tuning") -> tuple[float | None, dict]:
        """One tuning seed: its teacher's validation score (None when no row needs a teacher, which is then not
        trained) and ``{(row name, point index): validation score}``."""
        metric = f"validation_{spec.selection_metric}"
        root = Path(self.args.output_dir) / folder / f"seed-{seed}"
        teacher_dir, teacher_result = None, {}
        if any(row.needs_teacher for row in rows):
            teacher_dir, teacher_result = self.teacher(root, seed, spec.benchmark, spec.teacher_epochs, tuning=True)
        jobs = {}
        for row in rows:
            for index, point in enumerate(spec.points(row.name)):
                jobs[(row.name, index)] = self.student_argv(
                    row, point, root / row.slug / f"point-{index}", teacher_dir, seed, spec.benchmark,
                    spec.num_train_epochs, tuning=True)
        scores = {}
        for (name, index), result in self.run_students(seed, jobs).items():
            if any(key.startswith("test_") for key in result):
                raise RuntimeError(f"tuning run {name} point {index} (seed {seed}) returned test metrics")
            scores[(name, index)] = float(result[metric])
        return teacher_result.get(metric), scores

    def tune(self, spec: protocol.ProtocolSpec, tuning_seeds: list[int], only_rows: list[str] | None = None) -> dict:
        """Phase 1 on every row of the grid, or on ``only_rows`` (a re-tune on ``tuning_seeds``: its runs go to
        OUTPUT/retune/). A row with seeds of its own in the grid file (``row_tuning_seeds``) is tuned on those."""
        rows_tuned = spec.rows if only_rows is None else protocol.rows_named(only_rows)
        folder = "tuning" if only_rows is None else "retune"
        seeds_of = {row.name: list(tuning_seeds) if only_rows is not None else spec.seeds_for(row.name, tuning_seeds)
                    for row in rows_tuned}
        every_seed = list(dict.fromkeys([*tuning_seeds, *(s for seeds in seeds_of.values() for s in seeds)]))
        scores = {row.name: [[] for _ in spec.points(row.name)] for row in rows_tuned}
        teacher_validation = {}
        for seed in every_seed:
            rows_here = [row for row in rows_tuned if seed in seeds_of[row.name]]
            validation, seed_scores = self.in_seed_process("tune_seed", spec, seed, rows_here, folder)
            if validation is not None:
                teacher_validation[seed] = validation
            for (name, index), score in sorted(seed_scores.items()):
                scores[name][index].append(score)
        rows = {}
        for row in rows_tuned:
            points = spec.points(row.name)
            chosen = protocol.select_best(scores[row.name])
            rows[row.name] = {
                "settings": points[chosen], "chosen_index": chosen,
                "validation_mean": float(np.mean(scores[row.name][chosen])),
                "validation": [{"settings": p, "scores": dict(zip(map(str, seeds_of[row.name]), s)),
                                "mean": float(np.mean(s))} for p, s in zip(points, scores[row.name])],
            }
            if seeds_of[row.name] != list(tuning_seeds):
                rows[row.name]["tuning_seeds"] = seeds_of[row.name]
        return {"version": protocol.FROZEN_VERSION, "protocol_file": spec.source,
                "grid": {row.name: spec.grid[row.name] for row in rows_tuned},
                "selection_metric": spec.selection_metric, "tuning_seeds": list(tuning_seeds),
                "num_train_epochs": spec.num_train_epochs, "teacher_epochs": spec.teacher_epochs,
                "benchmark": spec.benchmark, "teacher_validation": {str(k): v for k, v in teacher_validation.items()},
                "rows": rows}

    # -- phase 2 ---------------------------------------------------------------------------

    def report_seed(self, frozen: dict, seed: int) -> dict[str, dict]:
        protocol.check_seeds_disjoint([seed], protocol.all_tuning_seeds(frozen))
        root = Path(self.args.output_dir) / f"seed-{seed}"
        benchmark = frozen["benchmark"]
        # where in the seed its peak memory falls: this process and its students (the main process, a constant
        # few hundred MB, is in seed_minutes.json's whole-run figure only)
        memory = PhasePeaks()
        (root / MEMORY_PHASES_FILE).unlink(missing_ok=True)  # an earlier run's, which this run replaces
        with memory:
            with memory.phase("teacher"):
                teacher_dir, teacher_result = self.teacher(root, seed, benchmark, frozen.get("teacher_epochs"),
                                                           tuning=False)
            jobs = {row.name: self.student_argv(row, frozen["rows"][row.name]["settings"], root / row.slug,
                                                teacher_dir, seed, benchmark, frozen["num_train_epochs"], tuning=False)
                    for row in protocol.rows_named(frozen["rows"])}
            with memory.phase("students"):
                results = {TEACHER: teacher_result, **self.run_students(seed, jobs)}
            with memory.phase("measurement"):
                rows = self.measure_seed(root, seed, teacher_dir, results, frozen)
        if memory.peaks:
            root.mkdir(parents=True, exist_ok=True)
            (root / MEMORY_PHASES_FILE).write_text(json.dumps(memory.peaks) + "\n")
        return rows

    def measure_seed(self, root: Path, seed: int, teacher_dir: Path, results: dict, frozen: dict) -> dict[str, dict]:
        dataset_dir = Path(self.args.synthetic_dir) / f"seed-{seed}" / "dataset"
        hard_videos = self.hard_videos(dataset_dir)
        rows = {}
        for name in [TEACHER, *(row.name for row in protocol.rows_named(frozen["rows"]))]:  # table order
            folder = teacher_dir if name == TEACHER else root / protocol.ROWS_BY_NAME[name].slug
            rows[name] = {**results[name], **self.measure_fn(folder, dataset_dir, hard_videos)}
            check = rows[name].pop("full_t2v_R@1", None)
            if check is not None and abs(check - rows[name]["test_t2v_R@1"]) > 1e-6:
                print(f"warning: {name}: t2v R@1 from the saved similarities ({check:.2f}) differs from the "
                      f"run's ({rows[name]['test_t2v_R@1']:.2f})", flush=True)
        rows[TEACHER]["hard_num_videos"] = len(hard_videos) if hard_videos is not None else None
        return rows

    def hard_videos(self, dataset_dir: Path) -> list[int] | None:
        if not dataset_dir.is_dir():
            return None
        from datasets import load_from_disk

        captions = [list(c) for c in load_from_disk(str(dataset_dir))["test"]["captions"]]
        return protocol.hard_negative_subset(captions, self.args.hard_fraction)


def _seed_worker(args, method: str, *method_args):
    """``Phases(args).<method>(*method_args)`` in a fresh process, with the main process's thread count and
    deterministic kernels; returns the result and the seeds whose models ``--resume`` reused."""
    make_deterministic(args.threads)
    logging.basicConfig(level=logging.WARNING)
    phases = Phases(args)
    return getattr(phases, method)(*method_args), sorted(phases.reused_seeds)


def _in_fresh_process(fn: Callable, *args):
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # spawn, not fork: a fork would inherit this process's heap, which is what isolating a seed avoids
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _config_value(path: Path, key: str, default):
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get(key, default)


def _student_pool(workers: int):
    """A process pool for student runs: forked where the platform can, so the workers share this process's
    decoded clips copy-on-write (the teacher has just decoded them), else spawned."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_all_start_methods, get_context

    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    if method == "fork":
        release_free_memory()  # else each worker copies the teacher's freed heap as it reuses it
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method))


def _in_parallel(jobs: dict, workers: int) -> dict:
    from concurrent.futures import as_completed

    results = {}
    with _student_pool(workers) as pool:
        futures = {pool.submit(_student_worker, argv): key for key, argv in jobs.items()}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
    return results


# --------------------------------------------------------------------------------------------
# Measurements on a reported model
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def measure_model(model_dir: Path, dataset_dir: Path, hard_videos: list[int] | None, batch_size: int = 64,
                  repeats: int = 3) -> dict:
    """Clips/s of the video tower on decoded, cached test clips (best of ``repeats`` passes: one pass of a small
    model varied by 20 %), and the test similarity matrix (saved as ``test_similarity.npy``) restricted to the
    hard-negative subset. ``full_t2v_R@1`` re-derives the run's own test R@1 from the matrix as a check."""
    from datasets import load_from_disk

    from modeling_mckd import MCKDModel, MCKDProcessor
    from modeling_mckd.data import ClipStore
    from modeling_mckd.encoding import encode_texts

    model = MCKDModel.from_pretrained(model_dir).eval()
    processor = MCKDProcessor.from_pretrained(model_dir)
    videos = load_from_disk(str(dataset_dir))["test"]
    store = ClipStore(videos, input_mode=processor.video_processor.input_mode, cache=True)
    seconds, video_embeds = _best_encoding_seconds(model, processor, store, batch_size, repeats)
    captions = [list(c) for c in videos["captions"]]
    text_to_video = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    text_embeds = encode_texts(model, processor, [c for caps in captions for c in caps], batch_size, "cpu")
    similarity = (text_embeds @ video_embeds.T).numpy()
    np.save(model_dir / "test_similarity.npy", similarity)
    np.save(model_dir / "test_text_to_video.npy", text_to_video)
    out = {"clips_per_s": len(videos) / seconds,
           "full_t2v_R@1": protocol.t2v_recall_at_1(similarity, text_to_video)}
    if hard_videos:
        out["hard_t2v_R@1"] = protocol.t2v_recall_at_1(similarity, text_to_video, hard_videos)
    return out


# -- kept for bench_cpu_allocator.py, which imports them ------------------


def train_student(argv: list[str], kd: float = 1.0, disc: float = 1.0) -> dict:
    """One student run, its config's kd / disc weights times ``kd`` / ``disc`` (0 for kd: no teacher at all)."""
    from modeling_mckd.runner import run_student

    parsed = parse_arguments((ModelArguments, DataArguments, RunArguments, DistillArguments), argv,
                             defaults={"model_preset": "student"})
    distill_args = parsed[3]
    distill_args.kd_weight *= kd
    distill_args.disc_weight *= disc
    if not distill_args.kd_weight:
        distill_args.teacher, distill_args.init_from_teacher = None, ""
    return run_student(*parsed[:3], distill_args)


def _weighted_worker(argv: list[str], kd: float, disc: float) -> dict:
    make_deterministic(1)
    logging.basicConfig(level=logging.WARNING)
    return train_student(argv, kd, disc)


def train_students_in_parallel(seed: int, jobs: dict[str, tuple], workers: int) -> dict[str, dict]:
    """``jobs``: name -> (argv, kd, disc), trained in ``workers`` one-thread processes."""
    from concurrent.futures import as_completed

    print(f"[seed {seed}] {len(jobs)} students, {workers} at a time", flush=True)
    with _student_pool(workers) as pool:
        futures = {pool.submit(_weighted_worker, *job): name for name, job in jobs.items()}
        return {futures[f]: f.result() for f in as_completed(futures)}


def video_throughput(model_dir: Path, dataset_dir: Path, split: str = "test", batch_size: int = 64,
                     repeats: int = 3) -> float:
    """Clips/s of ``measure_model``'s timing alone, on any split (no similarity matrix written)."""
    from datasets import load_from_disk

    from modeling_mckd import MCKDModel, MCKDProcessor
    from modeling_mckd.data import ClipStore

    model = MCKDModel.from_pretrained(model_dir).eval()
    processor = MCKDProcessor.from_pretrained(model_dir)
    videos = load_from_disk(str(dataset_dir))[split]
    store = ClipStore(videos, input_mode=processor.video_processor.input_mode, cache=True)
    return len(videos) / _best_encoding_seconds(model, processor, store, batch_size, repeats)[0]


def _best_encoding_seconds(model, processor, store, batch_size: int, repeats: int):
    """Best of ``repeats`` timed passes after one untimed pass that fills the clip cache; and the embeddings."""
    from modeling_mckd.encoding import encode_videos

    with torch.no_grad():
        embeddings, _ = encode_videos(model, processor, store, batch_size, "cpu")
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            encode_videos(model, processor, store, batch_size, "cpu")
            seconds.append(time.perf_counter() - start)
    return min(seconds), embeddings


def probe_lines(per_seed: dict, synthetic_dir: Path) -> list[str]:
    """The bag-of-words -> audio probe's test t2v R@1 next to the teacher's, when the package has the probe."""
    try:
        from modeling_mckd.probes import bag_of_words_probe
    except ImportError:
        return []
    from datasets import load_from_disk

    values = []
    for seed in per_seed:
        try:
            result = bag_of_words_probe(load_from_disk(str(synthetic_dir / f"seed-{seed}" / "dataset")), modality="audio")
            values.append(protocol.probe_r1(result))
        except Exception as error:  # the probe is another module's: report its failure, keep the table
            return [f"Bag-of-words → audio probe: failed ({type(error).__name__}: {error})."]
    def teacher(key):
        values = [per_seed[s][TEACHER].get(key) for s in per_seed]
        return None if any(v is None for v in values) else protocol.mean_std(values)

    line = (f"Bag-of-words → audio probe (text alone, linear, no frames), test t2v R@1: {protocol.mean_std(values)} "
            f"(per seed {', '.join(f'{v:.2f}' for v in values)}); teacher {teacher('test_t2v_R@1')}")
    # A teacher that is the visual part of a fused one: its frames-only number above, and the fused model's
    fused, audio = teacher("fused_test_t2v_R@1"), teacher("fused_test_audio_only_t2v_R@1")
    if fused is not None:
        line += f" (frames + text; the fused teacher {fused}" + (f", its audio part alone {audio}" if audio else "") + ")"
    return [line + "."]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="reported seeds (each tested once)")
    parser.add_argument("--tuning_seeds", type=int, nargs="+", default=None,
                        help="tuning seeds (validation only); default: the protocol file's")
    parser.add_argument("--protocol", "--grid_file", dest="protocol", default=None,
                        help=f"the grid file (default {PROTOCOL_FILE.relative_to(REPO)}; --quick: "
                             f"{QUICK_PROTOCOL_FILE.relative_to(REPO)})")
    parser.add_argument("--frozen", default=None,
                        help="skip tuning and report with this frozen file (default: tune, then write OUTPUT/frozen.json)")
    parser.add_argument("--tune_only", action="store_true", help="stop after writing the frozen file")
    parser.add_argument("--retune", nargs="+", default=None, metavar="ROW",
                        help="with --frozen: tune these rows again (their grid in --protocol, on --tuning_seeds), keep "
                             "the file's other rows, and write the merged file to OUTPUT/frozen.json")
    parser.add_argument("--retune_reason", default="", help="why the rows were re-tuned (recorded and reported)")
    parser.add_argument("--output_dir", default=None, help="default runs/protocol (--quick: runs/protocol-quick)")
    parser.add_argument("--synthetic_dir", default=None,
                        help="one benchmark per seed in DIR/seed-S (default data/synthetic; --quick: data/synthetic-quick)")
    parser.add_argument("--quick", action="store_true", help="tiny benchmark, 2 epochs, 2-point grid: checks the pipeline")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the main process (teachers); fixed so "
                        "that results do not depend on the machine's core count")
    parser.add_argument("--student_workers", type=int, default=2,
                        help="students trained at once, each in its own one-thread process (1: one after another)")
    parser.add_argument("--hard_fraction", type=float, default=protocol.HARD_FRACTION,
                        help="the hard-negative test subset: this fraction of test videos whose captions have the "
                             "closest caption of another video (bag-of-words cosine)")
    parser.add_argument("--same_process", action="store_true",
                        help="run every seed in the main process instead of a fresh one each (memory then grows "
                             "from seed to seed)")
    parser.add_argument("--resume", action="store_true", help="reuse every model an earlier run finished in OUTPUT")
    parser.add_argument("--disable_tqdm", action="store_true")
    parser.add_argument("--results_doc", default=str(REPO / "docs" / "results.md"))
    return parser


def resolve_defaults(args) -> None:
    suffix = "-quick" if args.quick else ""
    args.output_dir = args.output_dir or f"runs/protocol{suffix}"
    args.synthetic_dir = args.synthetic_dir or f"data/synthetic{suffix}"
    args.protocol = args.protocol or str(QUICK_PROTOCOL_FILE if args.quick else PROTOCOL_FILE)


def main(argv=None, phases_factory: Callable = Phases) -> dict:
    args = build_parser().parse_args(argv)
    resolve_defaults(args)
    logging.basicConfig(level=logging.WARNING)
    make_deterministic(args.threads)
    out = Path(args.output_dir)
    phases = phases_factory(args)
    memory = TreeMemorySampler().start() if TreeMemorySampler.available() else None
    start = time.time()
    headline_towers = bool(Phases.config_init_from_teacher())  # the headline's initialisation: the student config's
    if args.retune:
        frozen, tuning_minutes = retune(args, phases, memory, start)
        if args.tune_only:
            return {"frozen": frozen}
    elif args.frozen:
        frozen = protocol.read_frozen(args.frozen)  # the grid file is not read at all
        protocol.check_rows_for_headline(frozen["rows"], headline_towers, args.frozen)
        tuning_minutes = None
        if args.tuning_seeds and sorted(args.tuning_seeds) != sorted(frozen["tuning_seeds"]):
            raise ValueError(f"--tuning_seeds {args.tuning_seeds} differ from {args.frozen}'s {frozen['tuning_seeds']}")
    else:
        spec = protocol.load_protocol(args.protocol)
        protocol.check_rows_for_headline(spec.grid, headline_towers, args.protocol)
        tuning_seeds = args.tuning_seeds or spec.tuning_seeds
        protocol.check_seeds_disjoint(args.seeds, spec.every_tuning_seed(tuning_seeds))  # before any training
        frozen = phases.tune(spec, tuning_seeds)
        out.mkdir(parents=True, exist_ok=True)
        (out / "frozen.json").write_text(json.dumps(frozen, indent=2) + "\n")
        tuning_minutes = (time.time() - start) / 60
        tuning_memory = f"; peak memory {memory.peak / 1e9:.2f} GB" if memory else ""
        print(f"tuning: {tuning_minutes:.1f} min{tuning_memory}; frozen settings in {out / 'frozen.json'}", flush=True)
        if args.tune_only:
            return {"frozen": frozen}
    protocol.check_seeds_disjoint(args.seeds, protocol.all_tuning_seeds(frozen))
    per_seed, minutes, peak_bytes = {}, {}, {}
    for seed in args.seeds:
        seed_start = time.time()
        if memory:
            memory.reset()
        per_seed[seed] = phases.in_seed_process("report_seed", frozen, seed)
        seed_minutes = (time.time() - seed_start) / 60
        record = out / f"seed-{seed}" / "seed_minutes.json"
        if seed not in phases.reused_seeds:  # everything of this seed ran now: its cost, kept for a resume
            minutes[seed] = seed_minutes
            cost = {"minutes": seed_minutes}
            if memory:
                peak_bytes[seed] = cost["peak_memory_bytes"] = memory.peak
                # depth 0 is this process, 1 the seed's, 2 its students (and multiprocessing's helpers)
                cost["peak_memory_by_depth"] = memory.peak_by_depth
            phases_file = out / f"seed-{seed}" / MEMORY_PHASES_FILE
            if phases_file.is_file():  # written by this seed's run just now
                cost["peak_memory_by_phase"] = json.loads(phases_file.read_text())
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(cost) + "\n")
            in_memory = ""
            if seed in peak_bytes:
                parts = "; ".join(f"depth {d}: " + " + ".join(f"{b / 1e9:.2f}" for b in sizes)
                                  for d, sizes in cost["peak_memory_by_depth"].items())
                in_memory = f", peak memory {peak_bytes[seed] / 1e9:.2f} GB ({parts})"
            if "peak_memory_by_phase" in cost:
                in_memory += "; without this process, by phase: " + ", ".join(
                    f"{name} {size / 1e9:.2f} GB" for name, size in cost["peak_memory_by_phase"].items())
            print(f"[seed {seed}] done in {seed_minutes:.1f} min{in_memory}", flush=True)
        elif record.is_file():  # reused: the cost of the run that trained it
            cost = json.loads(record.read_text())
            minutes[seed] = float(cost["minutes"])
            if "peak_memory_bytes" in cost:
                peak_bytes[seed] = int(cost["peak_memory_bytes"])
            print(f"[seed {seed}] reused; its models took {minutes[seed]:.1f} min when trained", flush=True)
        else:
            print(f"[seed {seed}] reused without a record of its wall time: not judged for time", flush=True)
    if memory:
        memory.stop()
    baseline = protocol.best_baseline(frozen, headline_towers)
    verdicts = protocol.judge_goals(per_seed, headline_towers, baseline, minutes, peak_bytes)
    hard = [per_seed[s][TEACHER].get("hard_num_videos") for s in per_seed]
    hard_info = ""
    if all(h is not None for h in hard):
        hard_info = (f"Hard-negative test subset: the {100 * args.hard_fraction:g} % of test videos with a caption "
                     "whose nearest caption of another video is closest (bag-of-words cosine, words in over half "
                     "the captions dropped); retrieval among them only "
                     f"({', '.join(f'seed {s}: {h} videos' for s, h in zip(per_seed, hard))}).")
    text = protocol.report(per_seed, frozen, verdicts, headline_teacher_towers=headline_towers, hard_info=hard_info,
                           probe_lines=probe_lines(per_seed, Path(args.synthetic_dir)))
    total = (time.time() - start) / 60
    timing = (f"Wall time: {total:.1f} min in all"
              + (f", of which tuning {tuning_minutes:.1f} min" if tuning_minutes is not None else " (frozen file reused)")
              + "; " + ", ".join(f"seed {s}: {m:.1f} min" for s, m in minutes.items()) + ".")
    if peak_bytes:
        timing += (" Peak memory (PSS of all the run's processes, sampled every 2 s): "
                   + ", ".join(f"seed {s}: {b / 1e9:.2f} GB" for s, b in peak_bytes.items()) + ".")
    print("\n" + text + "\n\n" + timing)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"per_seed": per_seed, "verdicts": [v.__dict__ for v in verdicts],
                                                  "minutes": minutes, "tuning_minutes": tuning_minutes,
                                                  "peak_memory_bytes": peak_bytes},
                                                 indent=2, default=float))
    if sorted(args.seeds) == ISSUE_SEEDS and not args.quick:
        write_results_doc(Path(args.results_doc), text + "\n\n" + timing)
        print(f"wrote {args.results_doc}")
    return {"frozen": frozen, "per_seed": per_seed, "verdicts": verdicts, "text": text}


def retune(args, phases: Phases, memory, start: float) -> tuple[dict, float]:
    """Tune the rows ``--retune`` names again (every point of their grid in ``--protocol``, on ``--tuning_seeds``),
    keep every other row of the ``--frozen`` file as it was, and write the merged file to OUTPUT/frozen.json."""
    if not args.frozen:
        raise ValueError("--retune needs --frozen: the file whose other rows stay as they are")
    old = protocol.read_frozen(args.frozen)
    spec = protocol.load_protocol(args.protocol)
    unknown = [name for name in args.retune if name not in spec.grid]
    if unknown:
        raise ValueError(f"--retune {unknown}: not rows of {args.protocol} (its rows: {list(spec.grid)})")
    if spec.num_train_epochs != float(old["num_train_epochs"]) or spec.benchmark != old["benchmark"]:
        raise ValueError(f"--retune: {args.protocol} and {args.frozen} differ in num_train_epochs or benchmark; "
                         "a re-tuned row must train like the rows it is compared with")
    budget = {len(spec.points(name)) for name in args.retune} | {len(entry["validation"]) for entry in old["rows"].values()}
    if len(budget) != 1:
        raise ValueError(f"--retune: every row gets the same number of grid points, but {args.protocol}'s re-tuned "
                         f"rows and {args.frozen}'s rows have {sorted(budget)}")
    # the rows' own seeds in the grid file unless --tuning_seeds names others
    tuning_seeds = args.tuning_seeds or sorted({s for name in args.retune for s in spec.seeds_for(name, spec.tuning_seeds)})
    protocol.check_seeds_disjoint(args.seeds, tuning_seeds)  # before any training
    partial = phases.tune(spec, tuning_seeds, only_rows=args.retune)
    frozen = protocol.merge_retuned(old, partial, args.frozen, args.retune_reason)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "frozen.json"
    if target.is_file() and target.resolve() == Path(args.frozen).resolve():
        target.with_name("frozen-before-retune.json").write_text(target.read_text())  # keep what it replaces
    target.write_text(json.dumps(frozen, indent=2) + "\n")
    minutes = (time.time() - start) / 60
    in_memory = f"; peak memory {memory.peak / 1e9:.2f} GB" if memory else ""
    print(f"re-tuning {args.retune}: {minutes:.1f} min{in_memory}; merged frozen settings in {target}", flush=True)
    return frozen, minutes


BEGIN_MARK = "<!-- reproduce.py: begin (generated, do not edit between the marks) -->"
END_MARK = "<!-- reproduce.py: end -->"


def write_results_doc(path: Path, body: str) -> None:
    """Replace the generated block of ``path`` (between the marks), keeping the hand-written text around it."""
    block = (BEGIN_MARK + "\n\nRegenerate with `python benchmarks/reproduce.py --seeds 0 1 2 3 4` (protocol above).\n\n"
             + body + "\n\n" + END_MARK)
    text = path.read_text() if path.is_file() else "# Results on the synthetic default\n\n"
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        text = head + block + rest.split(END_MARK, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
