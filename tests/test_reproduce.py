"""benchmarks/reproduce.py and benchmarks/mckd_protocol.py: the protocol's separation of tuning from test, the
grid, the selection, the statistics, the hard subset, the goal verdicts and the tables (no training: the runs
are recording fakes)."""

import importlib.util
import itertools
import json
import math
import mmap
from pathlib import Path

import numpy as np
import pytest


REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduce():
    return _load("reproduce")


@pytest.fixture(autouse=True)
def _keep_torch_settings(reproduce, monkeypatch):
    # main() fixes thread counts and deterministic kernels for the whole process: not in the test process
    monkeypatch.setattr(reproduce, "make_deterministic", lambda threads: None)


@pytest.fixture(scope="module")
def proto(reproduce):
    return reproduce.protocol  # the very module reproduce.py uses


ROW_NAMES = ["ranking-only", "ranking + discrimination", "ranking + discrimination (teacher towers)", "MCKD full",
             "MCKD full (teacher towers)"]


# --------------------------------------------------------------------------------------------
# Rows and grid
# --------------------------------------------------------------------------------------------


def test_rows_are_the_2x2_plus_ranking_only(proto):
    assert [r.name for r in proto.ROWS] == ROW_NAMES
    two_by_two = {(r.distillation, r.teacher_towers) for r in proto.ROWS if r.discrimination}
    assert two_by_two == set(itertools.product((True, False), repeat=2))
    ranking = proto.ROWS_BY_NAME["ranking-only"]
    assert not (ranking.distillation or ranking.discrimination or ranking.teacher_towers)
    full, baselines = proto.headline_rows(True)
    assert full.name == "MCKD full (teacher towers)"
    assert [b.name for b in baselines] == ["ranking + discrimination (teacher towers)"]
    full, baselines = proto.headline_rows(False)
    assert full.name == "MCKD full" and [b.name for b in baselines] == ["ranking-only", "ranking + discrimination"]


def test_row_overrides_switch_losses_and_towers(proto):
    by = proto.ROWS_BY_NAME
    assert proto.row_overrides(by["ranking-only"], "text") == ["--init_from_teacher", "", "--kd_weight", "0",
                                                                "--disc_weight", "0"]
    assert proto.row_overrides(by["ranking + discrimination (teacher towers)"], "text") == \
        ["--init_from_teacher", "text", "--kd_weight", "0"]
    assert proto.row_overrides(by["MCKD full"], "text") == ["--init_from_teacher", ""]
    # a config without towers still gives the "teacher towers" rows the text tower
    assert proto.row_overrides(by["MCKD full (teacher towers)"], "") == ["--init_from_teacher", "text"]


def test_shipped_grids_give_every_row_the_same_budget(proto):
    # the default grid has the three rows at the config's initialisation (from scratch); the quick one the 2x2
    for name, size, rows in (("protocol.yaml", 6, proto.REQUIRED_ROWS), ("protocol_quick.yaml", 2, ROW_NAMES)):
        spec = proto.load_protocol(REPO / "configs" / name)
        assert [row.name for row in spec.rows] == list(rows), name
        assert {len(spec.points(row)) for row in rows} == {size}, name
    spec = proto.load_protocol(REPO / "configs" / "protocol.yaml")
    assert spec.tuning_seeds == [100] and spec.selection_metric == "rsum"
    assert spec.seeds_for("ranking-only", [100]) == [100, 101, 102] and spec.seeds_for("MCKD full", [100]) == [100]
    assert spec.points("ranking-only") == [
        {"learning_rate": 0.001, "ranking_negatives": "all", "ranking_warmup_epochs": 0},
        {"learning_rate": 0.001, "ranking_negatives": "semi_hard", "ranking_warmup_epochs": 0},
        {"learning_rate": 0.002, "ranking_negatives": "all", "ranking_warmup_epochs": 0},
        {"learning_rate": 0.002, "ranking_negatives": "semi_hard", "ranking_warmup_epochs": 0},
        {"learning_rate": 0.004, "ranking_negatives": "all", "ranking_warmup_epochs": 0},
        {"learning_rate": 0.004, "ranking_negatives": "semi_hard", "ranking_warmup_epochs": 0},
    ]
    assert spec.points("MCKD full")[1] == {"learning_rate": 0.001, "kd_weight": 2.0}
    # the shipped student starts from scratch, so the default grid needs no tower rows
    proto.check_rows_for_headline(spec.grid, False, "protocol.yaml")


def test_tower_rows_are_needed_only_for_a_tower_headline(proto, tmp_path):
    grid = _equal_grid()
    for name in ("ranking + discrimination (teacher towers)", "MCKD full (teacher towers)"):
        del grid[name]
    spec = proto.load_protocol(_grid_file(tmp_path, grid))
    assert [r.name for r in spec.rows] == ["ranking-only", "ranking + discrimination", "MCKD full"]
    proto.check_rows_for_headline(spec.grid, False, "grid.yaml")
    with pytest.raises(ValueError, match=r"grid.yaml: .*init_from_teacher.*'MCKD full \(teacher towers\)', "
                                         r"'ranking \+ discrimination \(teacher towers\)'"):
        proto.check_rows_for_headline(spec.grid, True, "grid.yaml")
    # one tower row without the other is still a budget-checked row of its own
    grid["MCKD full (teacher towers)"] = {"kd_weight": [1.0]}
    with pytest.raises(ValueError, match="same tuning budget"):
        proto.load_protocol(_grid_file(tmp_path, grid))
    # the quick grid runs on a package without the new ranking options
    quick = proto.load_protocol(REPO / "configs" / "protocol_quick.yaml")
    assert not any("ranking_" in key for row in ROW_NAMES for p in quick.points(row) for key in p)


def _grid_file(tmp_path, grid, **top):
    import yaml

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"num_train_epochs": 3, "grid": grid, **top}))
    return path


def _equal_grid(size=2):
    values = [0.5 + i for i in range(size)]
    return {
        "ranking-only": {"learning_rate": [1e-3 * (i + 1) for i in range(size)]},
        "ranking + discrimination": {"disc_weight": values},
        "ranking + discrimination (teacher towers)": {"disc_weight": values},
        "MCKD full": {"kd_weight": values},
        "MCKD full (teacher towers)": {"kd_weight": values},
    }


