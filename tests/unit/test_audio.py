"""Decoding audio files: a file cut short is refused as truncated, not read as the few samples that are left."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechgpt.app.chat import read_question_audio
from speechgpt.data.audio import AudioError, TruncatedAudioError, read_audio

RATE = 16_000


def pcm_wav(promised_bytes: int, payload: bytes, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV whose header promises `promised_bytes` of audio and whose data chunk holds `payload`."""
    block = 2 * channels
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, RATE, RATE * block, block, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + promised_bytes)
        + b"WAVEfmt "
        + fmt
        + b"data"
        + struct.pack("<I", promised_bytes)
        + payload
    )


def samples(count: int) -> bytes:
    return (8000 * np.sin(np.arange(count) / 3)).astype("<i2").tobytes()


def test_a_wav_whose_header_promises_more_than_it_holds_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    path.write_bytes(pcm_wav(64_000, samples(28)))  # 2 s promised, 28 samples there
    with pytest.raises(TruncatedAudioError, match=r"^truncated audio: .*64000 bytes.*holds 56$"):
        read_audio(path)
    with pytest.raises(AudioError, match="truncated audio"):  # `speechgpt chat --audio cut.wav`
        read_question_audio(path)


def test_cut_inside_a_frame_is_truncated_too(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    path.write_bytes(pcm_wav(64_000, samples(100) + b"\x01"))
    with pytest.raises(TruncatedAudioError):
        read_audio(path)


def test_a_complete_wav_and_a_streamed_one_of_unknown_length_are_read(tmp_path: Path) -> None:
    whole = tmp_path / "whole.wav"
    whole.write_bytes(pcm_wav(56, samples(28)))
    assert len(read_audio(whole).samples) == 28
    streamed = tmp_path / "streamed.wav"  # what ffmpeg writes to a pipe: it cannot go back to fill in the length
    streamed.write_bytes(pcm_wav(0xFFFFFFFF - 36, samples(1600)))
    assert len(read_audio(streamed).samples) == 1600


@pytest.mark.parametrize("file_format", ["WAV", "AIFF"])
def test_files_written_then_cut_are_truncated(tmp_path: Path, file_format: str) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(np.arange(RATE) / 5), RATE, format=file_format, subtype="PCM_16")
    whole = tmp_path / f"whole.{file_format.lower()}"
    whole.write_bytes(buffer.getvalue())
    assert len(read_audio(whole).samples) == RATE
    cut = tmp_path / f"cut.{file_format.lower()}"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(TruncatedAudioError, match="truncated audio"):
        read_audio(cut)
