"""Exact, chunked retrieval metrics: R@K, median / mean rank, mAP, rsum, plus DSL and QB-Norm.

One file over ~600 lines, for now: the conventions below govern both halves, the chunked ranking
engine (input checks, relevant sets, counting kernels, score sources) and the public metrics, and
tests switch the engine's kernel through this module (``_CPU_COUNT_WITH_NUMPY``). The natural split,
not done yet: the engine to ``ranking.py``, re-exported here.

Conventions (the ones text-video retrieval papers report):

* A query's **rank** is 0-based: the number of gallery items placed ahead of its best-ranked
  relevant item. Ranks are obtained by *counting* items that score higher, never by sorting a
  whole row, so a query costs one pass over its row (O(G) instead of O(G log G)).
* **Ties** (``tie_policy``):

  - ``"pessimistic"`` (default): every non-relevant item that ties with a relevant item is placed
    ahead of it. For one relevant item this is "tied items other than itself count as ahead".
  - ``"optimistic"``: tied non-relevant items are placed behind.
  - ``"mean"``: the midpoint of the two (half the tied non-relevant items count as ahead); ranks
    and positions may then be half-integers.

  When several relevant items tie with each other they do not count against each other: a
  relevant item placed ahead is a hit, not a miss, in any real ordering of the row.
* ``R@K`` (percent) counts queries whose 1-based rank ``rank + 1`` is at most K. ``MdR`` / ``MnR``
  are the median / mean of the 1-based ranks (``np.median(ranks) + 1``, as CLIP4Clip reports).
* ``mAP`` (percent): for a query with relevant items at 1-based positions p_1 <= ... <= p_n,
  AP = (1/n) * sum_i i / p_i, the positions following the same tie policy. For a single relevant
  item AP is the reciprocal rank.
* **Text-to-video** (t2v): every caption is a query with its one video relevant. **Video-to-text**
  (v2t): every video is a query, all its captions are relevant and its rank is the rank of its
  best-ranked caption (the CLIP4Clip / Dual Encoding convention for multi-caption test sets such
  as MSVD); ``v2t_mAP`` is the mean average precision over all of its captions.
* ``rsum`` is R@1 + R@5 + R@10 of both directions (always these six, whatever ``k_values`` is).

Memory: queries are processed ``chunk_size`` rows at a time. From embeddings, each chunk's
similarities are computed on the fly (``chunk_size x gallery`` floats) and the full
queries x gallery matrix never exists, for either direction.

Inference-time re-normalisations (off by default, always reported under their own prefix, never
as the model's plain score): :func:`dual_softmax` (DSL) and :func:`qb_norm` (QB-Norm's dynamic
inverted softmax). DSL uses the whole set of test queries at once (transductive); QB-Norm uses a bank
of *training* queries.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


__all__ = [
    "TIE_POLICIES",
    "compute_ranks",
    "retrieval_metrics",
    "evaluate_retrieval",
    "dual_softmax",
    "qb_norm",
]

TIE_POLICIES = ("pessimistic", "optimistic", "mean")
RENORMALIZATIONS = ("dsl", "qb_norm")
RSUM_K = (1, 5, 10)

DEFAULT_DSL_TEMPERATURE = 0.01  # a multiplier of 100, the scale CLIP-style cosine logits use
DEFAULT_QB_NORM_K = 1  # paper defaults (Bogolin et al., CVPR 2022)
DEFAULT_QB_NORM_BETA = 20.0

# On CPU, numpy's compare-and-count is several times faster than torch's bool reductions; tests
# switch this off to exercise the torch kernel that GPUs use.
_CPU_COUNT_WITH_NUMPY = True
# Relevant sets longer than this are counted by binary search on CPU instead of one pass per item.
_WIDE_SET = 64


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_tie_policy(tie_policy: str) -> None:
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")


def _check_chunk_size(chunk_size: Any) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _check_k_values(k_values: Iterable[Any]) -> tuple[int, ...]:
    checked = []
    for k in k_values:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k_values must be positive integers, got {k!r} in {list(k_values)!r}")
        checked.append(int(k))
    if not checked:
        raise ValueError("k_values is empty: give at least one K for R@K")
    return tuple(dict.fromkeys(checked))  # keep order, drop repeats


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    """A torch view of a numpy array / tensor / nested list (no copy for arrays and tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got an object array (ragged rows?)")
        return torch.from_numpy(value) if value.flags.writeable else torch.from_numpy(value.copy())
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular numeric array: {error}") from None
    if array.dtype == object or array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a rectangular numeric array, got dtype {array.dtype}")
    return torch.from_numpy(array)


def _check_matrix(tensor: torch.Tensor, name: str) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ValueError(f"{name} must hold real scores, got dtype {tensor.dtype}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(tensor.shape)}")


def _scores_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """Scores as float32/float64 so comparisons are exact and fast (ints become float64: exact)."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor
    if tensor.is_floating_point():
        return tensor.float()  # half / bfloat16 -> float32 is exact, so no new ties appear
    return tensor.double()


def _first_non_finite(scores: torch.Tensor) -> tuple[int, int, str] | None:
    """(row, column, "NaN"/"inf"/"-inf") of the first non-finite score, or None."""
    # A row sum is finite when all of its entries are (barring overflow, re-checked exactly).
    # numpy's reduction is much faster than torch's on CPU, so use it there.
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        if np.isfinite(scores.numpy().sum(axis=1)).all():
            return None
    elif bool(torch.isfinite(scores.sum(dim=1)).all()):
        return None
    bad = ~torch.isfinite(scores)
    if not bool(bad.any()):
        return None  # the sum overflowed but every score is finite
    row, column = (int(v) for v in torch.nonzero(bad)[0])
    value = float(scores[row, column])
    return row, column, "NaN" if value != value else ("inf" if value > 0 else "-inf")


def _check_finite_rows(scores: torch.Tensor, name: str, row_offset: int, context: str = "") -> None:
    """Raise ValueError naming the first row (and column) holding NaN or +-inf."""
    found = _first_non_finite(scores)
    if found is not None:
        row, column, kind = found
        raise ValueError(f"{name} row {row + row_offset} contains {kind} (first at column {column}){context}")


# --------------------------------------------------------------------------------------------
# Relevant sets
# --------------------------------------------------------------------------------------------


@dataclass
class RelevantSets:
    """Relevant gallery items of each query, stored flat (CSR): query q owns
    ``indices[offsets[q]:offsets[q + 1]]``. ``single`` is True when every query has exactly one."""

    offsets: np.ndarray
    indices: np.ndarray
    single: bool

    @property
    def num_queries(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _is_integer_scalar(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _integer_array(values: Any, name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.size == 0:
        return array.astype(np.int64).reshape(array.shape)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer gallery indices, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def as_relevant_sets(relevant: Any, num_queries: int, num_gallery: int, name: str = "relevant") -> RelevantSets:
    """Normalise ``relevant`` (one int per query, a (Q,) / (Q, n) int array, or one sequence of ints
    per query) into :class:`RelevantSets`, checking every index. Raises ValueError naming the query."""
    if isinstance(relevant, (str, bytes)) or relevant is None:
        raise ValueError(f"{name} must be a sequence of gallery indices per query, got {type(relevant).__name__}")
    if isinstance(relevant, (np.ndarray, torch.Tensor)):
        array = _integer_array(relevant, name)
        if array.ndim == 1:
            flat, lengths, single = array, np.ones(len(array), dtype=np.int64), True
        elif array.ndim == 2:
            flat = array.reshape(-1)
            lengths = np.full(array.shape[0], array.shape[1], dtype=np.int64)
            single = False
            if array.shape[1] == 0 and array.shape[0] > 0:
                raise ValueError(f"relevant set of query 0 is empty ({name} has shape {array.shape})")
        else:
            raise ValueError(f"{name} must be 1-D (one index per query) or 2-D, got shape {array.shape}")
    else:
        items = list(relevant)
        if items and all(_is_integer_scalar(item) for item in items):
            flat = np.asarray(items, dtype=np.int64)
            lengths, single = np.ones(len(items), dtype=np.int64), True
        else:
            parts, lengths_list = [], []
            for query, item in enumerate(items):
                if _is_integer_scalar(item):
                    raise ValueError(
                        f"{name}[{query}] is a single index while other queries give a list: "
                        "give one list of indices per query (or one index per query)"
                    )
                if isinstance(item, (numbers.Number, np.number)):
                    raise ValueError(f"{name}[{query}] = {item!r} is not an integer gallery index")
                if isinstance(item, (str, bytes)) or not isinstance(item, (Iterable, np.ndarray, torch.Tensor)):
                    raise ValueError(f"{name}[{query}] must be a sequence of gallery indices, got {item!r}")
                part = _integer_array(list(item) if not isinstance(item, (np.ndarray, torch.Tensor)) else item,
                                      f"{name}[{query}]")
                if part.ndim != 1:
                    raise ValueError(f"{name}[{query}] must be a flat list of indices, got shape {part.shape}")
                if part.size == 0:
                    raise ValueError(f"relevant set of query {query} is empty: {name}[{query}] has no index")
                parts.append(part)
                lengths_list.append(len(part))
            flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            lengths = np.asarray(lengths_list, dtype=np.int64)
            single = False
    if len(lengths) != num_queries:
        raise ValueError(f"{name} gives {len(lengths)} queries but the similarity has {num_queries} rows")
    offsets = np.zeros(num_queries + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out_of_range = np.flatnonzero((flat < 0) | (flat >= num_gallery))
    if len(out_of_range):
        position = int(out_of_range[0])
        query = int(np.searchsorted(offsets, position, side="right") - 1)
        raise ValueError(
            f"{name}[{query}] contains {int(flat[position])}, outside the gallery of {num_gallery} items "
            f"(valid indices are 0..{num_gallery - 1})"
        )
    if not single and len(flat):
        # Duplicates would be counted twice in mAP: refuse them rather than guess.
        query_of = np.repeat(np.arange(num_queries), lengths)
        keys = query_of * num_gallery + flat
        sorted_keys = np.sort(keys)
        repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if len(repeated):
            key = int(sorted_keys[repeated[0]])
            raise ValueError(f"{name}[{key // num_gallery}] lists gallery item {key % num_gallery} more than once")
        single = bool((lengths == 1).all())
    return RelevantSets(offsets=offsets, indices=flat, single=single)


def relevant_sets_from_text_to_video(text_to_video: Any, num_texts: int, num_videos: int) -> tuple[np.ndarray, RelevantSets]:
    """Check ``text_to_video`` and return it as an int64 array plus, for each video, its captions."""
    if text_to_video is None:
        if num_texts != num_videos:
            raise ValueError(
                f"text_to_video is required when there are more captions ({num_texts}) than videos ({num_videos})"
            )
        text_to_video = np.arange(num_texts)
    mapping = _integer_array(text_to_video, "text_to_video")
    if mapping.ndim != 1:
        raise ValueError(f"text_to_video must be 1-D (one video index per caption), got shape {mapping.shape}")
    if len(mapping) != num_texts:
        raise ValueError(f"text_to_video has {len(mapping)} entries but there are {num_texts} texts (captions)")
    bad = np.flatnonzero((mapping < 0) | (mapping >= num_videos))
    if len(bad):
        caption = int(bad[0])
        raise ValueError(
            f"text_to_video[{caption}] = {int(mapping[caption])} is out of range for {num_videos} videos"
        )
    counts = np.bincount(mapping, minlength=num_videos)
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise ValueError(
            f"video {int(missing[0])} has no caption in text_to_video (relevant set of video query "
            f"{int(missing[0])} is empty; {len(missing)} video(s) lack captions)"
        )
    offsets = np.zeros(num_videos + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    captions = np.argsort(mapping, kind="stable")
    return mapping, RelevantSets(offsets=offsets, indices=captions, single=bool((counts == 1).all()))


# --------------------------------------------------------------------------------------------
# Counting kernel
# --------------------------------------------------------------------------------------------


def _count_at_least(scores: torch.Tensor, thresholds: torch.Tensor, strict: bool) -> torch.Tensor:
    """Per row, how many entries are > (strict) or >= the row's threshold: one pass, no sort."""
    if scores.device.type == "cpu" and _CPU_COUNT_WITH_NUMPY:
        s, t = scores.numpy(), thresholds.reshape(-1, 1).numpy()
        counts = (s > t).sum(axis=1) if strict else (s >= t).sum(axis=1)
        return torch.from_numpy(np.asarray(counts, dtype=np.int64))
    t = thresholds.reshape(-1, 1)
    mask = scores > t if strict else scores >= t
    return mask.sum(dim=1, dtype=torch.int64)


def _count_per_threshold(scores: torch.Tensor, thresholds: torch.Tensor, valid: torch.Tensor, need_ge: bool,
                         need_gt: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """For every (row r, slot j): how many entries of row r are >= / > ``thresholds[r, j]``.

    Only entries at or above the row's lowest valid threshold can count, so those candidates are
    gathered once and every threshold is tested against them alone; when candidates are dense
    (a weak model, random scores) one full counting pass per threshold is cheaper and used instead.
    """
    rows, width = thresholds.shape
    use_numpy = scores.device.type == "cpu" and _CPU_COUNT_WITH_NUMPY
    lowest = torch.where(valid, thresholds, torch.full_like(thresholds, float("inf"))).min(dim=1).values
    if use_numpy and width > _WIDE_SET:
        return _count_per_threshold_by_search(scores.numpy(), thresholds.numpy(), lowest.numpy(), need_ge, need_gt)
    if use_numpy:
        s, t = scores.numpy(), thresholds.numpy()
        candidates = s >= lowest.numpy()[:, None]
        dense = 4 * int(np.count_nonzero(candidates)) > s.size
    else:
        candidates = scores >= lowest[:, None]
        dense = 4 * int(candidates.sum()) > scores.numel()
    if dense:
        ge = torch.stack([_count_at_least(scores, thresholds[:, j], strict=False) for j in range(width)], 1) \
            if need_ge else None
        gt = torch.stack([_count_at_least(scores, thresholds[:, j], strict=True) for j in range(width)], 1) \
            if need_gt else None
        return (None if ge is None else ge.to(scores.device)), (None if gt is None else gt.to(scores.device))
    if use_numpy:
        row_of, column_of = np.nonzero(candidates)
        values = s[row_of, column_of]

        def count(strict: bool) -> torch.Tensor:
            out = np.zeros((rows, width), dtype=np.int64)
            for j in range(width):  # one candidate-sized buffer at a time, never candidates x width
                threshold = t[row_of, j]
                out[:, j] = np.bincount(row_of[values > threshold if strict else values >= threshold], minlength=rows)
            return torch.from_numpy(out)
    else:
        row_of, column_of = torch.nonzero(candidates, as_tuple=True)
        values = scores[row_of, column_of]

        def count(strict: bool) -> torch.Tensor:
            out = []
            for j in range(width):
                threshold = thresholds[row_of, j]
                out.append(torch.bincount(row_of[values > threshold if strict else values >= threshold], minlength=rows))
            return torch.stack(out, 1)
    return (count(False) if need_ge else None), (count(True) if need_gt else None)


def _count_per_threshold_by_search(s: np.ndarray, t: np.ndarray, lowest: np.ndarray, need_ge: bool,
                                   need_gt: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`_count_per_threshold` for large relevant sets (CPU): per row, binary-search each
    candidate among the row's sorted thresholds (a few hundred numbers at most, not the row) and turn
    the histogram of positions into counts, O(G log n) instead of O(G n)."""
    rows, width = t.shape
    ge = np.zeros((rows, width), dtype=np.int64) if need_ge else None
    gt = np.zeros((rows, width), dtype=np.int64) if need_gt else None
    for r in range(rows):
        row = s[r]
        values = row[row >= lowest[r]]
        order = np.argsort(t[r], kind="stable")
        sorted_thresholds = t[r][order]
        for out, side in ((ge, "right"), (gt, "left")):
            if out is None:
                continue
            # position p = number of thresholds <= value (right) or < value (left); the value is
            # >= (resp. >) the i-th smallest threshold exactly when p > i.
            histogram = np.bincount(np.searchsorted(sorted_thresholds, values, side=side), minlength=width + 1)
            out[r, order] = np.cumsum(histogram[::-1])[::-1][1:]
    return (None if ge is None else torch.from_numpy(ge)), (None if gt is None else torch.from_numpy(gt))


def _combine(ahead_ge: torch.Tensor | None, ahead_gt: torch.Tensor | None, tie_policy: str) -> torch.Tensor:
    if tie_policy == "pessimistic":
        return ahead_ge
    if tie_policy == "optimistic":
        return ahead_gt
    return (ahead_ge + ahead_gt).double() / 2


def _rank_chunk(scores: torch.Tensor, sets: RelevantSets, start: int, tie_policy: str,
                want_ap: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ranks (and average precision) of queries ``start .. start + len(scores)`` of ``sets``."""
    rows = scores.shape[0]
    device = scores.device
    need_ge = tie_policy != "optimistic"
    need_gt = tie_policy != "pessimistic"
    lengths_np = sets.lengths()[start:start + rows]
    offsets_np = sets.offsets[start:start + rows]
    row_index = torch.arange(rows, device=device)

    if sets.single:
        target = torch.from_numpy(sets.indices[offsets_np]).to(device)
        target_scores = scores[row_index, target]
        ge = _count_at_least(scores, target_scores, strict=False) - 1 if need_ge else None  # minus itself
        gt = _count_at_least(scores, target_scores, strict=True) if need_gt else None
        ranks = _combine(ge, gt, tie_policy)
        ap = 1.0 / (ranks.double() + 1.0) if want_ap else None
        return ranks, ap

    # Pad each row's relevant list to the chunk's longest by repeating its last index: repeats do
    # not change the row maximum, and are masked out of every count below.
    width = int(lengths_np.max())
    lengths = torch.from_numpy(lengths_np).to(device)
    slot = torch.arange(width, device=device)
    valid = slot[None, :] < lengths[:, None]
    gather = torch.from_numpy(offsets_np).to(device)[:, None] + torch.minimum(slot[None, :], lengths[:, None] - 1)
    relevant_index = torch.from_numpy(sets.indices).to(device)[gather]
    relevant_scores = scores[row_index[:, None], relevant_index]

    if not want_ap:
        best = relevant_scores.max(dim=1).values
        relevant_tied = ((relevant_scores == best[:, None]) & valid).sum(dim=1)
        ge = _count_at_least(scores, best, strict=False) - relevant_tied if need_ge else None
        gt = _count_at_least(scores, best, strict=True) if need_gt else None  # no relevant item is above best
        return _combine(ge, gt, tie_policy), None

    # Non-relevant items ahead of each relevant item: all items ahead minus the relevant ones ahead.
    all_ge, all_gt = _count_per_threshold(scores, relevant_scores, valid, need_ge, need_gt)
    # Relevant items at or above each relevant score, by binary search in the row's sorted
    # relevant scores (padding slots sorted first as -inf, so they never count).
    sorted_relevant = torch.where(valid, relevant_scores, torch.full_like(relevant_scores, float("-inf")))
    sorted_relevant = sorted_relevant.sort(dim=1).values.contiguous()
    query_scores = relevant_scores.contiguous()
    ahead_ge = ahead_gt = None
    if need_ge:
        rel_ge = width - torch.searchsorted(sorted_relevant, query_scores, right=False)
        ahead_ge = all_ge - rel_ge
    if need_gt:
        rel_gt = width - torch.searchsorted(sorted_relevant, query_scores, right=True)
        ahead_gt = all_gt - rel_gt
    ahead = _combine(ahead_ge, ahead_gt, tie_policy).double()
    # Fewer items ahead <=> higher score, so ascending counts give the relevant items in ranking
    # order; the i-th one (1-based) then sits at position i + ahead_i.
    ahead = torch.where(valid, ahead, torch.full_like(ahead, float("inf")))
    ahead_sorted = ahead.sort(dim=1).values  # sorts <= max-set-size numbers per row, not the row
    order = slot.double()[None, :] + 1.0
    precision = torch.where(valid, order / (order + ahead_sorted), torch.zeros_like(ahead_sorted))
    ap = precision.sum(dim=1) / lengths.double()
    ranks = ahead_sorted[:, 0]
    if tie_policy != "mean":
        ranks = ranks.long()
    return ranks, ap


# --------------------------------------------------------------------------------------------
# Score sources: produce one chunk of query rows at a time
# --------------------------------------------------------------------------------------------


class _ScoreSource:
    num_queries: int
    num_gallery: int
    name: str

    def chunk(self, start: int, stop: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class _MatrixSource(_ScoreSource):
    """Rows of a given similarity matrix, or of its transpose.

    Chunks are views, never copies: counting kernels reduce a transposed (column) block as fast as a
    row block, while materialising the transpose would cost more than the ranking itself.
    """

    def __init__(self, matrix: torch.Tensor, device: torch.device, name: str, transpose: bool = False):
        self.matrix, self.device, self.name, self.transpose = matrix, device, name, transpose
        self.num_queries, self.num_gallery = (matrix.shape[1], matrix.shape[0]) if transpose else matrix.shape
        self.num_queries, self.num_gallery = int(self.num_queries), int(self.num_gallery)

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        if not self.transpose:
            block = _scores_dtype(self.matrix[start:stop].to(self.device))
            _check_finite_rows(block, self.name, start)
            return block
        # Video queries read columns of the (texts, videos) matrix: report positions as given.
        block = _scores_dtype(self.matrix[:, start:stop].to(self.device)).T
        found = _first_non_finite(block)
        if found is not None:
            video, text, kind = found
            raise ValueError(f"{self.name} row {text} contains {kind} (at column {video + start})")
        return block


class _EmbeddingSource(_ScoreSource):
    """Similarities ``queries[start:stop] @ gallery.T``, computed per chunk."""

    def __init__(self, queries: torch.Tensor, gallery: torch.Tensor, name: str):
        self.queries, self.gallery, self.name = queries, gallery, name
        self.num_queries, self.num_gallery = int(queries.shape[0]), int(gallery.shape[0])

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        block = self.queries[start:stop] @ self.gallery.T
        _check_finite_rows(block, self.name, start, " (similarity overflowed: embeddings too large?)")
        return block


def _chunks(count: int, chunk_size: int) -> Iterable[tuple[int, int]]:
    for start in range(0, count, chunk_size):
        yield start, min(start + chunk_size, count)


class _DualSoftmaxSource(_ScoreSource):
    """DSL scores ``s * softmax_over_queries(s / temperature)``, in float64, two chunked passes."""

    def __init__(self, base: _ScoreSource, temperature: float, chunk_size: int):
        self.base, self.temperature = base, float(temperature)
        self.num_queries, self.num_gallery, self.name = base.num_queries, base.num_gallery, base.name
        # Pass 1: per gallery column, logsumexp over all queries of s / temperature.
        log_norm = None
        for start, stop in _chunks(base.num_queries, chunk_size):
            part = torch.logsumexp(base.chunk(start, stop).double() / self.temperature, dim=0)
            log_norm = part if log_norm is None else torch.logaddexp(log_norm, part)
        self.log_norm = log_norm

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        raw = self.base.chunk(start, stop).double()
        return raw * torch.exp(raw / self.temperature - self.log_norm[None, :])


class _QBNormSource(_ScoreSource):
    """QB-Norm (dynamic inverted softmax) scores in log space: rows whose top-1 gallery item was in
    some bank query's top-k become ``beta * s - log sum_bank exp(beta * s_bank)``; the others keep
    their raw similarities (ranking is per row, so mixing the two scales is harmless)."""

    def __init__(self, base: _ScoreSource, bank: _ScoreSource, k: int, beta: float, chunk_size: int):
        if bank.num_gallery != base.num_gallery:
            raise ValueError(
                f"query bank scores {bank.num_gallery} gallery items but the test gallery has {base.num_gallery}"
            )
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= base.num_gallery:
            raise ValueError(f"qb_norm k must be an integer in 1..{base.num_gallery}, got {k!r}")
        self.base, self.beta = base, float(beta)
        self.num_queries, self.num_gallery, self.name = base.num_queries, base.num_gallery, base.name
        log_norm, active = None, None
        for start, stop in _chunks(bank.num_queries, chunk_size):
            block = bank.chunk(start, stop).double()
            part = torch.logsumexp(self.beta * block, dim=0)
            log_norm = part if log_norm is None else torch.logaddexp(log_norm, part)
            top = torch.topk(block, int(k), dim=1).indices.reshape(-1)
            if active is None:
                active = torch.zeros(block.shape[1], dtype=torch.bool, device=block.device)
            active[top] = True
        self.log_norm, self.active = log_norm, active

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        raw = self.base.chunk(start, stop).double()
        normalise = self.active[raw.argmax(dim=1)]
        return torch.where(normalise[:, None], self.beta * raw - self.log_norm[None, :], raw)


def _rank_source(source: _ScoreSource, sets: RelevantSets, tie_policy: str, chunk_size: int,
                 want_ap: bool) -> tuple[np.ndarray, np.ndarray | None]:
    ranks, aps = [], []
    for start, stop in _chunks(source.num_queries, chunk_size):
        chunk_ranks, chunk_ap = _rank_chunk(source.chunk(start, stop), sets, start, tie_policy, want_ap)
        ranks.append(chunk_ranks.cpu())
        if want_ap:
            aps.append(chunk_ap.cpu())
    rank_array = torch.cat(ranks).numpy()
    rank_array = rank_array.astype(np.float64 if tie_policy == "mean" else np.int64, copy=False)
    return rank_array, (torch.cat(aps).numpy().astype(np.float64, copy=False) if want_ap else None)


def _resolve_device(device: Any, *tensors: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor):
            return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def compute_ranks(similarity: Any, relevant: Any, tie_policy: str = "pessimistic", chunk_size: int = 1024, *,
                  return_average_precision: bool = False, device: Any = None):
    """0-based rank of the best-ranked relevant gallery item of every query.

    Args:
        similarity: (Q, G) scores, torch tensor, numpy array or nested list; higher is better.
        relevant: one gallery index per query (list of ints / (Q,) int array), or one sequence of
            indices per query (multi-relevant; a (Q, n) int array is read as such).
        tie_policy: ``"pessimistic"`` (tied non-relevant items count as ahead), ``"optimistic"`` or
            ``"mean"`` (half of them). See the module docstring.
        chunk_size: query rows processed at once; extra memory is about chunk_size x G.
        return_average_precision: also return each query's average precision (over all of its
            relevant items; the reciprocal rank when it has one).
        device: where to compute (default: the tensor's device, CPU for numpy).

    Returns:
        ``ranks`` (np.int64, or np.float64 for ``"mean"``), or ``(ranks, average_precision)``.

    Raises:
        ValueError: wrong shapes, empty or out-of-range relevant sets, NaN/inf scores.
    """
    _check_tie_policy(tie_policy)
    chunk_size = _check_chunk_size(chunk_size)
    matrix = _as_tensor(similarity, "similarity")
    _check_matrix(matrix, "similarity")
    sets = as_relevant_sets(relevant, matrix.shape[0], matrix.shape[1])
    source = _MatrixSource(matrix, _resolve_device(device, similarity), "similarity")
    ranks, ap = _rank_source(source, sets, tie_policy, chunk_size, return_average_precision)
    return (ranks, ap) if return_average_precision else ranks


def retrieval_metrics(ranks: Any, k_values: Sequence[int] = (1, 5, 10), average_precision: Any = None) -> dict[str, float]:
    """Summaries of 0-based ranks: ``R@K`` (percent of queries with 1-based rank <= K), ``MdR`` and
    ``MnR`` (median / mean 1-based rank) and, when ``average_precision`` is given, ``mAP`` (percent)."""
    k_values = _check_k_values(k_values)
    rank_array = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if rank_array.size == 0:
        raise ValueError("ranks is empty: there is no query to summarise")
    if not np.isfinite(rank_array).all() or (rank_array < 0).any():
        raise ValueError("ranks must be finite and >= 0 (0-based ranks)")
    one_based = rank_array + 1.0
    metrics = {f"R@{k}": float(100.0 * np.mean(one_based <= k)) for k in k_values}
    metrics["MdR"] = float(np.median(one_based))
    metrics["MnR"] = float(np.mean(one_based))
    if average_precision is not None:
        ap = np.asarray(average_precision, dtype=np.float64).reshape(-1)
        if ap.shape != rank_array.shape:
            raise ValueError(f"average_precision has {ap.size} values but there are {rank_array.size} ranks")
        metrics["mAP"] = float(100.0 * ap.mean())
    return metrics


def dual_softmax(similarity: Any, temperature: float = DEFAULT_DSL_TEMPERATURE):
    """Dual softmax (DSL, Cheng et al. 2021) for a (queries, gallery) similarity matrix:
    ``s_ij * softmax_i(s_ij / temperature)``, the prior normalising each gallery column over all
    test queries. Transductive (it looks at the whole test query set): report it separately.

    Returns float64 (numpy in, numpy out; tensor in, tensor out) so tiny priors don't collapse into
    ties. For video-to-text, pass the (videos, texts) matrix, i.e. ``similarity.T``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    matrix = _as_tensor(similarity, "similarity")
    _check_matrix(matrix, "similarity")
    _check_finite_rows(_scores_dtype(matrix), "similarity", 0)
    scores = matrix.double()
    result = scores * torch.softmax(scores / temperature, dim=0)
    return result if isinstance(similarity, torch.Tensor) else result.numpy()


def qb_norm(similarity: Any, query_bank_similarity: Any, k: int = DEFAULT_QB_NORM_K,
            beta: float = DEFAULT_QB_NORM_BETA, *, log_space: bool = False):
    """Querybank normalisation with the dynamic inverted softmax (Bogolin et al., CVPR 2022).

    Args:
        similarity: (Q, G) test-query x gallery similarities.
        query_bank_similarity: (B, G) similarities of a bank of *training* queries to the same gallery.
        k: a gallery item is "activated" when it is in the top-k of some bank query.
        beta: inverse temperature.
        log_space: return ``beta * s - log sum_b exp(beta * s_b)`` for normalised rows instead of
            ``exp(beta * s) / sum_b exp(beta * s_b)`` (same ranking, no underflow).

    A test row is normalised only when its top-1 gallery item (first maximum) is activated; other
    rows are returned unchanged. Returns float64 (numpy in, numpy out; tensor in, tensor out).
    """
    matrix = _as_tensor(similarity, "similarity")
    bank = _as_tensor(query_bank_similarity, "query_bank_similarity")
    _check_matrix(matrix, "similarity")
    _check_matrix(bank, "query_bank_similarity")
    device = matrix.device
    base = _MatrixSource(matrix, device, "similarity")
    source = _QBNormSource(base, _MatrixSource(bank.to(device), device, "query_bank_similarity"), k, beta,
                           chunk_size=max(1, bank.shape[0]))
    scores = source.chunk(0, matrix.shape[0])
    if not log_space:
        normalised = source.active[base.chunk(0, matrix.shape[0]).argmax(dim=1)]
        scores = torch.where(normalised[:, None], torch.exp(scores), scores)
    return scores if isinstance(similarity, torch.Tensor) else scores.numpy()


def _direction_metrics(prefix: str, ranks: np.ndarray, ap: np.ndarray | None, k_values: tuple[int, ...]) -> dict:
    summary = retrieval_metrics(ranks, tuple(dict.fromkeys(k_values + RSUM_K)), ap)
    keep = [f"R@{k}" for k in k_values] + ["MdR", "MnR"] + (["mAP"] if ap is not None else [])
    out = {f"{prefix}{key}": summary[key] for key in keep}
    out[f"_{prefix}rsum_part"] = sum(summary[f"R@{k}"] for k in RSUM_K)
    return out


def _embeddings(value: Any, name: str, device: torch.device) -> torch.Tensor:
    tensor = _as_tensor(value, name)
    _check_matrix(tensor, name)
    tensor = _scores_dtype(tensor.to(device))
    _check_finite_rows(tensor, name, 0)
    return tensor


def evaluate_retrieval(text_embeds: Any = None, video_embeds: Any = None, text_to_video: Any = None, *,
                       similarity: Any = None, k_values: Sequence[int] = (1, 5, 10), tie_policy: str = "pessimistic",
                       chunk_size: int = 1024, renormalization: str | Sequence[str] | None = None,
                       query_bank: Any = None, video_query_bank: Any = None,
                       dsl_temperature: float = DEFAULT_DSL_TEMPERATURE, qb_norm_k: int = DEFAULT_QB_NORM_K,
                       qb_norm_beta: float = DEFAULT_QB_NORM_BETA, device: Any = None) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics.

    Give either ``text_embeds`` (T, D) and ``video_embeds`` (V, D) — similarities are their dot
    products (normalise them first for cosine), computed ``chunk_size`` rows at a time in both
    directions — or ``similarity`` (T, V). ``text_to_video`` (T,) gives each caption's video
    (default: caption i belongs to video i). Every video needs at least one caption.

    Returns ``t2v_R@K`` for each K, ``t2v_MdR``, ``t2v_MnR``, the same for ``v2t_`` plus ``v2t_mAP``,
    ``rsum`` (R@1+R@5+R@10 of both directions), ``num_texts`` and ``num_videos``.

    ``renormalization`` (``"dsl"``, ``"qb_norm"`` or both as a list) adds the re-normalised results
    under their own prefix (``dsl_t2v_R@1``, ``dsl_rsum``, ``qb_norm_t2v_R@1``, ...) next to the
    plain ones, which are never replaced. QB-Norm needs ``query_bank``: training-caption embeddings
    (B, D) with embeddings, or their (B, V) similarities to the test videos with ``similarity``;
    its v2t keys (and ``qb_norm_rsum``) appear only when ``video_query_bank`` ((B', D) video
    embeddings, or (B', T) similarities to the test captions) is given too.
    """
    _check_tie_policy(tie_policy)
    chunk_size = _check_chunk_size(chunk_size)
    k_values = _check_k_values(k_values)
    if renormalization is None:
        renorms: tuple[str, ...] = ()
    elif isinstance(renormalization, str):
        renorms = (renormalization,)
    else:
        renorms = tuple(renormalization)
    for name in renorms:
        if name not in RENORMALIZATIONS:
            raise ValueError(f"renormalization must be None or among {RENORMALIZATIONS}, got {name!r}")

    given_embeddings = text_embeds is not None or video_embeds is not None
    if similarity is not None and given_embeddings:
        raise ValueError("give either similarity or text_embeds/video_embeds, not both")
    if similarity is None and not (text_embeds is not None and video_embeds is not None):
        raise ValueError("give both text_embeds and video_embeds (or a similarity matrix)")
    dev = _resolve_device(device, similarity, text_embeds, video_embeds)

    if similarity is not None:
        matrix = _as_tensor(similarity, "similarity")
        _check_matrix(matrix, "similarity")
        num_texts, num_videos = int(matrix.shape[0]), int(matrix.shape[1])
        t2v_source: _ScoreSource = _MatrixSource(matrix, dev, "similarity")
        v2t_source: _ScoreSource = _MatrixSource(matrix, dev, "similarity", transpose=True)

        def bank_source(bank: Any, name: str, gallery_size: int, gallery_name: str) -> _ScoreSource:
            bank_matrix = _as_tensor(bank, name)
            _check_matrix(bank_matrix, name)
            if bank_matrix.shape[1] != gallery_size:
                raise ValueError(
                    f"{name} has {bank_matrix.shape[1]} columns but there are {gallery_size} test {gallery_name}"
                )
            return _MatrixSource(bank_matrix, dev, name)
    else:
        texts = _embeddings(text_embeds, "text_embeds", dev)
        videos = _embeddings(video_embeds, "video_embeds", dev)
        if texts.shape[1] != videos.shape[1]:
            raise ValueError(
                f"embedding sizes differ: text_embeds has dimension {texts.shape[1]}, "
                f"video_embeds has dimension {videos.shape[1]}"
            )
        if texts.dtype != videos.dtype:
            common = torch.promote_types(texts.dtype, videos.dtype)
            texts, videos = texts.to(common), videos.to(common)
        num_texts, num_videos = int(texts.shape[0]), int(videos.shape[0])
        t2v_source = _EmbeddingSource(texts, videos, "similarity (text_embeds @ video_embeds.T)")
        v2t_source = _EmbeddingSource(videos, texts, "similarity (video_embeds @ text_embeds.T)")

        def bank_source(bank: Any, name: str, gallery_size: int, gallery_name: str) -> _ScoreSource:
            gallery = videos if gallery_name == "videos" else texts
            bank_embeds = _embeddings(bank, name, dev)
            if bank_embeds.shape[1] != gallery.shape[1]:
                raise ValueError(
                    f"{name} has dimension {bank_embeds.shape[1]} but the test embeddings have {gallery.shape[1]}"
                )
            return _EmbeddingSource(bank_embeds.to(gallery.dtype), gallery, f"{name} similarity")

    mapping, captions_of_video = relevant_sets_from_text_to_video(text_to_video, num_texts, num_videos)
    caption_targets = RelevantSets(offsets=np.arange(num_texts + 1, dtype=np.int64), indices=mapping, single=True)

    def both_directions(prefix: str, t2v: _ScoreSource | None, v2t: _ScoreSource | None) -> dict:
        out: dict[str, float] = {}
        if t2v is not None:
            ranks, _ = _rank_source(t2v, caption_targets, tie_policy, chunk_size, want_ap=False)
            out.update(_direction_metrics(f"{prefix}t2v_", ranks, None, k_values))
        if v2t is not None:
            ranks, ap = _rank_source(v2t, captions_of_video, tie_policy, chunk_size, want_ap=True)
            out.update(_direction_metrics(f"{prefix}v2t_", ranks, ap, k_values))
        parts = [key for key in out if key.endswith("rsum_part")]
        if len(parts) == 2:
            out[f"{prefix}rsum"] = float(sum(out[key] for key in parts))
        for key in parts:
            del out[key]
        return out

    metrics = both_directions("", t2v_source, v2t_source)
    metrics["num_texts"] = num_texts
    metrics["num_videos"] = num_videos
    if "dsl" in renorms:
        metrics.update(both_directions(
            "dsl_",
            _DualSoftmaxSource(t2v_source, dsl_temperature, chunk_size),
            _DualSoftmaxSource(v2t_source, dsl_temperature, chunk_size),
        ))
    if "qb_norm" in renorms:
        if query_bank is None:
            raise ValueError("renormalization 'qb_norm' needs query_bank (a bank of training-caption queries)")
        t2v_qb = _QBNormSource(t2v_source, bank_source(query_bank, "query_bank", num_videos, "videos"),
                               qb_norm_k, qb_norm_beta, chunk_size)
        v2t_qb = None
        if video_query_bank is not None:
            v2t_qb = _QBNormSource(v2t_source, bank_source(video_query_bank, "video_query_bank", num_texts, "texts"),
                                   qb_norm_k, qb_norm_beta, chunk_size)
        metrics.update(both_directions("qb_norm_", t2v_qb, v2t_qb))
    return metrics
