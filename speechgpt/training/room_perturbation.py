"""Clips heard as recordings are: through noise and in a room. Each clip's draw comes from its id, so a feature
cache of perturbed clips stays deterministic (speechgpt/training/feature_cache.py).

    noisy = with_noise(samples, snr_db=20.0, seed=7)          # white noise 20 dB under the clip's speech
    wet = with_reverb(samples, rt60_s=0.4, seed=7)            # a synthetic room's impulse response, same peak
    perturbed = room_perturbed(samples, clip_id, RoomSettings(noise_fraction=0.5, reverb_fraction=0.3))
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from speechgpt.data.audio import SAMPLE_RATE, frame_power


def id_fraction(clip_id: str, salt: str = "") -> float:
    """A number in [0, 1) drawn from a clip's id (and `salt`, for draws independent of each other)."""
    return int(hashlib.sha256((salt + clip_id).encode()).hexdigest()[:8], 16) / 2**32


def _seed(clip_id: str, salt: str) -> int:
    return int(id_fraction(clip_id, salt) * 2**32)


def speech_power(samples: np.ndarray, frame: int = 320, range_db: float = 30.0) -> float:
    """Mean power of the 20 ms frames within `range_db` of the loudest (the speech, not the silence around it)."""
    if samples.size < frame:
        return float(np.mean(samples.astype(np.float64) ** 2)) if samples.size else 0.0
    power = frame_power(samples, frame)
    return float(np.mean(power[power >= power.max() * 10 ** (-range_db / 10)]))


def with_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """`samples` with white noise `snr_db` below their speech's power, over the whole clip."""
    noise = np.random.default_rng(seed).standard_normal(samples.size)
    scaled = noise * np.sqrt(speech_power(samples) / 10 ** (snr_db / 10))
    return (samples + scaled).astype(np.float32)


def with_reverb(samples: np.ndarray, rt60_s: float, seed: int) -> np.ndarray:
    """`samples` through a synthetic room (the direct sound, then noise decaying by 60 dB in `rt60_s`), scaled back
    to their peak and cut to their length."""
    length = max(int(rt60_s * SAMPLE_RATE), 1)
    t = np.arange(length) / SAMPLE_RATE
    response = np.random.default_rng(seed).standard_normal(length) * np.exp(-6.9 * t / rt60_s) * 0.3
    response[0] = 1.0
    size = 1 << int(np.ceil(np.log2(samples.size + length - 1)))  # FFT convolution: milliseconds, not seconds
    spectrum = np.fft.rfft(samples.astype(np.float64), size) * np.fft.rfft(response, size)
    wet = np.fft.irfft(spectrum, size)[: samples.size]
    peak, wet_peak = float(np.abs(samples).max(initial=0.0)), float(np.abs(wet).max(initial=0.0))
    return (wet * (peak / wet_peak) if wet_peak > 0 else wet).astype(np.float32)


@dataclass(kw_only=True)
class RoomSettings:
    noise_fraction: float = 0.0
    """Share of clips (drawn from each clip's id) heard through white noise at an SNR drawn from `snr_db`."""
    snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])
    """[low, high]: the noisy clips' SNR, uniform in dB."""
    reverb_fraction: float = 0.0
    """Share of clips (drawn independently of the noise) heard in a synthetic room, RT60 uniform in `rt60_s`."""
    rt60_s: list[float] = field(default_factory=lambda: [0.2, 0.6])
    """[low, high]: the rooms' reverberation time in seconds."""

    def __post_init__(self) -> None:
        for name in ("noise_fraction", "reverb_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("snr_db", "rt60_s"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                raise ValueError(f"{name} must be [low, high] with low <= high, got {low_high}")
        if self.rt60_s[0] <= 0:
            raise ValueError(f"rt60_s must be > 0, got {self.rt60_s}")

    @property
    def active(self) -> bool:
        return self.noise_fraction > 0 or self.reverb_fraction > 0


def room_perturbed(samples: np.ndarray, clip_id: str, room: RoomSettings) -> np.ndarray:
    """The clip in a room (first) and through noise (then), each where its draw from the clip's id falls under its
    fraction; the clip as it was where neither does."""
    if id_fraction(clip_id, "reverb:") < room.reverb_fraction:
        low, high = room.rt60_s
        samples = with_reverb(samples, low + (high - low) * id_fraction(clip_id, "rt60:"), _seed(clip_id, "room:"))
    if id_fraction(clip_id, "noise:") < room.noise_fraction:
        low, high = room.snr_db
        samples = with_noise(samples, low + (high - low) * id_fraction(clip_id, "snr:"), _seed(clip_id, "hiss:"))
    return samples
