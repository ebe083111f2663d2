"""The fair protocol of ``benchmarks/reproduce.py``, as pure functions (no training, no torch).

Rows, the tuning grid and its validation, selection on validation, the frozen file, paired
statistics (Student t confidence interval), the hard-negative test subset, the goal verdicts and the
tables. ``reproduce.py`` does the training; this module only decides and formats, so the tests can
check every decision on hand-made numbers.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One student row: every row is the same student architecture; only the loss and the start differ."""

    name: str
    distillation: bool
    discrimination: bool
    teacher_towers: bool
    family: str  # which loss settings its grid may tune: "ranking", "discrimination" or "distillation"

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")

    @property
    def needs_teacher(self) -> bool:
        return self.distillation or self.teacher_towers


TEACHER = "teacher"
RANKING_ONLY = "ranking-only"
# The 2x2 {distillation on, off} x {teacher towers on, off} (discrimination in all four), plus ranking-only.
ROWS = (
    Row(RANKING_ONLY, distillation=False, discrimination=False, teacher_towers=False, family="ranking"),
    Row("ranking + discrimination", False, True, False, "discrimination"),
    Row("ranking + discrimination (teacher towers)", False, True, True, "discrimination"),
    Row("MCKD full", True, True, False, "distillation"),
    Row("MCKD full (teacher towers)", True, True, True, "distillation"),
)
ROWS_BY_NAME = {row.name: row for row in ROWS}
# Every protocol has these; the "(teacher towers)" rows complete the 2x2 and are needed only when the student
# config starts from a teacher tower (the headline then compares at that initialisation).
REQUIRED_ROWS = tuple(row.name for row in ROWS if not row.teacher_towers)


def rows_named(names) -> list[Row]:
    """The rows among ``names``, in table order (ROWS)."""
    names = set(names)
    return [row for row in ROWS if row.name in names]

# What each family's grid may vary: the learning rate and that row's own loss settings.
TUNABLE = {
    "ranking": {"learning_rate", "ranking_negatives", "ranking_warmup_epochs", "ranking_margin"},
    "discrimination": {"learning_rate", "disc_weight", "disc_temperature"},
    "distillation": {"learning_rate", "kd_weight", "kd_temperature"},
}
RANKING_NEGATIVES = ("hardest", "all", "semi_hard")


def headline_rows(teacher_towers: bool) -> tuple[Row, list[Row]]:
    """Full MCKD at the given initialisation and the no-distillation students that start the same way
    (the candidates for "the best no-teacher student")."""
    full = next(r for r in ROWS if r.distillation and r.teacher_towers == teacher_towers)
    baselines = [r for r in ROWS if not r.distillation and r.teacher_towers == teacher_towers]
    return full, baselines


def check_rows_for_headline(row_names, headline_teacher_towers: bool, where: str) -> None:
    """A headline at the teacher-tower initialisation needs the tower rows (the 2x2) in the grid or frozen file."""
    if not headline_teacher_towers:
        return
    full, baselines = headline_rows(True)
    missing = [r.name for r in (full, *baselines) if r.name not in set(row_names)]
    if missing:
        raise ValueError(f"{where}: the student config starts from a teacher tower (init_from_teacher), so the "
                         f"headline compares at that initialisation and needs the rows {missing}; add them "
                         "(the 2x2) or set init_from_teacher to none in the student config")


def row_overrides(row: Row, config_init_from_teacher: str) -> list[str]:
    """Command-line settings fixed by the row (before its grid point's): which losses, which start."""
    towers = config_init_from_teacher or "text"
    argv = ["--init_from_teacher", towers if row.teacher_towers else ""]
    if not row.distillation:
        argv += ["--kd_weight", "0"]
    if not row.discrimination:
        argv += ["--disc_weight", "0"]
    return argv


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


