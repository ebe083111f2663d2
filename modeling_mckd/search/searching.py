"""Loading an index folder and searching it: :class:`VideoIndex` (vectors + ids) and
:class:`VideoSearcher` (adds the model's text tower to answer sentences).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .faiss_index import (
    _as_float32_matrix,
    _faiss,
    _faiss_search,
    _set_faiss_search_params,
    build_faiss_index,
    exact_search,
    faiss_available,
)
from .index_format import (
    EMBEDDINGS_FILE,
    INDEX_JSON,
    VIDEO_EXTENSIONS,
    IndexError_,
    IndexNotFoundError,
    _bad,
    id_problem,
    path_inside,
    read_embeddings,
    read_index_json,
)
from .video_encoder import load_model, model_fingerprint

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class SearchHit:
    """One search result. ``score`` is the cosine similarity (higher is better), ``rank`` 1-based."""

    rank: int
    video_id: str
    path: str
    score: float

    def to_dict(self) -> dict:
        return {"rank": self.rank, "video_id": self.video_id, "path": self.path, "score": self.score}


class VideoIndex:
    """Video embeddings plus their ids; ``search`` returns the top-k by inner product (= cosine).

    Searches with the FAISS index when faiss is installed (``use_faiss``), otherwise with an exact
    torch matmul + top-k, which gives the exact index's results.
    """

    def __init__(
        self,
        embeddings: torch.Tensor | np.ndarray,
        ids: Sequence[str],
        video_root: str | os.PathLike = ".",
        model: str = "",
        *,
        faiss_index=None,
        approximate: str | None = None,
        info: dict | None = None,
    ):
        self.embeddings = torch.from_numpy(_as_float32_matrix(embeddings))
        self.ids = list(ids)
        for video_id in self.ids:
            problem = id_problem(video_id)
            if problem is not None:
                raise IndexError_(f"video id {video_id!r} {problem}")
        if self.embeddings.shape[0] != len(self.ids):
            raise IndexError_(f"{self.embeddings.shape[0]} embeddings but {len(self.ids)} ids")
        self.video_root = Path(video_root)
        self.model = model
        self.faiss_index = faiss_index
        self.approximate = approximate
        self.info = info or {}
        self.failed: list[dict] = list(self.info.get("failed", []))
        self.model_fingerprint: str | None = self.info.get("model_fingerprint")
        # False only for an index.json written mid-run (an interrupted or still running `search.py index`)
        self.complete: bool = bool(self.info.get("complete", True))

    def video_file(self, video_id: str) -> Path | None:
        """The real path of ``video_id``'s clip when it may be shown, else None.

        Only an existing, non-hidden file with a video extension that resolves (symlinks followed)
        inside the video folder, under a video name too, qualifies: the web page serves exactly these.
        """
        if id_problem(video_id) is not None or not video_id.lower().endswith(VIDEO_EXTENSIONS):
            return None
        target = path_inside(self.video_root, video_id)
        if target is None or not target.is_file() or not target.name.lower().endswith(VIDEO_EXTENSIONS):
            return None  # a link named like a clip may point at a .env beside the clips
        hidden = any(part.startswith(".") for part in target.relative_to(Path(self.video_root).resolve()).parts)
        return None if hidden else target

    def incomplete_message(self) -> str | None:
        """A sentence saying the index is incomplete (for query output and the page), or None."""
        if self.complete:
            return None
        return (f"the index holds {len(self)} video(s) but its build did not finish (index.json 'complete' is "
                "false: interrupted or still running); results miss the videos not encoded yet. Run "
                "`search.py index` again to finish it")

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def load(cls, index_dir: str | os.PathLike, use_faiss: bool | None = None) -> VideoIndex:
        """Load an index folder; ``use_faiss`` None uses FAISS when installed, False forces the torch search."""
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise IndexNotFoundError(f"--index {str(index_dir)!r}: no such folder")
        info = read_index_json(index_dir)
        embeddings, rows = read_embeddings(index_dir)
        if embeddings.shape[0] and embeddings.shape[1] != info["dim"]:
            raise _bad(index_dir / EMBEDDINGS_FILE,
                       f"holds {embeddings.shape[1]}-d vectors but index.json says dim={info['dim']}")
        if [r[0] for r in rows] != info["ids"]:
            raise _bad(index_dir / INDEX_JSON,
                       f"its 'ids' disagree with {EMBEDDINGS_FILE} (an interrupted write?); run `search.py index` again")
        use_faiss = faiss_available() if use_faiss is None else use_faiss
        if use_faiss and not faiss_available():
            raise IndexError_("use_faiss=True but faiss is not installed (pip install faiss-cpu)")
        faiss_index, approximate = None, None
        if use_faiss and len(rows):
            faiss_index, approximate = _load_faiss(index_dir, info, embeddings)
        elif info.get("approximate"):
            logger.info("%s: searching exactly with torch (faiss %s)", index_dir,
                        "not installed" if not faiss_available() else "disabled")
        index = cls(embeddings if len(rows) else torch.empty(0, info["dim"]), info["ids"], info["video_root"],
                    info["model"], faiss_index=faiss_index, approximate=approximate, info=info)
        if not index.complete:
            logger.warning("%s: %s", index_dir, index.incomplete_message())
        return index

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Trade speed for recall on an approximate index (ignored by an exact one)."""
        if self.faiss_index is not None:
            _set_faiss_search_params(self.faiss_index, nprobe, ef_search)

    def search(self, query_embeddings, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows for each query (Q, D): ``(scores (Q, k'), indices (Q, k'))``, ``k' = min(k, N)``,
        best first. An approximate index may find fewer than k' for a query: those slots hold index -1
        and score -inf."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise IndexError_(f"k must be a positive integer, got {k!r}")
        queries = _as_float32_matrix(query_embeddings)
        if queries.shape[1] != self.dim:
            raise IndexError_(
                f"query embeddings are {queries.shape[1]}-d but the index holds {self.dim}-d vectors "
                "(built with another model?)"
            )
        top = min(int(k), len(self))
        if top == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.faiss_index is not None:
            scores, indices = _faiss_search(self.faiss_index, queries, top)
            scores = np.where(indices < 0, -np.inf, scores).astype(np.float32)
            return scores, indices.astype(np.int64)
        return exact_search(self.embeddings, torch.from_numpy(queries), top)

    def hits(self, scores: np.ndarray, indices: np.ndarray) -> list[SearchHit]:
        """SearchHits of one query's row of ``search`` results (slots an approximate index left empty dropped)."""
        hits = []
        for score, index in zip(scores.tolist(), indices.tolist()):
            if index < 0:
                continue
            video_id = self.ids[index]
            hits.append(SearchHit(rank=len(hits) + 1, video_id=video_id,
                                  path=str(self.video_root / video_id), score=float(score)))
        return hits


def _load_faiss(index_dir: Path, info: dict, embeddings: torch.Tensor):
    """The saved FAISS index when it matches the embeddings; otherwise an exact one built now.

    ``faiss_file`` must name a file inside the index folder (a link out of it is refused); a file
    that FAISS cannot read is reported without its content (a tampered name could point anywhere).
    """
    faiss = _faiss()
    name = info.get("faiss_file")
    path = None
    if name:
        path = path_inside(index_dir, name)
        if path is None:
            raise _bad(index_dir / INDEX_JSON, f"field 'faiss_file' {name!r} resolves outside the index folder")
    if path is not None and path.is_file():
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:
            logger.warning("%s is not a readable FAISS index: searching with an exact index built now", path)
        else:
            if index.ntotal == embeddings.shape[0] and index.d == embeddings.shape[1]:
                params = info.get("search_params") or {}
                _set_faiss_search_params(index, params.get("nprobe"), params.get("ef_search"))
                return index, info.get("approximate")
            logger.warning("%s holds %d vectors of dim %d, the embeddings %s: rebuilding an exact index",
                           path, index.ntotal, index.d, tuple(embeddings.shape))
    return build_faiss_index(embeddings, None), None


class VideoSearcher:
    """The model (its text tower answers the queries) + processor + a loaded ``VideoIndex``."""

    def __init__(self, model, processor, index: VideoIndex, device: str | torch.device = "cpu"):
        dim = int(model.config.projection_dim)
        if dim != index.dim:
            raise IndexError_(
                f"the model makes {dim}-d embeddings but the index holds {index.dim}-d vectors "
                f"(it was built with {index.model!r}); query with that model"
            )
        self.model = model
        self.processor = processor
        self.index = index
        self.device = torch.device(device)

    @classmethod
    def from_index(cls, index_dir: str | os.PathLike, model: str | None = None, device: str = "cpu",
                   use_faiss: bool | None = None) -> VideoSearcher:
        """Load the index and its model (the one recorded in index.json unless ``model`` overrides it)."""
        index = VideoIndex.load(index_dir, use_faiss=use_faiss)
        loaded, processor = load_model(model or index.model, device)
        searcher = cls(loaded, processor, index, device)
        # Another model (or the recorded path now holding other weights) embeds texts in another space.
        if index.model_fingerprint and model_fingerprint(loaded, processor) != index.model_fingerprint:
            raise IndexError_(
                f"{Path(index_dir) / INDEX_JSON}: the model {model or index.model!r} is not the one that built this "
                f"index (field 'model_fingerprint' differs: other weights or preprocessing); query with the "
                f"model that built it ({index.model!r}), or index the videos again with this one"
            )
        return searcher

    @torch.no_grad()
    def encode_queries(self, texts: list[str]) -> torch.Tensor:
        """(Q, D) L2-normalised text embeddings."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.empty(0, self.index.dim)
        config = self.model.config
        max_length = config.max_text_length if config.text_encoder_type == "builtin" else None
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                                          return_tensors="pt")
        embeds = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                              attention_mask=tokens["attention_mask"].to(self.device))
        return F.normalize(embeds.float(), dim=-1).cpu()

    def query(self, text: str, k: int = 5) -> list[SearchHit]:
        return self.query_batch([text], k)[0]

    def query_batch(self, texts: list[str], k: int = 5) -> list[list[SearchHit]]:
        texts = list(texts)
        if not texts:
            return []
        scores, indices = self.index.search(self.encode_queries(texts), k)
        return [self.index.hits(s, i) for s, i in zip(scores, indices)]
