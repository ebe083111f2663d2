"""Audio: the clip's soundtrack, synthesised from the scene, and its log band-energy features.

The soundtrack is built to be informative about the clip without being a code of its captions:

- sounds happen at **visual events**: an object knocks when its motion starts and when it stops,
  two objects knock when their outlines begin to touch, and a moving object rubs (band noise whose
  level follows how fast its outline changes on screen). Audio-visual synchrony is the signal;
- what those sounds are like comes from **hidden properties** that no caption names: each
  object's material (modal partials and decay) and mass (pitch), drawn per object; a colour word
  shifts the odds of a material (``material_colour_link``) and a size word those of mass, no more;
- an **ambience** follows the background's hue and brightness (never named by a caption);
- distractors sound like any other object, so the soundtrack is not clean where the frame is not;
- the **recording** varies: a random gain, stereo channels swapped in half of the clips (so "moves
  left" does not fix the pan), off-screen knocks at random times, white noise, objects that make
  no sound (``audio_dropout``) and whole tracks that are missing (``audio_missing``: only the
  noise floor is left; the feature file is still written, so every clip has one).
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from .config import MATERIALS, SIZE_RADIUS, SyntheticConfig
from .render import object_state

#: Outlines closer than this fraction of the sum of their radii are touching.
CONTACT_FRACTION = 0.85


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


def _band_noise(rng: np.random.Generator, n: int, sample_rate: int, centre: float, octaves: float) -> np.ndarray:
    """Unit-RMS noise whose spectrum is a Gaussian around ``centre`` Hz, ``octaves`` wide (std)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), 1.0)
    spectrum *= np.exp(-0.5 * (np.log2(freqs / centre) / octaves) ** 2)
    noise = np.fft.irfft(spectrum, n)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def _states(obj: dict, clip_time: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`object_state` for an array of clip times."""
    progress = np.clip((clip_time - obj["start"]) / max(obj["end"] - obj["start"], 1e-9), 0.0, 1.0)
    return {key: obj["from"][key] + (obj["to"][key] - obj["from"][key]) * progress for key in obj["from"]}


def material_frequency(obj: dict) -> float:
    """The fundamental of an object's knock: its material's, an octave lower per unit of mass."""
    return MATERIALS[obj["material"]]["base"] * 2.0 ** (-float(obj["mass"]))


def _knock(seconds: np.ndarray, onset: float, obj: dict, amplitude: float, nyquist: float) -> np.ndarray:
    """The modal ring of ``obj``'s material struck at ``onset`` seconds (zero before it)."""
    material = MATERIALS[obj["material"]]
    since = seconds - onset
    active = since >= 0
    t = np.where(active, since, 0.0)
    fundamental = material_frequency(obj)
    out = np.zeros_like(seconds)
    for harmonic, (ratio, weight) in enumerate(zip(material["ratios"], material["amplitudes"], strict=True), 1):
        frequency = fundamental * ratio
        if frequency < nyquist * 0.95:
            decay = material["decay"] / math.sqrt(harmonic)  # higher partials die sooner
            out += weight * np.sin(2 * math.pi * frequency * t) * np.exp(-t / decay)
    return out * active * amplitude


def _visible_radius(obj: dict, state: dict) -> float:
    return SIZE_RADIUS[obj["size"]] * state["scale"] * state["alpha"]


def event_times(scene: dict, num_frames: int) -> list[tuple[float, dict, float]]:
    """The visual events that sound, as (clip time in [0, 1], object, amplitude before noise).

    Every main object knocks at the start and at the end of its motion (as loud as it is visible
    then: an appearing object is silent at its start); every pair of objects knocks when their
    outlines begin to touch (from one frame to the next), each with its own material.
    """
    events: list[tuple[float, dict, float]] = []
    for obj in scene["objects"]:
        for moment in (obj["start"], obj["end"]):
            radius = _visible_radius(obj, object_state(obj, moment))
            if radius > 0:
                events.append((float(moment), obj, radius / SIZE_RADIUS["large"]))
    everything = scene["objects"] + scene["distractors"]
    times = np.arange(num_frames) / (num_frames - 1)
    states = [[object_state(obj, float(t)) for t in times] for obj in everything]
    for a in range(len(everything)):
        for b in range(a + 1, len(everything)):
            touching_before = False
            for index, time in enumerate(times):
                sa, sb = states[a][index], states[b][index]
                reach = CONTACT_FRACTION * (
                    SIZE_RADIUS[everything[a]["size"]] * sa["scale"] + SIZE_RADIUS[everything[b]["size"]] * sb["scale"]
                )
                visible = min(sa["alpha"], sb["alpha"]) > 0.3
                touching = visible and math.hypot(sa["x"] - sb["x"], sa["y"] - sb["y"]) < reach
                if touching and not touching_before and index > 0:
                    strength = min(_visible_radius(everything[a], sa), _visible_radius(everything[b], sb))
                    for obj in (everything[a], everything[b]):
                        events.append((float(time), obj, 0.8 * strength / SIZE_RADIUS["large"]))
                touching_before = touching
    return sorted(events, key=lambda event: event[0])


def synthesize_waveform(scene: dict, config: SyntheticConfig, seed: int | None) -> np.ndarray:
    """The clip's stereo soundtrack (2, N) float32, N = sample_rate * num_frames / fps.

    See the module docstring. All randomness is drawn from ``seed`` (the clip's render seed) in a
    fixed order, and every scene property it reads is recorded in the annotation file.
    """
    rng = np.random.default_rng(seed)
    sr = config.audio_sample_rate
    duration = config.num_frames / config.fps
    n = int(round(sr * duration))
    seconds = np.arange(n) / sr
    nyquist = sr / 2
    left = np.zeros(n)
    right = np.zeros(n)
    microphone = scene.get("microphone", {"present": True, "swapped": False, "gain_db": 0.0})
    # Drawn whether or not the track is missing, so that the noise below does not depend on it.
    event_jitter = rng.normal(0.0, 0.012, 64)
    event_gain = rng.uniform(0.6, 1.2, 64)

    def add(signal: np.ndarray, x: float | np.ndarray) -> None:
        nonlocal left, right
        pan = (0.2 + 0.6 * np.asarray(x)) * (math.pi / 2)  # a narrow stereo image
        left = left + signal * np.cos(pan)
        right = right + signal * np.sin(pan)

    if microphone["present"]:
        # Ambience of the place: band noise at a pitch set by the background's hue, level by its
        # brightness, slowly swelling.
        hue, saturation, value = colorsys.rgb_to_hsv(*scene["background"]["base"])
        centre = 180.0 * 2.0 ** (4.0 * hue)
        swell = 1.0 + 0.3 * np.sin(2 * math.pi * (seconds / duration + hue))
        add(0.02 * (0.5 + value + saturation) * swell * _band_noise(rng, n, sr, centre, 0.5), 0.5)
        # Clip time of each sample: frame i is on screen during [i, i+1) / fps and shows time i/(T-1).
        clip_time = np.clip((seconds * config.fps - 0.5) / (config.num_frames - 1), 0.0, 1.0)
        for obj in scene["objects"] + scene["distractors"]:
            if not obj.get("audible", True):
                continue
            # Rubbing: noise at the material's band, as loud as the outline moves on screen.
            state = _states(obj, clip_time)
            radius = SIZE_RADIUS[obj["size"]] * state["scale"]
            speed = (
                np.abs(np.gradient(state["x"]))
                + np.abs(np.gradient(state["y"]))
                + np.abs(np.gradient(radius))
                + np.abs(np.gradient(np.radians(state["angle"]))) * radius
                + np.abs(np.gradient(state["alpha"])) * radius
            ) * sr  # frame fractions per second
            centre = MATERIALS[obj["material"]]["friction"] * 2.0 ** (-0.5 * float(obj["mass"]))
            level = 0.25 * np.minimum(speed, 1.0) * np.maximum(state["alpha"], 0.2)
            add(level * _band_noise(rng, n, sr, centre, 0.35), state["x"])
        for index, (time, obj, amplitude) in enumerate(event_times(scene, config.num_frames)):
            if not obj.get("audible", True):
                continue
            onset = (time * (config.num_frames - 1) + 0.5) / config.fps + event_jitter[index % 64]
            knock = _knock(seconds, onset, obj, 0.35 * amplitude * event_gain[index % 64], nyquist)
            add(knock, object_state(obj, time)["x"])
        # Off-screen knocks: sounds with no visual event.
        for _sound in range(int(rng.poisson(1.5 * config.audio_noise))):
            stranger = {
                "material": str(rng.choice(sorted(MATERIALS))),
                "mass": float(rng.uniform(0.0, 1.35)),
            }
            add(_knock(seconds, float(rng.uniform(0, duration)), stranger, float(rng.uniform(0.1, 0.3)), nyquist),
                float(rng.uniform(0, 1)))
    noise_level = 0.1 * config.audio_noise + 0.003  # the floor: a missing track is not digital silence
    left = left + rng.normal(0.0, noise_level, n)
    right = right + rng.normal(0.0, noise_level, n)
    if microphone["swapped"]:
        left, right = right, left
    gain = 10.0 ** (float(microphone["gain_db"]) / 20.0) if microphone["present"] else 1.0
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