@dataclass
class ProtocolSpec:
    """``configs/protocol.yaml``: fixed epochs, the selection metric, tuning seeds and one grid per row."""

    source: str
    num_train_epochs: float
    teacher_epochs: float | None
    selection_metric: str
    tuning_seeds: list[int]
    grid: dict[str, dict[str, list]]
    benchmark: dict[str, int] = field(default_factory=dict)
    row_tuning_seeds: dict[str, list[int]] = field(default_factory=dict)  # rows tuned on seeds of their own

    def seeds_for(self, row_name: str, tuning_seeds: Sequence[int]) -> list[int]:
        """The seeds a row is tuned on: its own (``row_tuning_seeds``) or ``tuning_seeds``."""
        return list(self.row_tuning_seeds.get(row_name, tuning_seeds))

    def every_tuning_seed(self, tuning_seeds: Sequence[int]) -> list[int]:
        return sorted({*tuning_seeds, *(s for name in self.grid for s in self.seeds_for(name, tuning_seeds))})

    @property
    def rows(self) -> list[Row]:
        """The rows this protocol runs, in table order."""
        return rows_named(self.grid)

    def points(self, row_name: str) -> list[dict[str, Any]]:
        return grid_points(self.grid[row_name])


SELECTION_METRICS = ("rsum", "t2v_R@1")
BENCHMARK_KEYS = ("synthetic_num_train", "synthetic_num_val", "synthetic_num_test")


def grid_points(row_grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cartesian product of a row's axes, in file order. An axis whose values are mappings is a joint
    axis (e.g. negatives mode and warm-up chosen together): each mapping is merged into the point."""
    names = list(row_grid)
    points = []
    for combo in itertools.product(*(row_grid[n] for n in names)):
        point: dict[str, Any] = {}
        for name, value in zip(names, combo):
            point.update(value if isinstance(value, dict) else {name: value})
        points.append(point)
    return points


def point_label(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def point_argv(point: dict[str, Any]) -> list[str]:
    return [item for key, value in point.items() for item in (f"--{key}", str(value))]


def load_protocol(path: str | Path) -> ProtocolSpec:
    """Read and check a protocol file; every error names the file, the field and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such protocol file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    known = {"num_train_epochs", "teacher_epochs", "selection_metric", "tuning_seeds", "grid", "benchmark",
             "row_tuning_seeds"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; expected some of {sorted(known)}")
    epochs = data.get("num_train_epochs")
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
        raise ValueError(f"{path}: num_train_epochs: expected a positive number (the same for every student), got {epochs!r}")
    teacher_epochs = data.get("teacher_epochs")
    if teacher_epochs is not None and (not isinstance(teacher_epochs, (int, float)) or teacher_epochs <= 0):
        raise ValueError(f"{path}: teacher_epochs: expected a positive number or nothing, got {teacher_epochs!r}")
    metric = data.get("selection_metric", "rsum")
    if metric not in SELECTION_METRICS:
        raise ValueError(f"{path}: selection_metric: expected one of {SELECTION_METRICS}, got {metric!r}")
    seeds = data.get("tuning_seeds", [100])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"{path}: tuning_seeds: expected a non-empty list of integers, got {seeds!r}")
    benchmark = data.get("benchmark") or {}
    if not isinstance(benchmark, dict) or set(benchmark) - set(BENCHMARK_KEYS) or not all(
            isinstance(v, int) and v > 0 for v in benchmark.values()):
        raise ValueError(f"{path}: benchmark: expected positive integers for some of {list(BENCHMARK_KEYS)}, got {benchmark!r}")
    grid = data.get("grid")
    if not isinstance(grid, dict):
        raise ValueError(f"{path}: grid: expected a mapping of row name to its axes, got {type(grid).__name__}")
    missing, extra = [n for n in REQUIRED_ROWS if n not in grid], sorted(set(grid) - set(ROWS_BY_NAME))
    if missing or extra:
        raise ValueError(f"{path}: grid: rows missing {missing}, unknown {extra}; expected {list(REQUIRED_ROWS)}, "
                         f"optionally with {[r.name for r in ROWS if r.name not in REQUIRED_ROWS]}")
    for row in rows_named(grid):
        _check_row_grid(path, row, grid[row.name])
    row_seeds = data.get("row_tuning_seeds") or {}
    if not isinstance(row_seeds, dict):
        raise ValueError(f"{path}: row_tuning_seeds: expected a mapping of row name to a list of seeds, got {row_seeds!r}")
    for name, values in row_seeds.items():
        if name not in grid:
            raise ValueError(f"{path}: row_tuning_seeds: {name!r} is not a row of the grid {list(grid)}")
        if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in values):
            raise ValueError(f"{path}: row_tuning_seeds[{name!r}]: expected a non-empty list of integers, got {values!r}")
    sizes = {row.name: len(grid_points(grid[row.name])) for row in rows_named(grid)}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{path}: grid: every student row gets the same tuning budget, but the rows have "
                         f"{sizes} points")
    return ProtocolSpec(source=str(path), num_train_epochs=float(epochs),
                        teacher_epochs=None if teacher_epochs is None else float(teacher_epochs),
                        selection_metric=metric, tuning_seeds=list(seeds), grid=grid, benchmark=dict(benchmark),
                        row_tuning_seeds={name: list(values) for name, values in row_seeds.items()})


