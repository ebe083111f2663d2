# Copyright 2026 The MCKD authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` wrapper of the MCKD retrieval metric: R@K, median / mean rank and mAP of query rows.

Loaded from this folder with ``evaluate.load("./metrics/retrieval_recall")`` (offline). Self-contained:
it needs only numpy, datasets and evaluate, so it loads without the MCKD package and can be published
on its own. Its small numpy ranking core below follows the conventions of the package's
``modeling_mckd.retrieval`` (counting, never sorting rows; exact; tie-policy aware), and
tests/test_metric_module.py keeps the two equal on random multi-caption cases.
Imports stay one per line: evaluate finds a module's dependencies with a line regex.
"""

import numbers

import datasets
import evaluate
import numpy as np


_CITATION = """\
@inproceedings{luo2022clip4clip,
  title={CLIP4Clip: An empirical study of CLIP for end to end video clip retrieval and captioning},
  author={Luo, Huaishao and Ji, Lei and Zhong, Ming and Chen, Yang and Lei, Wen and Duan, Nan and Li, Tianrui},
  journal={Neurocomputing},
  year={2022}
}
"""

_DESCRIPTION = """\
Retrieval recall for cross-modal retrieval (e.g. text-to-video). Each prediction is one query's row of
similarity scores over the whole gallery (higher = more similar); each reference is the list of gallery
indices relevant to that query. A query's rank is the number of gallery items placed ahead of its
best-ranked relevant item, counted (not sorted) with a documented tie policy. Returns R@K (percent of
queries with 1-based rank <= K), MdR / MnR (median / mean 1-based rank) and mAP (percent; over all
relevant items of each query, the reciprocal rank when a query has one relevant item).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): one row of gallery scores per query; every row has the
        same length G (the gallery size). Higher scores rank first.
    references (`list` of `list` of `int`): for each query, the 0-based gallery indices relevant to it
        (at least one, no repeats, each in 0..G-1).
    k_values (`list` of `int`, defaults to [1, 5, 10]): the K of each R@K returned.
    tie_policy (`str`, defaults to "pessimistic"): how non-relevant items that tie with a relevant item
        are placed: "pessimistic" (ahead), "optimistic" (behind) or "mean" (half of them ahead).
    chunk_size (`int`, defaults to 1024): query rows ranked at once (memory ~ chunk_size x G).
Returns:
    `R@K` for each K (percent), `MdR` and `MnR` (1-based ranks), `mAP` (percent).
Examples:
    >>> metric = evaluate.load("./metrics/retrieval_recall")
    >>> metric.compute(predictions=[[0.9, 0.1, 0.3], [0.2, 0.8, 0.85], [0.5, 0.4, 0.45]],
    ...                references=[[0], [1], [2]], k_values=[1, 2])
    {'R@1': 33.33333333333333, 'R@2': 100.0, 'MdR': 2.0, 'MnR': 1.6666666666666667, 'mAP': 66.66666666666666}
