"""The `evaluate` module metrics/retrieval_recall agrees with the core and loads offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeling_mckd.retrieval import compute_ranks, retrieval_metrics


REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_PATH = "./metrics/retrieval_recall"


@pytest.fixture(scope="module")
def metric():
    evaluate = pytest.importorskip("evaluate")
    previous = os.getcwd()
    os.chdir(REPO_ROOT)  # the documented call uses a path relative to the repository root
    try:
        return evaluate.load(MODULE_PATH)
    finally:
        os.chdir(previous)


def random_case(seed, num_queries=23, gallery=17):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 5, size=(num_queries, gallery)).astype(np.float32)  # ties on purpose
    relevant = [sorted(rng.choice(gallery, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(num_queries)]
    return rows, relevant


@pytest.mark.parametrize("policy", ["pessimistic", "optimistic", "mean"])
def test_module_in_two_batches_equals_core(metric, policy):
    rows, relevant = random_case(seed=0)
    metric.add_batch(predictions=rows[:10].tolist(), references=relevant[:10])
    metric.add_batch(predictions=rows[10:].tolist(), references=relevant[10:])
    got = metric.compute(k_values=[1, 3, 10], tie_policy=policy)
    ranks, ap = compute_ranks(rows, relevant, policy, return_average_precision=True)
    expected = retrieval_metrics(ranks, (1, 3, 10), ap)
    assert list(got) == ["R@1", "R@3", "R@10", "MdR", "MnR", "mAP"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_module_hand_example_and_defaults(metric):
    got = metric.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8, 0.85], [0.5, 0.4, 0.45]],
                         references=[[0], [1], [0, 2]])
    # Ranks 0, 1, 0 (query 2's relevant items 0 and 2 come first and second); AP: 1, 1/2, 1.
    assert got["R@1"] == pytest.approx(200 / 3)
    assert got["R@5"] == got["R@10"] == 100.0
    assert got["MdR"] == 1.0
    assert got["MnR"] == pytest.approx(4 / 3)
    assert got["mAP"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)


def test_module_rejects_bad_rows(metric):
    with pytest.raises(ValueError, match=r"predictions\[1\] has 2 scores but predictions\[0\] has 3"):
        metric.compute(predictions=[[0.1, 0.2, 0.3], [0.1, 0.2]], references=[[0], [1]])
    with pytest.raises(ValueError, match="relevant set of query 1 is empty"):
        metric.compute(predictions=[[0.1, 0.2], [0.3, 0.4]], references=[[0], []])
    with pytest.raises(ValueError, match="row 0 contains NaN"):
        metric.compute(predictions=[[float("nan"), 0.2], [0.3, 0.4]], references=[[0], [1]])


def test_module_loads_offline_from_a_fresh_cache(tmp_path):
    """A clean process with HF_HUB_OFFLINE=1 and an empty module cache loads the folder and computes."""
    script = (
        "import json, evaluate\n"
        f"m = evaluate.load({MODULE_PATH!r})\n"
        "print(json.dumps(m.compute(predictions=[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], references=[[0], [0], [1]],"
        " k_values=[1])))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # Ranks 0, 1, 1 -> R@1 = 33.3, MdR = 2, MnR = 5/3, mAP = (1 + 1/2 + 1/2) / 3.
    assert got["R@1"] == pytest.approx(100 / 3)
    assert got["MdR"] == 2.0
    assert got["MnR"] == pytest.approx(5 / 3)
    assert got["mAP"] == pytest.approx(200 / 3)
    assert (tmp_path / "modules").is_dir()  # the module was copied into the fresh cache, not read from elsewhere
