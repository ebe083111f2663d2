"""Scenes (plain JSON-ready dicts, so the annotation file records exactly what is rendered and
heard), hard-negative variants and captions."""

from __future__ import annotations

import json
import math
import random as pyrandom
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import (
    BACKGROUND_WORDS,
    BACKGROUNDS,
    COLOUR_MATERIALS,
    COLOUR_WORDS,
    COLOURS,
    GENERIC_NOUNS,
    HARD_NEGATIVE_ATTRIBUTES,
    MATERIALS,
    MOTION_WORDS,
    MOTIONS,
    OPPOSITE_MOTION,
    SHAPE_SYMMETRY,
    SHAPE_WORDS,
    SHAPES,
    SIZE_RADIUS,
    SIZE_WORDS,
    STATIC_WORDS,
    SyntheticConfig,
)

# ----------------------------------------------------------------------------------------------
# scenes
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


def _hidden_sound(rng: SceneRandom, config: SyntheticConfig, colour: str, size: str) -> dict[str, Any]:
    """What an object sounds like, which no caption says: its material (tied to its colour only
    with probability ``material_colour_link``), its mass (heavier: lower; large objects tend to be
    heavier) and whether it makes any sound at all."""
    linked = rng.random() < config.material_colour_link
    material = _pick(rng, COLOUR_MATERIALS[colour] if linked else tuple(MATERIALS))
    mass = rng.uniform(0.0, 1.0) + (0.35 if size == "large" else 0.0)
    return {"material": material, "mass": _r(mass), "audible": bool(rng.random() >= config.audio_dropout)}


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
        **_hidden_sound(rng, config, colour, size),
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
    size = _pick(rng, tuple(SIZE_RADIUS))
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "rgb": _jittered_rgb(rng, colour, config),
        "motion": "drift",
        "start": 0.0,
        "end": 1.0,
        "from": _state(x, y, angle=angle),
        "to": _state(x_to, y_to, angle=angle),
        **_hidden_sound(rng, config, colour, size),
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
    background = _sample_background(rng, config)
    # The recording, shared by a hard-negative group: whether there is a soundtrack at all, whether
    # the stereo channels are swapped (so a caption's "left" never fixes the pan) and its gain.
    microphone = {
        "present": bool(rng.random() >= config.audio_missing),
        "swapped": bool(rng.random() < 0.5),
        "gain_db": _r(rng.uniform(-6.0, 6.0)),
    }
    return {"background": background, "objects": main, "distractors": distractors, "microphone": microphone}


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
    if a.get("microphone") != b.get("microphone"):
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
        if any(obj_a.get(key) != obj_b.get(key) for key in ("audible", "material", "mass")):
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