def test_grid_of_unequal_size_is_refused(proto, tmp_path):
    grid = _equal_grid()
    grid["MCKD full"]["learning_rate"] = [1e-3, 2e-3]  # 4 points against 2
    with pytest.raises(ValueError, match="same tuning budget"):
        proto.load_protocol(_grid_file(tmp_path, grid))


@pytest.mark.parametrize("change, message", [
    (lambda g: g["ranking-only"].update(kd_weight=[1.0]), "not a setting this row may tune"),
    (lambda g: g["MCKD full"].update(disc_weight=[1.0]), "not a setting this row may tune"),
    (lambda g: g["ranking-only"].update(ranking_negatives=["hardest", "easiest"]), "easiest"),
    (lambda g: g.pop("MCKD full"), "rows missing \\['MCKD full'\\]"),
    (lambda g: g["ranking-only"].update(learning_rate=[]), "non-empty list"),
])
def test_grid_errors_name_the_file_row_and_expectation(proto, tmp_path, change, message):
    grid = _equal_grid()
    change(grid)
    with pytest.raises(ValueError, match=message) as error:
        proto.load_protocol(_grid_file(tmp_path, grid))
    assert str(tmp_path / "grid.yaml") in str(error.value)


def test_grid_file_fields_are_checked(proto, tmp_path):
    with pytest.raises(ValueError, match="selection_metric"):
        proto.load_protocol(_grid_file(tmp_path, _equal_grid(), selection_metric="test_t2v_R@1"))
    with pytest.raises(ValueError, match="unknown field"):
        proto.load_protocol(_grid_file(tmp_path, _equal_grid(), test_split="test"))


def test_selection_picks_the_best_mean_validation_score(proto):
    # point 1 is best on seed 100 alone, point 2 on the mean over both seeds
    assert proto.select_best([[10.0, 10.0], [30.0, 0.0], [20.0, 12.0]]) == 2
    assert proto.select_best([[5.0], [7.0], [6.0]]) == 1
    assert proto.select_best([[5.0], [5.0]]) == 0  # a tie goes to the earlier point


# --------------------------------------------------------------------------------------------
# Separation of tuning and reporting (recording fakes instead of training)
# --------------------------------------------------------------------------------------------


class Recorder:
    """Fake teacher / student runs: records each command line, returns scores that depend on the settings."""

    def __init__(self, reproduce):
        self.reproduce = reproduce
        self.calls = []

    def parse(self, argv):
        from modeling_mckd.arguments import DataArguments, DistillArguments, ModelArguments, RunArguments, TeacherArguments

        student = "--teacher" in argv or "synthetic_student.yaml" in " ".join(argv)
        types = (ModelArguments, DataArguments, RunArguments, DistillArguments) if student else \
            (ModelArguments, DataArguments, RunArguments, TeacherArguments)
        # The options another engineer is adding: strip them here so this package's parser accepts the argv.
        clean, skip = [], False
        for item in argv:
            if skip:
                skip = False
                continue
            if item in ("--ranking_negatives", "--ranking_warmup_epochs"):
                skip = True
                continue
            clean.append(item)
        return self.reproduce.parse_arguments(types, clean)

    def result(self, argv, role):
        parsed = self.parse(argv)
        data_args, run_args = parsed[1], parsed[2]
        self.calls.append({"role": role, "argv": argv, "data_args": data_args, "run_args": run_args,
                           "distill_args": parsed[3] if role == "student" else None})
        lr = run_args.learning_rate
        # validation prefers lr 1e-3 for every row; teacher 300
        score = 300.0 if role == "teacher" else 200.0 - abs(lr - 1e-3) * 1e4
        out = {"validation_rsum": score, "validation_t2v_R@1": score / 10, "num_parameters": 10}
        if data_args.test_split:
            out.update({"test_rsum": score, "test_t2v_R@1": score / 10})
        return out

    def teacher(self, argv):
        return self.result(argv, "teacher")

    def student(self, argv):
        return self.result(argv, "student")


def _phases(reproduce, recorder):
    def factory(args):
        return reproduce.Phases(args, teacher_fn=recorder.teacher, student_fn=recorder.student,
                                measure_fn=lambda folder, dataset, hard: {"clips_per_s": 100.0})
    return factory


def _quick_grid_with_lrs(tmp_path):
    grid = _equal_grid()
    for row in grid.values():
        row["learning_rate"] = [5e-4, 1e-3]  # 2 x 2 = 4 points each
    grid["ranking-only"] = {"learning_rate": [5e-4, 1e-3],
                            "ranking": [{"ranking_negatives": "all", "ranking_warmup_epochs": 0},
                                        {"ranking_negatives": "hardest", "ranking_warmup_epochs": 2}]}
    return _grid_file(tmp_path, grid, benchmark={"synthetic_num_train": 8})


