"""The built-in synthetic text-video retrieval benchmark (the project's embedded default).

Clips are generated procedurally from a seed, written as real H.264 mp4 files (PyAV, libx264,
yuv420p) with an MSR-VTT-layout annotation file, and turned into a ``DatasetDict`` by the MSR-VTT
preparation code (:func:`modeling_mckd.data_prep.msrvtt.build_msrvtt`, official protocol), so the synthetic
default goes through exactly the code path of a real benchmark.

Each clip shows one or two *main* objects (shape, colour, size) that each perform one motion; two
motions happen one after the other ("a red circle moves left, then a blue square grows"). Textured
backgrounds, unmentioned distractor objects and pixel noise clutter the frame. Captions come from a
grammar with synonyms and paraphrases, and some describe the clip only partially. A fraction of the
clips come in *hard-negative groups* whose members differ in exactly one attribute (colour, shape,
size, motion direction, event order, or the whole clip played backwards). A co-occurring "audio"
modality (a stereo soundtrack synthesised from the scene, stored as a log-spectrogram ``.npy``)
follows what happens on screen. See ``docs/synthetic.md``.

Example::

    python dataset_scripts/synthetic.py --output_dir data/synthetic --seed 0
    python -m dataset_scripts.synthetic --output_dir /tmp/syn --num_train 12 --num_val 4 --num_test 4
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random as pyrandom
import shutil
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


logger = logging.getLogger(__name__)

#: Bumped whenever the generator's output changes for a given config (invalidates reuse).
GENERATOR_VERSION = "1"

MANIFEST_NAME = "synthetic_manifest.json"
ANNOTATION_NAME = "MSRVTT_data.json"

# ----------------------------------------------------------------------------------------------
# vocabulary: every list starts with the canonical word; ``synonyms=k`` keeps the first k
# ----------------------------------------------------------------------------------------------

#: Palette (RGB in [0, 1]). Pairs that look alike at 64x64 after chroma subsampling (red/pink,
#: orange/yellow, blue/purple, green/cyan) are deliberately present.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.94, 0.86, 0.12),
    "green": (0.16, 0.68, 0.22),
    "cyan": (0.12, 0.78, 0.84),
    "blue": (0.16, 0.30, 0.90),
    "purple": (0.52, 0.22, 0.78),
    "pink": (0.96, 0.46, 0.70),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet", "ruby"),
    "orange": ("orange", "amber", "tangerine", "copper"),
    "yellow": ("yellow", "golden", "lemon", "mustard"),
    "green": ("green", "emerald", "lime", "grassy"),
    "cyan": ("cyan", "turquoise", "teal", "aqua"),
    "blue": ("blue", "azure", "cobalt", "sapphire"),
    "purple": ("purple", "violet", "plum", "lilac"),
    "pink": ("pink", "rose", "fuchsia", "salmon"),
}
#: Pitch of each colour's tone, in semitones above 220 Hz. Colours that look alike are given
#: distant pitches, so the soundtrack disambiguates exactly the pairs that vision confuses.
COLOUR_PITCH: dict[str, int] = {
    "red": 0,
    "cyan": 3,
    "yellow": 6,
    "purple": 9,
    "orange": 12,
    "blue": 15,
    "green": 18,
    "pink": 21,
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star", "hexagon")
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball", "dot"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "wedge", "pyramid", "three-sided shape"),
    "diamond": ("diamond", "rhombus", "lozenge", "kite"),
    "cross": ("cross", "plus sign", "plus shape", "cross shape"),
    "star": ("star", "five-pointed star", "starburst", "star shape"),
    "hexagon": ("hexagon", "six-sided shape", "hex", "honeycomb cell"),
}
#: Rotational symmetry period in degrees (None: rotation is invisible, so circles never rotate).
SHAPE_SYMMETRY: dict[str, float | None] = {
    "circle": None,
    "square": 90.0,
    "triangle": 120.0,
    "diamond": 180.0,
    "cross": 90.0,
    "star": 72.0,
    "hexagon": 60.0,
}
#: Harmonic amplitudes of each shape's tone (its timbre): index h-1 is the h-th harmonic.
SHAPE_HARMONICS: dict[str, tuple[float, ...]] = {
    "circle": (1.0,),
    "square": (1.0, 0.0, 0.45, 0.0, 0.25),
    "triangle": (1.0, 0.55),
    "diamond": (1.0, 0.0, 0.0, 0.5),
    "cross": (1.0, 0.5, 0.4),
    "star": (1.0, 0.45, 0.35, 0.3, 0.25),
    "hexagon": (1.0, 0.0, 0.0, 0.0, 0.0, 0.5),
}
GENERIC_NOUNS: tuple[str, ...] = ("object", "shape", "thing", "item")

#: Object radius as a fraction of the frame side.
SIZE_RADIUS: dict[str, float] = {"small": 0.085, "large": 0.145}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny", "miniature"),
    "large": ("large", "big", "huge", "sizeable"),
}

MOTIONS: tuple[str, ...] = (
    "left",
    "right",
    "up",
    "down",
    "grow",
    "shrink",
    "appear",
    "disappear",
    "rotate_cw",
    "rotate_ccw",
)
#: The motion seen when the clip is played backwards (and the "motion" hard negative).
OPPOSITE_MOTION: dict[str, str] = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "grow": "shrink",
    "shrink": "grow",
    "appear": "disappear",
    "disappear": "appear",
    "rotate_cw": "rotate_ccw",
    "rotate_ccw": "rotate_cw",
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("moves left", "slides to the left", "travels leftwards", "drifts left", "heads to the left"),
    "right": ("moves right", "slides to the right", "travels rightwards", "drifts right", "heads to the right"),
    "up": ("moves up", "rises", "floats upwards", "climbs", "goes up"),
    "down": ("moves down", "falls", "sinks", "drops downwards", "goes down"),
    "grow": ("grows", "gets bigger", "expands", "swells", "becomes larger"),
    "shrink": ("shrinks", "gets smaller", "contracts", "dwindles", "becomes smaller"),
    "appear": ("appears", "fades in", "materialises", "shows up", "comes into view"),
    "disappear": ("disappears", "fades out", "vanishes", "fades away", "goes out of view"),
    "rotate_cw": ("rotates clockwise", "spins clockwise", "turns clockwise", "twists clockwise"),
    "rotate_ccw": ("rotates counterclockwise", "spins anticlockwise", "turns counterclockwise", "twists anticlockwise"),
}
#: Verb phrases of a caption that leaves the motion out.
STATIC_WORDS: tuple[str, ...] = ("is shown", "can be seen", "is visible", "is on screen")

BACKGROUNDS: tuple[str, ...] = ("plain", "stripes_h", "stripes_v", "diagonal", "checker", "gradient", "dots", "mottled")
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "flat", "uniform", "blank"),
    "stripes_h": ("horizontally striped", "striped", "banded", "lined"),
    "stripes_v": ("vertically striped", "striped", "barred", "lined"),
    "diagonal": ("diagonally striped", "striped", "slanted", "hatched"),
    "checker": ("checkered", "chequered", "tiled", "checkerboard"),
    "gradient": ("gradient", "shaded", "fading", "graded"),
    "dots": ("dotted", "spotted", "polka-dot", "speckled"),
    "mottled": ("mottled", "textured", "blotchy", "cloudy"),
}

#: Attributes in which the members of a hard-negative group differ (exactly one per pair).
HARD_NEGATIVE_ATTRIBUTES: tuple[str, ...] = ("colour", "shape", "size", "motion", "order", "time_reversal")

SPLIT_FIELD: dict[str, str] = {"train": "train", "validation": "validate", "test": "test"}


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------


def _help(text: str, **metadata: Any) -> dict[str, Any]:
    return {"help": text, **metadata}


@dataclasses.dataclass
class SyntheticConfig:
    """Everything that determines the generated benchmark (its hash names a generated folder).

    Sizes, rendering, captions, hard negatives and audio; the difficulty knobs are documented in
    ``docs/synthetic.md``. Two configs with equal fields give byte-identical annotation files and
    identical frames.
    """

    seed: int = dataclasses.field(default=0, metadata=_help("random seed; everything is a function of it"))
    num_train: int = dataclasses.field(default=1500, metadata=_help("clips in the train split"))
    num_val: int = dataclasses.field(default=250, metadata=_help("clips in the validation split"))
    num_test: int = dataclasses.field(default=500, metadata=_help("clips in the test split"))
    num_frames: int = dataclasses.field(default=16, metadata=_help("frames per clip"))
    frame_size: int = dataclasses.field(default=64, metadata=_help("frame width = height in pixels (even)"))
    fps: int = dataclasses.field(default=8, metadata=_help("frame rate of the mp4 files"))
    crf: int = dataclasses.field(
        default=18, metadata=_help("libx264 constant rate factor (lower = closer to the rendered frames)")
    )
    captions_per_clip: int = dataclasses.field(
        default=5, metadata=_help("captions per clip (the first is always complete)")
    )
    two_event_fraction: float = dataclasses.field(
        default=0.5, metadata=_help("fraction of clips with two objects whose motions happen one after the other")
    )
    hard_negative_fraction: float = dataclasses.field(
        default=0.3, metadata=_help("fraction of each split's clips that belong to hard-negative groups")
    )
    max_group_size: int = dataclasses.field(
        default=3, metadata=_help("largest hard-negative group (a base clip and up to N-1 variants)")
    )
    hard_negative_attributes: tuple[str, ...] = dataclasses.field(
        default=HARD_NEGATIVE_ATTRIBUTES,
        metadata=_help("attributes a hard-negative variant may change", choices=HARD_NEGATIVE_ATTRIBUTES),
    )
    num_distractors: int = dataclasses.field(
        default=2, metadata=_help("at most this many unmentioned distractor objects per clip (uniform 0..N)")
    )
    distractor_motion: float = dataclasses.field(
        default=0.3, metadata=_help("largest drift of a distractor over the clip, as a fraction of the frame")
    )
    background_clutter: float = dataclasses.field(
        default=0.6, metadata=_help("0: plain backgrounds; 1: always patterned, high-contrast, textured backgrounds")
    )
    pixel_noise: float = dataclasses.field(
        default=0.04, metadata=_help("std of per-pixel Gaussian noise (intensity in [0, 1])")
    )
    colour_jitter: float = dataclasses.field(
        default=0.06, metadata=_help("per-object random offset of the palette RGB")
    )
    synonyms: int = dataclasses.field(
        default=4, metadata=_help("words used per concept (1: canonical words only; up to 4-5 synonyms/paraphrases)")
    )
    caption_partiality: float = dataclasses.field(
        default=0.5, metadata=_help("probability that a caption (other than the first) leaves out part of the content")
    )
    background_mention: float = dataclasses.field(
        default=0.25, metadata=_help("probability that a caption names the background")
    )
    audio_frames: int = dataclasses.field(default=16, metadata=_help("time steps T_a of the audio features"))
    audio_bins: int = dataclasses.field(
        default=32, metadata=_help("feature size D_a: log-spaced bands, half per stereo channel (even)")
    )
    audio_sample_rate: int = dataclasses.field(
        default=8000, metadata=_help("sample rate of the synthesised soundtrack")
    )
    audio_noise: float = dataclasses.field(
        default=0.5,
        metadata=_help("background noise level relative to a large object's tone, and the rate of spurious blips"),
    )
    audio_dropout: float = dataclasses.field(
        default=0.15, metadata=_help("probability that a main object makes no sound")
    )
    mux_audio: bool = dataclasses.field(
        default=False, metadata=_help("also mux the soundtrack into the mp4 (AAC stream)")
    )

    def __post_init__(self) -> None:
        self.hard_negative_attributes = tuple(self.hard_negative_attributes)
        checks: list[tuple[str, bool, str]] = [
            ("num_train", self.num_train >= 0, "an integer >= 0"),
            ("num_val", self.num_val >= 0, "an integer >= 0"),
            ("num_test", self.num_test >= 0, "an integer >= 0"),
            ("num_frames", self.num_frames >= 2, "an integer >= 2"),
            ("frame_size", self.frame_size >= 16 and self.frame_size % 2 == 0, "an even integer >= 16 (yuv420p)"),
            ("fps", self.fps >= 1, "an integer >= 1"),
            ("crf", 0 <= self.crf <= 51, "an integer in [0, 51]"),
            ("captions_per_clip", self.captions_per_clip >= 1, "an integer >= 1"),
            ("two_event_fraction", 0.0 <= self.two_event_fraction <= 1.0, "a number in [0, 1]"),
            ("hard_negative_fraction", 0.0 <= self.hard_negative_fraction <= 1.0, "a number in [0, 1]"),
            ("max_group_size", self.max_group_size >= 2, "an integer >= 2"),
            ("num_distractors", self.num_distractors >= 0, "an integer >= 0"),
            ("distractor_motion", 0.0 <= self.distractor_motion <= 1.0, "a number in [0, 1]"),
            ("background_clutter", 0.0 <= self.background_clutter <= 1.0, "a number in [0, 1]"),
            ("pixel_noise", 0.0 <= self.pixel_noise <= 1.0, "a number in [0, 1]"),
            ("colour_jitter", 0.0 <= self.colour_jitter <= 0.5, "a number in [0, 0.5]"),
            ("synonyms", self.synonyms >= 1, "an integer >= 1"),
            ("caption_partiality", 0.0 <= self.caption_partiality <= 1.0, "a number in [0, 1]"),
            ("background_mention", 0.0 <= self.background_mention <= 1.0, "a number in [0, 1]"),
            ("audio_frames", self.audio_frames >= 1, "an integer >= 1"),
            (
                "audio_bins",
                self.audio_bins >= 2 and self.audio_bins % 2 == 0,
                "an even integer >= 2 (two stereo channels)",
            ),
            ("audio_sample_rate", self.audio_sample_rate >= 4000, "an integer >= 4000"),
            ("audio_noise", self.audio_noise >= 0.0, "a number >= 0"),
            ("audio_dropout", 0.0 <= self.audio_dropout <= 1.0, "a number in [0, 1]"),
            (
                "hard_negative_attributes",
                len(self.hard_negative_attributes) > 0
                and set(self.hard_negative_attributes) <= set(HARD_NEGATIVE_ATTRIBUTES),
                f"a non-empty subset of {', '.join(HARD_NEGATIVE_ATTRIBUTES)}",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig.{name}={getattr(self, name)!r}: expected {expected}")
        samples_per_frame = self.audio_sample_rate * self.num_frames / self.fps / self.audio_frames
        if samples_per_frame < 64:
            raise ValueError(
                f"SyntheticConfig.audio_frames={self.audio_frames!r}: each audio frame would hold only "
                f"{samples_per_frame:.0f} samples (< 64); lower audio_frames or raise audio_sample_rate"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }

    def config_hash(self) -> str:
        """SHA-256 (16 hex digits) of the fields and the generator version: equal hash, equal output."""
        payload = json.dumps({"generator_version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class SyntheticOutputExistsError(FileExistsError):
    """``output_dir`` holds something other than a complete benchmark of the same config."""


# ----------------------------------------------------------------------------------------------
# scenes: plain JSON-ready dicts, so the annotation file records exactly what is rendered
# ----------------------------------------------------------------------------------------------


def _r(value: float) -> float:
    """Round to 4 decimals: the JSON and the renderer then see the very same numbers."""
    return round(float(value), 4)


class SceneRandom:
    """The random source of scenes and captions: a ``random.Random`` used only through ``random()``.

    Python guarantees the ``random()`` sequence of a seeded generator across versions (not that of
    ``choice`` or ``randint``), so every draw is derived from it here; it is also ~50x faster per
    scalar draw than a numpy ``Generator``, which matters for ~10^5 draws per benchmark.
    """

    def __init__(self, seed: int):
        self._random = pyrandom.Random(seed)

    def random(self) -> float:
        return self._random.random()

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self._random.random()

    def integers(self, low: int, high: int | None = None) -> int:
        """An integer in [low, high) (numpy-style; ``integers(n)`` is [0, n))."""
        if high is None:
            low, high = 0, low
        return low + min(int(self._random.random() * (high - low)), high - low - 1)

    def seed_value(self) -> int:
        """A 62-bit integer seed for numpy generators."""
        return (self.integers(2**31) << 31) | self.integers(2**31)

    def shuffle(self, items: list) -> None:
        for index in range(len(items) - 1, 0, -1):
            other = self.integers(index + 1)
            items[index], items[other] = items[other], items[index]


def _pick(rng: SceneRandom, options: Sequence[Any]) -> Any:
    return options[rng.integers(len(options))]


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> list[float]:
    sector = (hue % 1.0) * 6.0
    index = int(sector) % 6
    fraction = sector - int(sector)
    p, q, t = value * (1 - saturation), value * (1 - saturation * fraction), value * (1 - saturation * (1 - fraction))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][index]
    return [_r(channel) for channel in rgb]


def _sample_background(rng: SceneRandom, config: SyntheticConfig) -> dict[str, Any]:
    clutter = config.background_clutter
    patterned = rng.random() < clutter
    pattern = _pick(rng, BACKGROUNDS[1:]) if patterned else "plain"
    # Muted colours (low saturation) keep the saturated objects the salient thing...
    hue = float(rng.random())
    base = _hsv_to_rgb(hue, float(rng.uniform(0.0, 0.35)), float(rng.uniform(0.18, 0.55)))
    # ...but the accent contrast grows with the clutter knob.
    accent_value = float(np.clip(rng.uniform(0.18, 0.55) + _pick(rng, (-1, 1)) * (0.1 + 0.3 * clutter), 0.05, 0.85))
    accent = _hsv_to_rgb(hue + float(rng.uniform(-0.15, 0.15)), float(rng.uniform(0.0, 0.4)), accent_value)
    return {
        "pattern": pattern,
        "base": base,
        "accent": accent,
        "period": _r(rng.uniform(0.1, 0.25)),
        "phase": _r(rng.random()),
        "angle": _r(rng.uniform(0.0, 2 * math.pi)),
        "texture": _r(0.04 * clutter),
        "texture_seed": rng.integers(2**31),
    }


def _state(x: float, y: float, scale: float = 1.0, angle: float = 0.0, alpha: float = 1.0) -> dict[str, float]:
    return {"x": _r(x), "y": _r(y), "scale": _r(scale), "angle": _r(angle), "alpha": _r(alpha)}


def _jittered_rgb(rng: SceneRandom, colour: str, config: SyntheticConfig) -> list[float]:
    return [
        _r(min(max(value + rng.uniform(-config.colour_jitter, config.colour_jitter), 0.0), 1.0))
        for value in COLOURS[colour]
    ]


def _main_margin() -> float:
    """Distance a main object keeps from the border: a large object's outline (1.25 radii) fits."""
    return SIZE_RADIUS["large"] * 1.25 + 0.01


