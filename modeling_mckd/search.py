"""Text-to-video search over a folder of videos: build an embedding index once, query it by text.

``build_index`` encodes every video file under a folder with a trained MCKD model (the student is
the fast choice) and writes an index folder:

* ``embeddings.safetensors``: tensor ``embeddings`` (N, D) float32, L2-normalised, one row per
  video in sorted id order; its metadata repeats the ids with each file's size and mtime, so the
  file alone says which rows it holds (resume trusts it).
* ``index.json``: the model reference and fingerprint, the video root, the ids, the dimension, the
  files that could not be read, the FAISS index kind and its knobs.
* ``index.faiss`` (when ``faiss`` is installed): ``IndexFlatIP`` (exact) or an approximate
  ``IndexIVFFlat`` / ``IndexHNSWFlat`` over the same vectors.

Every file is written to a temporary name and moved into place (``os.replace``), in the order
embeddings -> faiss -> index.json, so an interrupted run leaves the previous complete state or a
newer one, never a torn file; a rerun repairs any disagreement between the three. ``VideoIndex``
loads a folder and searches it (FAISS when installed, else an exact torch matmul + top-k with the
same results); ``VideoSearcher`` adds the text tower to answer sentences. See docs/search.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .processing_mckd import pad_and_stack_sequences
from .training import fuses_audio
from .video_io import VideoDecodeError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")
INDEX_JSON = "index.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
FAISS_FILE = "index.faiss"
INDEX_FORMAT = "mckd-video-index"
INDEX_VERSION = 1
APPROXIMATE_KINDS = ("ivf", "hnsw")
DEFAULT_DECODE_WORKERS = 2  # decoding threads; more gave little on 2 cores (docs/search.md)
FAISS_THREADED_BATCH = 20  # query batches below this size search single-threaded (see _faiss_search)
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128


class IndexError_(ValueError):
    """An index folder, its inputs or its use is wrong; the message names the file or field."""


class IndexNotFoundError(IndexError_, FileNotFoundError):
    """A folder or file the index needs does not exist."""


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchHit:
    """One search result. ``score`` is the cosine similarity (higher is better), ``rank`` 1-based."""

    rank: int
    video_id: str
    path: str
    score: float

    def to_dict(self) -> dict:
        return {"rank": self.rank, "video_id": self.video_id, "path": self.path, "score": self.score}


@dataclass
class IndexReport:
    """What one ``build_index`` run did."""

    index_dir: str
    num_videos: int  # rows in the index after this run
    dim: int
    encoded: list[str] = field(default_factory=list)  # ids encoded by this run (new or changed files)
    skipped: int = 0  # files already in the index, unchanged, not re-encoded
    removed: list[str] = field(default_factory=list)  # ids dropped because their file is gone
    failed: dict[str, str] = field(default_factory=dict)  # id -> why it could not be read
    approximate: str | None = None
    faiss_written: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"{self.num_videos} video(s) indexed in {self.index_dir} (dim {self.dim}): "
            f"{len(self.encoded)} encoded, {self.skipped} unchanged, {len(self.removed)} removed, "
            f"{len(self.failed)} unreadable; {self.seconds:.1f} s"
        )
        kind = self.approximate or "exact"
        text += f"; faiss {kind} index written" if self.faiss_written else "; no faiss index (exact torch search)"
        return text


# --------------------------------------------------------------------------------------------
# Small helpers: atomic writes, faiss, model loading
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` then rename over ``path``: readers see the old or the new file, never half."""
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers create 0600 files; index files are plain data
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _write_json(path: Path, data: dict) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8"))


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


def _resolve_model_ref(model: str | os.PathLike) -> str:
    """A local folder by its absolute path (so a later query from elsewhere finds it), a Hub id as is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


def _looks_like_local_path(model: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else (./x, /abs, ~/x, a/b/c) is meant as a folder
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def load_model(model: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(MCKDModel in eval mode on device, MCKDProcessor)`` from a saved folder or a Hub id."""
    from .modeling_mckd import MCKDModel
    from .processing_mckd import MCKDProcessor

    ref = _resolve_model_ref(model)
    if not Path(ref).is_dir() and _looks_like_local_path(str(model)):
        raise IndexNotFoundError(f"model folder {str(model)!r}: no such folder")
    try:
        loaded = MCKDModel.from_pretrained(ref)
        processor = MCKDProcessor.from_pretrained(ref)
    except OSError as error:
        raise IndexNotFoundError(f"cannot load the model {str(model)!r}: {error}") from error
    return loaded.to(device).eval(), processor


