"""A frame cache: each clip's frames decoded once, resized, and stored compressed on disk.

Built once per dataset and resolution (``python -m modeling_mckd.frame_cache --dataset DIR --size 224
--out CACHE``), then used by every `ClipStore` given it (``frame_cache=CACHE``, or the ``MCKD_FRAME_CACHE``
environment variable): training, evaluation and the teacher's caches read the cached frames instead of
decoding the source. Frames are resized so their shortest side is ``size`` (the model's image size: its
processor then skips the resize) and kept at ``fps`` frames per second (0: every frame).

Layout: ``CACHE/manifest.json`` (settings, and per clip its source path, byte size and mtime, frame
count and file) and ``CACHE/clips/<key>.npz``, one compressed uint8 array per frame (``f000000``, ...), so a
sampled read decompresses only the frames it needs. The build is resumable: a clip whose entry matches its
source is skipped, a stale one (source size or mtime changed) is rebuilt. Reading a stale entry is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .video_io import VideoDecodeError, frame_index, read_frames

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class StaleFrameCacheError(ValueError):
    """A cached clip no longer matches its source file (size or mtime changed)."""


def resize_shortest_side(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 with the shortest side ``size``: the resize `MCKDVideoProcessor` does."""
    height, width = frames.shape[1:3]
    if min(height, width) == size:
        return frames
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    pixels = F.interpolate(pixels, size=new_size, mode="bilinear", align_corners=False, antialias=True)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def _source_stamp(path: str) -> dict:
    stat = os.stat(path)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _clip_key(path: str) -> str:
    # unique per source path, readable in a listing
    digest = hashlib.sha1(path.encode()).hexdigest()[:12]
    return f"{Path(path).stem[:40]}-{digest}"


def cached_positions(num_source: int, source_fps: float | None, fps: float) -> np.ndarray:
    """Which source frames a cache at ``fps`` keeps: every frame for fps 0 (or an unknown source rate), else
    the frame nearest each 1/fps step (at least one)."""
    if fps <= 0 or not source_fps or fps >= source_fps:
        return np.arange(num_source, dtype=np.int64)
    count = max(1, int(np.floor(num_source * fps / source_fps)))
    return np.minimum(np.round(np.arange(count) * source_fps / fps).astype(np.int64), num_source - 1)


@dataclass
class CachedClip:
    """One clip of the cache: ``num_frames`` frames in ``file``."""

    file: Path
    num_frames: int

    def frames(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_frames):
            raise VideoDecodeError(self.file, f"frame {int(indices.max())} requested, the cache holds {self.num_frames}")
        try:
            with np.load(self.file, allow_pickle=False) as archive:
                unique = {int(i): archive[f"f{int(i):06d}"] for i in np.unique(indices)}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise VideoDecodeError(self.file, f"the cached frames cannot be read ({error})") from error
        return np.stack([unique[int(i)] for i in indices])


