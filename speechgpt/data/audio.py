"""Audio in and out: decode any file or array to 16 kHz mono float32, write files atomically."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Audio that cannot be used; the message reads `kind: detail` (unreadable audio, empty audio, ...)."""


class TruncatedAudioError(AudioError):
    """A file cut short: its header promises more audio than it holds (a copy or download that stopped part-way)."""


_PROMISED_LENGTH = re.compile(r"^\s*(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
"""libsndfile's log line for a WAV `data` / AIFF `SSND` chunk whose size disagrees with the bytes in the file."""
_UNKNOWN_LENGTH = 0x7FFFFFFF
"""Writers that stream to a pipe cannot seek back to fill in the length and put 0xFFFFFFFF (or 0x7FFFFFFF) there."""
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


@dataclass(frozen=True, slots=True)
class Audio16k:
    """A clip converted to the toolkit's canonical form, remembering what it was."""

    samples: np.ndarray
    """float32 mono samples at 16 kHz."""
    orig_sample_rate: int
    """Sample rate of the source before resampling."""
    orig_channels: int
    """Channel count of the source before down-mixing."""

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def read_audio(path: str | Path) -> Audio16k:
    """Decode a file (anything libsndfile reads: wav, flac, ogg, mp3) to 16 kHz mono."""
    try:
        data, rate = read_samples(str(path))
    except AudioError:
        raise
    except Exception as err:  # libsndfile raises several types for corrupt files
        raise AudioError(f"unreadable audio: {err}") from None
    return to_16k_mono(data, rate)


def read_samples(source: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """libsndfile's decoding as float32 (samples, channels) and the sample rate, refusing truncated files
    (TruncatedAudioError); libsndfile's own errors pass through for the caller to word or to try another decoder."""
    with sf.SoundFile(source) as sound:
        _check_complete(sound)
        return sound.read(dtype="float32", always_2d=True), int(sound.samplerate)


def _check_complete(sound: sf.SoundFile) -> None:
    # libsndfile reads what is there and says nothing: a header promising 64,000 bytes over 56 gives a 28-sample clip.
    match = _PROMISED_LENGTH.search(sound.extra_info)
    if match is None:
        return
    promised, present = int(match[1]), int(match[2])
    frame_bytes = sound.channels * _SAMPLE_BYTES.get(sound.subtype, 1)
    if promised < _UNKNOWN_LENGTH and promised - present >= frame_bytes:
        raise TruncatedAudioError(
            f"truncated audio: the header promises {promised} bytes of audio, the file holds {present}"
        )


def to_16k_mono(data: np.ndarray, rate: int) -> Audio16k:
    """Down-mix (channels last or a 1-D array) and resample to 16 kHz; reject empty and all-zero clips."""
    array = np.asarray(data, dtype=np.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioError(f"bad audio: array must be 1-D or (samples, channels), got shape {array.shape}")
    channels = array.shape[1]
    mono = array.mean(axis=1) if channels > 1 else array[:, 0]
    if mono.size == 0:
        raise AudioError("empty audio: 0 samples")
    if not np.isfinite(mono).all():
        raise AudioError("bad audio: NaN or infinite samples")
    if not np.any(mono):
        raise AudioError("silent audio: every sample is zero")
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate, SAMPLE_RATE)
    return Audio16k(np.ascontiguousarray(mono, dtype=np.float32), int(rate), int(channels))


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited sinc resampling (torchaudio), deterministic on CPU."""
    import torch
    import torchaudio.functional as taf

    tensor = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return taf.resample(tensor, int(orig_rate), int(new_rate)).numpy()


def frame_power(samples: np.ndarray, frame: int) -> np.ndarray:
    """Mean square (float64) of each whole `frame`-sample frame of `samples`; a partial last frame is left out."""
    count = len(samples) // frame
    return np.mean(samples[: count * frame].reshape(count, frame).astype(np.float64) ** 2, axis=1)


def write_audio(path: str | Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM (format from the suffix: .flac or .wav) via a temporary file, so a killed job leaves none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clipped = np.clip(samples, -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        sf.write(tmp, clipped, rate, subtype="PCM_16", format=path.suffix.lstrip(".").upper())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
