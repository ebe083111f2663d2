"""Audio: the clip's soundtrack, synthesised from the scene, and its log band-energy features."""

from __future__ import annotations

import math

import numpy as np

from .config import COLOUR_PITCH, SHAPE_HARMONICS, SIZE_RADIUS, SyntheticConfig

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