def test_tuning_runs_never_get_a_test_split_and_reporting_tests_once(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    grid = _quick_grid_with_lrs(tmp_path)
    result = reproduce.main(["--protocol", str(grid), "--tuning_seeds", "100", "101", "--seeds", "0", "1",
                             "--output_dir", str(tmp_path / "out"), "--synthetic_dir", str(tmp_path / "data"),
                             "--results_doc", str(tmp_path / "results.md")],
                            phases_factory=_phases(reproduce, recorder))
    tuning = [c for c in recorder.calls if c["data_args"].synthetic_seed in (100, 101)]
    reported = [c for c in recorder.calls if c["data_args"].synthetic_seed in (0, 1)]
    assert len(tuning) == 2 * (1 + 5 * 4) and len(reported) == 2 * (1 + 5)
    assert all(c["data_args"].test_split == "" for c in tuning)  # finish_run skips an empty split
    assert all(c["data_args"].test_split == "test" for c in reported)
    for call in recorder.calls:  # each seed its own dataset
        assert call["run_args"].seed == call["data_args"].synthetic_seed
        assert call["data_args"].synthetic_dir == str(tmp_path / "data" / f"seed-{call['data_args'].synthetic_seed}")
        assert call["data_args"].synthetic_num_train == 8
    # every reported row once per seed, each in its own folder
    folders = [c["run_args"].output_dir for c in reported]
    assert len(set(folders)) == len(folders)
    # students: fixed epochs for every row; teacher towers / teacher only where the row says
    for call in recorder.calls:
        if call["role"] == "student":
            assert call["run_args"].num_train_epochs == 3
            distill = call["distill_args"]
            towers = "teacher towers" in call["run_args"].output_dir.replace("_", " ")
            assert distill.init_from_teacher == ("text" if towers else "")
    ranking = [c for c in tuning if "/ranking_only/" in c["run_args"].output_dir]
    assert {(c["distill_args"].kd_weight, c["distill_args"].disc_weight) for c in ranking} == {(0.0, 0.0)}
    assert all("--teacher" not in c["argv"] for c in ranking)
    assert {tuple(c["argv"][c["argv"].index("--ranking_negatives") + 1:][:1]) for c in ranking} == {("all",), ("hardest",)}
    # the frozen file holds the grid, every validation number and the choice (lr 1e-3 wins everywhere)
    frozen = json.loads((tmp_path / "out" / "frozen.json").read_text())
    assert frozen["tuning_seeds"] == [100, 101] and frozen["grid"]["MCKD full"]["kd_weight"] == [0.5, 1.5]
    for name, entry in frozen["rows"].items():
        assert entry["settings"]["learning_rate"] == 1e-3, name
        assert len(entry["validation"]) == 4 and set(entry["validation"][0]["scores"]) == {"100", "101"}
    assert result["frozen"] == frozen
    assert not (tmp_path / "results.md").exists()  # only the issue's five seeds write the doc


def test_a_tuning_run_that_reports_test_metrics_stops_the_protocol(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    leaky = Recorder(reproduce)
    leaky.result = lambda argv, role: {**recorder.result(argv, role), "test_t2v_R@1": 1.0}
    with pytest.raises(RuntimeError, match="returned test metrics"):
        reproduce.main(["--protocol", str(_quick_grid_with_lrs(tmp_path)), "--output_dir", str(tmp_path / "out")],
                       phases_factory=_phases(reproduce, leaky))
    assert not (tmp_path / "out" / "frozen.json").exists()


def test_reported_seed_that_was_a_tuning_seed_is_refused_before_training(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    with pytest.raises(ValueError, match=r"reported seed\(s\) \[100\]"):
        reproduce.main(["--protocol", str(_quick_grid_with_lrs(tmp_path)), "--tuning_seeds", "100", "--seeds", "0", "100",
                        "--output_dir", str(tmp_path / "out")], phases_factory=_phases(reproduce, recorder))
    assert recorder.calls == []
    frozen = tmp_path / "frozen.json"
    frozen.write_text(json.dumps(_frozen(tuning_seeds=[7])))
    with pytest.raises(ValueError, match=r"reported seed\(s\) \[7\]"):
        reproduce.main(["--frozen", str(frozen), "--seeds", "7", "--output_dir", str(tmp_path / "out")],
                       phases_factory=_phases(reproduce, recorder))
    assert recorder.calls == []


def _frozen(tuning_seeds=(100,)):
    settings = {name: {"learning_rate": 0.0042, "kd_weight": 3.5} if "MCKD" in name else {"learning_rate": 0.0042}
                for name in ROW_NAMES}
    return {"version": 1, "tuning_seeds": list(tuning_seeds), "num_train_epochs": 5, "teacher_epochs": 1,
            "selection_metric": "rsum", "benchmark": {"synthetic_num_test": 9}, "grid": {},
            "rows": {name: {"settings": settings[name], "validation_mean": 1.0 + i, "validation": [{}]}
                     for i, name in enumerate(ROW_NAMES)}}


def test_reported_phase_reads_only_the_frozen_file(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    frozen = tmp_path / "frozen.json"
    frozen.write_text(json.dumps(_frozen()))
    reproduce.main(["--frozen", str(frozen), "--protocol", str(tmp_path / "no-such-grid.yaml"), "--seeds", "3",
                    "--output_dir", str(tmp_path / "out"), "--synthetic_dir", str(tmp_path / "data")],
                   phases_factory=_phases(reproduce, recorder))
    assert len(recorder.calls) == 6 and all(c["data_args"].synthetic_seed == 3 for c in recorder.calls)
    teacher, *students = recorder.calls
    assert teacher["run_args"].num_train_epochs == 1
    for call in students:
        assert call["run_args"].learning_rate == 0.0042 and call["run_args"].num_train_epochs == 5
        assert call["data_args"].synthetic_num_test == 9
    full = [c for c in students if c["run_args"].output_dir.endswith("mckd_full")]
    assert full[0]["distill_args"].kd_weight == 3.5


def test_reported_phase_runs_the_frozen_rows_only(reproduce, tmp_path):
    """A frozen file without the tower rows (the shipped default): one teacher and the three rows per seed, and the
    table, paired differences and teacher verdict are over those rows."""
    recorder = Recorder(reproduce)
    data = _frozen()
    for name in ("ranking + discrimination (teacher towers)", "MCKD full (teacher towers)"):
        del data["rows"][name]
    frozen = tmp_path / "frozen.json"
    frozen.write_text(json.dumps(data))
    reproduce.main(["--frozen", str(frozen), "--seeds", "3", "4", "--output_dir", str(tmp_path / "out"),
                    "--synthetic_dir", str(tmp_path / "data"), "--results_doc", str(tmp_path / "results.md")],
                   phases_factory=_phases(reproduce, recorder))
    assert len(recorder.calls) == 2 * (1 + 3)
    students = sorted(Path(c["run_args"].output_dir).name for c in recorder.calls if c["role"] == "student")
    assert students == sorted(["ranking_only", "ranking_discrimination", "mckd_full"] * 2)
    assert all(c["distill_args"].init_from_teacher == "" for c in recorder.calls if c["role"] == "student")


def test_frozen_file_errors_are_clear(proto, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        proto.read_frozen(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    data = _frozen()
    del data["rows"]["MCKD full"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"rows\['MCKD full'\]\.settings"):
        proto.read_frozen(bad)
    data = _frozen()
    data["rows"]["MCKD lite"] = data["rows"]["MCKD full"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="known row names"):
        proto.read_frozen(bad)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("df, value", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (30, 2.042)])
def test_t_quantile_matches_the_table(proto, df, value):
    assert proto.t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)


def test_t_quantile_agrees_with_scipy(proto):
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 7, 20):
        for p in (0.9, 0.975, 0.995):
            assert proto.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-5)


def test_paired_difference_by_hand(proto):
    pair = proto.paired_difference([12.0, 15.0, 11.0], [10.0, 11.0, 11.0])
    # differences 2, 4, 0: mean 2, sample std 2, half-width 4.303 * 2 / sqrt(3) = 4.969
    assert pair.differences == [2.0, 4.0, 0.0] and pair.mean == pytest.approx(2.0) and pair.wins == 2
    assert pair.ci == pytest.approx((2 - 4.3027 * 2 / math.sqrt(3), 2 + 4.3027 * 2 / math.sqrt(3)), abs=1e-3)
    single = proto.paired_difference([5.0], [3.0])
    assert single.ci is None and single.mean == 2.0 and single.wins == 1


# --------------------------------------------------------------------------------------------
# Hard-negative subset
# --------------------------------------------------------------------------------------------


def test_hard_subset_by_bag_of_words_cosine(proto):
    captions = [["a red ball rolls left"], ["a red ball rolls right"], ["a green cube"], ["a blue star spins", "star"]]
    # "a" is in 4 of 5 captions (> half): dropped. Videos 0 and 1 then share 3 of 4 words: cosine 3/4;
    # video 3's "star" against "blue star spins" is its own video, not a negative: no shared word elsewhere
    nearest = proto.nearest_other_caption_cosine(captions)
    assert nearest == pytest.approx([0.75, 0.75, 0.0, 0.0])
    assert proto.hard_negative_subset(captions, threshold=0.5) == [0, 1]
    assert proto.hard_negative_subset(captions, threshold=0.75) == [0, 1]  # at the threshold is hard
    assert proto.hard_negative_subset(captions, threshold=0.76) == []
    # the default: the top quarter by nearest cosine; a quantile of the split itself
    assert proto.hard_threshold(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]), 0.25) == 0.6
    assert proto.hard_negative_subset(captions, fraction=0.25) == [0, 1]  # the pair ties at the quantile: both in
    assert proto.hard_negative_subset(captions, fraction=0.5) == [0, 1, 2, 3]  # the 0.0 pair ties there too
    # the same video's own captions never count: identical captions within one video are not negatives
    assert proto.nearest_other_caption_cosine([["x y", "x y"], ["z w"], ["v u"]]).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="hard fraction"):
        proto.hard_threshold(nearest, 0.0)


