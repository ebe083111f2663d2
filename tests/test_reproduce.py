"""benchmarks/reproduce.py: the table, the goal verdicts and the results-doc update (no training)."""

import importlib.util
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "benchmarks" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(r1, r5=30.0, params=1000, speed=100.0):
    metrics = {f"test_{c}": 10.0 for c in ("t2v_R@10", "t2v_MdR", "v2t_R@1", "v2t_R@5", "v2t_R@10", "v2t_MdR", "rsum")}
    return {"test_t2v_R@1": r1, "test_t2v_R@5": r5, **metrics, "num_parameters": params, "clips_per_s": speed}


def seeds(full, ranking, disc, teacher, student_speed=600.0):
    return {
        seed: {
            "teacher": row(teacher[i], params=5000, speed=100.0),
            "student ranking-only": row(ranking[i]),
            "student + distillation": row(full[i]),
            "student + discrimination": row(disc[i]),
            "MCKD student (full)": row(full[i], speed=student_speed),
        }
        for i, seed in enumerate((0, 1, 2))
    }


def test_table_has_mean_and_std_over_seeds(reproduce):
    table = reproduce.format_table(seeds(full=[10, 11, 12], ranking=[1, 1, 1], disc=[7, 8, 9], teacher=[11, 12, 13]))
    lines = table.splitlines()
    assert len(lines) == 2 + 5  # header, separator, five models
    full = next(line for line in lines if line.startswith("| MCKD student (full)"))
    # mean 11.0, sample std 1.0 of (10, 11, 12); parameters as an integer with separators
    assert "| 11.0 ± 1.0 |" in full and "| 1,000 |" in full


def test_goals_met_and_not_met(reproduce):
    met = reproduce.goal_report(seeds(full=[10, 11, 12], ranking=[1, 2, 3], disc=[7, 8, 9], teacher=[11, 12, 13]))
    assert all(line.endswith("met") and "NOT" not in line for line in met[:4]), met
    # +9 over ranking, +3 over discrimination, 11/12 = 92 % of the teacher, 6x faster
    assert "+9.0" in met[0] and "+3.0" in met[1] and "92 %" in met[2] and "6.0x" in met[3]

    missed = reproduce.goal_report(seeds(full=[5, 6, 9], ranking=[1, 2, 6], disc=[5, 6, 8], teacher=[10, 10, 10],
                                         student_speed=300))
    assert all("NOT met" in line for line in missed[:4]), missed
    assert "overlap" in missed[0] and "do not overlap" not in missed[0]


def test_results_doc_keeps_hand_written_text(reproduce, tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nintro\n\n## Ablation\nhand-written\n")
    reproduce.write_results_doc(doc, "| first |", ["- goal one"], 3.0)
    reproduce.write_results_doc(doc, "| second |", ["- goal two"], 4.0, reused=True)
    text = doc.read_text()
    assert text.startswith("# Results\n\nintro\n\n## Ablation\nhand-written\n")
    assert text.count(reproduce.BEGIN_MARK) == 1 and text.count(reproduce.END_MARK) == 1
    assert "| second |" in text and "- goal two" in text and "`--resume`" in text
    assert "| first |" not in text


def test_parts_table_shows_what_each_part_retrieves_and_skips_models_without_it(reproduce):
    per_seed = seeds(full=[10, 11, 12], ranking=[1, 1, 1], disc=[7, 8, 9], teacher=[11, 12, 13])
    assert reproduce.format_parts_table(per_seed) is None  # no model has per-part numbers
    for i, seed in enumerate((0, 1, 2)):
        for name, visual, audio in (("teacher", 2.0 + i, 9.0), ("MCKD student (full)", 1.0, 8.0 + i)):
            per_seed[seed][name].update({"test_visual_only_t2v_R@1": visual, "test_audio_only_t2v_R@1": audio,
                                         "test_visual_only_rsum": 20.0, "test_audio_only_rsum": 100.0})
    lines = reproduce.format_parts_table(per_seed).splitlines()
    assert len(lines) == 2 + 2  # only the two models that have them
    teacher = next(line for line in lines if line.startswith("| teacher"))
    assert teacher.split(" | ")[1:4] == ["12.0 ± 1.0", "3.0 ± 1.0", "9.0 ± 0.0"]
    student = next(line for line in lines if line.startswith("| MCKD student (full)"))
    assert student.split(" | ")[2:4] == ["1.0 ± 0.0", "9.0 ± 1.0"]
