"""Video decoding and frame sampling.

PyAV (which bundles FFmpeg) is the default backend and works on any machine; `torchcodec` and
`decord` are used only when asked for and installed. Every failure to read a video (missing,
truncated, corrupt, no decodable frame) raises `VideoDecodeError` naming the file and the reason,
so a bad clip never turns into NaNs further down.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

BACKENDS = ("pyav", "torchcodec", "decord")


class VideoDecodeError(RuntimeError):
    """A video file could not be read. `path` is the file, `reason` what went wrong."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        self.message = f"Cannot decode video {self.path!r}: {reason}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # FileNotFoundError (a subclass below) would otherwise print "[Errno None] None"
        return self.message


class VideoFileNotFoundError(VideoDecodeError, FileNotFoundError):
    """The video file does not exist (also a `FileNotFoundError`)."""

    def __init__(self, path):
        super().__init__(path, "no such file")
        self.filename = str(path)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
    if backend != "pyav" and importlib.util.find_spec(backend) is None:
        raise ValueError(f"Video backend {backend!r} is not installed; use backend='pyav' (always available).")


def _optional_module(name: str):
    # imported by name: the optional backends must not look like hard requirements to
    # transformers' trust_remote_code import scanner (this file travels with checkpoints)
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ValueError(f"Video backend module {name!r} is not installed; use backend='pyav'.") from error


def _check_exists(path) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoFileNotFoundError(path)
    return path


# ------------------------------------------------------------------------------ frame sampling
def segment_bounds(num_total: int, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer bounds of `num_frames` equal segments of `range(num_total)`: segment i is [start[i], end[i])."""
    edges = (np.arange(num_frames + 1, dtype=np.int64) * num_total) // num_frames
    return edges[:-1], edges[1:]


def sample_frame_indices(
    num_total: int,
    num_frames: int,
    training: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices of the frames to keep, sorted.

    The clip is cut into `num_frames` equal segments. Evaluation takes the centre of each segment
    (`(start + end) // 2`); training takes a uniformly random frame inside each segment (TSN-style).
    A clip with at most `num_frames` frames gives all of them (the caller pads and masks).
    """
    if isinstance(num_total, bool) or not isinstance(num_total, (int, np.integer)) or num_total <= 0:
        raise ValueError(f"`num_total` must be a positive number of frames, got {num_total!r}.")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames <= 0:
        raise ValueError(f"`num_frames` must be a positive integer, got {num_frames!r}.")
    if num_total <= num_frames:
        return np.arange(num_total, dtype=np.int64)
    start, end = segment_bounds(int(num_total), int(num_frames))
    if not training:
        return (start + end) // 2
    rng = rng if rng is not None else np.random.default_rng()
    return rng.integers(start, end).astype(np.int64)  # per-segment high bound is exclusive


# ------------------------------------------------------------------------------ PyAV
def _open_pyav(path: str):
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"the container cannot be opened ({error})") from error
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "it has no video stream")
    return container


def _count_frames_pyav(path: str) -> int:
    import av

    container = _open_pyav(path)
    try:
        stream = container.streams.video[0]
        # the header count is free; without it count packets (demuxing, no decoding)
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        count = 0
        for packet in container.demux(stream):
            if packet.size > 0:
                count += 1
        return count
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"demuxing failed ({error})") from error
    finally:
        container.close()


@dataclass(frozen=True)
class FrameIndex:
    """Where each frame of a video is, found by demuxing (no decoding).

    ``pts[i]`` is the presentation timestamp of frame ``i`` of a full decode (frames come out of the
    decoder in presentation order), ``keyframe_pts`` the sorted timestamps of the keyframes, where a
    seek can start decoding. ``len(index)`` is the frame count.
    """

    pts: np.ndarray
    keyframe_pts: np.ndarray

    def __len__(self) -> int:
        return int(self.pts.shape[0])


def _index_frames_pyav(path: str) -> FrameIndex | None:
    """The video's `FrameIndex`, or None when its packets lack timestamps (then only a sequential decode
    can number the frames)."""
    import av

    container = _open_pyav(path)
    pts, keyframes = [], []
    try:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            # the end-of-stream flush packet, and pre-roll packets the decoder drops (edit lists)
            if packet.size <= 0 or packet.is_discard:
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"demuxing failed ({error})") from error
    finally:
        container.close()
    if not pts:
        raise VideoDecodeError(path, "no video frames")
    pts_array = np.sort(np.asarray(pts, dtype=np.int64))
    if not keyframes or np.unique(pts_array).size != pts_array.size:
        return None
    return FrameIndex(pts=pts_array, keyframe_pts=np.sort(np.asarray(keyframes, dtype=np.int64)))


