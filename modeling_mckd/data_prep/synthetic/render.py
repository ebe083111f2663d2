"""Rendering: signed-distance shapes composited over procedural backgrounds, all frames at once."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .config import BACKGROUNDS, SHAPES, SIZE_RADIUS, SyntheticConfig

# ----------------------------------------------------------------------------------------------


def _polygon(points: int, radii: Sequence[float], rotation: float = -math.pi / 2) -> np.ndarray:
    angles = rotation + 2 * math.pi * np.arange(points) / points
    radius = np.resize(np.asarray(radii, dtype=np.float64), points)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _cross(arm: float = 1.1, half_width: float = 0.36) -> np.ndarray:
    a, w = arm, half_width
    return np.array(
        [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)],
        dtype=np.float64,
    )


#: Outlines in units of the object radius (y down), chosen so the shapes have similar areas.
SHAPE_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.87, -0.87), (0.87, -0.87), (0.87, 0.87), (-0.87, 0.87)], dtype=np.float64),
    "triangle": _polygon(3, [1.2]),
    "diamond": np.array([(0.0, -1.22), (0.8, 0.0), (0.0, 1.22), (-0.8, 0.0)], dtype=np.float64),
    "cross": _cross(),
    "star": _polygon(10, [1.22, 0.52]),
    "hexagon": _polygon(6, [1.02]),
}


def _convex_pieces(shape: str) -> list[np.ndarray]:
    """The outline of ``shape`` as a union of convex polygons (stars and crosses are not convex)."""
    outline = SHAPE_POLYGONS[shape]
    if shape == "cross":
        a, w = 1.1, 0.36
        return [
            np.array([(-a, -w), (a, -w), (a, w), (-a, w)], dtype=np.float64),
            np.array([(-w, -a), (w, -a), (w, a), (-w, a)], dtype=np.float64),
        ]
    if shape == "star":  # five kites: centre, inner corner, tip, inner corner
        return [
            np.stack([np.zeros(2), outline[(2 * i - 1) % 10], outline[2 * i], outline[2 * i + 1]]) for i in range(5)
        ]
    return [outline]


def _half_planes(shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals (K, E, 2) and offsets (K, E) of the edges of each convex piece.

    Inside piece k iff ``normal . p <= offset`` for all its edges; pieces with fewer edges repeat
    their last edge (a repeated constraint changes nothing).
    """
    pieces = _convex_pieces(shape)
    edges = max(len(piece) for piece in pieces)
    normals = np.zeros((len(pieces), edges, 2))
    offsets = np.zeros((len(pieces), edges))
    for k, piece in enumerate(pieces):
        centroid = piece.mean(axis=0)
        for j in range(edges):
            start, end = piece[min(j, len(piece) - 1)], piece[(min(j, len(piece) - 1) + 1) % len(piece)]
            normal = np.array([end[1] - start[1], start[0] - end[0]])
            normal /= np.linalg.norm(normal)
            if normal @ (centroid - start) > 0:  # make it point outwards
                normal = -normal
            normals[k, j], offsets[k, j] = normal, normal @ start
    return normals, offsets


#: Half-plane form of every polygonal shape, computed once.
SHAPE_HALF_PLANES: dict[str, tuple[np.ndarray, np.ndarray]] = {shape: _half_planes(shape) for shape in SHAPE_POLYGONS}