def _check_row_grid(path: Path, row: Row, axes) -> None:
    where = f"{path}: grid[{row.name!r}]"
    if not isinstance(axes, dict) or not axes:
        raise ValueError(f"{where}: expected a mapping of setting name to a list of values")
    allowed = TUNABLE[row.family]
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{axis}: expected a non-empty list of values, got {values!r}")
        for value in values:
            settings = value if isinstance(value, dict) else {axis: value}
            for name, setting in settings.items():
                if name not in allowed:
                    raise ValueError(f"{where}.{axis}: {name!r} is not a setting this row may tune; "
                                     f"expected the learning rate or its own loss settings {sorted(allowed)}")
                if name == "ranking_negatives" and setting not in RANKING_NEGATIVES:
                    raise ValueError(f"{where}.{axis}: ranking_negatives {setting!r}: expected one of {RANKING_NEGATIVES}")
                if name != "ranking_negatives" and (not isinstance(setting, (int, float)) or isinstance(setting, bool)
                                                    or setting < 0):
                    raise ValueError(f"{where}.{axis}: {name} {setting!r}: expected a number >= 0")


# --------------------------------------------------------------------------------------------
# Selection and the frozen file
# --------------------------------------------------------------------------------------------


def select_best(scores: Sequence[Sequence[float]]) -> int:
    """Index of the grid point with the highest mean validation score over the tuning seeds; a tie goes to the
    earlier point (file order), so the choice never depends on anything but the file and the scores."""
    means = [statistics.fmean(values) for values in scores]
    return max(range(len(means)), key=lambda i: (means[i], -i))


FROZEN_VERSION = 1


def check_seeds_disjoint(reported: Sequence[int], tuning: Sequence[int]) -> None:
    shared = sorted(set(reported) & set(tuning))
    if shared:
        raise ValueError(f"reported seed(s) {shared} were also tuning seeds {sorted(tuning)}: a model tuned on a "
                         "seed's data cannot be reported on it; choose other --seeds or --tuning_seeds")


def row_tuning_seeds(frozen: dict, name: str) -> list[int]:
    """The seeds a row of a frozen file was tuned on: its own after a re-tune, else the file's."""
    return list(frozen["rows"][name].get("tuning_seeds", frozen["tuning_seeds"]))


def all_tuning_seeds(frozen: dict) -> list[int]:
    """Every seed any row was tuned on: none of them may be reported."""
    return sorted({*frozen["tuning_seeds"], *(s for name in frozen["rows"] for s in row_tuning_seeds(frozen, name))})


