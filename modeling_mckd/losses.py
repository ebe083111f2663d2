"""MCKD losses: standalone ``nn.Module`` s on embeddings (open_clip style).

One file on purpose (over ~600 lines): open_clip keeps every loss and its gather helpers in one
``loss.py``, and these share the gather contract, the multi-positive ``ids`` convention and the
notation below; split, each file would have to repeat them.

They know nothing of the models: they take L2-normalised embeddings (and, where relevant, the
already-exponentiated logit scale) and return a scalar tensor. Every formula is written out in the
docstrings and in ``docs/method.md``.

Notation used below: ``t_i`` text embedding of row ``i``, ``v_j`` video embedding of row ``j``,
``s_ij = t_i . v_j`` (cosine similarity, inputs are unit vectors), ``B`` the (local) batch, ``N``
the global batch over all ranks, ``W`` the world size, ``ids`` the instance (video) id of each row.
Rows ``i`` and ``j`` are *positives* of each other when ``ids_i == ids_j`` (always true for ``i == j``);
with ``ids=None`` every row is its own instance.

Reduction conventions (the trainers rely on them):

* ``ContrastiveLoss`` / ``multimodal_contrastive_loss``: mean over the global batch of the
  per-row cross-entropies, averaged over the two directions. Under ``torch.distributed`` each rank
  returns a value whose gradient, *averaged over ranks* (what DDP / accelerate do), equals the
  gradient of the single-process loss on the concatenated global batch.
* ``RankingLoss``: sum of the two directions' hinge costs, mean over rows (``reduction="mean"``).
* ``DistillationLoss``: KL terms are mean over rows ("batchmean"), the two directions averaged.
* ``DiscriminationLoss``: mean over rows of every term.

Only ``ContrastiveLoss`` gathers across ranks; the student losses are in-batch (per rank).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


__all__ = [
    "AnchorDistillationLoss",
    "ContrastiveLoss",
    "DiscriminationLoss",
    "DistillationLoss",
    "RankingLoss",
    "multimodal_contrastive_loss",
]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _check_embeddings(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (batch, dim), got {type(tensor).__name__}")
    if tensor.dim() != 2:
        raise ValueError(f"{name}: expected shape (batch, dim), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise ValueError(f"{name}: empty batch")


def _check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, same_dim: bool = True) -> None:
    _check_embeddings(name_a, a)
    _check_embeddings(name_b, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}: the rows must be aligned "
            "(row i of each is the same instance)"
        )
    if same_dim and a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} has dim {a.shape[1]} but {name_b} has dim {b.shape[1]}: they must match")


def _check_ids(ids: torch.Tensor | None, batch: int, name: str = "ids") -> None:
    if ids is None:
        return
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name}: expected a LongTensor of shape ({batch},), got {type(ids).__name__}")
    if ids.dim() != 1 or ids.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch},) (one id per row), got {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got dtype {ids.dtype}")


def _as_scale(name: str, value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a scalar tensor, got shape {tuple(value.shape)}")
        return value.reshape(()).to(like.dtype)
    if isinstance(value, (int, float)):
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    raise TypeError(f"{name}: expected a float or a scalar tensor, got {type(value).__name__}")


def _positive_mask(row_ids: torch.Tensor, col_ids: torch.Tensor) -> torch.Tensor:
    """(R, C) bool: ``True`` where row and column belong to the same instance."""
    return row_ids[:, None] == col_ids[None, :]


# --------------------------------------------------------------------------------------------
# the multi-positive cross-entropy shared by ContrastiveLoss and DiscriminationLoss
# --------------------------------------------------------------------------------------------


def _row_cross_entropy(logits: torch.Tensor, labels: torch.Tensor | None, positives: torch.Tensor | None) -> torch.Tensor:
    """Per-row cross-entropy (R,) of ``logits`` (R, C).

    With ``positives`` (bool (R, C)) the target of row ``i`` is uniform over its positives
    ``P(i)``: ``ce_i = -1/|P(i)| * sum_{p in P(i)} log softmax(logits_i)_p``. Otherwise the target
    is the one-hot ``labels`` (standard InfoNCE through ``F.cross_entropy``).
    """
    if positives is None:
        return F.cross_entropy(logits, labels, reduction="none")
    target = positives.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


# --------------------------------------------------------------------------------------------
# distributed gather
# --------------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world_size = torch.distributed.get_world_size()
        if world_size > 1:
            return torch.distributed.get_rank(), world_size
    return 0, 1


def _scale_gradient(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """Same value, gradient multiplied by ``factor``."""
    return tensor * factor - tensor.detach() * (factor - 1.0)


class _Gathered:
    """Rows of every rank, concatenated in rank order, plus where this rank's rows start."""

    def __init__(self, tensors: list[torch.Tensor], ids: torch.Tensor | None, offset: int, total: int):
        self.tensors = tensors
        self.ids = ids
        self.offset = offset
        self.total = total