def _motion_states(rng: SceneRandom, motion: str, shape: str) -> tuple[dict, dict]:
    """Start and end state of a main object performing ``motion``."""
    margin = _main_margin()
    span = float(rng.uniform(0.25, 0.45))
    x = float(rng.uniform(margin, 1 - margin))
    y = float(rng.uniform(margin, 1 - margin))
    if motion in ("left", "right", "up", "down"):
        start = float(rng.uniform(margin + span, 1 - margin))
        end = start - span  # towards 0, i.e. left or up (image y grows downwards)
        if motion in ("right", "down"):
            start, end = 1 - start, 1 - end
        if motion in ("left", "right"):
            return _state(start, y), _state(end, y)
        return _state(x, start), _state(x, end)
    if motion in ("grow", "shrink"):
        small, full = _state(x, y, scale=0.4), _state(x, y, scale=1.0)
        return (small, full) if motion == "grow" else (full, small)
    if motion in ("appear", "disappear"):
        hidden, shown = _state(x, y, alpha=0.0), _state(x, y, alpha=1.0)
        return (hidden, shown) if motion == "appear" else (shown, hidden)
    period = SHAPE_SYMMETRY[shape]
    if period is None:
        raise ValueError(f"a {shape} cannot visibly rotate")
    # Less than half the symmetry period, so clockwise and anticlockwise never look alike.
    amount = float(rng.uniform(0.3, 0.45)) * period
    base_angle = float(rng.uniform(0, period))
    sign = 1.0 if motion == "rotate_cw" else -1.0  # image y points down: +angle turns clockwise
    return _state(x, y, angle=base_angle), _state(x, y, angle=base_angle + sign * amount)


