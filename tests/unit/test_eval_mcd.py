"""Mel-cepstral distortion: zero for identical audio, growing with added noise, level-invariant, DTW-aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.functional as AF

from speechgpt.eval.mcd import mean_mel_cepstral_distortion, mel_cepstral_distortion


def speech_like(seconds: float = 1.5, rate: int = 16_000) -> np.ndarray:
    """A voiced, gliding-pitch harmonic signal with moving spectral tilt and syllable-rate envelope."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 1.3 * t)) / rate
    x = sum(np.sin(k * phase) * (0.6 + 0.4 * np.sin(2 * np.pi * (0.7 + 0.3 * k) * t + k)) / k for k in range(1, 25))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    return (0.1 * x + 0.003 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


def test_identical_audio_is_zero_and_level_does_not_matter() -> None:
    x = speech_like()
    assert mel_cepstral_distortion(x, x) == 0.0
    assert mel_cepstral_distortion(x, 0.3 * x) == pytest.approx(0.0, abs=1e-3)


def test_grows_with_added_noise() -> None:
    x = speech_like()
    rng = np.random.default_rng(1)
    scores = [
        mel_cepstral_distortion(x, x + level * rng.standard_normal(x.size).astype(np.float32))
        for level in (0.003, 0.01, 0.03, 0.1)
    ]
    assert scores == sorted(scores) and scores[0] > 0.5 and scores[-1] > 5.0, scores


def test_dtw_absorbs_a_repeated_stretch() -> None:
    x = speech_like()
    repeated = np.concatenate([x[:4096], x])  # 16 frames said twice: frame by frame it would not line up
    noisy = x + 0.01 * np.random.default_rng(2).standard_normal(x.size).astype(np.float32)
    assert mel_cepstral_distortion(x, repeated) < 0.25 * mel_cepstral_distortion(x, noisy)


def test_other_rates_are_resampled_and_pairs_averaged() -> None:
    x = speech_like()
    x24 = AF.resample(torch.from_numpy(x), 16_000, 24_000).numpy()
    assert mel_cepstral_distortion(x24, x24, sample_rate=24_000) == 0.0
    noisy = x + 0.03 * np.random.default_rng(3).standard_normal(x.size).astype(np.float32)
    mean = mean_mel_cepstral_distortion([x, x], [x, noisy])
    assert mean == pytest.approx(mel_cepstral_distortion(x, noisy) / 2)
    with pytest.raises(ValueError, match="at least 512"):
        mel_cepstral_distortion(x[:100], x)
    with pytest.raises(ValueError, match="equally many"):
        mean_mel_cepstral_distortion([x], [])
