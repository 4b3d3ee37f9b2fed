"""Festival diphone voices: a sporadic noise burst never reaches the corpus (two takes must agree)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_builders import tts


class FakeSession:
    """Speaks the takes it is given, in order, as 16 kHz WAV files."""

    def __init__(self, folder: Path, takes: list[np.ndarray]) -> None:
        self.folder, self.takes, self.count = folder, takes, 0

    def synthesize(self, text: str) -> Path:
        wav = self.folder / f"{self.count}.wav"
        sf.write(wav, self.takes[self.count], 16_000)
        self.count += 1
        return wav


def speech(burst: bool = False) -> np.ndarray:
    samples = 0.1 * np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    if burst:
        samples[-1000:] = 0.7
    return samples


@pytest.mark.parametrize(
    ("voice", "takes", "spoken", "kept"),
    [
        ("kal_diphone", [speech(True), speech(), speech()], 3, 1),  # the burst loses to the two that agree
        ("kal_diphone", [speech(), speech(True), speech()], 3, 0),
        ("kal_diphone", [speech(), speech()], 2, 0),  # agreeing takes: no third
        ("cmu_us_slt_arctic_hts", [speech(True)], 1, 0),  # other festival voices speak once
    ],
)
def test_diphone_voices_keep_the_take_two_agree_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voice: str, takes: list[np.ndarray], spoken: int, kept: int
) -> None:
    session = FakeSession(tmp_path, takes)
    monkeypatch.setattr(tts, "festival_session", lambda name, timeout: session)
    audio = tts.synthesize(f"festival:{voice}", "what is ten plus three")
    assert session.count == spoken
    np.testing.assert_allclose(audio.samples, takes[kept], atol=1e-4)
    assert not list(tmp_path.glob("*.wav"))  # every take's file is deleted


def test_three_different_takes_keep_the_quietest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loud, quiet = speech(True), speech()
    session = FakeSession(tmp_path, [loud, quiet, 1.5 * quiet])
    monkeypatch.setattr(tts, "festival_session", lambda name, timeout: session)
    np.testing.assert_allclose(tts.synthesize("festival:ked_diphone", "x").samples, quiet, atol=1e-4)