def _motions_for(shape: str) -> tuple[str, ...]:
    return MOTIONS if SHAPE_SYMMETRY[shape] is not None else tuple(m for m in MOTIONS if not m.startswith("rotate"))


_PATH_STEPS = np.linspace(0.0, 1.0, 9)


def _path_distance(a: dict, b: dict) -> float:
    """Smallest distance between the centres of two main objects over any pair of times."""
    steps = _PATH_STEPS
    ax = a["from"]["x"] + (a["to"]["x"] - a["from"]["x"]) * steps
    ay = a["from"]["y"] + (a["to"]["y"] - a["from"]["y"]) * steps
    bx = b["from"]["x"] + (b["to"]["x"] - b["from"]["x"]) * steps
    by = b["from"]["y"] + (b["to"]["y"] - b["from"]["y"]) * steps
    return float(np.sqrt((ax[:, None] - bx[None]) ** 2 + (ay[:, None] - by[None]) ** 2).min())


def _sample_main_object(
    rng: SceneRandom, config: SyntheticConfig, start: float, end: float, used_colours: set[str]
) -> dict[str, Any]:
    shape = _pick(rng, SHAPES)
    colour = _pick(rng, [c for c in COLOURS if c not in used_colours])
    size = _pick(rng, tuple(SIZE_RADIUS))
    motion = _pick(rng, _motions_for(shape))
    state_from, state_to = _motion_states(rng, motion, shape)
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "rgb": _jittered_rgb(rng, colour, config),
        "motion": motion,
        "start": _r(start),
        "end": _r(end),
        "from": state_from,
        "to": state_to,
        "audible": bool(rng.random() >= config.audio_dropout),
    }


