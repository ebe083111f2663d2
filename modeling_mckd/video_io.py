"""Video decoding and frame sampling.

PyAV (which bundles FFmpeg) is the default backend and works on any machine; `torchcodec` and
`decord` are used only when asked for and installed. Every failure to read a video (missing,
truncated, corrupt, no decodable frame) raises `VideoDecodeError` naming the file and the reason,
so a bad clip never turns into NaNs further down.
"""

from __future__ import annotations

import importlib.util
import os

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


def _read_frames_pyav(path: str, indices: np.ndarray | None) -> np.ndarray:
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


def read_frames(path: str | os.PathLike, indices=None, backend: str = "pyav") -> np.ndarray:
    """Decode frames `indices` (all when None) of `path` -> uint8 array (N, H, W, 3), in `indices` order.

    PyAV decodes sequentially and stops after the last wanted frame, converting only the wanted
    ones to RGB.
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
        return _read_frames_pyav(path, indices)
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
    total = count_frames(path, backend=backend)
    indices = sample_frame_indices(total, num_frames, training=training, rng=rng)
    return read_frames(path, indices, backend=backend)


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
    "VideoDecodeError",
    "VideoFileNotFoundError",
    "count_frames",
    "read_audio_track",
    "read_frames",
    "read_video",
    "sample_frame_indices",
    "segment_bounds",
]
