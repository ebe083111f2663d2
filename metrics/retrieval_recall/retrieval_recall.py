# Copyright 2026 The MCKD authors. Licensed under the Apache License, Version 2.0.
"""`evaluate` wrapper of the MCKD retrieval metric: R@K, median / mean rank and mAP of query rows.

Loaded from this folder with ``evaluate.load("./metrics/retrieval_recall")`` (offline). The ranking
itself is ``modeling_mckd.retrieval.compute_ranks``: counting, chunked, exact, tie-policy aware.
Imports stay one per line: evaluate finds a module's dependencies with a line regex.
"""

import datasets
import evaluate
import numpy as np
from modeling_mckd.retrieval import compute_ranks
from modeling_mckd.retrieval import retrieval_metrics


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
        rows = [np.asarray(row, dtype=np.float32) for row in predictions]
        if not rows:
            raise ValueError("predictions is empty: give one row of gallery scores per query")
        gallery_size = len(rows[0])
        for query, row in enumerate(rows):
            if row.ndim != 1 or len(row) != gallery_size:
                raise ValueError(
                    f"predictions[{query}] has {len(row)} scores but predictions[0] has {gallery_size}: "
                    "every row must score the same gallery"
                )
        similarity = np.stack(rows)
        relevant = [np.asarray(items, dtype=np.int64) for items in references]
        ranks, average_precision = compute_ranks(
            similarity, relevant, tie_policy=tie_policy, chunk_size=chunk_size, return_average_precision=True
        )
        return retrieval_metrics(ranks, k_values=(1, 5, 10) if k_values is None else k_values,
                                 average_precision=average_precision)