def merge_retuned(frozen: dict, retuned: dict, frozen_source: str, reason: str = "") -> dict:
    """``frozen`` with the rows of ``retuned`` (a tuning phase run on some rows only) replaced. Each replaced row
    keeps its own tuning seeds and grid; ``retuned_rows`` records what was re-tuned, on which seeds, from which
    grid file and frozen file, and why, so that the report can say it. The other rows are untouched."""
    merged = json.loads(json.dumps(frozen))  # a deep copy
    for name, entry in retuned["rows"].items():
        merged["rows"][name] = {**entry, "tuning_seeds": list(retuned["tuning_seeds"]),
                                "grid": retuned["grid"][name]}
    merged.setdefault("retuned_rows", []).append({
        "rows": list(retuned["rows"]), "tuning_seeds": list(retuned["tuning_seeds"]),
        "protocol_file": retuned["protocol_file"], "replaces_from": frozen_source, "reason": reason})
    return merged


def read_frozen(path: str | Path) -> dict:
    """The frozen choice written by the tuning phase; checked so a hand-edited file fails clearly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--frozen {path}: no such file (run the tuning phase first, or name another)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, dict) or data.get("version") != FROZEN_VERSION:
        raise ValueError(f"{path}: expected a frozen protocol file of version {FROZEN_VERSION}")
    for key in ("tuning_seeds", "num_train_epochs", "selection_metric", "rows", "benchmark"):
        if key not in data:
            raise ValueError(f"{path}: missing field {key!r}")
    if not isinstance(data["rows"], dict) or set(data["rows"]) - set(ROWS_BY_NAME):
        raise ValueError(f"{path}: rows: expected a mapping of known row names {list(ROWS_BY_NAME)}")
    for row in rows_named([*REQUIRED_ROWS, *data["rows"]]):
        settings = data["rows"].get(row.name, {}).get("settings")
        if not isinstance(settings, dict):
            raise ValueError(f"{path}: rows[{row.name!r}].settings: expected the chosen settings (a mapping)")
    return data


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for t >= 0: 1/2 plus Simpson's rule over the density (smooth, so 2,000 panels is ample)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    def density(x):
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))
    n = 2000
    h = t / n
    total = density(0.0) + density(t) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, n))
    return 0.5 + total * h / 3


def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection on the CDF."""
    if df < 1:
        raise ValueError(f"t_quantile: df must be >= 1, got {df}")
    if not 0.5 < p < 1:
        raise ValueError(f"t_quantile: p must be in (0.5, 1), got {p}")
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


@dataclass
class PairedDifference:
    """``a - b`` per seed, with its mean, 95 % Student t interval (None with one seed: undefined) and wins."""

    differences: list[float]
    mean: float
    ci: tuple[float, float] | None
    wins: int

    @property
    def n(self) -> int:
        return len(self.differences)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedDifference:
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference: expected two equally long, non-empty lists, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b)]
    mean = statistics.fmean(differences)
    ci = None
    if len(differences) > 1:
        half = t_quantile(0.5 + level / 2, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
        ci = (mean - half, mean + half)
    return PairedDifference(differences, mean, ci, wins=sum(d > 0 for d in differences))


# --------------------------------------------------------------------------------------------
# Hard-negative test subset
# --------------------------------------------------------------------------------------------


HARD_FRACTION = 0.25
COMMON_WORD_FRACTION = 0.5


def _bag_of_words(text: str) -> Counter:
    return Counter(re.findall(r"[a-z0-9]+", text.lower()))


def nearest_other_caption_cosine(captions: Sequence[Sequence[str]],
                                 common_word_fraction: float = COMMON_WORD_FRACTION) -> np.ndarray:
    """For each video, the highest bag-of-words cosine between one of its captions and any caption of another video.
    Words in more than ``common_word_fraction`` of the captions ("a", "the", a template's frame) are dropped
    first: they make every pair alike and say nothing about which video a caption describes."""
    bags = [_bag_of_words(c) for caps in captions for c in caps]
    document_frequency = Counter(word for bag in bags for word in bag)
    vocabulary: dict[str, int] = {}
    for word, count in document_frequency.items():
        if count <= common_word_fraction * len(bags):
            vocabulary[word] = len(vocabulary)
    matrix = np.zeros((len(bags), max(len(vocabulary), 1)))
    for i, bag in enumerate(bags):
        for word, count in bag.items():
            if word in vocabulary:
                matrix[i, vocabulary[word]] = count
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms > 0, norms, 1)
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    cosine = matrix @ matrix.T
    cosine[owner[:, None] == owner[None, :]] = -np.inf  # the same video's captions are not negatives
    per_caption = cosine.max(axis=1) if len(captions) > 1 else np.full(len(bags), -np.inf)
    nearest = np.full(len(captions), -np.inf)
    np.maximum.at(nearest, owner, per_caption)
    return nearest


