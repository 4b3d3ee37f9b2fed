"""A recorded question is conditioned like the clips the models trained on: its noisy edges cut to a margin around
its speech, its speech scaled to the training clips' level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechgpt.data.audio import write_audio
from speechgpt.infer.speech_input import condition_question, question_samples

RATE = 16_000


def db(value: float) -> float:
    return float(10 ** (value / 20))


def rms_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples.astype(np.float64) ** 2)))


def recording(
    speech_db: float = -30.0, lead_s: float = 1.0, tail_s: float = 0.8, noise_db: float = -60.0
) -> np.ndarray:
    """One second of speech-like sound (a vowel-ish harmonic tone, amplitude-modulated) between noisy edges."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    voiced *= db(speech_db) / np.sqrt(np.mean(voiced**2))
    clip = np.concatenate([np.zeros(int(lead_s * RATE)), voiced, np.zeros(int(tail_s * RATE))])
    return (clip + rng.standard_normal(clip.size) * db(noise_db)).astype(np.float32)


def test_the_edges_are_cut_to_the_margin_and_the_speech_scaled_to_the_level() -> None:
    out = condition_question(recording(), margin_s=0.15, level_db=-20.0)
    assert out.size / RATE == pytest.approx(1.0 + 2 * 0.15, abs=0.045)  # within a 20 ms frame at each end
    middle = out[int(0.25 * RATE) : int(1.05 * RATE)]
    assert rms_db(middle) == pytest.approx(-20.0, abs=1.0)
    quiet = condition_question(recording(speech_db=-50.0, noise_db=-80.0))
    assert rms_db(quiet[int(0.25 * RATE) : int(1.05 * RATE)]) == pytest.approx(-20.0, abs=1.0)


def test_the_gain_stops_at_its_limit_and_below_full_scale() -> None:
    whisper = condition_question(recording(speech_db=-70.0, noise_db=-100.0), max_gain_db=30.0)
    assert rms_db(whisper[int(0.25 * RATE) : int(1.05 * RATE)]) == pytest.approx(-40.0, abs=1.0)
    peaky = recording(speech_db=-20.0)
    peaky[RATE + 100] = 0.9  # one click near full scale: the gain may not push it past 0.99
    assert np.abs(condition_question(peaky, level_db=-6.0)).max() <= 0.99 + 1e-6


def test_noise_alone_and_clips_shorter_than_a_frame_come_back_as_they_were() -> None:
    noise = (np.random.default_rng(1).standard_normal(RATE) * 0.01).astype(np.float32)
    assert np.array_equal(condition_question(noise), noise)
    short = np.full(100, 0.1, dtype=np.float32)
    assert np.array_equal(condition_question(short), short)
    assert condition_question(np.zeros(0, dtype=np.float32)).size == 0


def test_a_clean_tts_clip_keeps_its_words_and_loses_only_padding(tmp_path: Path) -> None:
    from data_builders.tts import synthesize

    clip = np.asarray(synthesize("flite:slt", "what is three plus five").samples, dtype=np.float32)
    padded = np.concatenate([np.zeros(RATE, np.float32), clip, np.zeros(RATE // 2, np.float32)])
    padded += (np.random.default_rng(2).standard_normal(padded.size) * db(-55.0)).astype(np.float32)
    path = tmp_path / "question.wav"
    write_audio(path, padded)
    conditioned = question_samples(path)
    assert clip.size - 0.35 * RATE <= conditioned.size <= clip.size + 0.1 * RATE  # flite's own edges are short
    assert question_samples(path, condition=False).size == padded.size
