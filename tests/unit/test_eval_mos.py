"""DNSMOS through speechmos's shipped weights: in range on real speech, low on noise, features as librosa makes them."""

from __future__ import annotations

import numpy as np
import pytest

from data_builders.tts import synthesize
from speechgpt.eval.mos import load_dnsmos, log_mel_p808, mel_filters

SENTENCE = "The committee will meet again on Thursday to discuss the budget."


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return synthesize("flite:slt", SENTENCE).samples.astype(np.float32)


def test_real_speech_scores_in_range_and_above_noise(speech: np.ndarray) -> None:
    dnsmos = load_dnsmos()
    clean = dnsmos.score(speech, hop_s=10)  # one 9 s window of the repeated clip: ~0.5 s each
    rng = np.random.default_rng(0)
    noisy = np.clip(speech + 0.05 * rng.standard_normal(speech.size), -1, 1).astype(np.float32)
    noisy_score = dnsmos.score(noisy, hop_s=10)
    noise = dnsmos.score((0.1 * rng.standard_normal(speech.size)).astype(np.float32), hop_s=10)
    for score in (clean, noisy_score, noise):
        assert all(1.0 <= v <= 5.0 for v in score.to_dict().values()), score
    # TTS speech in silence: a fair overall score and a clean background; noise and noisy speech score far lower
    assert clean.ovrl > 2.5 and clean.bak > 3.5, clean
    assert noise.ovrl < 1.5 and noisy_score.ovrl < clean.ovrl - 0.5 and noisy_score.bak < clean.bak - 1.0
    assert dnsmos.mean([speech, speech], hop_s=10).ovrl == pytest.approx(clean.ovrl)


def test_rejects_silence_and_other_rates(speech: np.ndarray) -> None:
    with pytest.raises(ValueError, match="non-silent"):
        load_dnsmos().score(np.zeros(16_000, dtype=np.float32))
    with pytest.raises(ValueError, match="16000"):
        load_dnsmos().score(speech, sample_rate=22_050)


def test_p808_features_match_librosa_reference_values() -> None:
    # librosa.filters.mel(sr=16000, n_fft=321, n_mels=120): Slaney-normalized rows, zero DC, first peak near 66 Hz
    filters = mel_filters()
    assert filters.shape == (120, 161) and filters[:, 0].max() == 0.0
    assert filters[0].argmax() == 1 and filters[0].max() == pytest.approx(2.1270e-05, rel=1e-4)
    # a pure tone: its dB spectrum peaks at 0 (relative to the max) in the band of its frequency, 80 dB floor
    tone = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000).astype(np.float32)
    features = log_mel_p808(tone)
    assert features.shape == (100, 120) and features.max() == pytest.approx(1.0)
    assert features.min() == pytest.approx(-1.0, abs=1e-6)  # (-80 + 40) / 40
    assert abs(int(features[50].argmax()) - int(np.argmax(filters[:, round(1000 * 321 / 16_000)]))) <= 1