@dataclass
class FrameCache:
    """A built cache (see the module docstring); `entry(path)` is a clip's `CachedClip`, or None if not cached."""

    root: Path
    size: int
    fps: float
    clips: dict[str, dict] = field(default_factory=dict)
    check_sources: bool = True

    @classmethod
    def open(cls, root: str | os.PathLike) -> FrameCache:
        root = Path(root)
        manifest = root / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: no frame cache here (build one with "
                                    f"`python -m modeling_mckd.frame_cache --dataset DIR --size N --out {root}`)")
        try:
            data = json.loads(manifest.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{manifest}: not valid JSON ({error})") from error
        for name, kind in (("version", int), ("size", int), ("fps", (int, float)), ("clips", dict)):
            if not isinstance(data.get(name), kind):
                raise ValueError(f"{manifest}: field `{name}` must be a {getattr(kind, '__name__', 'number')}, "
                                 f"got {data.get(name)!r}")
        if data["version"] != FORMAT_VERSION:
            raise ValueError(f"{manifest}: format version {data['version']}, this code reads {FORMAT_VERSION}")
        return cls(root=root, size=data["size"], fps=float(data["fps"]), clips=data["clips"])

    def entry(self, path) -> CachedClip | None:
        source = os.path.abspath(os.fspath(path))
        record = self.clips.get(source)
        if record is None:
            return None
        if self.check_sources and os.path.exists(source) and _source_stamp(source) != record["source"]:
            raise StaleFrameCacheError(
                f"frame cache {self.root}: {source} changed since it was cached (size/mtime {record['source']} -> "
                f"{_source_stamp(source)}); rebuild it with `python -m modeling_mckd.frame_cache ... --out {self.root}` "
                "(only changed clips are redone)"
            )
        return CachedClip(self.root / "clips" / record["file"], int(record["frames"]))

    def save(self) -> None:
        # written whole to a temporary file and renamed, so an interrupted build leaves a readable manifest
        manifest = self.root / MANIFEST
        temporary = manifest.with_suffix(".tmp")
        temporary.write_text(json.dumps({"version": FORMAT_VERSION, "size": self.size, "fps": self.fps,
                                         "clips": self.clips}, indent=1))
        os.replace(temporary, manifest)


def _source_fps(path: str) -> float | None:
    import av

    with av.open(path) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else None


def cache_clip(cache: FrameCache, source: str) -> dict:
    """Decode, resize and write one clip; returns its manifest record."""
    stamp = _source_stamp(source)
    index = frame_index(source)
    total = len(index) if index is not None else len(read_frames(source))
    positions = cached_positions(total, _source_fps(source), cache.fps)
    key = _clip_key(source)
    target = cache.root / "clips" / f"{key}.npz"
    temporary = target.with_name(f"{key}.tmp.npz")
    arrays = {}
    # a few frames at a time: memory stays bounded by the chunk, whatever the clip's length
    for start in range(0, len(positions), 32):
        chunk = resize_shortest_side(read_frames(source, positions[start:start + 32], index=index), cache.size)
        arrays.update({f"f{start + i:06d}": frame for i, frame in enumerate(chunk)})
    np.savez_compressed(temporary, **arrays)
    os.replace(temporary, target)
    return {"source": stamp, "file": target.name, "frames": int(len(positions)), "source_frames": int(total)}


def build_frame_cache(videos, out: str | os.PathLike, *, size: int, fps: float = 0.0, progress: bool = True,
                      check_sources: bool = True) -> tuple[FrameCache, dict[str, int]]:
    """Cache every video of ``videos`` (paths) under ``out``; resumable. Returns the cache and counts of
    ``built``, ``skipped`` (already cached and fresh), ``rebuilt`` (stale) and ``failed`` (undecodable) clips."""
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"`size` must be a positive integer, got {size!r}")
    if fps < 0:
        raise ValueError(f"`fps` must be >= 0 (0 keeps every frame), got {fps!r}")
    root = Path(out)
    if (root / MANIFEST).is_file():
        cache = FrameCache.open(root)
        if (cache.size, cache.fps) != (size, float(fps)):
            raise ValueError(f"{root} holds a cache at size {cache.size}, fps {cache.fps}, not size {size}, fps {fps}: "
                             "use another --out")
    else:
        cache = FrameCache(root=root, size=size, fps=float(fps))
    (root / "clips").mkdir(parents=True, exist_ok=True)
    counts = {"built": 0, "skipped": 0, "rebuilt": 0, "failed": 0}
    sources = list(dict.fromkeys(os.path.abspath(os.fspath(v)) for v in videos if v is not None))
    from tqdm.auto import tqdm

    for number, source in enumerate(tqdm(sources, desc=f"frame cache {size}px", unit="clip", disable=not progress)):
        record = cache.clips.get(source)
        if record is not None and (root / "clips" / record["file"]).is_file():
            if not check_sources or _source_stamp(source) == record["source"]:
                counts["skipped"] += 1
                continue
        try:
            cache.clips[source] = cache_clip(cache, source)
        except (VideoDecodeError, OSError) as error:
            print(f"frame cache: skipping {source}: {error}", file=sys.stderr)
            counts["failed"] += 1
            continue
        counts["rebuilt" if record is not None else "built"] += 1
        if number % 16 == 0:
            cache.save()
    cache.save()
    return cache, counts


def dataset_videos(dataset_dir: str | os.PathLike, splits: list[str] | None = None) -> list[str]:
    """The `video` paths of every split (or ``splits``) of a DatasetDict saved with `save_to_disk`."""
    from datasets import load_from_disk

    dataset = load_from_disk(str(dataset_dir))
    names = splits or list(dataset)
    unknown = sorted(set(names) - set(dataset))
    if unknown:
        raise ValueError(f"{dataset_dir}: no split {unknown[0]!r} (it has {sorted(dataset)})")
    paths = []
    for name in names:
        if "video" not in dataset[name].column_names:
            raise ValueError(f"{dataset_dir}: split {name!r} has no `video` column (a features-only dataset needs no cache)")
        paths.extend(p for p in dataset[name]["video"] if p is not None)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeling_mckd.frame_cache", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a DatasetDict folder (datasets.save_to_disk) with a `video` column")
    parser.add_argument("--size", type=int, required=True, help="shortest side of the cached frames (the model's image size)")
    parser.add_argument("--out", required=True, help="cache folder (created; an existing cache is resumed)")
    parser.add_argument("--fps", type=float, default=0.0, help="frames kept per second (0: every frame)")
    parser.add_argument("--splits", nargs="*", default=None, help="splits to cache (default: all)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _, counts = build_frame_cache(dataset_videos(args.dataset, args.splits), args.out, size=args.size, fps=args.fps,
                                  progress=not args.no_progress)
    print(json.dumps(counts))
    print(f"use it with: export MCKD_FRAME_CACHE={os.path.abspath(args.out)}")
    return 1 if counts["failed"] else 0


__all__ = ["CachedClip", "FrameCache", "StaleFrameCacheError", "build_frame_cache", "cache_clip", "cached_positions",
           "dataset_videos", "main", "resize_shortest_side"]

if __name__ == "__main__":
    sys.exit(main())
