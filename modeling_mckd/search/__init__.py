"""Text-to-video search over a folder of videos: build an embedding index once, query it by text.

``build_index`` encodes every video file under a folder with a trained MCKD model (the student is
the fast choice) and writes an index folder:

* ``embeddings.safetensors``: tensor ``embeddings`` (N, D) float32, L2-normalised, one row per
  video in sorted id order; its metadata repeats the ids with each file's size and mtime, so the
  file alone says which rows it holds (resume trusts it).
* ``index.json``: the model reference and fingerprint, the video root, the ids, the dimension, the
  files that could not be read, the FAISS index kind and its knobs, and whether the run completed.
* ``index.faiss`` (when ``faiss`` is installed): ``IndexFlatIP`` (exact) or an approximate
  ``IndexIVFFlat`` / ``IndexHNSWFlat`` over the same vectors.

The code is split by role:

* :mod:`.index_format`: file names, errors, the checked readers of ``index.json`` and the embeddings;
* :mod:`.faiss_index`: the FAISS wrapper and the exact torch fallback;
* :mod:`.video_encoder`: model loading and fingerprint, video file listing, :class:`VideoEncoder`;
* :mod:`.building`: :func:`build_index` (resumable, atomic writes);
* :mod:`.searching`: :class:`VideoIndex` (load + search) and :class:`VideoSearcher` (text queries).

Everything is importable from ``modeling_mckd.search`` as before. See docs/search.md.
"""

from .building import IndexReport, build_index
from .faiss_index import (
    build_faiss_index,
    default_nlist,
    default_nprobe,
    exact_search,
    faiss_available,
)
from .index_format import (
    APPROXIMATE_KINDS,
    DEFAULT_DECODE_WORKERS,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_EF_SEARCH,
    DEFAULT_HNSW_M,
    EMBEDDINGS_FILE,
    FAISS_FILE,
    FAISS_THREADED_BATCH,
    INDEX_FORMAT,
    INDEX_JSON,
    INDEX_VERSION,
    VIDEO_EXTENSIONS,
    IndexError_,
    IndexNotFoundError,
    read_embeddings,
    read_index_json,
)
from .searching import SearchHit, VideoIndex, VideoSearcher
from .video_encoder import (
    VideoEncoder,
    audio_path_for,
    fuses_audio,
    list_video_files,
    load_model,
    model_fingerprint,
)

__all__ = [
    "APPROXIMATE_KINDS",
    "DEFAULT_DECODE_WORKERS",
    "DEFAULT_EF_CONSTRUCTION",
    "DEFAULT_EF_SEARCH",
    "DEFAULT_HNSW_M",
    "EMBEDDINGS_FILE",
    "FAISS_FILE",
    "FAISS_THREADED_BATCH",
    "INDEX_FORMAT",
    "INDEX_JSON",
    "INDEX_VERSION",
    "VIDEO_EXTENSIONS",
    "IndexError_",
    "IndexNotFoundError",
    "IndexReport",
    "SearchHit",
    "VideoEncoder",
    "VideoIndex",
    "VideoSearcher",
    "audio_path_for",
    "build_faiss_index",
    "build_index",
    "default_nlist",
    "default_nprobe",
    "exact_search",
    "faiss_available",
    "fuses_audio",
    "list_video_files",
    "load_model",
    "model_fingerprint",
    "read_embeddings",
    "read_index_json",
]
