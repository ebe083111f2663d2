"""From a model and a folder of video files to embeddings: model loading and fingerprint, file listing,
and :class:`VideoEncoder` (decoding threads ahead of the model, unreadable files reported, not fatal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import process_sampled
from ..encoding import embed_processed_videos, fuses_audio
from ..processing_mckd import load_feature_file
from ..video_io import VideoDecodeError
from .index_format import DEFAULT_DECODE_WORKERS, VIDEO_EXTENSIONS, IndexError_, IndexNotFoundError

logger = logging.getLogger(__name__)


def _resolve_model_ref(model: str | os.PathLike) -> str:
    """A local folder by its absolute path (so a later query from elsewhere finds it), a Hub id as is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else str(model)


def _looks_like_local_path(model: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else (./x, /abs, ~/x, a/b/c) is meant as a folder
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def load_model(model: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(MCKDModel in eval mode on device, MCKDProcessor)`` from a saved folder or a Hub id."""
    from ..modeling_mckd import MCKDModel
    from ..processing_mckd import MCKDProcessor

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
        """Decode and preprocess one clip (and its audio) as evaluation does; raises on any problem with the file."""
        frames = self.processor.video_processor.load_frames(str(path), training=False)
        audio = None
        if self.fuses_audio:
            audio_file = self.audio_file(video_id)
            if audio_file is None:
                raise FileNotFoundError(f"no audio features {Path(video_id).stem}.npy in {self.audio_dir}")
            audio = load_feature_file(audio_file, feature_dim=self.audio_feature_dim)
        # per clip, in the decoding thread, so that a file that cannot be preprocessed fails alone
        return process_sampled(self.processor, frames, audio, training=False, rng=None)

    def embed_items(self, items: Sequence[dict]) -> torch.Tensor:
        """(B, D) float32 L2-normalised embeddings of preprocessed items, on CPU: `encoding.embed_processed_videos`,
        normalised again only for a model that does not normalise its embeddings (the index searches by inner product)."""
        embeddings = embed_processed_videos(self.model, self.processor, list(items), self.device)
        return embeddings if self.model.config.normalize_embeddings else F.normalize(embeddings, dim=-1)

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

