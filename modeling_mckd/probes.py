"""Linear probes that check what a co-occurring modality gives away (numpy only).

:func:`bag_of_words_probe` asks whether a modality is a *shortcut*: a ridge regression from a
caption's bag of words to the clip's modality features, with no frames at all, then text-to-video
retrieval by cosine between the prediction and each test clip's features. If it retrieves well,
the modality spells out the caption, and any model that fuses it is partly decoding a code.

:func:`cross_modal_probe` asks whether a modality is *informative* about the clip: the same ridge
regression from one modality to another (for example audio to frame statistics), scored as
retrieval of the clip among the test clips. :func:`classification_probe` does the same for a
per-clip label (for example a hidden property that no caption mentions).

Ridge strengths are chosen on the validation split, never on test. Inputs and targets are centred
with the training mean and targets scaled by the training std (z-scores), so the cosine compares
deviations from the average clip rather than the shared offset of log energies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

#: Ridge strengths tried on the validation split when none is given.
DEFAULT_RIDGES: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)

_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def tokenize(caption: str) -> list[str]:
    """Lower-case words (hyphenated words kept whole)."""
    return _WORD.findall(caption.lower())


def build_vocabulary(captions: Iterable[str]) -> dict[str, int]:
    """Word -> column, in order of first appearance."""
    vocabulary: dict[str, int] = {}
    for caption in captions:
        for word in tokenize(caption):
            vocabulary.setdefault(word, len(vocabulary))
    return vocabulary


def bag_of_words(captions: Sequence[str], vocabulary: dict[str, int]) -> np.ndarray:
    """Binary word presence (N, V) float64; words outside ``vocabulary`` are ignored."""
    out = np.zeros((len(captions), len(vocabulary)))
    for row, caption in enumerate(captions):
        for word in tokenize(caption):
            column = vocabulary.get(word)
            if column is not None:
                out[row, column] = 1.0
    return out


class RidgeRegression:
    """Multi-output ridge regression with an unpenalised intercept (closed form).

    ``fit`` centres X and Y with their training means and z-scores Y with its training std, so
    every target dimension counts alike; ``predict`` returns predictions in that z-scored space,
    and ``transform_targets`` puts other targets there too.
    """

    def __init__(self, ridge: float):
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge!r}")
        self.ridge = float(ridge)

    def fit(self, inputs: np.ndarray, targets: np.ndarray) -> RidgeRegression:
        inputs, targets = _as_matrix(inputs, "inputs"), _as_matrix(targets, "targets")
        if len(inputs) != len(targets):
            raise ValueError(f"inputs have {len(inputs)} rows but targets have {len(targets)}")
        self.input_mean = inputs.mean(axis=0)
        self.target_mean = targets.mean(axis=0)
        self.target_scale = targets.std(axis=0)
        self.target_scale[self.target_scale < 1e-8] = 1.0  # constant dimensions stay at 0
        x = inputs - self.input_mean
        y = self.transform_targets(targets)
        if x.shape[1] <= x.shape[0]:  # primal: (X'X + aI)^-1 X'Y
            gram = x.T @ x + self.ridge * np.eye(x.shape[1])
            self.weights = np.linalg.solve(gram + 1e-9 * np.eye(x.shape[1]), x.T @ y)
        else:  # dual: X'(XX' + aI)^-1 Y, cheaper when there are more features than rows
            gram = x @ x.T + self.ridge * np.eye(x.shape[0])
            self.weights = x.T @ np.linalg.solve(gram + 1e-9 * np.eye(x.shape[0]), y)
        return self

    def transform_targets(self, targets: np.ndarray) -> np.ndarray:
        return (_as_matrix(targets, "targets") - self.target_mean) / self.target_scale

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return (_as_matrix(inputs, "inputs") - self.input_mean) @ self.weights


def _as_matrix(array: Any, name: str) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, features), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} holds non-finite values")
    return matrix


def _cosine(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    def unit(matrix):
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)

    return unit(queries) @ unit(gallery).T


def _retrieval(similarity: np.ndarray, query_to_item: np.ndarray) -> dict[str, float]:
    from modeling_mckd.retrieval import evaluate_retrieval

    return evaluate_retrieval(similarity=similarity, text_to_video=query_to_item)


def _select_ridge(
    ridges: Sequence[float], fit_and_score: Callable[[float], float]
) -> tuple[float, dict[float, float]]:
    scores = {float(ridge): float(fit_and_score(float(ridge))) for ridge in ridges}
    best = max(scores, key=lambda ridge: (scores[ridge], -ridge))  # ties: the weaker penalty (least bias)
    return best, scores


def _ridges(ridge: float | Sequence[float] | None) -> tuple[float, ...]:
    if ridge is None:
        return DEFAULT_RIDGES
    if isinstance(ridge, (int, float)):
        return (float(ridge),)
    values = tuple(float(value) for value in ridge)
    if not values:
        raise ValueError("ridge must be a number or a non-empty list of numbers")
    return values


# ----------------------------------------------------------------------------------------------
# reading a modality from a DatasetDict
# ----------------------------------------------------------------------------------------------


def frame_statistics(frames: np.ndarray, grid: int = 4) -> np.ndarray:
    """A small, model-free summary of a clip's pixels: per frame, the mean colour of each cell of a
    ``grid`` x ``grid`` layout and the mean absolute change from the previous frame in that cell.
    Returns (T, grid * grid * 4) float32."""
    frames = np.asarray(frames, dtype=np.float32) / 255.0
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {frames.shape}")
    num_frames, height, width, _ = frames.shape
    cells_h, cells_w = height // grid, width // grid
    if cells_h == 0 or cells_w == 0:
        raise ValueError(f"frames of {height}x{width} are smaller than the {grid}x{grid} grid")
    cropped = frames[:, : cells_h * grid, : cells_w * grid]
    colour = cropped.reshape(num_frames, grid, cells_h, grid, cells_w, 3).mean(axis=(2, 4))
    change = np.abs(np.diff(cropped, axis=0, prepend=cropped[:1])).mean(axis=-1)
    motion = change.reshape(num_frames, grid, cells_h, grid, cells_w).mean(axis=(2, 4))
    return np.concatenate([colour.reshape(num_frames, -1), motion.reshape(num_frames, -1)], axis=1)


def load_modality(split_dataset, modality: str) -> np.ndarray:
    """One flattened feature row per clip of a ``datasets.Dataset`` split.

    ``"audio"``: the ``audio`` column's ``.npy`` files (read by ``processing_mckd.load_feature_file``, never unpickled; every
    clip must have one of the same shape). ``"frames"``: :func:`frame_statistics` of the decoded
    ``video`` files.
    """
    if modality not in ("audio", "frames"):
        raise ValueError(f"modality must be 'audio' or 'frames', got {modality!r}")
    column = "audio" if modality == "audio" else "video"
    if column not in split_dataset.column_names:
        raise ValueError(f"the dataset has no {column!r} column (columns: {split_dataset.column_names})")
    rows = []
    for index, path in enumerate(split_dataset[column]):
        if path is None:
            raise ValueError(
                f"row {index} ({split_dataset[index]['video_id']}) has no {column} file; the probe needs "
                "one per clip"
            )
        if modality == "audio":
            from modeling_mckd.processing_mckd import load_feature_file

            array = load_feature_file(path)
        else:
            from modeling_mckd.video_io import read_frames

            array = frame_statistics(read_frames(path))
        if rows and array.size != rows[0].size:
            raise ValueError(f"{path}: {modality} features of shape {array.shape}, expected {rows[0].size} values")
        rows.append(np.asarray(array, dtype=np.float64).reshape(-1))
    if not rows:
        raise ValueError("the split has no clips")
    return np.stack(rows)


def _captions(split_dataset) -> tuple[list[str], np.ndarray]:
    captions, owner = [], []
    for index, clip_captions in enumerate(split_dataset["captions"]):
        captions.extend(clip_captions)
        owner.extend([index] * len(clip_captions))
    return captions, np.asarray(owner, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# the probes
# ----------------------------------------------------------------------------------------------


def bag_of_words_probe(
    dataset,
    modality: str = "audio",
    split: str = "test",
    train_split: str = "train",
    validation_split: str = "validation",
    ridge: float | Sequence[float] | None = None,
    features: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Text-to-video retrieval from the words of a caption alone, through the modality.

    Fits a ridge regression from caption bag-of-words (vocabulary of ``train_split``) to the
    flattened ``modality`` features of the caption's clip on ``train_split``; ranks the clips of
    ``split`` by cosine between each caption's prediction and their (z-scored) features. ``ridge``:
    one strength, or several to choose from by ``rsum`` on ``validation_split`` (default
    :data:`DEFAULT_RIDGES`). ``features`` may give the split -> (clips, D) matrices already read.

    Returns :func:`modeling_mckd.retrieval.evaluate_retrieval`'s metrics (``t2v_R@1``,
    ``t2v_R@5``, ``rsum``, ...) plus ``ridge`` (the strength used), ``chance_t2v_R@1`` (percent)
    and ``validation_rsum``.
    """
    features = dict(features or {})
    ridges = _ridges(ridge)
    needed = [train_split, split] + ([validation_split] if len(ridges) > 1 else [])
    for name in needed:
        if name not in dataset:
            raise ValueError(f"the dataset has no {name!r} split (splits: {list(dataset)})")
        if name not in features:
            features[name] = load_modality(dataset[name], modality)
    train_captions, train_owner = _captions(dataset[train_split])
    vocabulary = build_vocabulary(train_captions)
    train_x = bag_of_words(train_captions, vocabulary)
    train_y = features[train_split][train_owner]

    def evaluate(ridge_value: float, split_name: str) -> dict[str, float]:
        model = RidgeRegression(ridge_value).fit(train_x, train_y)
        captions, owner = _captions(dataset[split_name])
        predicted = model.predict(bag_of_words(captions, vocabulary))
        gallery = model.transform_targets(features[split_name])
        return _retrieval(_cosine(predicted, gallery), owner)

    if len(ridges) > 1:
        best, scores = _select_ridge(ridges, lambda value: evaluate(value, validation_split)["rsum"])
    else:
        best, scores = ridges[0], {ridges[0]: float("nan")}
    metrics = evaluate(best, split)
    metrics["ridge"] = best
    metrics["validation_rsum"] = scores[best]
    metrics["chance_t2v_R@1"] = 100.0 / len(dataset[split])
    return metrics


