"""Building and resuming an index folder (``search.py index``).

Every file is written to a temporary name and moved into place (``os.replace``), in the order
embeddings -> faiss -> index.json, so an interrupted run leaves the previous complete state or a
newer one, never a torn file; a rerun repairs any disagreement between the three.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..output_guard import check_output_dir
from .faiss_index import _faiss, build_faiss_index, default_nprobe, faiss_available
from .index_format import (
    APPROXIMATE_KINDS,
    DEFAULT_DECODE_WORKERS,
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_EF_SEARCH,
    DEFAULT_HNSW_M,
    EMBEDDINGS_FILE,
    FAISS_FILE,
    INDEX_FORMAT,
    INDEX_JSON,
    INDEX_VERSION,
    VIDEO_EXTENSIONS,
    IndexError_,
    IndexNotFoundError,
    _atomic_write,
    _bad,
    _write_json,
    read_embeddings,
    read_index_json,
)
from .video_encoder import (
    VideoEncoder,
    _file_signature,
    _resolve_model_ref,
    list_video_files,
    load_model,
    model_fingerprint,
)

logger = logging.getLogger(__name__)

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


def _holds_index_json(folder: Path) -> bool:
    # read_index_json then checks that it is really ours (format field) before anything is written
    return (folder / INDEX_JSON).is_file()


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
    # Never write into the current directory, home, an input, or a folder of someone else's files.
    model_inputs = [model] if Path(model).expanduser().exists() else []
    out = check_output_dir(out, is_own=_holds_index_json, inputs=[root, audio_dir, *model_inputs], what="--out",
                           expected="a new or empty folder, or an index folder written by `search.py index`")
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