def shape_distance(shape: str, px: np.ndarray, py: np.ndarray, angle: np.ndarray | float = 0.0) -> np.ndarray:
    """Signed distance (in radii; negative inside) of points to ``shape`` turned by ``angle`` degrees.

    ``px``, ``py`` (T, ...) are in units of the object radius, centred on it; ``angle`` is a scalar
    or one value per leading index T. Polygons use the half-plane bound ``max(normal . p - offset)``
    of each convex piece (exact inside and along edges, slightly rounded at outer corners, which
    only touches the antialiased rim), then the minimum over pieces.
    """
    if shape == "circle":
        return np.sqrt(px * px + py * py) - 1.0
    if shape not in SHAPE_HALF_PLANES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    normals, offsets = SHAPE_HALF_PLANES[shape]
    pieces, edges = offsets.shape
    theta = np.radians(np.broadcast_to(np.asarray(angle, dtype=np.float64), px.shape[:1]))
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    flat = normals.reshape(-1, 2)
    # Turning the shape by +angle turns its normals by +angle (image axes, y down: clockwise).
    nx = cos * flat[None, :, 0] - sin * flat[None, :, 1]  # (T, K*E)
    ny = sin * flat[None, :, 0] + cos * flat[None, :, 1]
    points_x = px.reshape(px.shape[0], -1, 1)
    points_y = py.reshape(py.shape[0], -1, 1)
    signed = points_x * nx[:, None, :] + points_y * ny[:, None, :] - offsets.reshape(1, 1, -1)
    distance = signed.reshape(px.shape[0], -1, pieces, edges).max(axis=-1).min(axis=-1)
    return distance.reshape(px.shape)


def object_state(obj: dict, time: float) -> dict[str, float]:
    """Position, scale, angle and opacity of ``obj`` at clip time ``time`` in [0, 1] (linear in its interval)."""
    start, end = obj["start"], obj["end"]
    progress = 0.0 if time <= start else 1.0 if time >= end else (time - start) / (end - start)
    return {key: obj["from"][key] + (obj["to"][key] - obj["from"][key]) * progress for key in obj["from"]}


def _draw_object(canvas: np.ndarray, obj: dict, times: np.ndarray, size: int, pad: int) -> None:
    """Composite ``obj`` (antialiased) into every frame of ``canvas`` (T, size+2*pad, size+2*pad, 3).

    The outline is evaluated for all frames at once on a fixed-size box that follows the object;
    ``pad`` lets the box leave the frame without clipping logic.
    """
    states = [object_state(obj, float(t)) for t in times]
    x, y, scale, angle, alpha = (
        np.array([state[key] for state in states]) for key in ("x", "y", "scale", "angle", "alpha")
    )
    radius = SIZE_RADIUS[obj["size"]] * np.maximum(scale, 1e-3) * size  # (T,) pixels
    extent = float(radius.max()) * 1.3 + 1.5
    box = int(math.ceil(2 * extent)) + 1
    cx, cy = x * size, y * size
    left = np.floor(cx - extent).astype(int)
    top = np.floor(cy - extent).astype(int)
    grid_y, grid_x = np.mgrid[0:box, 0:box].astype(np.float64)
    px = (left[:, None, None] + grid_x[None] + 0.5 - cx[:, None, None]) / radius[:, None, None]
    py = (top[:, None, None] + grid_y[None] + 0.5 - cy[:, None, None]) / radius[:, None, None]
    distance = shape_distance(obj["shape"], px, py, angle)
    coverage = (np.clip(0.5 - distance * radius[:, None, None], 0.0, 1.0) * alpha[:, None, None]).astype(np.float32)
    colour = np.asarray(obj["rgb"], dtype=np.float32)
    for index in np.flatnonzero(alpha > 0):
        row, col = top[index] + pad, left[index] + pad
        patch = canvas[index, row : row + box, col : col + box]
        patch += (colour - patch) * coverage[index][..., None]


