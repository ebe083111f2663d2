"""Tests of the linear modality probes (modeling_mckd/probes.py) on tiny hand-made datasets."""

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from modeling_mckd import probes

WORDS = [f"w{i}" for i in range(16)]  # C(16, 3) = 560 distinct captions


def _word_sets(rng, count):
    """``count`` distinct 3-word sets from WORDS (so every clip's caption has its own bag of words)."""
    seen, out = set(), []
    while len(out) < count:
        words = tuple(sorted(rng.choice(len(WORDS), 3, replace=False)))
        if words not in seen:
            seen.add(words)
            out.append(words)
    return out


def _dataset(tmp_path, features_of, sizes=(80, 30, 60), seed=0):
    """A DatasetDict like the preparation scripts write (audio = paths to (T, D) .npy files)."""
    rng = np.random.default_rng(seed)
    word_sets = _word_sets(rng, sum(sizes))
    splits, start = {}, 0
    for name, size in zip(("train", "validation", "test"), sizes, strict=True):
        rows = {"video_id": [], "captions": [], "audio": []}
        for index in range(start, start + size):
            words = word_sets[index]
            path = tmp_path / f"clip{index}.npy"
            np.save(path, features_of(words, rng).astype(np.float32), allow_pickle=False)
            rows["video_id"].append(f"clip{index}")
            # Two captions per clip, the same words in another order and case.
            rows["captions"].append([" ".join(WORDS[w] for w in words), " ".join(WORDS[w].upper() for w in words[::-1])])
            rows["audio"].append(str(path))
        splits[name] = Dataset.from_dict(rows)
        start += size
    return DatasetDict(splits)


def test_linear_code_of_the_caption_is_retrieved_perfectly(tmp_path):
    code = np.random.default_rng(1).normal(size=(len(WORDS), 4, 6))  # each word adds its (4, 6) pattern

    def linear(words, rng):
        return 0.5 + code[list(words)].sum(axis=0)

    metrics = probes.bag_of_words_probe(_dataset(tmp_path, linear))
    assert metrics["t2v_R@1"] == 100.0 and metrics["t2v_R@5"] == 100.0
    assert metrics["chance_t2v_R@1"] == pytest.approx(100 / 60)
    assert metrics["ridge"] in probes.DEFAULT_RIDGES


def test_independent_noise_is_near_chance(tmp_path):
    def noise(words, rng):
        return rng.normal(size=(4, 6))

    metrics = probes.bag_of_words_probe(_dataset(tmp_path, noise, sizes=(80, 30, 200)))
    # Chance is 0.5 %: 120 of the 400 caption queries would need to hit for the old shortcut's 30 %.
    assert metrics["t2v_R@1"] <= 3.0
    assert metrics["t2v_R@5"] <= 8.0


def test_a_single_ridge_skips_validation_and_missing_splits_are_named(tmp_path):
    def linear(words, rng):
        return np.eye(len(WORDS))[list(words)].sum(axis=0).reshape(4, 4)

    dataset = _dataset(tmp_path, linear)
    metrics = probes.bag_of_words_probe(DatasetDict({"train": dataset["train"], "test": dataset["test"]}), ridge=0.01)
    assert metrics["t2v_R@1"] == 100.0 and metrics["ridge"] == 0.01
    with pytest.raises(ValueError, match="no 'validation' split"):
        probes.bag_of_words_probe(DatasetDict({"train": dataset["train"], "test": dataset["test"]}))
    with pytest.raises(ValueError, match="modality must be 'audio' or 'frames'"):
        probes.bag_of_words_probe(dataset, modality="smell")


def test_ridge_matches_the_closed_form():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 3))
    model = probes.RidgeRegression(2.0).fit(x, y)
    xc = x - x.mean(0)
    yz = (y - y.mean(0)) / y.std(0)
    expected = np.linalg.solve(xc.T @ xc + 2.0 * np.eye(5), xc.T @ yz)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-6)
    # More features than rows: the dual form gives the same solution.
    wide_x = rng.normal(size=(6, 10))
    wide = probes.RidgeRegression(0.5).fit(wide_x, y[:6])
    xc = wide_x - wide_x.mean(0)
    yz = (y[:6] - y[:6].mean(0)) / y[:6].std(0)
    np.testing.assert_allclose(wide.weights, np.linalg.solve(xc.T @ xc + 0.5 * np.eye(10), xc.T @ yz), rtol=1e-5)
    with pytest.raises(ValueError, match="inputs have 30 rows but targets have 6"):
        probes.RidgeRegression(1.0).fit(x, y[:6])


def test_cross_modal_and_classification_probes():
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(8, 5))
    pairs = []
    for count in (100, 40, 50):
        source = rng.normal(size=(count, 8))
        pairs.append((source, source @ mixing))  # the target is a linear function of the source
    metrics = probes.cross_modal_probe(*pairs)
    assert metrics["R@1"] == 100.0 and metrics["chance_R@1"] == 2.0
    shuffled = [(source, rng.permutation(target)) for source, target in pairs]  # no relation left
    assert probes.cross_modal_probe(*shuffled)["R@1"] <= 10.0
    labelled = []
    for source, _ in pairs:
        margin = source.copy()
        margin[:, 0] = np.sign(margin[:, 0]) * (2.0 + np.abs(margin[:, 0]))  # separable with a wide gap
        labelled.append((margin, ["up" if value > 0 else "down" for value in margin[:, 0]]))
    result = probes.classification_probe(*labelled)
    assert result["accuracy"] == 100.0
    train_labels, test_labels = labelled[0][1], labelled[2][1]
    majority = max(("down", "up"), key=train_labels.count)
    assert result["majority_accuracy"] == pytest.approx(100 * test_labels.count(majority) / len(test_labels))


def test_frame_statistics_by_hand():
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    frames[1, :4, :4] = 255  # the top-left quarter turns white in the second frame
    stats = probes.frame_statistics(frames, grid=2)
    assert stats.shape == (2, 2 * 2 * 4)
    colour, change = stats[:, :12].reshape(2, 2, 2, 3), stats[:, 12:].reshape(2, 2, 2)
    np.testing.assert_allclose(colour[0], 0.0)
    np.testing.assert_allclose(colour[1, 0, 0], 1.0)
    np.testing.assert_allclose(colour[1, 1, 1], 0.0)
    np.testing.assert_allclose(change[0], 0.0)  # the first frame has no previous one
    np.testing.assert_allclose(change[1], [[1.0, 0.0], [0.0, 0.0]])