def test_t2v_recall_on_a_subset_against_brute_force(proto):
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(12, 5))
    text_to_video = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 1])
    for subset in ([0, 1, 2, 3, 4], [1, 3, 4], [2]):
        hits = [int(max(subset, key=lambda v: similarity[q, v]) == text_to_video[q])
                for q in range(12) if text_to_video[q] in subset]
        assert proto.t2v_recall_at_1(similarity, text_to_video, subset) == pytest.approx(100 * np.mean(hits))
    assert proto.t2v_recall_at_1(similarity, text_to_video) == proto.t2v_recall_at_1(similarity, text_to_video, range(5))
    tie = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert proto.t2v_recall_at_1(tie, np.array([0, 1])) == 50.0  # a tie is a miss


# --------------------------------------------------------------------------------------------
# Goal verdicts: just above, exactly at, just below
# --------------------------------------------------------------------------------------------


def _status(verdict):
    return verdict.status


@pytest.mark.parametrize("offset, status", [(0.01, "met"), (0.0, "met"), (-0.01, "NOT met")])
def test_headline_gain_boundary(proto, offset, status):
    baseline = [10.1, 10.3, 10.2, 10.4, 10.0]
    full = [b + 2.0 + offset + d for b, d in zip(baseline, (0.1, -0.1, 0.05, -0.05, 0.0))]  # mean gain 2 + offset
    assert _status(proto.judge_headline(full, baseline, "b", "f")) == status


@pytest.mark.parametrize("wins, status", [(10, "met"), (8, "met"), (7, "NOT met")])
def test_headline_wins_boundary(proto, wins, status):
    # ten seeds: 80 % is 8 wins. Mean >= +2 and a CI above 0 in every case, so only the wins decide
    differences = [3.0] * wins + [0.0] * (10 - wins)
    pair = proto.paired_difference(differences, [0.0] * 10)
    assert pair.mean >= 2 and pair.ci[0] > 0 and pair.wins == wins
    assert _status(proto.judge_headline(differences, [0.0] * 10, "b", "f")) == status


def test_headline_needs_four_wins_of_five(proto):
    verdict = proto.judge_headline([3.0, 3.1, 2.9, 3.0, 3.0], [0.0] * 5, "b", "f")
    assert verdict.status == "met" and "wins 5/5 (goal ≥ 4)" in verdict.detail


def test_headline_a_tie_is_not_a_win(proto):
    assert _status(proto.judge_headline([5, 5, 5, 5, 5], [3, 3, 3, 5, 5], "b", "f")) == "NOT met"


@pytest.mark.parametrize("spread, status", [(0.99, "met"), (1.0, "NOT met"), (1.01, "NOT met")])
def test_headline_ci_boundary(proto, spread, status):
    # n = 2, differences (g - s, g + s): CI lower bound = g - 12.706 * s; at s = g/12.706 it is exactly 0
    gain = 3.0
    s = spread * gain / proto.t_quantile(0.975, 1)
    result = proto.judge_headline([gain - s, gain + s], [0.0, 0.0], "b", "f")
    assert _status(result) == status, result.detail


def test_headline_with_one_seed_is_undecided_never_met(proto):
    verdict = proto.judge_headline([15.0], [10.0], "b", "f")
    assert verdict.status == "undecided" and "undefined" in verdict.detail
    assert proto.judge_headline([11.0], [10.0], "b", "f").status == "NOT met"  # +1 fails whatever the CI


@pytest.mark.parametrize("offset, status", [(0.01, "met"), (0.0, "met"), (-0.01, "NOT met")])
def test_ranking_gain_boundary_in_every_seed(proto, offset, status):
    ranking = [3.3, 4.1, 2.7]
    full = [ranking[0] + 5.0 + offset, ranking[1] + 9, ranking[2] + 9]  # only seed 0 is near the boundary
    assert _status(proto.judge_ranking(full, ranking)) == status


def test_ranking_goal_is_per_seed_not_on_the_mean(proto):
    # mean gain +8, but one seed only +4: dropping the per-seed condition would call this met
    verdict = proto.judge_ranking([14.0, 16.0, 14.0], [10.0, 6.0, 4.0])
    assert verdict.status == "NOT met" and "+4.00" in verdict.detail


