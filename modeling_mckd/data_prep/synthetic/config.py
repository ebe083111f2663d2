"""Configuration and vocabulary of the synthetic benchmark: :class:`SyntheticConfig`, the palette,
shapes, motions and their words (every list starts with the canonical word; ``synonyms=k`` keeps
the first k)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


#: Bumped whenever the generator's output changes for a given config (invalidates reuse).
GENERATOR_VERSION = "2"  # 2: event-locked audio from hidden materials, ambience, missing tracks

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
#: Hidden material of every object (never named by a caption): what it sounds like when it starts,
#: stops or touches another object (modal partials: frequency ratios, amplitudes, decay in seconds)
#: and the centre of the band of noise it makes while it moves (friction, in Hz).
MATERIALS: dict[str, dict[str, Any]] = {
    "wood": {"base": 420.0, "ratios": (1.0, 2.6, 4.3), "amplitudes": (1.0, 0.5, 0.25), "decay": 0.05, "friction": 900.0},
    "metal": {
        "base": 700.0,
        "ratios": (1.0, 2.76, 5.4, 8.93),
        "amplitudes": (1.0, 0.6, 0.4, 0.25),
        "decay": 0.5,
        "friction": 2500.0,
    },
    "glass": {"base": 1100.0, "ratios": (1.0, 2.32, 4.25), "amplitudes": (1.0, 0.45, 0.3), "decay": 0.2, "friction": 3000.0},
    "rubber": {"base": 160.0, "ratios": (1.0, 1.6), "amplitudes": (1.0, 0.3), "decay": 0.03, "friction": 300.0},
}
#: The materials an object of each colour tends to be made of (with probability
#: ``SyntheticConfig.material_colour_link``; otherwise any material): a noisy, many-to-one link,
#: so a colour word says a little about the sound and never fixes it.
COLOUR_MATERIALS: dict[str, tuple[str, ...]] = {
    "red": ("wood", "rubber"),
    "orange": ("wood", "rubber"),
    "yellow": ("wood", "rubber"),
    "pink": ("wood", "rubber"),
    "green": ("metal", "glass"),
    "cyan": ("metal", "glass"),
    "blue": ("metal", "glass"),
    "purple": ("metal", "glass"),
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
        metadata=_help("white-noise level of the soundtrack, and the rate of off-screen sounds"),
    )
    audio_dropout: float = dataclasses.field(
        default=0.15, metadata=_help("probability that an object (main or distractor) makes no sound")
    )
    audio_missing: float = dataclasses.field(
        default=0.1, metadata=_help("probability that a clip's soundtrack is missing (a dead track: noise floor only)")
    )
    material_colour_link: float = dataclasses.field(
        default=0.6,
        metadata=_help("probability that an object's hidden material is drawn from its colour's pair (else any)"),
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
            ("audio_missing", 0.0 <= self.audio_missing <= 1.0, "a number in [0, 1]"),
            ("material_colour_link", 0.0 <= self.material_colour_link <= 1.0, "a number in [0, 1]"),
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
