"""Shared pytest fixtures.

`tiny_video_factory` writes small real mp4 files with PyAV (H.264 through libx264, which PyAV's
bundled FFmpeg ships; mpeg4 only if libx264 is missing). Frame `i` is a flat grey image of level
`frame_level(i)`, so a test can tell which frames a decoder returned from their pixel values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def frame_level(index: int) -> int:
    """Grey level of frame `index` in the factory's videos (20, 30, ..., wrapping below 240)."""
    return 20 + (10 * index) % 220


def decoded_frame_index(frame: np.ndarray) -> int:
    """Inverse of `frame_level` for the first 22 frames: which frame a decoded (H, W, 3) array was."""
    return int(round((float(frame.mean()) - 20) / 10))


def video_codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_tiny_video(
    path: str | os.PathLike,
    num_frames: int = 20,
    height: int = 64,
    width: int = 64,
    fps: int = 10,
    with_audio: bool = False,
    faststart: bool = False,
) -> Path:
    """Write a real mp4 whose frame i is flat grey `frame_level(i)`; optional 440 Hz AAC audio track."""
    import av

    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(video_codec(), rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        audio_stream = None
        if with_audio:
            audio_stream = container.add_stream("aac", rate=16000)
            audio_stream.layout = "mono"
        for index in range(num_frames):
            image = np.full((height, width, 3), frame_level(index), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            seconds = num_frames / fps
            samples = int(16000 * seconds)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)
            chunk = 1024
            for offset in range(0, samples, chunk):
                piece = wave[offset : offset + chunk][None, :]
                frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                frame.sample_rate = 16000
                frame.pts = offset
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path


@pytest.fixture
def tiny_video_factory(tmp_path):
    """Factory writing tiny mp4 files under tmp_path: `make(name="clip.mp4", num_frames=20, height=64,
    width=64, fps=10, with_audio=False, faststart=False) -> Path`. Frame i is flat grey `frame_level(i)`."""

    def make(name: str = "clip.mp4", **kwargs) -> Path:
        return write_tiny_video(tmp_path / name, **kwargs)

    make.frame_level = frame_level
    make.decoded_frame_index = decoded_frame_index
    make.codec = video_codec()
    return make