def cross_modal_probe(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    test: tuple[np.ndarray, np.ndarray],
    ridge: float | Sequence[float] | None = None,
) -> dict[str, float]:
    """Clip retrieval from one modality to another: each pair is (source (N, Ds), target (N, Dt)),
    row i of both belonging to clip i. A ridge regression source -> target is fitted on ``train``
    (strength chosen by R@1 on ``validation`` when several are given); each test clip's prediction
    ranks the test clips' targets by cosine. Returns ``R@1``, ``R@5``, ``R@10``, ``MdR`` (source ->
    target), ``ridge`` and ``chance_R@1``."""
    ridges = _ridges(ridge)
    if len(ridges) > 1 and validation is None:
        raise ValueError("several ridge strengths need a validation pair to choose from")

    def evaluate(ridge_value: float, pair: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        model = RidgeRegression(ridge_value).fit(*train)
        source, target = pair
        metrics = _retrieval(_cosine(model.predict(source), model.transform_targets(target)), None)
        return {key[4:]: value for key, value in metrics.items() if key.startswith("t2v_")}

    best = ridges[0]
    if len(ridges) > 1:
        best, _ = _select_ridge(ridges, lambda value: evaluate(value, validation)["R@1"])
    metrics = evaluate(best, test)
    metrics["ridge"] = best
    metrics["chance_R@1"] = 100.0 / len(test[0])
    return metrics


def classification_probe(
    train: tuple[np.ndarray, Sequence[Any]],
    validation: tuple[np.ndarray, Sequence[Any]] | None,
    test: tuple[np.ndarray, Sequence[Any]],
    ridge: float | Sequence[float] | None = None,
) -> dict[str, float]:
    """Accuracy (percent) of a ridge classifier (one-vs-rest regression on one-hot labels, argmax)
    from features to a per-clip label, next to the majority-class baseline of the training labels.
    Each pair is (features (N, D), labels (N,)); test labels unseen in training count as errors."""
    ridges = _ridges(ridge)
    if len(ridges) > 1 and validation is None:
        raise ValueError("several ridge strengths need a validation pair to choose from")
    classes = sorted(set(train[1]), key=str)
    index = {label: position for position, label in enumerate(classes)}
    one_hot = np.eye(len(classes))[[index[label] for label in train[1]]]

    def accuracy(ridge_value: float, pair) -> float:
        model = RidgeRegression(ridge_value).fit(train[0], one_hot)
        # Predictions are z-scored per class: undo the scale so classes compare on one axis.
        scores = model.predict(pair[0]) * model.target_scale + model.target_mean
        predicted = [classes[i] for i in scores.argmax(axis=1)]
        return 100.0 * float(np.mean([p == label for p, label in zip(predicted, pair[1], strict=True)]))

    best = ridges[0]
    if len(ridges) > 1:
        best, _ = _select_ridge(ridges, lambda value: accuracy(value, validation))
    majority = max(classes, key=lambda label: list(train[1]).count(label))
    return {
        "accuracy": accuracy(best, test),
        "majority_accuracy": 100.0 * float(np.mean([label == majority for label in test[1]])),
        "ridge": best,
    }
