"""A spoken question as the chat sessions read it: its samples (an array or an audio file, 16 kHz mono), conditioned
like the clips the models trained on, and the units a `speechgpt units fit` folder makes of them (the unified
variant's question).

A recording is not a TTS clip: it starts and ends with room noise, often a second of it, and its level is whatever
the microphone gave. The demo's training clips start and end within ~0.3 s of speech, in near silence, and speak at
about -20 dBFS. `condition_question` cuts a recording's edges to `margin_s` around its speech and scales its speech to
that level (docs/comparison.md, "Recordings, not TTS clips")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

SpeechToUnits = Callable[[np.ndarray], Sequence[int]]
"""16 kHz mono float32 samples -> units (repeats are merged afterwards, so frame-level ids are fine)."""


FRAME = 320
"""20 ms at 16 kHz: the frames speech is found in."""


def question_samples(audio: np.ndarray | str | Path, condition: bool = True) -> np.ndarray:
    """16 kHz mono float32, conditioned (`condition_question`) unless `condition` is False; an array is taken to be at
    16 kHz already (channels last are down-mixed)."""
    from speechgpt.data.audio import SAMPLE_RATE, read_audio, to_16k_mono

    samples = to_16k_mono(audio, SAMPLE_RATE).samples if isinstance(audio, np.ndarray) else read_audio(audio).samples
    return condition_question(samples) if condition else samples


def condition_question(
    samples: np.ndarray, margin_s: float = 0.15, level_db: float = -20.0, max_gain_db: float = 30.0
) -> np.ndarray:
    """The clip from `margin_s` before its first speech frame to `margin_s` after its last, its speech frames scaled
    to an RMS of `level_db` dBFS (by at most `max_gain_db`, never past full scale). A speech frame is louder than both
    the clip's noise floor (its 10th-percentile frame) + 12 dB and its loudest frame - 40 dB. A clip with no frame
    above that, or shorter than a frame, comes back as it was."""
    from speechgpt.data.audio import SAMPLE_RATE, frame_power

    samples = np.asarray(samples, dtype=np.float32)
    count = samples.size // FRAME
    if count == 0:
        return samples
    power = frame_power(samples, FRAME) + 1e-12
    energy = 10 * np.log10(power)
    speech = energy > max(float(np.percentile(energy, 10)) + 12.0, float(energy.max()) - 40.0)
    if not speech.any():
        return samples
    margin = round(margin_s * SAMPLE_RATE)
    first = int(np.argmax(speech)) * FRAME
    last = (count - int(np.argmax(speech[::-1]))) * FRAME
    kept = samples[max(first - margin, 0) : min(last + margin, samples.size)]
    speech_db = 10 * np.log10(float(np.mean(power[speech])))
    gain = min(level_db - speech_db, max_gain_db)
    peak = float(np.abs(kept).max())
    if peak > 0:
        gain = min(gain, 20 * np.log10(0.99 / peak))
    return (kept * 10 ** (gain / 20)).astype(np.float32)


def speech_to_units_from_kmeans(kmeans_dir: str | Path, dtype: str = "float32") -> SpeechToUnits:
    """A SpeechToUnits from a `speechgpt units fit` folder (its encoder + k-means), as the stage data was made."""
    from speechgpt.units.extract import UnitExtractor

    extractor = UnitExtractor.load(Path(kmeans_dir), dtype=dtype)

    def to_units(samples: np.ndarray) -> list[int]:
        return list(extractor([torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))])[0][0])

    return to_units