def _per_seed(values):
    """values: name -> list over seeds of (validation R@1, test R@1)."""
    n = len(next(iter(values.values())))
    return {seed: {name: {"validation_t2v_R@1": v[seed][0], "test_t2v_R@1": v[seed][1], "num_parameters": 1}
                   for name, v in values.items()} for seed in range(n)}


@pytest.mark.parametrize("offset, status", [(0.01, "met"), (0.0, "NOT met"), (-0.01, "NOT met")])
@pytest.mark.parametrize("split", [0, 1])
def test_teacher_beats_every_student_boundary(proto, offset, split, status):
    teacher = [(20.0, 20.0), (22.0, 22.0)]
    values = {"teacher": teacher, **{name: [(10.0, 10.0)] * 2 for name in ROW_NAMES}}
    near = [[t - 1.0 for t in pair] for pair in teacher]
    for pair, teacher_pair in zip(near, teacher):
        pair[split] = teacher_pair[split] - offset  # just below, at, or just above the teacher on one split
    values["MCKD full"] = [tuple(p) for p in near]
    assert _status(proto.judge_teacher(_per_seed(values), ROW_NAMES)) == status


def test_teacher_verdict_is_on_the_mean_but_names_the_seeds(proto):
    values = {"teacher": [(20.0, 20.0), (20.0, 20.0)], **{name: [(10.0, 10.0)] * 2 for name in ROW_NAMES}}
    values["MCKD full"] = [(21.0, 21.0), (15.0, 15.0)]  # above the teacher in seed 0, below on the mean
    verdict = proto.judge_teacher(_per_seed(values), ROW_NAMES)
    assert verdict.status == "met" and "seed 0 validation: MCKD full" in verdict.detail
    assert "seed 1" not in verdict.detail


@pytest.mark.parametrize("student, status", [(501.0, "met"), (500.0, "met"), (499.0, "NOT met")])
def test_speed_boundary(proto, student, status):
    assert _status(proto.judge_speed([student, student], [100.0, 100.0])) == status


@pytest.mark.parametrize("minutes, status", [(14.9, "met"), (15.0, "met"), (15.1, "NOT met")])
def test_wall_time_boundary(proto, minutes, status):
    assert _status(proto.judge_wall_time({0: 3.0, 1: minutes})) == status


def test_best_baseline_is_chosen_on_validation_among_the_same_initialisation(proto):
    frozen = _frozen()  # validation means increase along ROW_NAMES
    assert proto.best_baseline(frozen, True) == "ranking + discrimination (teacher towers)"
    assert proto.best_baseline(frozen, False) == "ranking + discrimination"
    frozen["rows"]["ranking-only"]["validation_mean"] = 100.0
    assert proto.best_baseline(frozen, False) == "ranking-only"


# --------------------------------------------------------------------------------------------
# Tables and the results doc
# --------------------------------------------------------------------------------------------


def _table_input(n=3):
    base = {"teacher": 20.0, **{name: 10.0 + i for i, name in enumerate(ROW_NAMES)}}
    per_seed = {}
    for seed in range(n):
        per_seed[seed] = {name: {"test_t2v_R@1": r1 + seed, "test_t2v_R@5": 30.0, "test_v2t_R@1": 5.0,
                                 "test_rsum": 100.0, "validation_t2v_R@1": r1, "hard_t2v_R@1": 1.0 + seed,
                                 "num_parameters": 1000 if name != "teacher" else 5000, "clips_per_s": 600.0}
                          for name, r1 in base.items()}
    return per_seed


def test_main_table_has_mean_std_and_per_seed_values(proto):
    per_seed = _table_input()
    lines = proto.format_main_table(per_seed).splitlines()
    assert len(lines) == 2 + 6
    full = next(line for line in lines if line.startswith("| MCKD full |"))
    cells = [c.strip() for c in full.strip("|").split("|")]
    # test R@1 13, 14, 15 -> 14.0 ± 1.0; validation 13 every seed; hard subset 1, 2, 3 -> 2.0 ± 1.0
    assert cells[1] == "14.0 ± 1.0" and cells[5] == "13.0 ± 0.0" and cells[6] == "2.0 ± 1.0"
    assert cells[7] == "1,000" and cells[8] == "600 ± 0"
    per = proto.format_per_seed_table(per_seed).splitlines()
    assert per[0] == "| model | seed 0 | seed 1 | seed 2 |"
    assert "| MCKD full | 13.00 | 14.00 | 15.00 |" in per


def test_paired_table_rows_and_single_seed(proto):
    lines = proto.format_paired_table(_table_input(), "MCKD full (teacher towers)").splitlines()
    assert len(lines) == 2 + 4
    ranking = next(line for line in lines if line.startswith("| ranking-only |"))
    # 14 - 10 in every seed: mean +4, zero spread so the CI is the point, 3 wins of 3
    assert "+4.00, +4.00, +4.00" in ranking and "[+4.00, +4.00]" in ranking and "3/3" in ranking
    single = proto.format_paired_table(_table_input(1), "MCKD full (teacher towers)")
    assert "undefined (1 seed)" in single


def test_report_lists_goals_and_frozen_settings(proto):
    per_seed = _table_input(2)
    frozen = _frozen()
    for entry in frozen["rows"].values():
        entry["validation"] = [{}, {}, {}, {}]
    verdicts = proto.judge_goals(per_seed, True, proto.best_baseline(frozen, True), {0: 5.0, 1: 6.0})
    text = proto.report(per_seed, frozen, verdicts, headline_teacher_towers=True, probe_lines=["probe: 7.5"])
    assert [v.goal for v in verdicts][:3] == ["full MCKD vs the best no-teacher student (same initialisation)",
                                              "full MCKD vs tuned ranking-only", "the teacher beats every student"]
    # headline 14 - 12 = +2 in both seeds (at the goal, CI [2, 2], 2 wins): met; +4 over ranking-only: not
    # met (< 5); teacher 20 above all: met; speed 600 / 600 = 1x: not met; 6 min per seed: met
    assert [v.status for v in verdicts] == ["met", "NOT met", "met", "NOT met", "met"]
    assert "learning_rate=0.0042,kd_weight=3.5" in text and "probe: 7.5" in text and "**Goals**" in text
    assert "settings frozen on tuning seeds [100] by validation" in text  # no row with seeds of its own