def _sample_distractor(rng: SceneRandom, config: SyntheticConfig, main: list[dict]) -> dict[str, Any]:
    taken = {(obj["shape"], obj["colour"]) for obj in main}
    while True:  # a distractor never duplicates a described object, so captions stay true
        shape, colour = _pick(rng, SHAPES), _pick(rng, tuple(COLOURS))
        if (shape, colour) not in taken:
            break
    x, y = rng.uniform(0.08, 0.92), rng.uniform(0.08, 0.92)
    drift_angle = rng.uniform(0, 2 * math.pi)
    drift = rng.uniform(0.0, config.distractor_motion)
    x_to = float(np.clip(x + drift * math.cos(drift_angle), 0.05, 0.95))
    y_to = float(np.clip(y + drift * math.sin(drift_angle), 0.05, 0.95))
    angle = float(rng.uniform(0, 360))
    return {
        "shape": shape,
        "colour": colour,
        "size": _pick(rng, tuple(SIZE_RADIUS)),
        "rgb": _jittered_rgb(rng, colour, config),
        "motion": "drift",
        "start": 0.0,
        "end": 1.0,
        "from": _state(x, y, angle=angle),
        "to": _state(x_to, y_to, angle=angle),
    }


def sample_scene(rng: SceneRandom, config: SyntheticConfig, two_events: bool | None = None) -> dict[str, Any]:
    """A random scene: background, one or two main objects (one motion each), distractors."""
    if two_events is None:
        two_events = bool(rng.random() < config.two_event_fraction)
    if two_events:
        intervals = [
            (float(rng.uniform(0.0, 0.1)), float(rng.uniform(0.4, 0.5))),
            (float(rng.uniform(0.5, 0.6)), float(rng.uniform(0.9, 1.0))),
        ]
    else:
        intervals = [(float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.85, 1.0)))]
    main: list[dict] = []
    used: set[str] = set()
    for start, end in intervals:
        best, best_distance = None, -1.0
        for _attempt in range(40):  # keep the two main objects apart at all times
            candidate = _sample_main_object(rng, config, start, end, used)
            distance = min((_path_distance(candidate, other) for other in main), default=math.inf)
            if distance > best_distance:
                best, best_distance = candidate, distance
            if distance >= 2.2 * SIZE_RADIUS["large"] * 1.25:  # two large outlines apart, with a gap
                break
        main.append(best)
        used.add(best["colour"])
    num_distractors = int(rng.integers(config.num_distractors + 1))
    distractors = [_sample_distractor(rng, config, main) for _ in range(num_distractors)]
    return {"background": _sample_background(rng, config), "objects": main, "distractors": distractors}


# ----------------------------------------------------------------------------------------------
# hard negatives: variants that differ from a scene in exactly one attribute
# ----------------------------------------------------------------------------------------------


def _copy(scene: dict) -> dict:
    return json.loads(json.dumps(scene))


def applicable_attributes(scene: dict, config: SyntheticConfig) -> list[str]:
    """The hard-negative attributes that can be changed in ``scene``."""
    out = []
    for attribute in config.hard_negative_attributes:
        if attribute == "order" and len(scene["objects"]) < 2:
            continue
        out.append(attribute)
    return out


def time_reversed(scene: dict) -> dict:
    """The scene played backwards: every interval mirrored, start and end states swapped."""
    reversed_scene = _copy(scene)
    for obj in reversed_scene["objects"] + reversed_scene["distractors"]:
        obj["start"], obj["end"] = _r(1 - obj["end"]), _r(1 - obj["start"])
        obj["from"], obj["to"] = obj["to"], obj["from"]
        if obj["motion"] in OPPOSITE_MOTION:
            obj["motion"] = OPPOSITE_MOTION[obj["motion"]]
    reversed_scene["objects"].sort(key=lambda obj: obj["start"])
    return reversed_scene


def make_variant(scene: dict, attribute: str, rng: SceneRandom, config: SyntheticConfig) -> dict:
    """A copy of ``scene`` with exactly ``attribute`` changed (on one main object where it applies)."""
    variant = _copy(scene)
    objects = variant["objects"]
    if attribute == "time_reversal":
        return time_reversed(scene)
    if attribute == "order":
        if len(objects) < 2:
            raise ValueError("an 'order' variant needs a scene with two events")
        first, second = objects
        for key in ("start", "end"):
            first[key], second[key] = second[key], first[key]
        objects.reverse()
        return variant
    target = objects[int(rng.integers(len(objects)))]
    # A distractor never shares shape and colour with a described object (captions stay true), so
    # the new value avoids the distractors' combinations instead of editing the distractors.
    distractor_combos = {(d["shape"], d["colour"]) for d in variant["distractors"]}
    if attribute == "colour":
        used = {obj["colour"] for obj in objects}
        options = [c for c in COLOURS if c not in used and (target["shape"], c) not in distractor_combos]
        new = _pick(rng, options or [c for c in COLOURS if c not in used])
        # Same jitter offset: only the colour name changes.
        offset = np.asarray(target["rgb"]) - np.asarray(COLOURS[target["colour"]])
        target["rgb"] = [_r(v) for v in np.clip(np.asarray(COLOURS[new]) + offset, 0.0, 1.0)]
        target["colour"] = new
        return variant
    if attribute == "shape":
        options = [s for s in SHAPES if s != target["shape"] and (s, target["colour"]) not in distractor_combos]
        options = options or [s for s in SHAPES if s != target["shape"]]
        if target["motion"].startswith("rotate"):
            options = [s for s in options if SHAPE_SYMMETRY[s] is not None]
        new = _pick(rng, options)
        if target["motion"].startswith("rotate"):
            # Keep the turn the same fraction of the symmetry period.
            ratio = SHAPE_SYMMETRY[new] / SHAPE_SYMMETRY[target["shape"]]
            target["from"]["angle"] = _r(target["from"]["angle"] * ratio)
            target["to"]["angle"] = _r(target["to"]["angle"] * ratio)
        target["shape"] = new
        return variant
    if attribute == "size":
        target["size"] = "small" if target["size"] == "large" else "large"
        return variant
    if attribute == "motion":
        # The opposite motion over the same span (not the reversed clip: the rest keeps its time).
        target["motion"] = OPPOSITE_MOTION[target["motion"]]
        target["from"], target["to"] = target["to"], target["from"]
        return variant
    raise ValueError(
        f"unknown hard-negative attribute {attribute!r}; expected one of {', '.join(HARD_NEGATIVE_ATTRIBUTES)}"
    )