"""


TIE_POLICIES = ("pessimistic", "optimistic", "mean")


def _check_options(k_values, tie_policy, chunk_size):
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    checked = []
    for k in k_values:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k_values must be positive integers, got {k!r} in {list(k_values)!r}")
        checked.append(int(k))
    if not checked:
        raise ValueError("k_values is empty: give at least one K for R@K")
    return tuple(dict.fromkeys(checked))  # keep order, drop repeats


def _check_scores(predictions):
    rows = [np.asarray(row, dtype=np.float64) for row in predictions]
    if not rows:
        raise ValueError("predictions is empty: give one row of gallery scores per query")
    gallery_size = len(rows[0]) if rows[0].ndim == 1 else -1
    for query, row in enumerate(rows):
        if row.ndim != 1 or len(row) != gallery_size:
            raise ValueError(
                f"predictions[{query}] has {row.size} scores but predictions[0] has {rows[0].size}: "
                "every row must score the same gallery"
            )
    if gallery_size == 0:
        raise ValueError("predictions rows are empty: the gallery has no item")
    scores = np.stack(rows)
    bad = ~np.isfinite(scores)
    if bad.any():
        row, column = (int(v) for v in np.argwhere(bad)[0])
        value = scores[row, column]
        kind = "NaN" if value != value else ("inf" if value > 0 else "-inf")
        raise ValueError(f"predictions row {row} contains {kind} (first at column {column})")
    return scores


def _check_references(references, num_queries, gallery_size):
    if len(references) != num_queries:
        raise ValueError(f"references gives {len(references)} queries but predictions has {num_queries} rows")
    sets = []
    for query, items in enumerate(references):
        array = np.asarray(items)
        if array.ndim != 1:
            raise ValueError(f"references[{query}] must be a flat list of gallery indices, got shape {array.shape}")
        if array.size == 0:
            raise ValueError(f"relevant set of query {query} is empty: references[{query}] has no index")
        if array.dtype.kind not in "iu":
            raise ValueError(f"references[{query}] must hold integer gallery indices, got dtype {array.dtype}")
        array = array.astype(np.int64)
        outside = array[(array < 0) | (array >= gallery_size)]
        if outside.size:
            raise ValueError(
                f"references[{query}] contains {int(outside[0])}, outside the gallery of {gallery_size} items "
                f"(valid indices are 0..{gallery_size - 1})"
            )
        if len(np.unique(array)) != len(array):
            raise ValueError(f"references[{query}] lists a gallery item more than once")
        sets.append(array)
    return sets


def _ahead(greater, at_least, tie_policy):
    """Non-relevant items placed ahead of a relevant item, from those scoring > and >= it."""
    if tie_policy == "pessimistic":
        return at_least.astype(np.float64)
    if tie_policy == "optimistic":
        return greater.astype(np.float64)
    return (greater + at_least) / 2.0


def _single_relevant_chunk(scores, targets, tie_policy):
    """Ranks (and reciprocal ranks) of a chunk of queries with one relevant item each."""
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    greater = (scores > target_scores).sum(axis=1)
    at_least = (scores >= target_scores).sum(axis=1) - 1  # the relevant item itself is not ahead
    rank = _ahead(greater, at_least, tie_policy)
    return rank, 1.0 / (rank + 1.0)


def _multi_relevant_query(row, relevant, tie_policy):
    """Rank of the best relevant item and the average precision over all of them, for one row.

    The relevant scores (n of them) are the thresholds; each non-relevant item is placed among
    them by binary search and the counts are accumulated, O(G log n) without sorting the row.
    """
    thresholds = np.sort(row[relevant])  # ascending
    count = len(thresholds)
    others = np.delete(row, relevant)

    def above(side):
        # above(side)[j]: non-relevant items scoring > (side="left") or >= ("right") thresholds[j]
        slots = np.bincount(np.searchsorted(thresholds, others, side=side), minlength=count + 1)
        return np.cumsum(slots[::-1])[::-1][1:]

    ahead = _ahead(above("left"), above("right"), tie_policy)[::-1]  # best relevant item first
    # Relevant items never count against each other: the i-th best sits behind i - 1 of them.
    positions = ahead + np.arange(1, count + 1)
    return positions[0] - 1.0, float(np.mean(np.arange(1, count + 1) / positions))


def compute_ranks(scores, relevant_sets, tie_policy="pessimistic", chunk_size=1024):
    """0-based rank of every query's best-ranked relevant item and its average precision."""
    num_queries = scores.shape[0]
    ranks = np.zeros(num_queries, dtype=np.float64)
    average_precision = np.zeros(num_queries, dtype=np.float64)
    single = np.array([len(items) == 1 for items in relevant_sets], dtype=bool)
    single_rows = np.flatnonzero(single)
    for start in range(0, len(single_rows), chunk_size):
        rows = single_rows[start:start + chunk_size]
        targets = np.array([relevant_sets[row][0] for row in rows], dtype=np.int64)
        ranks[rows], average_precision[rows] = _single_relevant_chunk(scores[rows], targets, tie_policy)
    for row in np.flatnonzero(~single):
        ranks[row], average_precision[row] = _multi_relevant_query(scores[row], relevant_sets[row], tie_policy)
    return ranks, average_precision


def summarise(ranks, k_values, average_precision):
    """R@K (percent of queries with 1-based rank <= K), MdR / MnR (1-based) and mAP (percent)."""
    one_based = ranks + 1.0
    metrics = {f"R@{k}": float(100.0 * np.mean(one_based <= k)) for k in k_values}
    metrics["MdR"] = float(np.median(one_based))
    metrics["MnR"] = float(np.mean(one_based))
    metrics["mAP"] = float(100.0 * np.mean(average_precision))
    return metrics


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    """R@K / MdR / MnR / mAP of query x gallery score rows (see the metric card, README.md)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            reference_urls=["https://github.com/ArrowLuo/CLIP4Clip"],
        )

    def _compute(self, predictions, references, k_values=None, tie_policy="pessimistic", chunk_size=1024):
        k_values = _check_options((1, 5, 10) if k_values is None else k_values, tie_policy, chunk_size)
        scores = _check_scores(predictions)
        relevant_sets = _check_references(references, scores.shape[0], scores.shape[1])
        ranks, average_precision = compute_ranks(scores, relevant_sets, tie_policy, int(chunk_size))
        return summarise(ranks, k_values, average_precision)