def _gather(
    tensors: Sequence[torch.Tensor], ids: torch.Tensor | None, rank: int, world_size: int, with_grad: bool
) -> _Gathered:
    """All-gather ``tensors`` (each (B_rank, D)) and ``ids`` from every rank.

    Batches may differ in size across ranks (e.g. the last batch): rows are padded to the largest
    batch for the collective and the padding is cut off afterwards. ``with_grad`` gathers through
    ``torch.distributed.nn.functional.all_gather``, whose backward sums every rank's gradient for
    this rank's rows; otherwise only the local slot carries a gradient.
    """
    dist = torch.distributed
    local = tensors[0]
    device = local.device
    # One small collective to agree on sizes, and to fail on every rank at once (no hang) when the
    # ranks disagree on the feature dims or on passing ids.
    header = torch.tensor(
        [local.shape[0], int(ids is not None)] + [t.shape[1] for t in tensors], dtype=torch.long, device=device
    )
    headers = [torch.empty_like(header) for _ in range(world_size)]
    dist.all_gather(headers, header)
    headers_cpu = torch.stack(headers).cpu()
    sizes = headers_cpu[:, 0].tolist()
    if (headers_cpu[:, 1:] != headers_cpu[0, 1:]).any():
        raise ValueError(
            "ContrastiveLoss: ranks disagree on the feature dims or on passing ids "
            f"(per rank [batch, has_ids, dims...] = {headers_cpu.tolist()}); every rank must pass the "
            "same kind of inputs"
        )
    max_rows = max(sizes)

    def pad(x: torch.Tensor) -> torch.Tensor:
        missing = max_rows - x.shape[0]
        if missing == 0:
            return x.contiguous()
        return F.pad(x, (0, 0, 0, missing)) if x.dim() == 2 else F.pad(x, (0, missing))

    gathered = []
    for tensor in tensors:
        padded = pad(tensor)
        if with_grad:
            import torch.distributed.nn.functional as differentiable  # not imported by torch.distributed

            with warnings.catch_warnings():
                # Deprecated in favour of a private API in recent torch; it is the public op that
                # carries a gradient on every backend we support (gloo included).
                warnings.simplefilter("ignore", FutureWarning)
                parts = list(differentiable.all_gather(padded))
        else:
            parts = [torch.empty_like(padded) for _ in range(world_size)]
            with torch.no_grad():
                dist.all_gather(parts, padded.detach())
            # Only the local slot keeps its graph. Its gradient is scaled by world_size so that
            # DDP's average over ranks gives the exact gradient (see ContrastiveLoss docstring).
            parts[rank] = _scale_gradient(padded, float(world_size))
        gathered.append(torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0))

    gathered_ids = None
    if ids is not None:
        id_parts = [torch.empty(max_rows, dtype=ids.dtype, device=device) for _ in range(world_size)]
        dist.all_gather(id_parts, pad(ids.to(device)))
        gathered_ids = torch.cat([part[:size] for part, size in zip(id_parts, sizes)], dim=0)
    return _Gathered(gathered, gathered_ids, offset=sum(sizes[:rank]), total=sum(sizes))


# --------------------------------------------------------------------------------------------
# ContrastiveLoss
# --------------------------------------------------------------------------------------------