def render_background(background: dict, size: int) -> np.ndarray:
    """The static background (H, W, 3) float32 in [0, 1]."""
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size
    u, v = np.meshgrid(coords, coords)
    pattern, period, phase, angle = (
        background["pattern"],
        background["period"],
        background["phase"],
        background["angle"],
    )
    wave = lambda w: np.clip(3.0 * np.sin(2 * math.pi * (w / period + phase)), -1.0, 1.0) * 0.5 + 0.5  # noqa: E731
    if pattern == "plain":
        mix = np.zeros_like(u)
    elif pattern == "stripes_h":
        mix = wave(v)
    elif pattern == "stripes_v":
        mix = wave(u)
    elif pattern == "diagonal":
        mix = wave((u + v) / math.sqrt(2) if math.cos(angle) > 0 else (u - v) / math.sqrt(2))
    elif pattern == "checker":
        mix = (
            np.sign(np.sin(2 * math.pi * (u / period + phase))) * np.sign(np.sin(2 * math.pi * (v / period + phase)))
            + 1
        ) / 2
    elif pattern == "gradient":
        mix = np.clip((u - 0.5) * math.cos(angle) + (v - 0.5) * math.sin(angle) + 0.5, 0.0, 1.0)
    elif pattern == "dots":
        fu, fv = (u / period + phase) % 1.0 - 0.5, (v / period + phase) % 1.0 - 0.5
        mix = np.clip((0.28 - np.sqrt(fu * fu + fv * fv)) * size * period, 0.0, 1.0)
    elif pattern == "mottled":
        grid = np.random.default_rng(background["texture_seed"]).random((6, 6))
        # Bilinear upsampling of a coarse random grid: soft blotches.
        positions = np.clip(coords * 5, 0, 5 - 1e-9)
        i, f = positions.astype(int), positions - positions.astype(int)
        rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
        mix = rows[:, i] * (1 - f)[None] + rows[:, i + 1] * f[None]
    else:
        raise ValueError(f"unknown background pattern {pattern!r}; expected one of {', '.join(BACKGROUNDS)}")
    base, accent = np.asarray(background["base"]), np.asarray(background["accent"])
    image = base[None, None] + (accent - base)[None, None] * mix[..., None]
    if background["texture"] > 0:  # static fine grain, part of the scene (not the per-frame noise)
        grain = np.random.default_rng(background["texture_seed"] + 1).normal(
            0.0, background["texture"], (size, size, 1)
        )
        image = image + grain
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def render_clip(
    scene: dict, num_frames: int, frame_size: int, *, pixel_noise: float = 0.0, noise_seed: int | None = None
) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of ``scene``; frame i shows clip time i / (T - 1).

    Distractors are drawn first (behind the main objects). ``pixel_noise`` adds per-frame
    Gaussian noise drawn from ``noise_seed``.
    """
    pad = int(math.ceil(max(SIZE_RADIUS.values()) * 1.3 * frame_size + 4))
    canvas = np.zeros((num_frames, frame_size + 2 * pad, frame_size + 2 * pad, 3), dtype=np.float32)
    canvas[:, pad : pad + frame_size, pad : pad + frame_size] = render_background(scene["background"], frame_size)
    times = np.arange(num_frames) / (num_frames - 1)
    for obj in scene["distractors"] + scene["objects"]:
        _draw_object(canvas, obj, times, frame_size, pad)
    frames = canvas[:, pad : pad + frame_size, pad : pad + frame_size]
    if pixel_noise > 0:
        frames += np.random.default_rng(noise_seed).standard_normal(frames.shape, dtype=np.float32) * np.float32(
            pixel_noise
        )
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------


def render_group_frames(clips: Sequence[dict], config: SyntheticConfig) -> dict[str, np.ndarray]:
    """Frames of every clip of one group (video_id -> (T, H, W, 3) uint8), as written to the mp4s.

    A clip with ``frames_reversed_from`` is literally the frames of that (earlier) clip backwards,
    so the time-reversed twin is pixel-exact; variants share the base's ``render_seed`` (same noise).
    """
    rendered: dict[str, np.ndarray] = {}
    for clip in clips:
        if clip["frames_reversed_from"] is not None:
            rendered[clip["video_id"]] = np.ascontiguousarray(rendered[clip["frames_reversed_from"]][::-1])
        else:
            rendered[clip["video_id"]] = render_clip(
                clip["scene"],
                config.num_frames,
                config.frame_size,
                pixel_noise=config.pixel_noise,
                noise_seed=clip["render_seed"],
            )
    return rendered
