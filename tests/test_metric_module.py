"""The `evaluate` module metrics/retrieval_recall agrees with the core, loads offline and loads
without the MCKD package (it has its own numpy ranking core)."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modeling_mckd.retrieval import compute_ranks, evaluate_retrieval, retrieval_metrics


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


def multi_caption_case(seed, num_videos=13, captions_per_video=(1, 4)):
    """A similarity matrix (captions x videos) with ties and a caption -> video id list."""
    rng = np.random.default_rng(seed)
    text_to_video = np.concatenate([np.full(rng.integers(*captions_per_video), video) for video in range(num_videos)])
    rng.shuffle(text_to_video)
    # Few distinct values so ties between relevant and non-relevant items are common.
    similarity = rng.integers(0, 6, size=(len(text_to_video), num_videos)).astype(np.float32) / 4
    return similarity, text_to_video


@pytest.mark.parametrize("policy", ["pessimistic", "optimistic", "mean"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_module_equals_package_in_both_directions(metric, policy, seed):
    """t2v (one relevant video per caption) and v2t (all captions of a video relevant) from the module
    equal modeling_mckd.retrieval.evaluate_retrieval on the same multi-caption matrix."""
    similarity, text_to_video = multi_caption_case(seed)
    expected = evaluate_retrieval(similarity=similarity, text_to_video=text_to_video, tie_policy=policy)
    t2v = metric.compute(predictions=similarity.tolist(), references=[[int(v)] for v in text_to_video],
                         tie_policy=policy, chunk_size=5)
    captions = [np.flatnonzero(text_to_video == video).tolist() for video in range(similarity.shape[1])]
    v2t = metric.compute(predictions=similarity.T.tolist(), references=captions, tie_policy=policy)
    assert any(len(c) > 1 for c in captions) and expected["t2v_R@1"] < 100  # the case is not trivial
    for key in ["R@1", "R@5", "R@10", "MdR", "MnR"]:
        assert t2v[key] == pytest.approx(expected[f"t2v_{key}"], rel=1e-12), key
        assert v2t[key] == pytest.approx(expected[f"v2t_{key}"], rel=1e-12), key
    assert v2t["mAP"] == pytest.approx(expected["v2t_mAP"], rel=1e-12)


def test_module_random_continuous_scores_equal_core(metric):
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((40, 31)).astype(np.float32)
    relevant = [sorted(rng.choice(31, size=rng.integers(1, 9), replace=False).tolist()) for _ in range(40)]
    got = metric.compute(predictions=rows.tolist(), references=relevant, k_values=[1, 5, 10], chunk_size=3)
    ranks, ap = compute_ranks(rows, relevant, return_average_precision=True)
    for key, value in retrieval_metrics(ranks, (1, 5, 10), ap).items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_module_rejects_bad_options_and_references(metric):
    rows = [[0.1, 0.2], [0.3, 0.4]]
    with pytest.raises(ValueError, match="tie_policy must be one of"):
        metric.compute(predictions=rows, references=[[0], [1]], tie_policy="random")
    with pytest.raises(ValueError, match="k_values must be positive integers"):
        metric.compute(predictions=rows, references=[[0], [1]], k_values=[0])
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        metric.compute(predictions=rows, references=[[0], [1]], chunk_size=0)
    with pytest.raises(ValueError, match=r"references\[1\] contains 2, outside the gallery of 2 items"):
        metric.compute(predictions=rows, references=[[0], [2]])
    with pytest.raises(ValueError, match=r"references\[0\] lists a gallery item more than once"):
        metric.compute(predictions=rows, references=[[1, 1], [0]])


def test_module_declares_only_real_dependencies():
    """evaluate turns every imported top-level name into a pip requirement; modeling_mckd is not one
    (the distribution is called mckd), so the module must not import it, nor mention it in errors."""
    from evaluate.loading import get_imports

    source = REPO_ROOT / "metrics" / "retrieval_recall" / "retrieval_recall.py"
    imported = {name for _, name, _, _ in get_imports(str(source))}
    assert imported <= {"numbers", "datasets", "evaluate", "numpy"}, imported
    messages = [node.value for raise_node in ast.walk(ast.parse(source.read_text())) if isinstance(raise_node, ast.Raise)
                for node in ast.walk(raise_node) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert messages and not [text for text in messages if "modeling_mckd" in text or "install" in text]


BLOCKED_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_mckd":
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, BlockPackage())
    try:
        import modeling_mckd  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_mckd should not be importable here")

    import evaluate

    metric = evaluate.load(sys.argv[1])
    print(json.dumps(metric.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8, 0.85], [0.5, 0.4, 0.45]],
                                    references=[[0], [1], [0, 2]], k_values=[1, 2])))
    try:
        metric.compute(predictions=[[0.1, 0.2], [0.3, 0.4]], references=[[0], []])
    except ValueError as error:
        print(json.dumps({"error": str(error)}))
    """
)


def test_module_loads_without_the_package(tmp_path):
    """With modeling_mckd unimportable (blocked, isolated mode, run from outside the repository) the
    module still loads from its folder and computes the hand example."""
    (tmp_path / "blocked.py").write_text(BLOCKED_PACKAGE_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-I", str(tmp_path / "blocked.py"), str(REPO_ROOT / MODULE_PATH)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    got, error = json.loads(lines[-2]), json.loads(lines[-1])["error"]
    # Ranks 0, 1, 0 (query 2's relevant items 0 and 2 come first and second).
    assert got == pytest.approx({"R@1": 200 / 3, "R@2": 100.0, "MdR": 1.0, "MnR": 4 / 3, "mAP": 250 / 3})
    assert "relevant set of query 1 is empty" in error
