"""The duplex stream's speech detector and gain: steady noise (from the stream's first piece on) opens nothing, a
question in it opens one utterance from `margin_s` before its first speech frame, a quiet one is raised to the
level a whole question is conditioned to, and the stream's speech level carries to the next utterance."""

from __future__ import annotations

import numpy as np
import pytest

from speechgpt.infer.speech_input import FRAME, condition_question
from speechgpt.infer.stream_input import StreamConditioner, StreamSettings, frame_levels

CHUNK = 2560  # 160 ms
RATE = 16_000


def tone(seconds: float, db: float) -> np.ndarray:
    """A vowel-like harmonic tone with an RMS of `db` dBFS."""
    t = np.arange(round(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    return (wave / np.sqrt(np.mean(wave**2)) * 10 ** (db / 20)).astype(np.float32)


def noise(seconds: float, db: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * 10 ** (db / 20)).astype(np.float32)


def rms_db(wave: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(wave.astype(np.float64) ** 2)))


def stream(conditioner: StreamConditioner, wave: np.ndarray) -> tuple[int | None, np.ndarray]:
    """The piece index an utterance opened at (None: never) and everything the listener heard."""
    opened, heard = None, []
    for index, start in enumerate(range(0, wave.size, CHUNK)):
        piece = wave[start : start + CHUNK]
        if opened is None:
            got = conditioner.start(piece)
            if got is not None:
                opened, heard = index, [got]
        else:
            heard.append(conditioner.follow(piece))
    return opened, np.concatenate(heard) if heard else np.zeros(0, np.float32)


def test_steady_noise_opens_nothing_even_from_the_first_piece() -> None:
    for level in (-70.0, -55.0, -40.0):
        assert stream(StreamConditioner(), noise(3.0, level))[0] is None


@pytest.mark.parametrize("speech_db", [-20.0, -45.0])
def test_a_question_opens_at_its_speech_with_a_margin_and_at_the_trained_level(speech_db: float) -> None:
    lead = 1.05  # not a whole number of pieces
    background = noise(lead + 1.0 + 0.5, speech_db - 20, seed=1)
    wave = background.copy()
    first = round(lead * RATE)
    wave[first : first + RATE] += tone(1.0, speech_db)
    opened, heard = stream(StreamConditioner(), wave)
    assert opened == first // CHUNK
    margin = round(StreamSettings().margin_s * RATE)
    onset = first // FRAME * FRAME  # the first whole frame holding the tone
    assert heard.size == wave.size - (onset - margin) or heard.size == wave.size - (onset + FRAME - margin)
    speech = heard[margin + FRAME : margin + RATE - FRAME]
    assert rms_db(speech) == pytest.approx(-20.0, abs=1.0)  # a whole question's level, quiet or not
    whole = condition_question(wave)
    assert rms_db(whole[margin + FRAME : margin + RATE - FRAME]) == pytest.approx(rms_db(speech), abs=1.0)


def test_gain_off_passes_the_audio_through_and_the_speech_level_carries_over() -> None:
    conditioner = StreamConditioner(StreamSettings(gain=False))
    quiet = np.concatenate([np.zeros(CHUNK * 4, np.float32), tone(0.64, -45.0)])
    opened, heard = stream(conditioner, quiet)
    assert opened is not None and conditioner.gain_db == 0.0
    assert np.array_equal(heard[-CHUNK:], quiet[-CHUNK:])
    before = conditioner.speech_db
    conditioner.end()
    assert conditioner.speech_db < before  # the stream speaks at -45 dBFS, not -20: the next opens nearer that
    assert frame_levels(np.zeros(FRAME - 1, np.float32)).size == 0
