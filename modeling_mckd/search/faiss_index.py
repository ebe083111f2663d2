"""The FAISS wrapper: build and search exact / IVF / HNSW inner-product indexes, and the torch fallback.

FAISS is optional (``pip install faiss-cpu``); without it :func:`exact_search` gives the exact
index's results with a torch matmul + top-k.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import torch

from .index_format import (
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_HNSW_M,
    FAISS_THREADED_BATCH,
    IndexError_,
)

logger = logging.getLogger(__name__)

@functools.lru_cache(maxsize=1)
def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    import faiss

    return faiss


def default_nlist(num_vectors: int) -> int:
    """IVF cells: about 4 sqrt(N) (the usual rule), with at least 39 training points per cell."""
    return max(1, min(int(4 * math.sqrt(num_vectors)), num_vectors // 39))


def default_nprobe(nlist: int) -> int:
    """Cells probed per query by default: 1/8 of them (docs/search.md has the recall it gives)."""
    return max(1, round(nlist / 8))


def build_faiss_index(
    embeddings: np.ndarray | torch.Tensor,
    kind: str | None = None,
    *,
    nlist: int | None = None,
    hnsw_m: int = DEFAULT_HNSW_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    seed: int = 0,
):
    """A FAISS inner-product index over ``embeddings`` (N, D): exact ``IndexFlatIP`` (kind None),
    ``IndexIVFFlat`` ("ivf", ``nlist`` cells, trained on the vectors) or ``IndexHNSWFlat`` ("hnsw")."""
    faiss = _faiss()
    vectors = _as_float32_matrix(embeddings)
    num, dim = vectors.shape
    if kind is None:
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        cells = nlist if nlist is not None else default_nlist(num)
        if cells > num:
            logger.warning("nlist=%d is more than the %d vectors; using %d", cells, num, max(1, num))
            cells = max(1, num)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed  # k-means initialisation: the same vectors give the same index
        index.train(vectors)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
    else:
        raise IndexError_(f"approximate must be None, 'ivf' or 'hnsw', got {kind!r}")
    if num:
        index.add(vectors)
    return index


def _set_faiss_search_params(index, nprobe: int | None, ef_search: int | None) -> None:
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = int(nprobe)
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(ef_search)


def _faiss_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``, single-threaded for a few queries.

    FAISS splits even one query across its OpenMP threads; on a busy machine a thread that waits for
    a core stalls the whole query (measured on 2 shared cores, 100k vectors: p99 47 ms with 2 threads,
    1.3 ms with 1). Larger batches keep FAISS's threads. ``omp_set_num_threads`` only changes the
    calling thread's setting, so concurrent searches from other threads are not affected.
    """
    if len(queries) >= FAISS_THREADED_BATCH:
        return index.search(queries, k)
    faiss = _faiss()
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(previous)


def _as_float32_matrix(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().float().numpy()
    array = np.ascontiguousarray(values, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise IndexError_(f"expected a (N, D) matrix of embeddings, got shape {array.shape}")
    return array


def exact_search(embeddings: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with torch: the fallback when faiss is not installed."""
    scores_out, indices_out = [], []
    # bound the (chunk, N) score matrix to about 64 MiB whatever the number of queries
    chunk = max(1, (1 << 24) // max(1, embeddings.shape[0]))
    with torch.no_grad():
        for start in range(0, queries.shape[0], chunk):
            scores = queries[start : start + chunk] @ embeddings.T
            values, indices = scores.topk(k, dim=1)
            scores_out.append(values)
            indices_out.append(indices)
    return torch.cat(scores_out).numpy().astype(np.float32), torch.cat(indices_out).numpy().astype(np.int64)