def model_fingerprint(model, processor) -> str:
    """SHA-256 of everything that decides a video's embedding: the weights and the frame preprocessing.

    Indexes record it so that resuming (or querying) with another model is caught, whatever path
    or Hub id the model was loaded from.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    vp = processor.video_processor
    frames = {key: getattr(vp, key, None) for key in (
        "num_frames", "size", "crop_size", "image_mean", "image_std", "do_rescale", "rescale_factor",
        "do_normalize", "input_mode")}
    digest.update(json.dumps(frames, sort_keys=True).encode())
    digest.update(json.dumps(list(model.config.fuse_modalities or [])).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Finding and encoding video files
# --------------------------------------------------------------------------------------------


def list_video_files(root: str | os.PathLike) -> list[str]:
    """Ids (posix paths relative to ``root``) of the video files under it, sorted; hidden entries skipped."""
    root = Path(root)
    ids = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                ids.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(ids)


def _file_signature(path: Path) -> list[int]:
    stat = path.stat()
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def audio_path_for(audio_dir: Path, video_id: str) -> Path | None:
    """``<audio_dir>/<sub/stem>.npy`` (mirroring subfolders), else ``<audio_dir>/<stem>.npy``, else None."""
    relative = Path(video_id).with_suffix(".npy")
    for candidate in (audio_dir / relative, audio_dir / relative.name):
        if candidate.is_file():
            return candidate
    return None


class VideoEncoder:
    """Decodes video files with the processor (uniform frames, eval mode) and embeds them in batches.

    A file that cannot be read (corrupt, truncated, not a video, missing audio features for a
    model that fuses audio) is reported in ``failed`` and never stops the others.
    """

    def __init__(self, model, processor, audio_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", num_workers: int = DEFAULT_DECODE_WORKERS):
        if processor.video_processor.input_mode != "pixels":
            raise IndexError_(
                "this model reads pre-extracted frame features (video_input='features'); indexing video "
                "files needs a model that reads pixels"
            )
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        self.num_workers = int(num_workers)
        self.audio_dir = Path(audio_dir) if audio_dir is not None else None
        self.fuses_audio = fuses_audio(model)
        if self.fuses_audio:
            if self.audio_dir is None:
                raise IndexError_(
                    "this model fuses audio into its video embeddings (config.fuse_modalities="
                    f"{list(model.config.fuse_modalities)}): pass --audio_dir (audio_dir=) with one "
                    "<video stem>.npy file of audio features per video"
                )
            if not self.audio_dir.is_dir():
                raise IndexNotFoundError(f"--audio_dir {str(self.audio_dir)!r} is not a folder")
            self.audio_feature_dim = int(model.config.extra_modalities["audio"]["feature_dim"])
        elif self.audio_dir is not None:
            logger.info("the model does not fuse audio: --audio_dir %s is not used", self.audio_dir)

    def audio_file(self, video_id: str) -> Path | None:
        return audio_path_for(self.audio_dir, video_id) if self.fuses_audio else None

    def load_item(self, path: Path, video_id: str) -> dict:
        """Decode and preprocess one clip (and its audio); raises on any problem with the file."""
        video_processor = self.processor.video_processor
        frames = video_processor.load_frames(str(path), training=False)
        item = {"clip": video_processor.preprocess_frames(frames, training=False)}
        if self.fuses_audio:
            audio_file = self.audio_file(video_id)
            if audio_file is None:
                raise FileNotFoundError(f"no audio features {Path(video_id).stem}.npy in {self.audio_dir}")
            audio = np.load(audio_file, allow_pickle=False)  # never unpickle: the file may be untrusted
            if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] != self.audio_feature_dim:
                raise ValueError(
                    f"audio features {audio_file} have shape {audio.shape}, expected (T, {self.audio_feature_dim})"
                )
            item["audio"] = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        return item

    @torch.no_grad()
    def embed_items(self, items: Sequence[dict]) -> torch.Tensor:
        """(B, D) float32 L2-normalised embeddings of preprocessed items, on CPU."""
        clips, mask = self.processor.video_processor.pad_and_stack([item["clip"] for item in items])
        inputs = {"pixel_values_videos": clips.to(self.device), "video_mask": mask.to(self.device)}
        if self.fuses_audio:
            audio, audio_mask = pad_and_stack_sequences([item["audio"] for item in items])
            inputs["audio_features"], inputs["audio_mask"] = audio.to(self.device), audio_mask.to(self.device)
        return F.normalize(self.model.get_video_features(**inputs).float(), dim=-1).cpu()

    def try_load(self, path: Path, video_id: str) -> tuple[dict | None, str | None]:
        """``(item, None)``, or ``(None, why)`` for a file that cannot be used."""
        try:
            return self.load_item(path, video_id), None
        except VideoDecodeError as error:
            return None, f"cannot decode: {error.reason}"
        except Exception as error:  # noqa: BLE001 - a bad file must never stop the run
            return None, f"{type(error).__name__}: {error}"

    def iter_batches(self, files: Sequence[tuple[str, Path]], batch_size: int):
        """Yield ``(ids, embeddings (B, D), failed {id: reason})`` per batch of ``files`` ``[(id, path)]``.

        With ``num_workers`` > 0, threads decode the next batch while the model embeds this one
        (PyAV and torch release the GIL: about 2x the clips/s on 2 cores); at most two batches of
        decoded clips are held in memory.
        """
        batches = [files[start : start + batch_size] for start in range(0, len(files), batch_size)]
        if self.num_workers <= 0:
            for batch in batches:
                yield self._embed_batch(batch, [self.try_load(path, video_id) for video_id, path in batch])
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="decode") as pool:
            def submit(batch):
                return [pool.submit(self.try_load, path, video_id) for video_id, path in batch]

            upcoming = submit(batches[0]) if batches else []
            for number, batch in enumerate(batches):
                current = upcoming
                upcoming = submit(batches[number + 1]) if number + 1 < len(batches) else []
                yield self._embed_batch(batch, [future.result() for future in current])

    def _embed_batch(self, batch, loaded) -> tuple[list[str], torch.Tensor, dict[str, str]]:
        ok_ids, items, failed = [], [], {}
        for (video_id, _), (item, reason) in zip(batch, loaded):
            if item is None:
                failed[video_id] = reason
            else:
                ok_ids.append(video_id)
                items.append(item)
        embeddings = self.embed_items(items) if items else torch.empty(0, self.model.config.projection_dim)
        return ok_ids, embeddings, failed

    def encode(self, paths: Sequence[str | os.PathLike], batch_size: int = 16) -> tuple[torch.Tensor, dict[str, str]]:
        """Embeddings of the readable ``paths`` (in order, unreadable ones left out) and ``{path: reason}``."""
        files = [(str(p), Path(p)) for p in paths]
        chunks, failed = [], {}
        for _, embeddings, bad in self.iter_batches(files, batch_size):
            chunks.append(embeddings)
            failed.update(bad)
        return (torch.cat(chunks) if chunks else torch.empty(0, self.model.config.projection_dim)), failed


# --------------------------------------------------------------------------------------------
# Reading and validating an index folder
# --------------------------------------------------------------------------------------------


def _bad(path: Path, message: str) -> IndexError_:
    return IndexError_(f"{path}: {message}")


def _require(data: dict, key: str, kind, path: Path, optional: bool = False):
    if key not in data:
        if optional:
            return None
        raise _bad(path, f"missing field {key!r}")
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _bad(path, f"field {key!r} must be {names}, got {type(value).__name__}")
    return value


def read_index_json(index_dir: str | os.PathLike) -> dict:
    """Parse and validate ``index.json`` (plain JSON: never eval'd or unpickled)."""
    path = Path(index_dir) / INDEX_JSON
    if not path.is_file():
        raise IndexNotFoundError(f"{path}: no such file; is {Path(index_dir)} an index folder written by `search.py index`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad(path, f"not valid JSON ({error}); delete the folder and index again") from error
    if not isinstance(data, dict):
        raise _bad(path, f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != INDEX_FORMAT:
        raise _bad(path, f"field 'format' must be {INDEX_FORMAT!r}, got {data.get('format')!r}")
    version = _require(data, "version", int, path)
    if version > INDEX_VERSION:
        raise _bad(path, f"index version {version} is newer than this code understands ({INDEX_VERSION})")
    _require(data, "model", str, path)
    _require(data, "model_fingerprint", str, path)
    _require(data, "video_root", str, path)
    _require(data, "audio_dir", str, path, optional=True)
    dim = _require(data, "dim", int, path)
    if dim <= 0:
        raise _bad(path, f"field 'dim' must be positive, got {dim}")
    ids = _require(data, "ids", list, path)
    if not all(isinstance(i, str) for i in ids):
        raise _bad(path, "field 'ids' must be a list of strings")
    failed = _require(data, "failed", list, path)
    for entry in failed:
        if not isinstance(entry, dict) or not isinstance(entry.get("video_id"), str) or not isinstance(entry.get("reason"), str):
            raise _bad(path, "field 'failed' must be a list of {'video_id': str, 'reason': str, ...}")
    approximate = _require(data, "approximate", str, path, optional=True)
    if approximate is not None and approximate not in APPROXIMATE_KINDS:
        raise _bad(path, f"field 'approximate' must be null, 'ivf' or 'hnsw', got {approximate!r}")
    search_params = _require(data, "search_params", dict, path, optional=True) or {}
    for key, value in search_params.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _bad(path, f"field 'search_params.{key}' must be a positive integer, got {value!r}")
    _require(data, "faiss_file", str, path, optional=True)
    return data


def read_embeddings(index_dir: str | os.PathLike) -> tuple[torch.Tensor, list[list]]:
    """``(embeddings (N, D) float32, rows [[id, size, mtime_ns, audio_size, audio_mtime_ns], ...])``."""
    path = Path(index_dir) / EMBEDDINGS_FILE
    if not path.is_file():
        raise IndexNotFoundError(f"{path}: no such file; the index folder is incomplete, run `search.py index` again")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            embeddings = handle.get_tensor("embeddings") if "embeddings" in set(handle.keys()) else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _bad(path, f"not a readable safetensors file ({error})") from error
    if embeddings is None or embeddings.dim() != 2:
        raise _bad(path, "expected a 2-D tensor named 'embeddings'")
    try:
        rows = json.loads(metadata.get("videos", ""))
    except json.JSONDecodeError as error:
        raise _bad(path, f"metadata 'videos' is not valid JSON ({error})") from error
    if not isinstance(rows, list) or not all(
        isinstance(r, list) and len(r) == 5 and isinstance(r[0], str) for r in rows
    ):
        raise _bad(path, "metadata 'videos' must be a list of [id, size, mtime_ns, audio_size, audio_mtime_ns]")
    if len(rows) != embeddings.shape[0]:
        raise _bad(path, f"metadata lists {len(rows)} videos but the tensor has {embeddings.shape[0]} rows")
    return embeddings.float(), rows


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


class _IndexState:
    """The rows being built: id -> (embedding, signature), written sorted by id."""

    def __init__(self, dim: int):
        self.dim = dim
        self.vectors: dict[str, torch.Tensor] = {}
        self.signatures: dict[str, list] = {}

    def put(self, video_id: str, vector: torch.Tensor, signature: list) -> None:
        self.vectors[video_id] = vector
        self.signatures[video_id] = signature

    def drop(self, video_id: str) -> None:
        self.vectors.pop(video_id, None)
        self.signatures.pop(video_id, None)

    def ids(self) -> list[str]:
        return sorted(self.vectors)

    def matrix(self, ids: list[str]) -> torch.Tensor:
        if not ids:
            return torch.empty(0, self.dim)
        return torch.stack([self.vectors[i] for i in ids]).float().contiguous()


def build_index(
    model: str | os.PathLike,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 16,
    approximate: str | None = None,
    audio_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = DEFAULT_HNSW_M,
    ef_construction: int = DEFAULT_EF_CONSTRUCTION,
    ef_search: int = DEFAULT_EF_SEARCH,
    save_every: int = 20,
    use_faiss: bool | None = None,
    num_workers: int = DEFAULT_DECODE_WORKERS,
) -> IndexReport:
    """Encode every video file under ``videos`` with ``model`` into the index folder ``out``.

    Resumable: a file already in ``out`` with the same id (relative path), size and mtime (and the
    same audio file, for a model that fuses audio) is not encoded again; changed files are
    re-encoded, vanished ones dropped, and files that failed before are tried again. Progress is
    saved every ``save_every`` batches. ``approximate`` is None (exact inner product), "ivf"
    (``nlist`` cells, ``nprobe`` probed at query time) or "hnsw" (``hnsw_m`` links, ``ef_construction``,
    ``ef_search``). ``use_faiss`` None writes ``index.faiss`` when faiss is installed. ``num_workers``
    threads decode clips ahead of the model (0: decode in the calling thread).
    """
    started = time.perf_counter()
    if approximate is not None and approximate not in APPROXIMATE_KINDS:
        raise IndexError_(f"approximate must be None, 'ivf' or 'hnsw', got {approximate!r}")
    for name, value in (("batch_size", batch_size), ("save_every", save_every), ("hnsw_m", hnsw_m),
                        ("ef_construction", ef_construction), ("ef_search", ef_search),
                        ("nlist", nlist), ("nprobe", nprobe)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise IndexError_(f"{name} must be a positive integer, got {value!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise IndexError_(f"num_workers must be an integer >= 0, got {num_workers!r}")
    use_faiss = faiss_available() if use_faiss is None else use_faiss
    if use_faiss and not faiss_available():
        raise IndexError_("use_faiss=True but faiss is not installed (pip install faiss-cpu)")
    root = Path(videos).expanduser()
    if not root.is_dir():
        raise IndexNotFoundError(f"--videos {str(videos)!r}: no such folder")
    root = root.resolve()
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise IndexError_(f"--out {str(out)!r} exists and is not a folder")
    ids = list_video_files(root)
    if not ids:
        raise IndexError_(f"--videos {str(root)!r}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in it")

    # Cheap checks first: a corrupt or foreign index fails before the model is loaded.
    previous = read_index_json(out) if (out / INDEX_JSON).exists() else None
    loaded_model, processor = load_model(model, device)
    fingerprint = model_fingerprint(loaded_model, processor)
    dim = int(loaded_model.config.projection_dim)
    encoder = VideoEncoder(loaded_model, processor, audio_dir=audio_dir, device=device, num_workers=num_workers)
    settings = _IndexSettings(
        model=_resolve_model_ref(model), fingerprint=fingerprint, config=loaded_model.config, root=root,
        audio_dir=str(Path(audio_dir).resolve()) if audio_dir is not None and encoder.fuses_audio else None,
        approximate=approximate, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction,
        ef_search=ef_search, use_faiss=use_faiss,
    )

    state = _IndexState(dim)
    if previous is not None:
        _check_resume(out, previous, settings.model, fingerprint, dim, root)
        if (out / EMBEDDINGS_FILE).exists():
            embeddings, rows = read_embeddings(out)
            if embeddings.shape[1] != dim:
                raise _bad(out / EMBEDDINGS_FILE, f"holds {embeddings.shape[1]}-d vectors, the model makes {dim}-d ones")
            for row, vector in zip(rows, embeddings):
                state.put(row[0], vector, row[1:])

    present = set(ids)
    removed = [i for i in state.ids() if i not in present]
    for video_id in removed:
        state.drop(video_id)
    pending, skipped = [], 0
    for video_id in ids:
        signature = _signature(root, video_id, encoder)
        if state.signatures.get(video_id) == signature:
            skipped += 1
        else:
            pending.append((video_id, signature))
    if skipped:
        logger.info("%d file(s) already indexed and unchanged: not encoded again", skipped)

    report = IndexReport(index_dir=str(out), num_videos=0, dim=dim, skipped=skipped, removed=removed)
    out.mkdir(parents=True, exist_ok=True)
    failed: dict[str, tuple[str, list]] = {}
    if pending:
        from tqdm.auto import tqdm

        signatures = dict(pending)
        files = [(video_id, root / video_id) for video_id, _ in pending]
        bar = tqdm(total=len(files), desc="encoding videos", unit="clip", disable=not progress)
        batches_since_save = 0
        try:
            for ok_ids, embeddings, bad in encoder.iter_batches(files, batch_size):
                for video_id, vector in zip(ok_ids, embeddings):
                    state.put(video_id, vector, signatures[video_id])
                    report.encoded.append(video_id)
                for video_id, reason in bad.items():
                    state.drop(video_id)  # a file that changed into garbage must not keep its old row
                    failed[video_id] = (reason, signatures[video_id])
                    logger.debug("skipping unreadable %s: %s", video_id, reason)  # listed in the report
                bar.update(len(ok_ids) + len(bad))
                if bad:
                    bar.set_postfix(unreadable=len(failed))
                batches_since_save += 1
                if batches_since_save >= save_every:
                    _save(out, state, failed, settings, complete=False)
                    batches_since_save = 0
        except KeyboardInterrupt:
            _save(out, state, failed, settings, complete=False)  # keep the work: the next run resumes here
            raise
        finally:
            bar.close()
    # Nothing changed and the faiss settings are the same: keep the faiss file instead of rebuilding it.
    keep = previous if not pending and not removed and _same_faiss(previous, settings, out) else None
    faiss_file, kind = _save(out, state, failed, settings, complete=True, keep=keep)
    report.faiss_written = faiss_file is not None
    report.approximate = kind
    report.failed = {video_id: reason for video_id, (reason, _) in sorted(failed.items())}
    report.num_videos = len(state.vectors)
    report.seconds = time.perf_counter() - started
    return report


@dataclass
class _IndexSettings:
    model: str
    fingerprint: str
    config: Any
    root: Path
    audio_dir: str | None
    approximate: str | None
    nlist: int | None
    nprobe: int | None
    hnsw_m: int
    ef_construction: int
    ef_search: int
    use_faiss: bool

    def requested_params(self) -> dict[str, int | None]:
        """The knobs asked for (None: left to the default that building the index picks)."""
        if self.approximate == "ivf":
            return {"nlist": self.nlist, "nprobe": self.nprobe}
        if self.approximate == "hnsw":
            return {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        return {}

    def search_params(self, index) -> dict[str, int]:
        """The knobs of the built ``index``, as index.json records them."""
        params = self.requested_params()
        if self.approximate == "ivf":
            params["nlist"] = int(index.nlist)
            params["nprobe"] = int(self.nprobe or default_nprobe(params["nlist"]))
        return params


def _same_faiss(previous: dict | None, settings: _IndexSettings, out: Path) -> bool:
    """Whether the faiss file of a complete previous run is what these settings would build."""
    if previous is None or not previous.get("complete") or not settings.use_faiss:
        return False
    if not previous.get("faiss_file") or not (out / previous["faiss_file"]).is_file():
        return False
    if previous.get("approximate") != settings.approximate:
        return False
    params = previous.get("search_params") or {}
    return all(value is None or params.get(key) == value for key, value in settings.requested_params().items())


def _signature(root: Path, video_id: str, encoder: VideoEncoder) -> list:
    size, mtime = _file_signature(root / video_id)
    audio = encoder.audio_file(video_id)
    audio_size, audio_mtime = _file_signature(audio) if audio is not None else (None, None)
    return [size, mtime, audio_size, audio_mtime]


def _check_resume(out: Path, previous: dict, model_ref: str, fingerprint: str, dim: int, root: Path) -> None:
    path = out / INDEX_JSON
    if previous["model_fingerprint"] != fingerprint:
        raise _bad(
            path,
            f"this index was built with model {previous['model']!r}; the model given ({model_ref!r}) is a "
            "different one (other weights or preprocessing: field 'model_fingerprint'). Use the same model, "
            "or a new --out folder for this one",
        )
    if previous["dim"] != dim:
        raise _bad(path, f"field 'dim' is {previous['dim']} but the model makes {dim}-d embeddings")
    recorded = Path(previous["video_root"])
    if recorded != root and recorded.is_dir():
        raise _bad(
            path,
            f"this index covers the folder {str(recorded)!r} (field 'video_root'), not {str(root)!r}; use a "
            "new --out folder for another collection",
        )
    if recorded != root:
        logger.info("the indexed folder moved from %s to %s: keeping its entries", recorded, root)


def _save(out: Path, state: _IndexState, failed: dict, settings: _IndexSettings, *, complete: bool,
          keep: dict | None = None) -> tuple[str | None, str | None]:
    """Write embeddings, then faiss (final save only), then index.json, each atomically.

    ``keep``: the previous index.json whose faiss file still matches (reused, not rebuilt).
    Returns (faiss file name or None, approximate kind of that file).
    """
    ids = state.ids()
    matrix = state.matrix(ids)
    rows = [[i, *state.signatures[i]] for i in ids]
    _atomic_write(out / EMBEDDINGS_FILE, lambda tmp: save_file(
        {"embeddings": matrix}, str(tmp), metadata={"videos": json.dumps(rows), "format": INDEX_FORMAT}))
    faiss_file, search_params = None, {}
    if keep is not None:
        faiss_file, search_params = keep["faiss_file"], keep.get("search_params") or {}
    elif complete and settings.use_faiss and ids:
        index = build_faiss_index(matrix, settings.approximate, nlist=settings.nlist, hnsw_m=settings.hnsw_m,
                                  ef_construction=settings.ef_construction)
        faiss = _faiss()
        _atomic_write(out / FAISS_FILE, lambda tmp: faiss.write_index(index, str(tmp)))
        faiss_file, search_params = FAISS_FILE, settings.search_params(index)
    elif complete and (out / FAISS_FILE).exists():
        (out / FAISS_FILE).unlink()  # stale: it no longer matches the embeddings
    config = settings.config
    data = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "model": settings.model,
        "model_fingerprint": settings.fingerprint,
        "model_info": {"role": config.role, "projection_dim": int(config.projection_dim),
                       "num_frames": int(config.num_frames), "fuse_modalities": list(config.fuse_modalities or [])},
        "video_root": str(settings.root),
        "audio_dir": settings.audio_dir,
        "dim": state.dim,
        "num_videos": len(ids),
        "ids": ids,
        "failed": [{"video_id": i, "reason": reason, "signature": sig} for i, (reason, sig) in sorted(failed.items())],
        "approximate": settings.approximate,
        "search_params": search_params,
        # written while encoding (complete=False) the embeddings run ahead of any faiss file: none is named
        "faiss_file": faiss_file,
        "complete": complete,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json(out / INDEX_JSON, data)
    return faiss_file, settings.approximate if faiss_file else None


# --------------------------------------------------------------------------------------------
# Loading and searching
# --------------------------------------------------------------------------------------------


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
        if self.embeddings.shape[0] != len(self.ids):
            raise IndexError_(f"{self.embeddings.shape[0]} embeddings but {len(self.ids)} ids")
        self.video_root = Path(video_root)
        self.model = model
        self.faiss_index = faiss_index
        self.approximate = approximate
        self.info = info or {}
        self.failed: list[dict] = list(self.info.get("failed", []))
        self.model_fingerprint: str | None = self.info.get("model_fingerprint")

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
        return cls(embeddings if len(rows) else torch.empty(0, info["dim"]), info["ids"], info["video_root"],
                   info["model"], faiss_index=faiss_index, approximate=approximate, info=info)

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


def _load_faiss(index_dir: Path, info: dict, embeddings: torch.Tensor):
    """The saved FAISS index when it matches the embeddings; otherwise an exact one built now."""
    faiss = _faiss()
    name = info.get("faiss_file")
    path = index_dir / name if name else None
    if path is not None and path.is_file():
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            logger.warning("%s unreadable (%s): searching with an exact index built now", path, error)
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
        if model is not None and index.model_fingerprint and model_fingerprint(loaded, processor) != index.model_fingerprint:
            logger.warning("--model %s is not the model that built %s (%s): scores may be meaningless",
                           model, index_dir, index.model)
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


__all__ = [
    "APPROXIMATE_KINDS",
    "VIDEO_EXTENSIONS",
    "IndexError_",
    "IndexNotFoundError",
    "IndexReport",
    "SearchHit",
    "VideoEncoder",
    "VideoIndex",
    "VideoSearcher",
    "build_faiss_index",
    "build_index",
    "exact_search",
    "faiss_available",
    "list_video_files",
    "load_model",
    "model_fingerprint",
]