def _path_key(obj: dict) -> tuple:
    """Where an object goes, regardless of direction (a "motion" variant swaps from and to)."""
    ends = sorted((obj[key]["x"], obj[key]["y"], obj[key]["scale"], obj[key]["alpha"]) for key in ("from", "to"))
    return tuple(ends)


def scene_difference(a: dict, b: dict) -> list[str]:
    """The hard-negative attributes in which two scenes differ (used to check groups).

    ``["time_reversal"]`` when ``b`` is ``a`` played backwards; otherwise each main-object attribute
    (colour, shape, size, motion) that differs, ``order`` when the same objects exchange their
    event intervals, and ``other`` for any other difference (paths, background, distractors...).
    """
    if _canonical(a) != _canonical(b) and _canonical(time_reversed(a)) == _canonical(b):
        return ["time_reversal"]
    if a["background"] != b["background"] or a["distractors"] != b["distractors"]:
        return ["other"]
    if sorted(map(_path_key, a["objects"])) != sorted(map(_path_key, b["objects"])):
        return ["other"]
    matched = {_path_key(obj): obj for obj in b["objects"]}
    out: set[str] = set()
    for obj_a in a["objects"]:
        obj_b = matched[_path_key(obj_a)]
        for attribute in ("colour", "shape", "size", "motion"):
            if obj_a[attribute] != obj_b[attribute]:
                out.add(attribute)
        if (obj_a["rgb"] != obj_b["rgb"]) != (obj_a["colour"] != obj_b["colour"]):
            out.add("other")
        if obj_a.get("audible") != obj_b.get("audible"):
            out.add("other")
        if (obj_a["start"], obj_a["end"]) != (obj_b["start"], obj_b["end"]):
            out.add("order")
    return sorted(out)