def test_results_doc_keeps_hand_written_text(reproduce, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n## Protocol\nhand-written\n")
    reproduce.write_results_doc(doc, "| first |")
    reproduce.write_results_doc(doc, "| second |")
    text = doc.read_text()
    assert text.startswith("# Results\n\n## Protocol\nhand-written\n")
    assert text.count(reproduce.BEGIN_MARK) == 1 and text.count(reproduce.END_MARK) == 1
    assert "| second |" in text and "| first |" not in text


def test_probe_value_shapes(proto):
    assert proto.probe_r1(7.5) == 7.5 and proto.probe_r1({"test_t2v_R@1": 3.0}) == 3.0
    with pytest.raises(ValueError, match="t2v_R@1"):
        proto.probe_r1({"rsum": 1.0})


def test_student_config_is_frames_and_text(reproduce):
    import yaml

    config = yaml.safe_load((REPO / "configs" / "synthetic_student.yaml").read_text())
    assert "extra_modalities" not in config["model_overrides"] and "fuse_modalities" not in config["model_overrides"]
    assert config["kd_parts"] is False and config["init_from_teacher"] == ""
    teacher = yaml.safe_load((REPO / "configs" / "synthetic_teacher.yaml").read_text())
    assert teacher["model_overrides"]["fuse_modalities"] == ["audio"]


def test_the_protocols_teacher_is_the_saved_visual_part(reproduce, tmp_path):
    """configs/synthetic_teacher.yaml saves its visual part: the students get --teacher .../teacher/visual_part and
    the table reads that folder's results; --resume reuses both only when both are complete."""
    assert reproduce.Phases.teacher_is_visual_part()
    calls = []

    def fake_teacher(argv):
        folder = Path(argv[argv.index("--output_dir") + 1])
        calls.append(folder)
        for sub, score in ((folder, 7.0), (folder / "visual_part", 9.0)):
            sub.mkdir(parents=True, exist_ok=True)
            (sub / "model.safetensors").write_bytes(b"")
            (sub / "all_results.json").write_text(json.dumps({"validation_t2v_R@1": score}))
        return {"validation_t2v_R@1": 7.0}

    args = reproduce.build_parser().parse_args(["--resume", "--output_dir", str(tmp_path / "out")])
    reproduce.resolve_defaults(args)
    phases = reproduce.Phases(args, teacher_fn=fake_teacher, student_fn=lambda argv: {})
    folder, result = phases.teacher(tmp_path / "seed-0", 0, {}, None, tuning=False)
    assert folder == tmp_path / "seed-0" / "teacher" / "visual_part" and result == {"validation_t2v_R@1": 9.0}
    assert phases.teacher(tmp_path / "seed-0", 0, {}, None, tuning=False)[0] == folder and len(calls) == 1
    (folder / "model.safetensors").unlink()  # an interrupted export: the teacher is trained again
    phases.teacher(tmp_path / "seed-0", 0, {}, None, tuning=False)
    assert len(calls) == 2


def test_a_resumed_seed_is_judged_by_the_time_of_the_run_that_trained_it(reproduce, tmp_path):
    recorder = Recorder(reproduce)

    def writing(role):
        def run(argv):
            result = recorder.result(argv, role)
            folder = Path(argv[argv.index("--output_dir") + 1])
            for sub in (folder, folder / "visual_part") if role == "teacher" else (folder,):
                sub.mkdir(parents=True, exist_ok=True)
                (sub / "model.safetensors").write_bytes(b"")
                (sub / "all_results.json").write_text(json.dumps(result))
            return result
        return run

    def factory(args):
        return reproduce.Phases(args, teacher_fn=writing("teacher"), student_fn=writing("student"),
                                measure_fn=lambda folder, dataset, hard: {"clips_per_s": 100.0})

    frozen = tmp_path / "frozen.json"
    frozen.write_text(json.dumps(_frozen()))
    out = tmp_path / "out"
    argv = ["--frozen", str(frozen), "--seeds", "3", "--output_dir", str(out), "--synthetic_dir", str(tmp_path / "d"),
            "--resume"]

    def wall_time_verdicts():
        result = reproduce.main(argv, phases_factory=factory)
        return [v for v in result["verdicts"] if "wall time" in v.goal]

    first = wall_time_verdicts()
    record = out / "seed-3" / "seed_minutes.json"
    recorded = json.loads(record.read_text())["minutes"]
    assert len(first) == 1 and len(recorder.calls) == 6
    record.write_text(json.dumps({"minutes": 20.0}))  # as if the training run had taken 20 minutes
    second = wall_time_verdicts()
    assert len(recorder.calls) == 6  # everything reused
    assert second[0].status == "NOT met" and "seed 3: 20.0 min" in second[0].detail and recorded < 1
    record.unlink()
    assert wall_time_verdicts() == []  # reused without a record: not judged for time


def test_a_resumed_seed_is_judged_by_the_memory_of_the_run_that_trained_it(reproduce, tmp_path):
    frozen = tmp_path / "frozen.json"
    frozen.write_text(json.dumps(_frozen()))
    out = tmp_path / "out"
    for seed in (3, 4):
        for name in ("teacher", "teacher/visual_part", *(protocol_slug(reproduce, n) for n in _frozen()["rows"])):
            folder = out / f"seed-{seed}" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.safetensors").write_bytes(b"")
            score = 30.0 if name.startswith("teacher") else 20.0
            (folder / "all_results.json").write_text(json.dumps(
                {"validation_rsum": score, "validation_t2v_R@1": score, "test_t2v_R@1": score, "test_rsum": score,
                 "num_parameters": 10}))
    (out / "seed-3" / "seed_minutes.json").write_text(json.dumps({"minutes": 12.0, "peak_memory_bytes": 3_000_000_000}))
    (out / "seed-4" / "seed_minutes.json").write_text(json.dumps({"minutes": 13.0, "peak_memory_bytes": 4_100_000_000}))

    def factory(args):
        never = Recorder(reproduce)  # every model is reused: nothing may train
        return reproduce.Phases(args, teacher_fn=never.teacher, student_fn=never.student,
                                measure_fn=lambda folder, dataset, hard: {"clips_per_s": 100.0})

    result = reproduce.main(["--frozen", str(frozen), "--seeds", "3", "4", "--output_dir", str(out),
                             "--synthetic_dir", str(tmp_path / "d"), "--resume"], phases_factory=factory)
    memory = [v for v in result["verdicts"] if "memory" in v.goal]
    assert len(memory) == 1 and memory[0].status == "NOT met"
    assert "seed 3: 3.00 GB" in memory[0].detail and "seed 4: 4.10 GB" in memory[0].detail


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").is_file(), reason="needs Linux /proc/PID/smaps_rollup")
def test_a_seeds_peak_memory_is_broken_down_by_phase(reproduce, tmp_path, capsys):
    recorder, held = Recorder(reproduce), []
    size = 200 * 2**20

    def student(argv):
        if not held:  # the students' phase holds 200 MB more than the teacher's ever did
            # Fresh pages from the kernel: a bytearray could reuse heap that earlier tests freed but the
            # allocator kept resident, and then the tree's memory would not grow at all.
            block = mmap.mmap(-1, size)
            for offset in range(0, size, mmap.PAGESIZE):
                block[offset] = 1
            held.append(block)
        return recorder.student(argv)

    def factory(args):
        return reproduce.Phases(args, teacher_fn=recorder.teacher, student_fn=student,
                                measure_fn=lambda folder, dataset, hard: {"clips_per_s": 100.0})

    frozen = tmp_path / "frozen.json"
    frozen.write_text(json.dumps(_frozen()))
    out = tmp_path / "out"
    (out / "seed-3").mkdir(parents=True)
    (out / "seed-3" / "memory_phases.json").write_text('{"stale": 1}')  # an earlier run's: replaced
    reproduce.main(["--frozen", str(frozen), "--seeds", "3", "--output_dir", str(out), "--synthetic_dir",
                    str(tmp_path / "d")], phases_factory=factory)
    held.pop().close()
    phases = json.loads((out / "seed-3" / "seed_minutes.json").read_text())["peak_memory_by_phase"]
    assert list(phases) == ["teacher", "students", "measurement"]
    assert phases["students"] - phases["teacher"] >= 0.9 * size
    assert json.loads((out / "seed-3" / "memory_phases.json").read_text()) == phases
    assert "by phase: teacher " in capsys.readouterr().out


def protocol_slug(reproduce, name):
    return reproduce.protocol.ROWS_BY_NAME[name].slug


@pytest.mark.parametrize("peak, status", [(3.99e9, "met"), (4e9, "met"), (4.01e9, "NOT met")])
def test_memory_boundary(proto, peak, status):
    assert _status(proto.judge_memory({0: 1e9, 1: int(peak)})) == status


def test_each_seed_runs_in_a_fresh_process_when_the_runs_are_real(reproduce, monkeypatch):
    args = reproduce.build_parser().parse_args(["--seeds", "3"])
    reproduce.resolve_defaults(args)
    calls = []

    def fresh(fn, *fn_args):
        calls.append((fn, fn_args))
        return {"row": 1.0}, [3]

    monkeypatch.setattr(reproduce, "_in_fresh_process", fresh)
    phases = reproduce.Phases(args)
    assert phases.isolate
    frozen = _frozen()
    assert phases.in_seed_process("report_seed", frozen, 3) == {"row": 1.0}
    assert calls == [(reproduce._seed_worker, (args, "report_seed", frozen, 3))]
    assert phases.reused_seeds == {3}  # what the seed's process reused is known to the main one
    # --same_process, and the tests' fakes, run in this process
    args.same_process = True
    assert not reproduce.Phases(args).isolate
    args.same_process = False
    assert not reproduce.Phases(args, teacher_fn=lambda argv: {}).isolate


def test_a_fresh_process_is_another_process(reproduce):
    import os

    assert reproduce._in_fresh_process(os.getpid) != os.getpid()


def test_retune_tunes_only_the_named_rows_and_keeps_the_others(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    grid = _quick_grid_with_lrs(tmp_path)  # 4 points a row, epochs 3, synthetic_num_train 8
    old = _frozen()
    old.update({"num_train_epochs": 3, "benchmark": {"synthetic_num_train": 8}})
    for entry in old["rows"].values():
        entry["validation"] = [{}] * 4
    frozen_path = tmp_path / "frozen.json"
    frozen_path.write_text(json.dumps(old))
    out = tmp_path / "out"
    result = reproduce.main(["--frozen", str(frozen_path), "--protocol", str(grid), "--retune", "ranking-only",
                             "--retune_reason", "it collapsed", "--tuning_seeds", "100", "101", "--seeds", "3",
                             "--output_dir", str(out), "--synthetic_dir", str(tmp_path / "data")],
                            phases_factory=_phases(reproduce, recorder))
    tuning = [c for c in recorder.calls if c["data_args"].synthetic_seed in (100, 101)]
    # the ranking-only row needs no teacher: 2 seeds x 4 points, no teacher trained, in OUTPUT/retune/
    assert len(tuning) == 8 and {c["role"] for c in tuning} == {"student"}
    assert all("/retune/" in c["run_args"].output_dir and "/ranking_only/" in c["run_args"].output_dir for c in tuning)
    merged = json.loads((out / "frozen.json").read_text())
    assert result["frozen"] == merged
    ranking = merged["rows"]["ranking-only"]
    assert ranking["settings"]["learning_rate"] == 1e-3 and ranking["tuning_seeds"] == [100, 101]
    assert ranking["grid"]["learning_rate"] == [5e-4, 1e-3]
    for name in ROW_NAMES[1:]:
        assert merged["rows"][name] == old["rows"][name]  # untouched
    assert merged["tuning_seeds"] == [100] and reproduce.protocol.all_tuning_seeds(merged) == [100, 101]
    assert merged["retuned_rows"][0]["reason"] == "it collapsed"
    # the report says it: per-row tuning seeds and the re-tune sentence
    assert "Re-tuned after the first freeze: ranking-only, on tuning seeds [100, 101]" in result["text"]
    assert "(it collapsed)" in result["text"]
    reported = [c for c in recorder.calls if c["data_args"].synthetic_seed == 3]
    only = [c for c in reported if c["run_args"].output_dir.endswith("ranking_only")]
    assert only[0]["run_args"].learning_rate == 1e-3


def test_retune_refuses_what_would_make_rows_incomparable(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    grid = _quick_grid_with_lrs(tmp_path)
    old = _frozen()
    old.update({"num_train_epochs": 3, "benchmark": {"synthetic_num_train": 8}})
    frozen_path = tmp_path / "frozen.json"

    def run(extra, frozen_rows_points=4, epochs=3):
        old["num_train_epochs"] = epochs
        for entry in old["rows"].values():
            entry["validation"] = [{}] * frozen_rows_points
        frozen_path.write_text(json.dumps(old))
        return reproduce.main(["--frozen", str(frozen_path), "--protocol", str(grid), "--output_dir",
                               str(tmp_path / "out"), *extra], phases_factory=_phases(reproduce, recorder))

    with pytest.raises(ValueError, match="not rows of"):
        run(["--retune", "no such row"])
    with pytest.raises(ValueError, match="num_train_epochs or benchmark"):
        run(["--retune", "ranking-only"], epochs=5)
    with pytest.raises(ValueError, match="same number of grid points"):
        run(["--retune", "ranking-only"], frozen_rows_points=6)
    with pytest.raises(ValueError, match="were also tuning seeds"):
        run(["--retune", "ranking-only", "--tuning_seeds", "3", "--seeds", "3"])
    with pytest.raises(ValueError, match="needs --frozen"):
        reproduce.main(["--protocol", str(grid), "--retune", "ranking-only", "--output_dir", str(tmp_path / "o")],
                       phases_factory=_phases(reproduce, recorder))
    assert recorder.calls == []  # refused before any training


def test_resume_reuses_a_folder_only_for_the_command_line_it_was_started_with(reproduce, tmp_path):
    folder = tmp_path / "run"
    argv = ["--learning_rate", "0.001", "--output_dir", str(folder)]
    assert not reproduce.reusable(folder, argv)  # nothing there
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "all_results.json").write_text("{}")
    assert reproduce.reusable(folder, argv)  # a folder from before the record: reused as before
    reproduce.record_argv(folder, argv)
    assert reproduce.reusable(folder, argv)
    assert not reproduce.reusable(folder, ["--learning_rate", "0.002", "--output_dir", str(folder)])
    (folder / reproduce.ARGV_RECORD).write_text("{not json")
    assert not reproduce.reusable(folder, argv)


def test_the_committed_frozen_file_reads_and_was_tuned_on_other_seeds_than_the_reported(reproduce, proto):
    frozen = proto.read_frozen(REPO / "configs" / "protocol_frozen.json")
    proto.check_seeds_disjoint(reproduce.ISSUE_SEEDS, proto.all_tuning_seeds(frozen))
    spec = proto.load_protocol(REPO / "configs" / "protocol.yaml")
    for name, entry in frozen["rows"].items():
        # every frozen choice is a point of its grid, and the grid is the size of the shipped one
        grid = entry.get("grid", frozen["grid"][name])
        assert entry["settings"] in proto.grid_points(grid), name
        assert len(entry["validation"]) == len(spec.points(name)), name
    # the re-tuned row is the shipped grid's, on its own tuning seeds, and the report says so
    assert frozen["rows"]["ranking-only"]["grid"] == spec.grid["ranking-only"]
    assert proto.row_tuning_seeds(frozen, "ranking-only") == [100, 101, 102]
    assert "Re-tuned after the first freeze: ranking-only" in proto.format_retuned(frozen)
    # the report's first line names each row's tuning seeds, not only the file's
    text = proto.report(_table_input(2), frozen, [], headline_teacher_towers=False)
    assert "settings frozen on tuning seeds [100] (ranking-only: [100, 101, 102]) by validation" in text


def test_a_row_with_tuning_seeds_of_its_own_is_tuned_on_them_only(reproduce, tmp_path):
    recorder = Recorder(reproduce)
    grid = _grid_file(tmp_path, _equal_grid(), tuning_seeds=[100], row_tuning_seeds={"ranking-only": [100, 101]})
    out = tmp_path / "out"
    argv = ["--protocol", str(grid), "--output_dir", str(out), "--synthetic_dir", str(tmp_path / "data"),
            "--tune_only"]
    frozen = reproduce.main(argv, phases_factory=_phases(reproduce, recorder))["frozen"]
    by_seed = {}
    for call in recorder.calls:
        by_seed.setdefault(call["data_args"].synthetic_seed, []).append(call)
    # seed 100: the teacher and every row's 2 points; seed 101: ranking-only's 2 points, no teacher
    assert len(by_seed[100]) == 1 + 5 * 2
    assert len(by_seed[101]) == 2 and all(c["role"] == "student" and "/ranking_only/" in c["run_args"].output_dir
                                          for c in by_seed[101])
    ranking = frozen["rows"]["ranking-only"]
    assert ranking["tuning_seeds"] == [100, 101] and set(ranking["validation"][0]["scores"]) == {"100", "101"}
    assert "tuning_seeds" not in frozen["rows"]["MCKD full"]  # the file's seeds
    assert set(frozen["rows"]["MCKD full"]["validation"][0]["scores"]) == {"100"}
    assert frozen["teacher_validation"] == {"100": 300.0}
    # a reported seed that only one row was tuned on is refused, before any training
    calls = len(recorder.calls)
    with pytest.raises(ValueError, match="were also tuning seeds"):
        reproduce.main([*argv[:-1], "--seeds", "101"], phases_factory=_phases(reproduce, recorder))
    assert len(recorder.calls) == calls


@pytest.mark.parametrize("row_seeds, message", [
    ({"no such row": [1]}, "not a row of the grid"),
    ({"ranking-only": []}, "non-empty list of integers"),
    ({"ranking-only": ["a"]}, "non-empty list of integers"),
    ([100], "mapping of row name"),
])
def test_row_tuning_seeds_are_checked(proto, tmp_path, row_seeds, message):
    with pytest.raises(ValueError, match=message):
        proto.load_protocol(_grid_file(tmp_path, _equal_grid(), row_tuning_seeds=row_seeds))


def test_the_student_pool_gives_freed_heap_back_before_it_forks(reproduce, monkeypatch):
    import multiprocessing

    calls = []
    monkeypatch.setattr(reproduce, "release_free_memory", lambda: calls.append("released"))
    with reproduce._student_pool(1) as pool:
        assert pool.submit(abs, -3).result() == 3
    forks = "fork" in multiprocessing.get_all_start_methods()
    assert calls == (["released"] if forks else [])


def test_the_default_configs_evaluate_at_most_their_training_batch():
    """The evaluation batch (no gradients, but every clip's activations at once) set the seed's peak memory when
    it was 256 clips; embeddings do not depend on it beyond the last bit (tests/test_one_path.py)."""
    import yaml

    for role in ("teacher", "student"):
        config = yaml.safe_load((REPO / "configs" / f"synthetic_{role}.yaml").read_text())
        assert config["per_device_eval_batch_size"] <= config["per_device_train_batch_size"], role