def _read_frames_pyav_sequential(path: str, indices: np.ndarray | None) -> np.ndarray:
    """Decode from the start, converting only the wanted frames; stops after the last wanted one."""
    import av

    wanted = None if indices is None else set(int(i) for i in indices)
    last_wanted = None if indices is None else int(max(indices))
    frames: dict[int, np.ndarray] = {}
    decoded = 0
    container = _open_pyav(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if wanted is None or decoded in wanted:
                frames[decoded] = frame.to_ndarray(format="rgb24")
            decoded += 1
            if last_wanted is not None and decoded > last_wanted:
                break
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"decoding failed after {decoded} frames ({error})") from error
    finally:
        container.close()
    if decoded == 0:
        raise VideoDecodeError(path, "no decodable frame")
    if indices is None:
        return np.stack([frames[i] for i in range(decoded)])
    missing = sorted(set(int(i) for i in indices) - set(frames))
    if missing:
        raise VideoDecodeError(
            path, f"frame {missing[0]} was requested but the stream ends after {decoded} frames (truncated file?)"
        )
    return np.stack([frames[int(i)] for i in indices])


def _read_frames_pyav_seeking(path: str, indices: np.ndarray, index: FrameIndex) -> np.ndarray | None:
    """Decode only around the wanted frames: for each wanted frame past the next keyframe, seek to the last
    keyframe at or before it and decode forward. Frames are matched by timestamp, so the result is the
    frames a full decode gives at those positions. None when a wanted frame did not come out (the caller
    then decodes sequentially, which also names the problem)."""
    import av

    wanted_pts = {int(index.pts[i]): int(i) for i in np.unique(indices)}
    targets = sorted(wanted_pts)
    frames: dict[int, np.ndarray] = {}
    container = _open_pyav(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        position = None  # pts of the last frame decoded since the last seek
        decoder = None
        for target in targets:
            if target in frames:
                continue
            # the last keyframe at or before the target: decoding from it reaches the target exactly
            keyframe = int(index.keyframe_pts[max(np.searchsorted(index.keyframe_pts, target, side="right") - 1, 0)])
            if decoder is None or position is None or keyframe > position:
                container.seek(keyframe, stream=stream, backward=True, any_frame=False)
                decoder = container.decode(stream)
                position = None
            for frame in decoder:
                if frame.pts is None:
                    return None
                position = frame.pts
                if frame.pts in wanted_pts and frame.pts not in frames:
                    frames[frame.pts] = frame.to_ndarray(format="rgb24")
                if frame.pts >= target:
                    break
            if target not in frames:
                return None
    except av.FFmpegError:
        return None
    finally:
        container.close()
    return np.stack([frames[int(index.pts[i])] for i in indices])


def _read_frames_pyav(path: str, indices: np.ndarray | None, index: FrameIndex | None = None) -> np.ndarray:
    if indices is None:
        return _read_frames_pyav_sequential(path, None)
    if index is None:
        try:
            index = _index_frames_pyav(path)
        except VideoDecodeError:
            index = None  # a damaged file: the sequential decode says what is wrong
    if index is not None and int(indices.max()) < len(index):
        frames = _read_frames_pyav_seeking(path, indices, index)
        if frames is not None:
            return frames
    return _read_frames_pyav_sequential(path, indices)


# ------------------------------------------------------------------------------ optional backends
def _read_frames_decord(path: str, indices: np.ndarray | None) -> np.ndarray:
    decord = _optional_module("decord")
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        if len(reader) == 0:
            raise VideoDecodeError(path, "no decodable frame")
        if indices is None:
            indices = np.arange(len(reader))
        if len(indices) and int(max(indices)) >= len(reader):
            raise VideoDecodeError(path, f"frame {int(max(indices))} requested, the video has {len(reader)}")
        return reader.get_batch(list(int(i) for i in indices)).asnumpy()
    except decord.DECORDError as error:
        raise VideoDecodeError(path, f"decord failed ({error})") from error


def _read_frames_torchcodec(path: str, indices: np.ndarray | None) -> np.ndarray:
    VideoDecoder = _optional_module("torchcodec.decoders").VideoDecoder
    try:
        decoder = VideoDecoder(path, dimension_order="NHWC")
        total = decoder.metadata.num_frames
        if not total:
            raise VideoDecodeError(path, "no decodable frame")
        if indices is None:
            indices = np.arange(total)
        batch = decoder.get_frames_at(indices=[int(i) for i in indices])
        return batch.data.numpy()
    except (RuntimeError, ValueError, IndexError) as error:
        if isinstance(error, VideoDecodeError):
            raise
        raise VideoDecodeError(path, f"torchcodec failed ({error})") from error


# ------------------------------------------------------------------------------ public API
def count_frames(path: str | os.PathLike, backend: str = "pyav") -> int:
    """Number of video frames in `path` (from the container header when it has one)."""
    _check_backend(backend)
    path = _check_exists(path)
    if backend == "pyav":
        count = _count_frames_pyav(path)
    elif backend == "decord":
        decord = _optional_module("decord")
        try:
            count = len(decord.VideoReader(path, ctx=decord.cpu(0)))
        except decord.DECORDError as error:
            raise VideoDecodeError(path, f"decord failed ({error})") from error
    else:
        VideoDecoder = _optional_module("torchcodec.decoders").VideoDecoder
        try:
            count = int(VideoDecoder(path).metadata.num_frames or 0)
        except (RuntimeError, ValueError) as error:
            raise VideoDecodeError(path, f"torchcodec failed ({error})") from error
    if count <= 0:
        raise VideoDecodeError(path, "no video frames")
    return count


def frame_index(path: str | os.PathLike) -> FrameIndex | None:
    """The `FrameIndex` of `path` (PyAV, demuxing only: milliseconds for a 30 s clip), or None for a stream
    whose packets carry no usable timestamps. `len(index)` counts the frames a full decode gives (the header's
    count, which `count_frames` returns, can differ)."""
    return _index_frames_pyav(_check_exists(path))


def read_frames(path: str | os.PathLike, indices=None, backend: str = "pyav",
                index: FrameIndex | None = None) -> np.ndarray:
    """Decode frames `indices` (all when None) of `path` -> uint8 array (N, H, W, 3), in `indices` order.

    With PyAV, only the wanted frames are decoded to RGB, and only the stretches of the stream they need:
    for each wanted frame the decoder seeks to the last keyframe at or before it (unless it is already
    decoding towards it) and stops at it. Frames are identified by timestamp (from `index`, the clip's
    `frame_index`, computed here when not given), so the result is bit-identical to decoding every frame
    and indexing them. A stream without timestamps is decoded sequentially from the start.
    """
    _check_backend(backend)
    path = _check_exists(path)
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            raise ValueError("`indices` is empty; pass None to read every frame.")
        if int(indices.min()) < 0:
            raise ValueError(f"`indices` must be >= 0, got {int(indices.min())}.")
    if backend == "pyav":
        return _read_frames_pyav(path, indices, index)
    if backend == "decord":
        return _read_frames_decord(path, indices)
    return _read_frames_torchcodec(path, indices)


def read_video(
    path: str | os.PathLike,
    num_frames: int,
    training: bool = False,
    rng: np.random.Generator | None = None,
    backend: str = "pyav",
) -> np.ndarray:
    """Count, sample (see `sample_frame_indices`) and decode `num_frames` frames -> (N, H, W, 3) uint8.

    N is `num_frames`, or the clip length when the clip is shorter.
    """
    index = None
    if backend == "pyav":
        try:
            index = frame_index(path)  # one demux pass: the count and the seek table
        except VideoDecodeError:
            index = None  # a damaged file: the header's count, and the decode says what is wrong
    total = len(index) if index is not None else count_frames(path, backend=backend)
    indices = sample_frame_indices(total, num_frames, training=training, rng=rng)
    return read_frames(path, indices, backend=backend, index=index)


def read_audio_track(path: str | os.PathLike) -> tuple[np.ndarray, int] | None:
    """Decode the first audio stream -> (float32 samples (channels, n), sample_rate), or None without audio."""
    import av

    path = _check_exists(path)
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(path, f"the container cannot be opened ({error})") from error
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        # planar float whatever the codec's native sample format
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        if not chunks:
            raise VideoDecodeError(path, "the audio stream has no decodable samples")
        return np.concatenate(chunks, axis=1).astype(np.float32), int(stream.rate)
    except av.FFmpegError as error:
        raise VideoDecodeError(path, f"audio decoding failed ({error})") from error
    finally:
        container.close()


__all__ = [
    "BACKENDS",
    "FrameIndex",
    "VideoDecodeError",
    "VideoFileNotFoundError",
    "count_frames",
    "frame_index",
    "read_audio_track",
    "read_frames",
    "read_video",
    "sample_frame_indices",
    "segment_bounds",
]