class ContrastiveLoss(nn.Module):
    r"""Symmetric InfoNCE (CLIP loss) with multi-positive targets and open_clip's distributed scheme.

    For L2-normalised ``a`` (N, D), ``b`` (N, D) and the already-exponentiated logit scale
    ``\kappa`` (``= 1/temperature``), the logits are ``z_ij = \kappa a_i . b_j``. The positives of row
    ``i`` are ``P(i) = {j : ids_j = ids_i}`` (``{i}`` when ``ids is None``) and the target is
    uniform over them:

    .. math::

        \ell^{a\to b}_i = -\frac{1}{|P(i)|}\sum_{p \in P(i)} \log
            \frac{\exp z_{ip}}{\sum_{k=1}^{N} \exp z_{ik}}, \qquad
        \ell^{b\to a}_i = \text{same with } z^\top,

        L = \frac{1}{2N}\sum_{i=1}^{N} \left(\ell^{a\to b}_i + \ell^{b\to a}_i\right)

    (``symmetric=False`` keeps only the ``a -> b`` mean). Same-video captions are thus never each
    other's negatives; the positives stay in the denominator (cross-entropy with a soft target,
    not the "positives removed from the denominator" variant). With ``ids=None`` this is exactly
    ``(F.cross_entropy(z, arange) + F.cross_entropy(z.T, arange)) / 2``.

    **Distributed** (``torch.distributed`` initialised, world size ``W > 1``): features and ids
    are all-gathered from every rank (``N`` = global batch, sizes may differ across ranks), so the
    negatives are the whole global batch and ``ids`` must be global (e.g. dataset video indices).

    * ``gather_with_grad=True, local_loss=True`` (default, open_clip's scheme): rank ``r`` only
      computes its own rows against all gathered columns and returns
      ``W/N * sum_{i in rank r} (l^{a->b}_i + l^{b->a}_i)/2`` (= the mean over its local rows when
      batches are equal).
    * ``gather_with_grad=True, local_loss=False``: every rank computes the full ``L``.
    * ``gather_with_grad=False, local_loss=False``: every rank computes the full ``L`` with a
      gradient only through its own rows, which are scaled by ``W`` in the backward pass.
    * ``gather_with_grad=False, local_loss=True`` is refused: the gradient from other ranks' rows
      to this rank's columns would be lost.

    In every accepted mode the gradient of each parameter, **averaged over ranks** (what DDP and
    accelerate do; do not rescale the loss by the world size yourself) is exactly the gradient of
    ``L`` computed in one process on the concatenated global batch, and the average over ranks of
    the returned values is ``L``. A caller that *sums* gradients over ranks must divide the loss by
    ``W``. Every rank must call ``forward`` (and ``backward``) the same number of times.

    Args:
        local_loss: compute only this rank's rows (saves memory, ``O(B N)`` instead of ``O(N^2)``).
        gather_with_grad: gather through the differentiable all-gather.
        symmetric: average the ``a->b`` and ``b->a`` directions (else ``a->b`` only).
    """

    def __init__(self, local_loss: bool = True, gather_with_grad: bool = True, symmetric: bool = True):
        super().__init__()
        if local_loss and not gather_with_grad:
            raise ValueError(
                "ContrastiveLoss(local_loss=True, gather_with_grad=False) drops the gradient that other "
                "ranks' rows send to this rank's columns; use gather_with_grad=True or local_loss=False"
            )
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.symmetric = symmetric

    def forward(
        self,
        features_a: torch.Tensor,
        features_b: torch.Tensor,
        logit_scale: torch.Tensor | float,
        ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scalar loss; see the class docstring for the formula and the distributed convention."""
        _check_pair("features_a", features_a, "features_b", features_b)
        _check_ids(ids, features_a.shape[0])
        scale = _as_scale("logit_scale", logit_scale, features_a)
        rank, world_size = _world()

        if world_size == 1:
            all_a, all_b, all_ids, offset, total = features_a, features_b, ids, 0, features_a.shape[0]
        else:
            gathered = _gather([features_a, features_b], ids, rank, world_size, self.gather_with_grad)
            (all_a, all_b), all_ids = gathered.tensors, gathered.ids
            offset, total = gathered.offset, gathered.total

        if world_size > 1 and self.local_loss:
            rows_a, rows_b = features_a, features_b
            row_ids = ids
            row_index = torch.arange(features_a.shape[0], device=features_a.device) + offset
            # Sum over local rows, W/N: the DDP average over ranks then sums every row once, over N.
            normaliser = world_size / total
        else:
            rows_a, rows_b, row_ids = all_a, all_b, all_ids
            row_index = torch.arange(total, device=features_a.device)
            normaliser = 1.0 / total

        positives = None if all_ids is None else _positive_mask(row_ids.to(all_ids.device), all_ids)
        loss = _row_cross_entropy(scale * rows_a @ all_b.T, row_index, positives).sum()
        if self.symmetric:
            loss_b = _row_cross_entropy(scale * rows_b @ all_a.T, row_index, positives).sum()
            loss = (loss + loss_b) / 2
        return loss * normaliser


def _pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


def _default_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    # "text" first, then "video", then the other modalities in the order given, so the keys read
    # "text-video", "text-audio", "video-audio".
    names = list(names)
    priority = {"text": 0, "video": 1}
    ordered = sorted(names, key=lambda name: (priority.get(name, 2), names.index(name)))
    return list(itertools.combinations(ordered, 2))


def multimodal_contrastive_loss(
    embeddings: Mapping[str, torch.Tensor],
    logit_scale: torch.Tensor | float | Mapping[str, torch.Tensor | float],
    ids: torch.Tensor | None = None,
    loss_fn: ContrastiveLoss | None = None,
    pairs: Sequence[tuple[str, str] | str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""The teacher objective: contrastive loss summed over every pair of modalities present.

    .. math:: L_{teacher} = \sum_{(m, n) \in pairs} w_{mn}\, L_{InfoNCE}(e^m, e^n; \kappa_{mn}, ids)

    Args:
        embeddings: modality name -> L2-normalised (B, D) embeddings, all row-aligned (row ``i`` of
            each is the same instance; for multi-caption batches ``ids`` says which rows share a
            video). At least two modalities.
        logit_scale: the exponentiated logit scale, shared by all pairs, or a mapping pair name
            (``"text-video"``) -> scale.
        ids: (B,) instance ids for multi-positive targets, or ``None``.
        loss_fn: the ``ContrastiveLoss`` to use (default ``ContrastiveLoss()``).
        pairs: the pairs to use, as ``("text", "video")`` tuples or ``"text-video"`` strings; default
            every pair, ordered text, video, then the others in the order of ``embeddings``.
        weights: pair name -> weight ``w_mn`` (default 1 for every pair).

    Returns:
        ``(total, per_pair)``: ``total`` the weighted sum; ``per_pair`` the *unweighted* loss of each
        pair keyed ``"a-b"``.
    """
    if len(embeddings) < 2:
        raise ValueError(f"embeddings: need at least two modalities, got {sorted(embeddings)}")
    names = list(embeddings)
    batch = None
    for name in names:
        _check_embeddings(f"embeddings[{name!r}]", embeddings[name])
        rows = embeddings[name].shape[0]
        if batch is None:
            batch = rows
        elif rows != batch:
            raise ValueError(
                f"embeddings[{name!r}] has {rows} rows but embeddings[{names[0]!r}] has {batch}: the "
                "modalities must be row-aligned"
            )

    if pairs is None:
        pair_list = _default_pairs(names)
    else:
        pair_list = []
        for pair in pairs:
            if isinstance(pair, str):
                parts = tuple(pair.split("-"))
            else:
                parts = tuple(pair)
            if len(parts) != 2 or parts[0] == parts[1]:
                raise ValueError(f"pairs: {pair!r} is not a pair of two different modality names")
            for part in parts:
                if part not in embeddings:
                    raise ValueError(f"pairs: {pair!r} names modality {part!r}, not in embeddings {names}")
            pair_list.append(parts)
    pair_names = [_pair_name(a, b) for a, b in pair_list]

    weights = dict(weights or {})
    for key in weights:
        if key not in pair_names:
            raise ValueError(f"weights: unknown pair {key!r}; pairs are {pair_names}")
    if isinstance(logit_scale, Mapping):
        missing = [name for name in pair_names if name not in logit_scale]
        if missing:
            raise ValueError(f"logit_scale: no scale for pairs {missing} (given {sorted(logit_scale)})")

    loss_fn = loss_fn if loss_fn is not None else ContrastiveLoss()
    total = None
    per_pair: dict[str, torch.Tensor] = {}
    for (a, b), name in zip(pair_list, pair_names):
        scale = logit_scale[name] if isinstance(logit_scale, Mapping) else logit_scale
        loss = loss_fn(embeddings[a], embeddings[b], scale, ids=ids)
        per_pair[name] = loss
        weighted = loss * weights.get(name, 1.0)
        total = weighted if total is None else total + weighted
    return total, per_pair


# --------------------------------------------------------------------------------------------
# RankingLoss
# --------------------------------------------------------------------------------------------


_RANKING_NEGATIVES = ("hardest", "all", "semi_hard")


def _check_negatives(value, name: str = "negatives") -> str:
    if not isinstance(value, str) or value not in _RANKING_NEGATIVES:
        raise ValueError(f"{name}: expected one of {list(_RANKING_NEGATIVES)}, got {value!r}")
    return value


def _summed_query_costs(scores: torch.Tensor, is_negative: torch.Tensor, margin: float, negatives: str) -> torch.Tensor:
    """Sum over the queries (rows of ``scores``) of their hinge costs, a scalar.

    ``scores[q, k]`` is the similarity of query ``q`` with candidate ``k``; the positive of query
    ``q`` is ``scores[q, q]``. A query with no negative costs 0.
    """
    positive = scores.diagonal()[:, None]
    hinge = (margin + scores - positive).clamp(min=0)
    if negatives == "all":
        # Costs are >= 0, so zeroing the non-negatives leaves the sum of the rest intact.
        return (hinge * is_negative.to(hinge.dtype)).sum()
    if negatives == "hardest":
        # The hinge is monotone in the score: its max over the negatives is the hardest negative's.
        return (hinge * is_negative.to(hinge.dtype)).max(dim=1).values.sum()
    # semi_hard: the most similar negative that is still less similar than the positive; a query
    # without one falls back to its least similar negative (the one closest to being semi-hard).
    detached = scores.detach()
    semi_hard = is_negative & (detached < positive.detach())
    hardest_semi_hard = detached.masked_fill(~semi_hard, float("-inf")).argmax(dim=1)
    easiest = detached.masked_fill(~is_negative, float("inf")).argmin(dim=1)
    chosen = torch.where(semi_hard.any(dim=1), hardest_semi_hard, easiest)
    cost = hinge.gather(1, chosen[:, None]).squeeze(1)
    return (cost * is_negative.any(dim=1).to(cost.dtype)).sum()


class RankingLoss(nn.Module):
    r"""Bidirectional triplet ranking loss on cosine similarities (VSE / VSE++).

    With ``s_ij = t_i . v_j`` (the inputs are expected L2-normalised; ``normalize=True``
    normalises them here), the positive of text ``i`` is video ``i`` (the diagonal) and its
    negatives are ``N(i) = {j : ids_j != ids_i}`` (``{j != i}`` when ``ids is None``), so rows of
    the same video are never negatives of each other. With margin ``\alpha`` and ``[x]_+ = max(x, 0)``,
    the hinge of a text query ``i`` against video ``j`` and of a video query ``j`` against text ``i``:

    .. math::

        c^{t\to v}_{ij} = [\alpha + s_{ij} - s_{ii}]_+, \qquad
        c^{v\to t}_{ij} = [\alpha + s_{ij} - s_{jj}]_+ .

    Each query pays for a set of its negatives, chosen by ``negatives``:

    * ``"hardest"`` (VSE++, the default): ``\max_{j\in N(i)} c^{t\to v}_{ij}`` (and
      ``\max_{i\in N(j)} c^{v\to t}_{ij}`` for video query ``j``).
    * ``"all"`` (VSE, sum of hinges): ``\sum_{j\in N(i)} c^{t\to v}_{ij}``.
    * ``"semi_hard"`` (FaceNet): the hinge of the most similar negative that is still less similar
      than the positive, ``j^* = \arg\max\{s_{ij} : j\in N(i),\ s_{ij} < s_{ii}\}``. When every
      negative is at least as similar as the positive (no semi-hard negative, e.g. at a collapsed
      initialisation), it falls back to the *least* similar negative, ``\arg\min_{j\in N(i)} s_{ij}``
      (TensorFlow Addons' ``triplet_semihard_loss`` choice): the query still pays at least
      ``\alpha``, but is not pulled by its hardest negative, which is what makes VSE++ collapse.

    .. math:: L = \frac{1}{B}\Big(\sum_i \mathrm{cost}^{t\to v}_i + \sum_j \mathrm{cost}^{v\to t}_j\Big)

    ``reduction="mean"`` (default) divides by ``B`` as written; ``"sum"`` does not (the original
    VSE++). The two directions are added, not averaged. A query with no negative contributes 0.
    In-batch only (no gather across ranks).

    ``forward(..., negatives=...)`` overrides the mode for one call (a warm-up with ``"all"`` before
    ``"hardest"``, VSE++'s advice, without rebuilding the loss; see :meth:`negatives_at_epoch`).
    ``max_violation`` is the deprecated boolean of earlier versions: ``True`` is ``"hardest"``,
    ``False`` is ``"all"`` (also accepted as the second positional argument).
    """

    def __init__(
        self,
        margin: float = 0.2,
        negatives: str | None = None,
        reduction: str = "mean",
        normalize: bool = False,
        max_violation: bool | None = None,
    ):
        super().__init__()
        if isinstance(negatives, bool):  # the old positional call RankingLoss(margin, max_violation)
            if max_violation is not None:
                raise ValueError("RankingLoss: max_violation given both positionally and by keyword")
            negatives, max_violation = None, negatives
        if max_violation is not None:
            warnings.warn(
                "RankingLoss(max_violation=...) is deprecated; use negatives='hardest' (True) or 'all' (False)",
                DeprecationWarning,
                stacklevel=2,
            )
            legacy = "hardest" if max_violation else "all"
            if negatives is not None and negatives != legacy:
                raise ValueError(
                    f"RankingLoss: max_violation={max_violation} means negatives={legacy!r}, but negatives="
                    f"{negatives!r} was also given; give only negatives"
                )
            negatives = legacy
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        self.margin = margin
        self.negatives = _check_negatives("hardest" if negatives is None else negatives)
        self.reduction = reduction
        self.normalize = normalize

    def negatives_at_epoch(self, epoch: int, warmup_epochs: int) -> str:
        """The mode for (0-based) ``epoch``: ``"all"`` during the first ``warmup_epochs``, then the configured one."""
        if warmup_epochs < 0 or epoch < 0:
            raise ValueError(f"epoch / warmup_epochs must be >= 0, got {epoch} / {warmup_epochs}")
        return "all" if epoch < warmup_epochs else self.negatives

    def forward(
        self,
        text_embeds: torch.Tensor,
        video_embeds: torch.Tensor,
        ids: torch.Tensor | None = None,
        negatives: str | None = None,
    ) -> torch.Tensor:
        """Scalar loss; see the class docstring. ``negatives`` overrides the configured mode for this call."""
        mode = self.negatives if negatives is None else _check_negatives(negatives)
        _check_pair("text_embeds", text_embeds, "video_embeds", video_embeds)
        batch = text_embeds.shape[0]
        _check_ids(ids, batch)
        if self.normalize:
            text_embeds = F.normalize(text_embeds, dim=-1)
            video_embeds = F.normalize(video_embeds, dim=-1)
        sims = text_embeds @ video_embeds.T
        if ids is None:
            is_negative = ~torch.eye(batch, dtype=torch.bool, device=sims.device)
        else:
            ids = ids.to(sims.device)
            is_negative = ~_positive_mask(ids, ids)
        # Text queries are the rows of sims; video queries are the rows of sims.T (sims.T[j, i] = s_ij),
        # so both directions take their max / sum along dim 1 of their own score matrix.
        loss = _summed_query_costs(sims, is_negative, self.margin, mode) + _summed_query_costs(
            sims.T, is_negative.T, self.margin, mode
        )
        return loss / batch if self.reduction == "mean" else loss


# --------------------------------------------------------------------------------------------
# DistillationLoss
# --------------------------------------------------------------------------------------------


_DISTILLATION_MODES = ("kl", "pearson", "relation", "feature")


def _kl_rows(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """``1/R sum_i KL(softmax(teacher_i) || softmax(student_i))`` over the rows."""
    teacher_log_probs = F.log_softmax(teacher_logits, dim=1)
    student_log_probs = F.log_softmax(student_logits, dim=1)
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=1).mean()


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """(B, B) -> (B, B-1): every row without its diagonal entry."""
    batch = matrix.shape[0]
    keep = ~torch.eye(batch, dtype=torch.bool, device=matrix.device)
    return matrix[keep].reshape(batch, batch - 1)


def _kl_rows_excluding(teacher_logits: torch.Tensor, student_logits: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    """``_kl_rows`` with the entries where ``exclude`` (bool, same shape) is True left out of both softmaxes.

    The mean runs over the rows that keep at least one entry; 0 (attached to the graph) when none does.
    """
    rows = (~exclude).any(dim=1)
    if not rows.any():
        return 0.0 * student_logits.sum()
    exclude = exclude[rows]
    teacher_log_probs = F.log_softmax(teacher_logits[rows].masked_fill(exclude, float("-inf")), dim=1)
    student_log_probs = F.log_softmax(student_logits[rows].masked_fill(exclude, float("-inf")), dim=1)
    # The excluded entries are -inf in both; zero them before subtracting, or 0 * (-inf - -inf) gives
    # nan in the value and in the gradient.
    difference = teacher_log_probs.masked_fill(exclude, 0.0) - student_log_probs.masked_fill(exclude, 0.0)
    return (teacher_log_probs.exp() * difference).sum(dim=1).mean()


def _pearson_rows(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Pearson correlation of each row of ``x`` with the same row of ``y``, shape (R,)."""
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    return (x * y).sum(dim=1) / torch.sqrt(((x * x).sum(dim=1) + eps) * ((y * y).sum(dim=1) + eps))


class DistillationLoss(nn.Module):
    r"""Transfers the teacher's inter-instance structure to the student. Teacher inputs are detached.

    ``S = \hat t^S (\hat v^S)^\top`` and ``T = \hat t^T (\hat v^T)^\top`` are the student's and the
    teacher's (B, B) in-batch text-video cosine similarity matrices (embeddings L2-normalised by the
    caller; student and teacher dims may differ). Logits: ``Z^S = \kappa_S S / \tau_S`` and
    ``Z^T = \kappa_T T / \tau_T``, where ``\kappa`` is the model's (exponentiated) logit scale when
    passed, else 1, ``\tau_T`` = ``temperature`` and ``\tau_S`` = ``student_temperature`` (default
    ``temperature``). ``\kappa_T`` is detached; ``\kappa_S`` is not (the student may learn its
    sharpness). ``p_i = softmax(Z^T_{i\cdot})``, ``q_i = softmax(Z^S_{i\cdot})``.

    Modes (combine with ``+``, e.g. ``"kl+relation"``; the terms are added with their weights):

    * ``"kl"`` (default), cross-modal distribution matching, rows (text->video) and columns
      (video->text):

      .. math:: L_{kl} = \gamma\,\tfrac12\Big(\tfrac1B\sum_i KL(p_i\|q_i) +
                \tfrac1B\sum_j KL(p^{col}_j\|q^{col}_j)\Big),\quad KL(p\|q)=\sum_k p_k\log\frac{p_k}{q_k}

      with the column distributions the softmax over ``i`` of ``Z_{\cdot j}``, and ``\gamma =
      \tau_T^2`` if ``scale_by_temperature_squared`` else 1 (default 1, see docs/method.md).
    * ``"pearson"`` (TeachCLIP-style): ``L = \tfrac12(\tfrac1B\sum_i (1 - \rho(S_{i\cdot}, T_{i\cdot}))
      + \tfrac1B\sum_j (1 - \rho(S_{\cdot j}, T_{\cdot j})))`` with ``\rho(x, y) = \bar x\cdot\bar y /
      \sqrt{(\|\bar x\|^2+\epsilon)(\|\bar y\|^2+\epsilon)}`` (``\bar x`` = x minus its mean). Scale
      and temperature free (Pearson is affine invariant).
    * ``"relation"``, intra-modal relation matching: the same row-wise KL on the text-text
      ``\hat t \hat t^\top`` and video-video ``\hat v \hat v^\top`` matrices with the diagonal removed
      (self-similarity is 1 for everyone and would swamp the softmax), same logits scaling:
      ``L_{rel} = \gamma\,\tfrac12(\tfrac1B\sum_i KL(p^{tt}_i\|q^{tt}_i) + \tfrac1B\sum_i KL(p^{vv}_i\|q^{vv}_i))``,
      weighted by ``intra_modal_weight``. With ``ids`` (several captions of one video in the batch,
      the video's embedding repeated on each of their rows), every same-id entry is removed, not only
      the diagonal: row ``i``'s distributions run over ``N(i) = {j : ids_j != ids_i}``, and the means
      over the rows that have such a ``j``. In the video-video matrix a same-id entry is the video
      itself (cosine 1, the twin that would swamp the softmax like the diagonal); in the text-text
      matrix it is another caption of the same video, removed too unless
      ``keep_same_video_captions=True`` (then only the diagonal is). ``forward(..., text_relation=False)``
      drops the text-text half (the video-video half keeps its ``1/2``), for calls that repeat the same
      captions (``kd_parts``) so the text-text relation is counted once per step.
    * ``"feature"``, feature mimicry: ``L_{feat} = \tfrac12(MSE(P_t, \hat t^T) + MSE(P_v, \hat v^T))``
      with ``P_t, P_v`` the student's embeddings after its learned projection to the teacher's
      dim (``student_projected_text`` / ``student_projected_video``; the student model owns the
      projection), MSE the mean over all elements; weighted by ``feature_weight``.

    ``ids`` changes only the ``relation`` term; ``kl``, ``pearson`` and ``feature`` ignore it.

    A batch of one row has no inter-instance structure: the ``kl``/``pearson``/``relation`` terms
    are then 0 (still attached to the graph).
    """

    def __init__(
        self,
        mode: str = "kl",
        temperature: float = 1.0,
        student_temperature: float | None = None,
        intra_modal_weight: float = 1.0,
        feature_weight: float = 1.0,
        scale_by_temperature_squared: bool = False,
        eps: float = 1e-8,
        keep_same_video_captions: bool = False,
    ):
        super().__init__()
        if not isinstance(mode, str):
            raise ValueError(f"mode: expected a string such as 'kl' or 'kl+relation', got {mode!r}")
        components = [part.strip() for part in mode.split("+")]
        unknown = [part for part in components if part not in _DISTILLATION_MODES]
        if unknown or len(set(components)) != len(components):
            raise ValueError(
                f"mode: {mode!r} is not valid; expected one of {list(_DISTILLATION_MODES)} or a '+' "
                "combination of distinct ones (e.g. 'kl+relation')"
            )
        if temperature <= 0 or (student_temperature is not None and student_temperature <= 0):
            raise ValueError(
                f"temperature / student_temperature must be > 0, got {temperature} / {student_temperature}"
            )
        self.mode = mode
        self.components = tuple(components)
        self.temperature = temperature
        self.student_temperature = student_temperature if student_temperature is not None else temperature
        self.intra_modal_weight = intra_modal_weight
        self.feature_weight = feature_weight
        self.scale_by_temperature_squared = scale_by_temperature_squared
        self.eps = eps
        self.keep_same_video_captions = keep_same_video_captions

    def _logits(self, sims: torch.Tensor, logit_scale, temperature: float, name: str, detach: bool) -> torch.Tensor:
        if logit_scale is not None:
            scale = _as_scale(name, logit_scale, sims)
            sims = sims * (scale.detach() if detach else scale)
        return sims / temperature

    def forward(
        self,
        student_text: torch.Tensor,
        student_video: torch.Tensor,
        teacher_text: torch.Tensor,
        teacher_video: torch.Tensor,
        student_logit_scale: torch.Tensor | float | None = None,
        teacher_logit_scale: torch.Tensor | float | None = None,
        student_projected_text: torch.Tensor | None = None,
        student_projected_video: torch.Tensor | None = None,
        ids: torch.Tensor | None = None,
        text_relation: bool = True,
    ) -> torch.Tensor:
        """Scalar loss; see the class docstring. ``ids`` (B,) marks rows of the same video (``relation``
        masks their entries); ``text_relation=False`` leaves the text-text relation out."""
        _check_pair("student_text", student_text, "student_video", student_video)
        _check_pair("teacher_text", teacher_text, "teacher_video", teacher_video)
        if teacher_text.shape[0] != student_text.shape[0]:
            raise ValueError(
                f"teacher_text has {teacher_text.shape[0]} rows but student_text has {student_text.shape[0]}: "
                "teacher and student must see the same batch"
            )
        teacher_text = teacher_text.detach().to(student_text.dtype)
        teacher_video = teacher_video.detach().to(student_text.dtype)
        batch = student_text.shape[0]
        _check_ids(ids, batch)
        gamma = self.temperature**2 if self.scale_by_temperature_squared else 1.0

        def student_logits(sims: torch.Tensor) -> torch.Tensor:
            return self._logits(sims, student_logit_scale, self.student_temperature, "student_logit_scale", False)

        def teacher_logits(sims: torch.Tensor) -> torch.Tensor:
            return self._logits(sims, teacher_logit_scale, self.temperature, "teacher_logit_scale", True)

        total = student_text.new_zeros(())
        structure_defined = batch > 1
        if not structure_defined:
            # Keep the graph connected (DDP / accelerate expect every used output to carry a grad).
            total = total + 0.0 * (student_text.sum() + student_video.sum())
        if "kl" in self.components and structure_defined:
            z_student = student_logits(student_text @ student_video.T)
            z_teacher = teacher_logits(teacher_text @ teacher_video.T)
            kl = (_kl_rows(z_teacher, z_student) + _kl_rows(z_teacher.T, z_student.T)) / 2
            total = total + gamma * kl
        if "pearson" in self.components and structure_defined:
            sims_student = student_text @ student_video.T
            sims_teacher = teacher_text @ teacher_video.T
            rows = (1 - _pearson_rows(sims_student, sims_teacher, self.eps)).mean()
            cols = (1 - _pearson_rows(sims_student.T, sims_teacher.T, self.eps)).mean()
            total = total + (rows + cols) / 2
        if "relation" in self.components and structure_defined:
            if ids is None:
                video_kl = _kl_rows(
                    _off_diagonal(teacher_logits(teacher_video @ teacher_video.T)),
                    _off_diagonal(student_logits(student_video @ student_video.T)),
                )
            else:
                ids = ids.to(student_text.device)
                same_video = _positive_mask(ids, ids)
                video_kl = _kl_rows_excluding(
                    teacher_logits(teacher_video @ teacher_video.T),
                    student_logits(student_video @ student_video.T),
                    same_video,
                )
            if text_relation:
                if ids is None:
                    text_kl = _kl_rows(
                        _off_diagonal(teacher_logits(teacher_text @ teacher_text.T)),
                        _off_diagonal(student_logits(student_text @ student_text.T)),
                    )
                else:
                    self_only = torch.eye(batch, dtype=torch.bool, device=student_text.device)
                    text_kl = _kl_rows_excluding(
                        teacher_logits(teacher_text @ teacher_text.T),
                        student_logits(student_text @ student_text.T),
                        self_only if self.keep_same_video_captions else same_video,
                    )
                total = total + self.intra_modal_weight * gamma * (text_kl + video_kl) / 2
            else:
                total = total + self.intra_modal_weight * gamma * video_kl / 2
        if "feature" in self.components:
            for name, projected, target in (
                ("student_projected_text", student_projected_text, teacher_text),
                ("student_projected_video", student_projected_video, teacher_video),
            ):
                if projected is None:
                    raise ValueError(
                        f"{name}: required by mode {self.mode!r} (the student's embeddings projected to the "
                        f"teacher's dim {target.shape[1]})"
                    )
                if projected.shape != target.shape:
                    raise ValueError(
                        f"{name}: expected shape {tuple(target.shape)} (the teacher's), got {tuple(projected.shape)}"
                    )
            feature = (
                F.mse_loss(student_projected_text, teacher_text) + F.mse_loss(student_projected_video, teacher_video)
            ) / 2
            total = total + self.feature_weight * feature
        return total


# --------------------------------------------------------------------------------------------
# AnchorDistillationLoss
# --------------------------------------------------------------------------------------------


class AnchorDistillationLoss(nn.Module):
    r"""Dataset-level structure: how each instance relates to a fixed bank of the teacher's embeddings.

    The in-batch losses of :class:`DistillationLoss` show the student its teacher's structure over
    the B items of a batch. Here every student embedding is placed among ``anchors``, a bank of the
    teacher's (L2-normalised, detached) embeddings of the other modality, typically the whole train
    split: thousands of reference points instead of B. With ``s_i`` the student's and ``t_i`` the
    teacher's embedding of the same item (same dim, both L2-normalised by the caller; the student
    must live in the teacher's space, e.g. by starting its text tower from the teacher's) and
    ``A`` the (N, D) anchors:

    .. math:: L_{anchor} = \frac1B \sum_i KL\big(softmax(t_i A^\top/\tau)\,\|\,softmax(s_i A^\top/\tau)\big)

    It is the SEED / CompRess idea (self-supervised distillation over a queue of teacher
    embeddings) with a cross-modal bank: a caption is placed among the teacher's videos, a video
    (or one part of it) among the teacher's captions.
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Scalar loss; see the class docstring."""
        _check_pair("student", student, "teacher", teacher)
        _check_embeddings("anchors", anchors)
        if anchors.shape[1] != student.shape[1]:
            raise ValueError(
                f"anchors: expected dim {student.shape[1]} (the student's and teacher's), got {anchors.shape[1]}; "
                "the student must embed into the teacher's space"
            )
        anchors = anchors.detach().to(student.dtype)
        teacher = teacher.detach().to(student.dtype)
        return _kl_rows(teacher @ anchors.T / self.temperature, student @ anchors.T / self.temperature)


# --------------------------------------------------------------------------------------------
# DiscriminationLoss
# --------------------------------------------------------------------------------------------


class DiscriminationLoss(nn.Module):
    r"""Explicit discrimination: instance-discriminative InfoNCE plus a text-text term.

    With ``s_ij = t_i . v_j``, ``c_ij = t_i . t_j`` (inputs L2-normalised), temperature ``\tau``,
    ``P(i) = {j \ne i : ids_j = ids_i}`` (other captions of the same video) and
    ``N(i) = {j : ids_j \ne ids_i}`` (captions of other videos); with ``ids=None`` ``P(i)`` is empty
    and ``N(i) = {j \ne i}``:

    .. math::

        L_{disc} = L_{inst} + \lambda_{text}\,(L_{supcon} + L_{margin})

    * ``L_inst``: the symmetric multi-positive InfoNCE of :class:`ContrastiveLoss` on ``s / \tau``
      (in-batch, no gather): same-video pairs are positives, never negatives.
    * ``L_supcon`` (pull same-video captions together, relative to the others): supervised
      contrastive loss among texts, self excluded, over the rows ``R = {i : |P(i)| > 0}``:

      .. math:: L_{supcon} = \frac{1}{|R|}\sum_{i\in R} \frac{-1}{|P(i)|}\sum_{p\in P(i)}
                \log\frac{\exp(c_{ip}/\tau)}{\sum_{k\ne i}\exp(c_{ik}/\tau)}

      and 0 when ``R`` is empty (no video has two captions in the batch).
    * ``L_margin`` (push captions of different videos apart, works with one caption per video): a
      hinge on each caption's most similar other-video caption, margin ``m`` = ``text_margin`` in
      cosine units, over ``Q = {i : |N(i)| > 0}``:

      .. math:: L_{margin} = \frac{1}{|Q|}\sum_{i\in Q} \big[\max_{j\in N(i)} c_{ij} - m\big]_+

      ``text_margin=None`` drops it.
    """

    def __init__(self, temperature: float = 0.05, text_weight: float = 1.0, text_margin: float | None = 0.5):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.text_weight = text_weight
        self.text_margin = text_margin

    def forward(self, text_embeds: torch.Tensor, video_embeds: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss; see the class docstring."""
        _check_pair("text_embeds", text_embeds, "video_embeds", video_embeds)
        batch = text_embeds.shape[0]
        _check_ids(ids, batch)
        device = text_embeds.device
        same = torch.eye(batch, dtype=torch.bool, device=device) if ids is None else _positive_mask(ids, ids).to(device)
        self_mask = torch.eye(batch, dtype=torch.bool, device=device)

        logits = text_embeds @ video_embeds.T / self.temperature
        positives = None if ids is None else same
        labels = torch.arange(batch, device=device)
        instance = (
            _row_cross_entropy(logits, labels, positives).mean() + _row_cross_entropy(logits.T, labels, positives).mean()
        ) / 2
        if self.text_weight == 0:
            return instance

        text_sims = text_embeds @ text_embeds.T
        text_term = text_embeds.new_zeros(()) + 0.0 * text_sims.sum()

        partners = same & ~self_mask
        has_partner = partners.any(dim=1)
        if has_partner.any():
            # log-softmax over k != i: the self entry is set to -inf before normalising.
            text_logits = (text_sims / self.temperature).masked_fill(self_mask, float("-inf"))
            log_probs = F.log_softmax(text_logits[has_partner], dim=1)
            row_partners = partners[has_partner].to(log_probs.dtype)
            # masked_fill, not multiplication: the -inf self entry times 0 would give nan.
            picked = log_probs.masked_fill(~partners[has_partner], 0.0)
            supcon = -(picked.sum(dim=1) / row_partners.sum(dim=1))
            text_term = text_term + supcon.mean()

        if self.text_margin is not None:
            others = ~same
            has_other = others.any(dim=1)
            if has_other.any():
                hardest = text_sims.masked_fill(~others, float("-inf"))[has_other].max(dim=1).values
                text_term = text_term + (hardest - self.text_margin).clamp(min=0).mean()
        return instance + self.text_weight * text_term