def hard_threshold(nearest: np.ndarray, fraction: float = HARD_FRACTION) -> float:
    """The cosine above which the ``fraction`` of videos with the closest other-video captions lie (a quantile of
    the split itself, so the definition carries over to any benchmark's captions)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"hard fraction must be in (0, 1], got {fraction}")
    return float(np.quantile(nearest, 1 - fraction, method="lower"))


def hard_negative_subset(captions: Sequence[Sequence[str]], fraction: float = HARD_FRACTION,
                         threshold: float | None = None) -> list[int]:
    """Videos with a caption whose nearest caption of another video has cosine >= the threshold (by default the
    split's (1 - ``fraction``) quantile): the videos a model can tell from a near-duplicate only by details.
    If A is in the subset because of B, so is B (its nearest is at least as close), so retrieval restricted
    to the subset keeps each hard pair together."""
    nearest = nearest_other_caption_cosine(captions)
    if threshold is None:
        threshold = hard_threshold(nearest, fraction)
    return [int(i) for i in np.flatnonzero(nearest >= threshold - EPS)]


def t2v_recall_at_1(similarity: np.ndarray, text_to_video: np.ndarray, videos: Sequence[int] | None = None) -> float:
    """Text-to-video R@1 (%) with the gallery and the queries restricted to ``videos`` (all by default): a query
    counts when its own video scores strictly highest (a tie with another video is a miss, like a rank > 1)."""
    text_to_video = np.asarray(text_to_video)
    if videos is None:
        videos = range(similarity.shape[1])
    videos = np.asarray(list(videos), dtype=int)
    if len(videos) == 0:
        return float("nan")
    queries = np.flatnonzero(np.isin(text_to_video, videos))
    scores = similarity[np.ix_(queries, videos)]
    column = {int(v): j for j, v in enumerate(videos)}
    own = scores[np.arange(len(queries)), [column[int(text_to_video[q])] for q in queries]]
    beaten = (scores >= own[:, None]).sum(axis=1) - 1  # videos scoring at least as high, minus itself
    return 100.0 * float(np.mean(beaten == 0))


# --------------------------------------------------------------------------------------------
# Goals
# --------------------------------------------------------------------------------------------


# Floating point: 12.1 - 10.1 is 1.9999999999999982; a difference this close to the threshold is "at" it.
EPS = 1e-9
HEADLINE_GAIN, RANKING_GAIN, WIN_FRACTION, SPEEDUP, MINUTES_PER_SEED = 2.0, 5.0, 0.8, 5.0, 15.0
MEMORY_BYTES_PER_SEED = 4e9  # "4 GB": decimal gigabytes, the stricter reading (4 GiB would be 4.29e9 bytes)


@dataclass
class Verdict:
    goal: str
    status: str  # "met", "NOT met" or "undecided"
    detail: str

    def line(self) -> str:
        return f"- {self.goal}: {self.detail}: **{self.status}**"


def _at_least(value: float, threshold: float) -> bool:
    return value >= threshold - EPS


def judge_headline(full: Sequence[float], baseline: Sequence[float], baseline_name: str, full_name: str) -> Verdict:
    """Full MCKD >= best no-teacher student + 2 (mean paired difference), its 95 % CI strictly above 0, and wins
    (strictly better) in at least 80 % of the seeds. "At" the +2 and the 80 % meets; a CI touching 0 does not.
    With one seed the CI is undefined: undecided unless another condition already fails."""
    pair = paired_difference(full, baseline)
    needed_wins = math.ceil(WIN_FRACTION * pair.n - EPS)
    checks = [_at_least(pair.mean, HEADLINE_GAIN), pair.wins >= needed_wins]
    ci_text = "undefined with one seed" if pair.ci is None else f"[{pair.ci[0]:+.2f}, {pair.ci[1]:+.2f}]"
    detail = (f"{full_name} − {baseline_name}, test t2v R@1 {pair.mean:+.2f} (goal ≥ +{HEADLINE_GAIN:g}), "
              f"95 % CI {ci_text} (goal: above 0), wins {pair.wins}/{pair.n} (goal ≥ {needed_wins})")
    if not all(checks) or (pair.ci is not None and pair.ci[0] <= EPS):
        status = "NOT met"
    else:
        status = "undecided" if pair.ci is None else "met"
    return Verdict("full MCKD vs the best no-teacher student (same initialisation)", status, detail)


def judge_ranking(full: Sequence[float], ranking: Sequence[float]) -> Verdict:
    """Full MCKD >= ranking-only + 5 in every seed (at +5 meets)."""
    pair = paired_difference(full, ranking)
    worst = min(pair.differences)
    per_seed = ", ".join(f"{d:+.2f}" for d in pair.differences)
    ok = _at_least(worst, RANKING_GAIN)
    return Verdict("full MCKD vs tuned ranking-only", "met" if ok else "NOT met",
                   f"test t2v R@1 per seed {per_seed} (goal ≥ +{RANKING_GAIN:g} in every seed; smallest {worst:+.2f})")


def judge_teacher(per_seed: dict[int, dict[str, dict]], students: Sequence[str]) -> Verdict:
    """The teacher's mean t2v R@1 strictly above every student's, on validation and on test; seeds where a
    student reaches the teacher are listed (they do not change the verdict, which is on the means)."""
    seeds = list(per_seed)
    failures, exceptions = [], []
    for split in ("validation", "test"):
        key = f"{split}_t2v_R@1"
        teacher = statistics.fmean(per_seed[s][TEACHER][key] for s in seeds)
        for name in students:
            if not statistics.fmean(per_seed[s][name][key] for s in seeds) < teacher:
                failures.append(f"{name} on {split}")
            for s in seeds:
                if not per_seed[s][name][key] < per_seed[s][TEACHER][key]:
                    exceptions.append(f"seed {s} {split}: {name}")
    detail = "mean t2v R@1 above every student on validation and test" if not failures else \
        "not above " + "; ".join(failures)
    detail += "; per seed: " + ("the teacher is ahead everywhere" if not exceptions else
                                "a student reaches it in " + "; ".join(exceptions))
    return Verdict("the teacher beats every student", "NOT met" if failures else "met", detail)


def judge_speed(student_clips: Sequence[float], teacher_clips: Sequence[float]) -> Verdict:
    ratio = statistics.fmean(s / t for s, t in zip(student_clips, teacher_clips))
    return Verdict("student video encoding speed-up", "met" if _at_least(ratio, SPEEDUP) else "NOT met",
                   f"{ratio:.2f}× the teacher's clips/s (goal ≥ {SPEEDUP:g}×)")


def judge_wall_time(minutes_per_seed: dict[int, float]) -> Verdict:
    worst = max(minutes_per_seed.values())
    text = ", ".join(f"seed {s}: {m:.1f} min" for s, m in minutes_per_seed.items())
    return Verdict("one reported seed's wall time", "met" if worst <= MINUTES_PER_SEED + EPS else "NOT met",
                   f"{text} (goal ≤ {MINUTES_PER_SEED:g} min; the tuning phase is timed separately)")


def judge_memory(peak_bytes_per_seed: dict[int, int]) -> Verdict:
    """The largest per-seed peak (PSS of all the run's processes) at most 4 GB; at 4 GB meets."""
    worst = max(peak_bytes_per_seed.values())
    text = ", ".join(f"seed {s}: {b / 1e9:.2f} GB" for s, b in peak_bytes_per_seed.items())
    ok = worst <= MEMORY_BYTES_PER_SEED * (1 + EPS)
    return Verdict("one reported seed's peak memory", "met" if ok else "NOT met",
                   f"{text} (goal ≤ {MEMORY_BYTES_PER_SEED / 1e9:g} GB, the summed PSS of every process of the run)")


def judge_goals(per_seed: dict[int, dict[str, dict]], headline_teacher_towers: bool, baseline_name: str,
                minutes_per_seed: dict[int, float] | None = None,
                peak_bytes_per_seed: dict[int, int] | None = None) -> list[Verdict]:
    """Every goal of issue 13 from the reported table. ``baseline_name``: the best no-teacher student with the
    headline's initialisation, chosen on validation (``best_baseline``)."""
    seeds = list(per_seed)
    full_row, _ = headline_rows(headline_teacher_towers)

    def r1(name):
        return [per_seed[s][name]["test_t2v_R@1"] for s in seeds]

    verdicts = [
        judge_headline(r1(full_row.name), r1(baseline_name), baseline_name, full_row.name),
        judge_ranking(r1(full_row.name), r1(RANKING_ONLY)),
        judge_teacher(per_seed, [r.name for r in rows_named(per_seed[seeds[0]])]),
    ]
    if all("clips_per_s" in per_seed[s][full_row.name] for s in seeds):
        verdicts.append(judge_speed([per_seed[s][full_row.name]["clips_per_s"] for s in seeds],
                                    [per_seed[s][TEACHER]["clips_per_s"] for s in seeds]))
    if minutes_per_seed:
        verdicts.append(judge_wall_time(minutes_per_seed))
    if peak_bytes_per_seed:
        verdicts.append(judge_memory(peak_bytes_per_seed))
    return verdicts


def best_baseline(frozen: dict, headline_teacher_towers: bool) -> str:
    """The no-distillation row with the headline's initialisation whose chosen point scored best on validation
    (tuning seeds): chosen before any test number exists."""
    _, candidates = headline_rows(headline_teacher_towers)
    return max(candidates, key=lambda r: frozen["rows"][r.name]["validation_mean"]).name


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


COLUMNS = ("t2v_R@1", "t2v_R@5", "v2t_R@1", "rsum")


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    """A table cell: the mean over seeds, with the sample std when there are several."""
    mean = statistics.fmean(values)
    if len(values) > 1:
        return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"
    return f"{mean:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in rows)]


def format_main_table(per_seed: dict[int, dict[str, dict]]) -> str:
    """Mean ± std over the reported seeds (test, and validation t2v R@1), the hard subset, params, clips/s."""
    seeds = list(per_seed)
    names = list(per_seed[seeds[0]])
    header = ["model", *(f"test {c}" for c in COLUMNS), "val t2v_R@1", "hard-subset t2v_R@1", "params", "clips/s"]
    rows = []
    for name in names:
        cells = [name]
        for key in [*(f"test_{c}" for c in COLUMNS), "validation_t2v_R@1", "hard_t2v_R@1"]:
            values = [per_seed[s][name].get(key) for s in seeds]
            cells.append("–" if any(v is None for v in values) else mean_std(values))
        cells.append(f"{int(statistics.fmean(per_seed[s][name]['num_parameters'] for s in seeds)):,}")
        speeds = [per_seed[s][name].get("clips_per_s") for s in seeds]
        cells.append("–" if any(v is None for v in speeds) else mean_std(speeds, 0))
        rows.append(cells)
    return "\n".join(_table(header, rows))


def format_per_seed_table(per_seed: dict[int, dict[str, dict]], key: str = "test_t2v_R@1") -> str:
    seeds = list(per_seed)
    names = list(per_seed[seeds[0]])
    rows = [[name, *(f"{per_seed[s][name][key]:.2f}" for s in seeds)] for name in names]
    return "\n".join(_table(["model", *(f"seed {s}" for s in seeds)], rows))


def format_paired_table(per_seed: dict[int, dict[str, dict]], full_name: str, key: str = "test_t2v_R@1") -> str:
    """Full MCKD minus each other student, per seed: the mean, the 95 % CI and the wins."""
    seeds = list(per_seed)
    rows = []
    for row in rows_named(per_seed[seeds[0]]):
        if row.name == full_name:
            continue
        pair = paired_difference([per_seed[s][full_name][key] for s in seeds], [per_seed[s][row.name][key] for s in seeds])
        ci = "undefined (1 seed)" if pair.ci is None else f"[{pair.ci[0]:+.2f}, {pair.ci[1]:+.2f}]"
        rows.append([row.name, ", ".join(f"{d:+.2f}" for d in pair.differences), f"{pair.mean:+.2f}", ci,
                     f"{pair.wins}/{pair.n}"])
    return "\n".join(_table([f"{full_name} minus", "per seed", "mean", "95 % CI (t, n−1 df)", "wins"], rows))


def format_frozen_table(frozen: dict) -> str:
    rows = [[name, point_label(entry["settings"]) or "(config)", f"{entry['validation_mean']:.2f}",
             str(len(entry["validation"])), ", ".join(map(str, row_tuning_seeds(frozen, name)))]
            for name, entry in frozen["rows"].items()]
    metric = frozen["selection_metric"]
    return "\n".join(_table(["row", "chosen settings", f"validation {metric} (mean over tuning seeds)", "grid points",
                             "tuning seeds"], rows))


def format_retuned(frozen: dict) -> str:
    """One sentence per re-tune recorded in the frozen file (empty when there was none)."""
    return " ".join(
        f"Re-tuned after the first freeze: {', '.join(entry['rows'])}, on tuning seeds {entry['tuning_seeds']} "
        f"with {entry['protocol_file']}" + (f" ({entry['reason']})" if entry.get("reason") else "")
        + "; every other row keeps its first frozen settings." for entry in frozen.get("retuned_rows", []))


def report(per_seed: dict[int, dict[str, dict]], frozen: dict, verdicts: list[Verdict], *,
           headline_teacher_towers: bool, hard_info: str = "", probe_lines: Sequence[str] = ()) -> str:
    """The whole text that reproduce.py prints and writes into docs/results.md."""
    full_row, _ = headline_rows(headline_teacher_towers)
    seeds = ", ".join(str(s) for s in per_seed)
    own = {name: row_tuning_seeds(frozen, name) for name in frozen["rows"]}
    own = {name: seeds_ for name, seeds_ in own.items() if sorted(seeds_) != sorted(frozen["tuning_seeds"])}
    tuned_on = f"tuning seeds {frozen['tuning_seeds']}" + "".join(f" ({name}: {seeds_})" for name, seeds_ in own.items())
    parts = [
        f"Reported seeds {seeds} (each its own dataset and teacher), test split evaluated once per model; "
        f"settings frozen on {tuned_on} by validation {frozen['selection_metric']}.",
        "", format_main_table(per_seed), "",
        "Test t2v R@1 per seed:", "", format_per_seed_table(per_seed), "",
        "Paired differences (test t2v R@1):", "", format_paired_table(per_seed, full_row.name), "",
        "Frozen settings (chosen on validation, tuning seeds only):", "", format_frozen_table(frozen),
    ]
    if frozen.get("retuned_rows"):
        parts += ["", format_retuned(frozen)]
    if hard_info:
        parts += ["", hard_info]
    if probe_lines:
        parts += ["", *probe_lines]
    parts += ["", "**Goals**", "", *(v.line() for v in verdicts)]
    return "\n".join(parts)


def probe_r1(result: Any) -> float:
    """The probe's t2v R@1 from whatever shape it returns (a number, or a mapping of metrics)."""
    if isinstance(result, (int, float)):
        return float(result)
    if isinstance(result, dict):
        for key in ("test_t2v_R@1", "t2v_R@1"):
            if key in result:
                return float(result[key])
    raise ValueError(f"bag_of_words_probe returned {type(result).__name__} without a t2v_R@1")


Runner = Callable[..., dict]