def _canonical(scene: dict) -> str:
    return json.dumps(scene, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------


def _article(phrase: str) -> str:
    vowel_sound = phrase[0] in "aeiou" and not phrase.startswith(("uni", "use", "eu", "one"))
    return ("an " if vowel_sound else "a ") + phrase


def _words(options: Sequence[str], config: SyntheticConfig) -> Sequence[str]:
    return options[: config.synonyms]


def _noun_phrase(obj: dict, rng: SceneRandom, config: SyntheticConfig, parts: set[str]) -> str:
    size = _pick(rng, _words(SIZE_WORDS[obj["size"]], config)) if "size" in parts else ""
    colour = _pick(rng, _words(COLOUR_WORDS[obj["colour"]], config)) if "colour" in parts else ""
    noun = _pick(rng, _words(SHAPE_WORDS[obj["shape"]], config)) if "shape" in parts else _pick(rng, GENERIC_NOUNS)
    if colour and rng.random() < 0.3:
        phrase = " ".join(word for word in (size, noun) if word) + f" that is {colour}"
    else:
        phrase = " ".join(word for word in (size, colour, noun) if word)
    return _article(phrase)


def _event_phrase(obj: dict, rng: SceneRandom, config: SyntheticConfig, parts: set[str]) -> str:
    verb = _pick(rng, _words(MOTION_WORDS[obj["motion"]], config)) if "motion" in parts else _pick(rng, STATIC_WORDS)
    return f"{_noun_phrase(obj, rng, config, parts)} {verb}"


_ORDERED = (
    "{a}, then {b}",
    "{a} and then {b}",
    "first {a}, then {b}",
    "{a}; after that, {b}",
    "{b} after {a}",
    "after {a}, {b}",
    "{a} before {b}",
    "before {b}, {a}",
    "{a}, and afterwards {b}",
)
_UNORDERED = ("{a} and {b}", "{b} and {a}", "{a}; also, {b}", "{b}; also, {a}")
_PREFIXES = ("", "", "", "a video where ", "in this clip, ", "the clip shows how ", "we see that ", "here, ")


def caption_plan(scene: dict, rng: SceneRandom, partial: bool) -> tuple[list[dict], list[int], list[set[str]], bool]:
    """What a caption will say: (objects in time order, indices mentioned, parts named per object, ordered).

    Complete: every object with size, colour, shape and motion, in time order. Partial: drops the
    size (p 0.5), colour (0.3), shape (0.3) or motion (0.2) of each object (keeping colour or
    shape), and for two events mentions only one (0.3) or leaves their order out (0.4); at least
    one thing is always left out.
    """
    objects = sorted(scene["objects"], key=lambda obj: obj["start"])
    full_parts = {"size", "colour", "shape", "motion"}
    parts_per_object = [set(full_parts) for _ in objects]
    mentioned = list(range(len(objects)))
    ordered = True
    if partial:
        dropped = False
        for parts in parts_per_object:
            for attribute, probability in (("size", 0.5), ("colour", 0.3), ("shape", 0.3), ("motion", 0.2)):
                if rng.random() < probability:
                    parts.discard(attribute)
                    dropped = True
            if "colour" not in parts and "shape" not in parts:  # keep at least one thing to name it by
                parts.add(_pick(rng, ("colour", "shape")))
        if len(objects) == 2:
            roll = rng.random()
            if roll < 0.3:
                mentioned = [int(rng.integers(2))]
                dropped = True
            elif roll < 0.7:
                ordered = False
                dropped = True
        if not dropped:
            parts_per_object[0].discard("size")
    return objects, mentioned, parts_per_object, ordered


def make_caption(scene: dict, rng: SceneRandom, config: SyntheticConfig, partial: bool) -> str:
    """One caption of ``scene`` from the grammar (see :func:`caption_plan` for what it says).

    A complete caption names size, colour, shape and motion of every main object and the order of
    the two events. A partial one leaves some of that out: an attribute, the motion, one of the
    two events, or the order (events joined by "and"). Distractors are never mentioned.
    """
    objects, mentioned, parts_per_object, ordered = caption_plan(scene, rng, partial)
    events = [_event_phrase(objects[i], rng, config, parts_per_object[i]) for i in mentioned]
    if len(events) == 1:
        text = events[0]
    else:
        template = _pick(rng, _ORDERED if ordered else _UNORDERED)
        text = template.format(a=events[0], b=events[1])
    background_words = _words(BACKGROUND_WORDS[scene["background"]["pattern"]], config)
    if rng.random() < config.background_mention:
        where = _pick(rng, background_words)
        if rng.random() < 0.5:
            return f"on {_article(where)} background, {text}"
        return f"{text}, on {_article(where)} background"
    return _pick(rng, _PREFIXES) + text


def make_captions(scene: dict, rng: SceneRandom, config: SyntheticConfig) -> list[tuple[str, bool]]:
    """``captions_per_clip`` distinct (caption, partial) pairs; the first is always complete."""
    out: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for index in range(config.captions_per_clip):
        partial = index > 0 and bool(rng.random() < config.caption_partiality)
        for _attempt in range(20):  # tiny vocabularies may not have enough distinct sentences
            caption = make_caption(scene, rng, config, partial)
            if caption not in seen:
                break
        seen.add(caption)
        out.append((caption, partial))
    return out


# ----------------------------------------------------------------------------------------------
# rendering
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
# audio
# ----------------------------------------------------------------------------------------------


def _band_filters(
    num_bands: int, n_fft: int, sample_rate: int, low: float = 120.0, high: float | None = None
) -> np.ndarray:
    """Triangular filters on a log-frequency axis (like a mel bank), shape (num_bands, n_fft//2+1)."""
    high = high or sample_rate * 0.48
    edges = np.geomspace(low, high, num_bands + 2)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    filters = np.zeros((num_bands, freqs.size))
    for band in range(num_bands):
        lo, centre, hi = edges[band], edges[band + 1], edges[band + 2]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        filters[band] = np.clip(np.minimum(rising, falling), 0.0, None)
    return filters


def synthesize_waveform(scene: dict, config: SyntheticConfig, seed: int | None) -> np.ndarray:
    """The clip's stereo soundtrack (2, N) float32, N = sample_rate * num_frames / fps.

    Each audible main object hums a tone: pitch from its colour (plus a glide with its height on
    screen), timbre (harmonics) from its shape, loudness from its current size and opacity, pan
    from its horizontal position, an accented onset when its motion starts, and an extra partial
    (1.5x clockwise, 0.75x anticlockwise) while it rotates. Distractors are silent. Noise: white
    noise and spurious blips whose level and rate follow ``audio_noise``, and a random gain.
    """
    rng = np.random.default_rng(seed)
    sr = config.audio_sample_rate
    duration = config.num_frames / config.fps
    n = int(round(sr * duration))
    seconds = np.arange(n) / sr
    # Clip time of each sample: frame i is on screen during [i, i+1) / fps and shows time i/(T-1).
    clip_time = np.clip((seconds * config.fps - 0.5) / (config.num_frames - 1), 0.0, 1.0)
    left = np.zeros(n)
    right = np.zeros(n)
    nyquist = sr / 2
    for obj in scene["objects"]:
        if not obj.get("audible", True):
            continue
        start, end = obj["start"], obj["end"]
        progress = np.clip((clip_time - start) / max(end - start, 1e-9), 0.0, 1.0)
        state = {key: obj["from"][key] + (obj["to"][key] - obj["from"][key]) * progress for key in obj["from"]}
        frequency = 220.0 * 2.0 ** ((COLOUR_PITCH[obj["colour"]] + 6.0 * (0.5 - state["y"])) / 12.0)
        phase = 2 * math.pi * np.cumsum(frequency) / sr
        loudness = 0.3 * (SIZE_RADIUS[obj["size"]] / SIZE_RADIUS["large"]) * state["scale"] * state["alpha"]
        onset_seconds = (start * (config.num_frames - 1) + 0.5) / config.fps
        since_onset = seconds - onset_seconds
        loudness = loudness * (1.0 + 1.5 * np.where(since_onset >= 0, np.exp(-np.maximum(since_onset, 0) / 0.08), 0.0))
        tone = np.zeros(n)
        for harmonic, amplitude in enumerate(SHAPE_HARMONICS[obj["shape"]], start=1):
            if amplitude > 0:
                tone += amplitude * np.sin(harmonic * phase) * (harmonic * frequency < nyquist * 0.95)
        if obj["motion"].startswith("rotate"):
            ratio = 1.5 if obj["motion"] == "rotate_cw" else 0.75
            during = (progress > 0) & (progress < 1)
            tone += 0.6 * np.sin(ratio * phase) * during
        signal = tone * loudness
        pan = state["x"] * (math.pi / 2)
        left += signal * np.cos(pan)
        right += signal * np.sin(pan)
    noise_level = 0.1 * config.audio_noise
    left += rng.normal(0.0, noise_level, n)
    right += rng.normal(0.0, noise_level, n)
    for _blip in range(int(rng.poisson(1.5 * config.audio_noise))):
        frequency = float(rng.uniform(180.0, 1600.0))
        begin = float(rng.uniform(0, duration))
        length = float(rng.uniform(0.08, 0.4))
        envelope = ((seconds >= begin) & (seconds < begin + length)) * float(rng.uniform(0.05, 0.2))
        blip = envelope * np.sin(2 * math.pi * frequency * seconds)
        pan = float(rng.uniform(0, math.pi / 2))
        left += blip * math.cos(pan)
        right += blip * math.sin(pan)
    gain = 10.0 ** (float(rng.uniform(-3.0, 3.0)) / 20.0)
    return (np.stack([left, right]) * gain).astype(np.float32)


def audio_features(waveform: np.ndarray, config: SyntheticConfig) -> np.ndarray:
    """Log band energies (T_a, D_a) float32: T_a equal windows, D_a/2 log-spaced bands per channel.

    Values are ``(log(1e-4 + energy) + 5) / 3``, which puts silence near -1.4 and a loud tone
    near +1, so the features need no further normalisation.
    """
    channels, n = waveform.shape
    hop = n // config.audio_frames
    n_fft = 1 << max(int(math.ceil(math.log2(hop))), 6)
    window = np.hanning(hop)
    filters = _band_filters(config.audio_bins // 2, n_fft, config.audio_sample_rate)
    frames = waveform[:, : hop * config.audio_frames].reshape(channels, config.audio_frames, hop) * window
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=-1)) ** 2 / (window.sum() ** 2 / 4)
    energy = power @ filters.T  # (channels, T_a, bands)
    features = (np.log(1e-4 + energy) + 5.0) / 3.0
    return np.concatenate([features[0], features[1]], axis=-1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# writing one clip
# ----------------------------------------------------------------------------------------------


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int,
    crf: int = 18,
    waveform: np.ndarray | None = None,
    sample_rate: int = 8000,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 as H.264 (libx264, yuv420p) into an mp4 at ``path``.

    One encoder thread: x264 output is then a pure function of the frames (deterministic).
    ``waveform`` (2, N) float32 is muxed as an AAC stereo stream when given.
    """
    import av

    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        audio_stream = None
        if waveform is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate, layout="stereo")
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            audio_frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(waveform, dtype=np.float32), format="fltp", layout="stereo"
            )
            audio_frame.sample_rate = sample_rate
            audio_frame.pts = 0
            for packet in audio_stream.encode(audio_frame):
                container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)


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


def _render_group(task: tuple[dict, list[dict], str, str]) -> list[str]:
    """Worker: render, encode and save every clip of one group."""
    config_dict, clips, videos_dir, audio_dir = task
    config = SyntheticConfig(**config_dict)
    frames_of = render_group_frames(clips, config)
    for clip in clips:
        waveform = synthesize_waveform(clip["scene"], config, clip["render_seed"])
        write_mp4(
            Path(videos_dir) / f"{clip['video_id']}.mp4",
            frames_of[clip["video_id"]],
            config.fps,
            config.crf,
            waveform if config.mux_audio else None,
            config.audio_sample_rate,
        )
        np.save(Path(audio_dir) / f"{clip['video_id']}.npy", audio_features(waveform, config), allow_pickle=False)
    return [clip["video_id"] for clip in clips]


# ----------------------------------------------------------------------------------------------
# the benchmark plan (annotations) and its generation
# ----------------------------------------------------------------------------------------------


def _group_sizes(num_hard: int, rng: SceneRandom, max_size: int) -> list[int]:
    sizes = []
    remaining = num_hard
    while remaining >= 2:
        size = min(int(rng.integers(2, max_size + 1)), remaining)
        if remaining - size == 1:  # a lone leftover cannot form a group: take it in, or leave two
            if size < max_size:
                size += 1
            elif size > 2:
                size -= 1
        sizes.append(size)
        remaining -= size
    return sizes


def _plan_split(
    split: str, count: int, rng: SceneRandom, config: SyntheticConfig, group_prefix: str
) -> list[list[dict]]:
    """Groups of clips of one split: hard-negative groups (base first) and singletons, shuffled."""
    groups: list[list[dict]] = []
    for group_index, size in enumerate(
        _group_sizes(int(round(config.hard_negative_fraction * count)), rng, config.max_group_size)
    ):
        group_id = f"{group_prefix}{group_index:04d}"
        only_order = set(config.hard_negative_attributes) == {"order"}
        base = sample_scene(rng, config, two_events=True if only_order else None)
        options = applicable_attributes(base, config)
        rng.shuffle(options)
        # Variants change distinct attributes when possible, repeating one only when too few apply.
        attributes = [options[i % len(options)] for i in range(size - 1)]
        members = [{"scene": base, "differs_in": None, "group": group_id, "base": True}]
        for attribute in attributes:
            members.append(
                {
                    "scene": make_variant(base, attribute, rng, config),
                    "differs_in": attribute,
                    "group": group_id,
                    "base": False,
                }
            )
        groups.append(members)
    num_single = count - sum(len(group) for group in groups)
    for _ in range(num_single):
        groups.append([{"scene": sample_scene(rng, config), "differs_in": None, "group": None, "base": True}])
    rng.shuffle(groups)
    return groups


def build_annotations(config: SyntheticConfig) -> tuple[dict, list[list[dict]]]:
    """The MSR-VTT-layout annotation dict and the render tasks (one list of clips per group).

    Pure function of ``config``: the same config gives the same dict (and the same JSON bytes).
    """
    rng = SceneRandom(config.seed)
    videos: list[dict] = []
    sentences: list[dict] = []
    tasks: list[list[dict]] = []
    next_index = 0
    for split, count in (("train", config.num_train), ("validation", config.num_val), ("test", config.num_test)):
        for group in _plan_split(split, count, rng, config, group_prefix=f"{SPLIT_FIELD[split]}-group"):
            render_seed = rng.seed_value()
            ids = [f"synthetic{next_index + offset:05d}" for offset in range(len(group))]
            next_index += len(group)
            base_id = ids[0]
            clips = []
            for video_id, member in zip(ids, group, strict=True):
                scene = member["scene"]
                if member["group"] is None:
                    hard_negatives = {}
                elif member["base"]:
                    hard_negatives = {
                        other_id: other["differs_in"] for other_id, other in zip(ids[1:], group[1:], strict=True)
                    }
                else:
                    hard_negatives = {base_id: member["differs_in"]}
                reversed_from = base_id if member["differs_in"] == "time_reversal" else None
                entry = {
                    "video_id": video_id,
                    "id": len(videos),
                    "split": SPLIT_FIELD[split],
                    "category": MOTIONS.index(min(scene["objects"], key=lambda obj: obj["start"])["motion"]),
                    "num_events": len(scene["objects"]),
                    "hard_negative_group": member["group"],
                    "hard_negative_of": None if member["base"] else base_id,
                    "differs_in": member["differs_in"],
                    "hard_negatives": hard_negatives,
                    "render_seed": render_seed,
                    "frames_reversed_from": reversed_from,
                    "scene": scene,
                }
                videos.append(entry)
                for caption, partial in make_captions(scene, rng, config):
                    sentences.append(
                        {"video_id": video_id, "caption": caption, "sen_id": len(sentences), "partial": partial}
                    )
                clips.append(
                    {
                        "video_id": video_id,
                        "scene": scene,
                        "render_seed": render_seed,
                        "frames_reversed_from": reversed_from,
                    }
                )
            tasks.append(clips)
    info = {
        "description": "MCKD synthetic text-video retrieval benchmark (dataset_scripts/synthetic.py)",
        "generator_version": GENERATOR_VERSION,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
    }
    return {"info": info, "videos": videos, "sentences": sentences}, tasks


def _read_manifest(output_dir: Path) -> dict | None:
    path = output_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _write_manifest(output_dir: Path, config: SyntheticConfig, complete: bool, **extra: Any) -> None:
    manifest = {
        "generator": "dataset_scripts/synthetic.py",
        "generator_version": GENERATOR_VERSION,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "complete": complete,
        **extra,
    }
    path = output_dir / MANIFEST_NAME
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def is_complete(output_dir: str | os.PathLike, config: SyntheticConfig) -> bool:
    """Whether ``output_dir`` holds a complete benchmark generated with ``config`` (reusable as is)."""
    output_dir = Path(output_dir)
    manifest = _read_manifest(output_dir)
    return (
        manifest is not None
        and manifest.get("complete") is True
        and manifest.get("config_hash") == config.config_hash()
        and (output_dir / ANNOTATION_NAME).is_file()
        and (output_dir / "dataset" / "dataset_dict.json").is_file()
    )


_OWN_ENTRIES = ("videos", "audio", ANNOTATION_NAME, "dataset", MANIFEST_NAME)


def _prepare_output_dir(output_dir: Path, config: SyntheticConfig, overwrite: bool) -> None:
    """Empty our own entries of ``output_dir``, refusing to clobber anything we did not write."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SyntheticOutputExistsError(f"{output_dir}: exists and is not a directory")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        manifest = _read_manifest(output_dir)
        if manifest is None:
            raise SyntheticOutputExistsError(
                f"{output_dir}: not empty and holds no {MANIFEST_NAME} (not a synthetic benchmark folder); "
                "choose another --output_dir, or pass --overwrite to replace its videos/, audio/, dataset/ "
                "and annotations"
            )
        if manifest.get("complete") is True and manifest.get("config_hash") != config.config_hash():
            old = manifest.get("config") or {}
            changed = sorted(key for key, value in config.to_dict().items() if old.get(key) != value)
            raise SyntheticOutputExistsError(
                f"{output_dir}: holds a synthetic benchmark of another config (hash {manifest.get('config_hash')}, "
                f"this config {config.config_hash()}; differing fields: {', '.join(changed) or 'generator version'}); "
                "pass --overwrite (overwrite=True) to regenerate it, or choose another --output_dir"
            )
        # Ours, of this config, but interrupted (complete: false) or damaged: safe to redo.
    for name in _OWN_ENTRIES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def generate_synthetic(
    output_dir: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 2,
    push_to_hub: str | None = None,
    **overrides: Any,
):
    """Generate the synthetic benchmark into ``output_dir`` and return its ``DatasetDict``.

    Writes ``videos/<id>.mp4``, ``audio/<id>.npy`` (float32 (audio_frames, audio_bins)),
    ``MSRVTT_data.json`` and ``dataset/`` (built by :func:`modeling_mckd.data_prep.msrvtt.build_msrvtt`,
    official protocol), plus ``synthetic_manifest.json`` with the config hash. ``overrides`` replace
    fields of ``config`` (e.g. ``num_train=100``). A folder already holding a complete benchmark of
    the same config is reused without regenerating; one of another config raises
    :class:`SyntheticOutputExistsError` unless ``overwrite``. ``workers`` processes render the clips
    (the output does not depend on it).
    """
    from datasets import load_from_disk

    config = dataclasses.replace(config or SyntheticConfig(), **overrides)
    output_dir = Path(output_dir).resolve()
    dataset_dir = output_dir / "dataset"
    if not overwrite and is_complete(output_dir, config):
        dataset = load_from_disk(str(dataset_dir))
        first_split = next(iter(dataset.values()), None)
        paths_valid = first_split is None or len(first_split) == 0 or Path(first_split[0]["video"]).is_file()
        if paths_valid:
            logger.info("reusing the synthetic benchmark in %s (config %s)", output_dir, config.config_hash())
            return dataset
        # The folder was moved: the absolute paths are stale, only the DatasetDict is rebuilt.
        logger.info("%s was moved; rebuilding its DatasetDict with the new paths", output_dir)
        return _build_dataset(output_dir, push_to_hub)
    _prepare_output_dir(output_dir, config, overwrite)
    started = time.perf_counter()
    annotations, tasks = build_annotations(config)
    videos_dir, audio_dir = output_dir / "videos", output_dir / "audio"
    videos_dir.mkdir(parents=True, exist_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(output_dir, config, complete=False)
    config_dict = config.to_dict()
    total = sum(len(clips) for clips in tasks)
    logger.info("rendering %d synthetic clips with %d worker(s) into %s", total, workers, output_dir)
    if workers <= 1 or len(tasks) < 8:
        for clips in tasks:
            _render_group((config_dict, clips, str(videos_dir), str(audio_dir)))
    else:
        _render_in_subprocesses(tasks, config_dict, output_dir, workers)
    annotation_path = output_dir / ANNOTATION_NAME
    annotation_path.write_text(json.dumps(annotations, indent=1) + "\n", encoding="utf-8")
    dataset = _build_dataset(output_dir, push_to_hub)
    seconds = time.perf_counter() - started
    counts = {split: len(dataset[split]) for split in dataset}
    _write_manifest(output_dir, config, complete=True, counts=counts, seconds=round(seconds, 1))
    logger.info("synthetic benchmark written to %s in %.1f s (%s)", output_dir, seconds, counts)
    return dataset


def _render_in_subprocesses(tasks: list[list[dict]], config_dict: dict, output_dir: Path, workers: int) -> None:
    """Render the groups in ``workers`` fresh Python processes, groups dealt round-robin.

    Plain subprocesses rather than a multiprocessing pool: a spawn pool re-imports the caller's
    ``__main__`` (it fails, and the pool then respawns workers forever, for ``python -`` / ``-c``
    callers and re-runs unguarded scripts), and fork is unsafe in a parent that holds threads
    (torch). A worker that fails stops the generation with its stderr.
    """
    import subprocess
    import tempfile

    environment = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # makes `modeling_mckd` importable from a source checkout
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[name] = "1"  # one core per worker
    command = "import sys; from modeling_mckd.data_prep.synthetic import _worker_main; _worker_main(sys.argv[1])"
    with tempfile.TemporaryDirectory(prefix=".render-", dir=output_dir) as scratch:
        running = []
        try:
            for index in range(workers):
                shard = tasks[index::workers]
                if not shard:
                    continue
                job = Path(scratch) / f"shard{index}.json"
                payload = {
                    "config": config_dict,
                    "groups": shard,
                    "videos_dir": str(output_dir / "videos"),
                    "audio_dir": str(output_dir / "audio"),
                }
                job.write_text(json.dumps(payload), encoding="utf-8")
                log = open(Path(scratch) / f"shard{index}.log", "wb")  # noqa: SIM115 (closed below)
                process = subprocess.Popen([sys.executable, "-c", command, str(job)], env=environment, stderr=log)
                running.append((index, process, log))
            failures = []
            for index, process, log in running:
                code = process.wait()
                log.close()
                if code != 0:
                    tail = (Path(scratch) / f"shard{index}.log").read_text(errors="replace")[-2000:]
                    failures.append(f"worker {index} exited with {code}: {tail}")
            if failures:
                raise RuntimeError("synthetic rendering failed; " + "\n".join(failures))
        finally:
            for _index, process, log in running:  # interrupted: leave no orphan behind
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()


def _worker_main(job_path: str) -> None:
    """Entry point of a rendering subprocess: render every group listed in ``job_path``."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    for clips in job["groups"]:
        _render_group((job["config"], clips, job["videos_dir"], job["audio_dir"]))


def _build_dataset(output_dir: Path, push_to_hub: str | None):
    from modeling_mckd.data_prep.msrvtt import build_msrvtt

    return build_msrvtt(
        annotations=output_dir / ANNOTATION_NAME,
        protocol="official",
        output_dir=output_dir / "dataset",
        videos_dir=output_dir / "videos",
        audio_dir=output_dir / "audio",
        missing="error",  # every clip was just written: a missing one is a bug, not data
        push_to_hub=push_to_hub,
    )


def load_annotations(output_dir: str | os.PathLike) -> dict:
    """The ``MSRVTT_data.json`` of a generated folder (with the per-clip scene metadata)."""
    return json.loads((Path(output_dir) / ANNOTATION_NAME).read_text(encoding="utf-8"))


def hard_negative_subset(annotations: dict, split: str = "test") -> list[str]:
    """Ids of the clips of ``split`` (train / validate / test) that belong to a hard-negative group."""
    return [
        v["video_id"] for v in annotations["videos"] if v["split"] == split and v["hard_negative_group"] is not None
    ]


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI: every :class:`SyntheticConfig` field is a flag, plus output and run options."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_scripts.synthetic",
        description=__doc__.split("\n\n")[0] + " Writes DIR/videos/*.mp4, DIR/audio/*.npy, DIR/MSRVTT_data.json and "
        "DIR/dataset (a DatasetDict for datasets.load_from_disk).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output_dir", "--output-dir", required=True, help="folder to generate into")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if the folder holds another config")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (the output does not depend on it)")
    parser.add_argument(
        "--push-to-hub",
        "--push_to_hub",
        dest="push_to_hub",
        default=None,
        metavar="REPO",
        help="also push the DatasetDict",
    )
    group = parser.add_argument_group("benchmark configuration (SyntheticConfig)")
    hints = typing.get_type_hints(SyntheticConfig)
    for field in dataclasses.fields(SyntheticConfig):
        flags = [f"--{field.name}"] + ([f"--{field.name.replace('_', '-')}"] if "_" in field.name else [])
        hint = hints[field.name]
        kwargs: dict[str, Any] = {"help": field.metadata.get("help", ""), "default": field.default, "dest": field.name}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.name == "hard_negative_attributes":
            kwargs.update(nargs="+", choices=field.metadata["choices"])
        else:
            kwargs["type"] = hint
        group.add_argument(*flags, **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    output_dir, overwrite, workers, push_to_hub = (
        args.pop(key) for key in ("output_dir", "overwrite", "workers", "push_to_hub")
    )
    try:
        config = SyntheticConfig(**args)
        dataset = generate_synthetic(output_dir, config, overwrite=overwrite, workers=workers, push_to_hub=push_to_hub)
    except (ValueError, SyntheticOutputExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(dataset)
    return 0


if __name__ == "__main__":
    # Run through the package module, so worker processes find the same functions by name.
    from modeling_mckd.data_prep.synthetic import main as _main

    raise SystemExit(_main())
