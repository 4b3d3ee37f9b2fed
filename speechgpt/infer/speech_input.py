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
MARGIN_S = 0.15
"""Audio kept before the first speech frame and after the last."""
SPEECH_LEVEL_DB = -20.0
"""RMS of the speech frames after conditioning, dB full scale: the training clips' level."""
MAX_GAIN_DB = 30.0
"""The most a quiet recording is raised."""
FLOOR_MARGIN_DB = 12.0
"""A speech frame is at least this much louder than the noise floor."""


def question_samples(audio: np.ndarray | str | Path, condition: bool = True) -> np.ndarray:
    """16 kHz mono float32, conditioned (`condition_question`) unless `condition` is False; an array is taken to be at
    16 kHz already (channels last are down-mixed)."""
    from speechgpt.data.audio import SAMPLE_RATE, read_audio, to_16k_mono

    samples = to_16k_mono(audio, SAMPLE_RATE).samples if isinstance(audio, np.ndarray) else read_audio(audio).samples
    return condition_question(samples) if condition else samples


def condition_question(
    samples: np.ndarray,
    margin_s: float = MARGIN_S,
    level_db: float = SPEECH_LEVEL_DB,
    max_gain_db: float = MAX_GAIN_DB,
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
    speech = energy > max(float(np.percentile(energy, 10)) + FLOOR_MARGIN_DB, float(energy.max()) - 40.0)
    if not speech.any():
        return samples
    margin = round(margin_s * SAMPLE_RATE)
    first = int(np.argmax(speech)) * FRAME
    last = (count - int(np.argmax(speech[::-1]))) * FRAME
    kept = samples[max(first - margin, 0) : min(last + margin, samples.size)]
    gain = speech_gain_db(float(np.mean(power[speech])), float(np.abs(kept).max()), level_db, max_gain_db)
    return with_gain(kept, gain)


def with_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """`samples` scaled by `gain_db`, the product taken in float64 and returned as float32."""
    return (samples * np.float64(10 ** (gain_db / 20))).astype(np.float32)


def speech_gain_db(speech_power: float, peak: float, level_db: float, max_gain_db: float) -> float:
    """The gain that brings speech of mean power `speech_power` to `level_db` dBFS: at most `max_gain_db`, and none
    that would take `peak` past 0.99."""
    gain = min(level_db - 10 * float(np.log10(max(speech_power, 1e-12))), max_gain_db)
    return min(gain, 20 * float(np.log10(0.99 / peak))) if peak > 0 else gain


def speech_to_units_from_kmeans(kmeans_dir: str | Path, dtype: str = "float32") -> SpeechToUnits:
    """A SpeechToUnits from a `speechgpt units fit` folder (its encoder + k-means), as the stage data was made."""
    from speechgpt.units.extract import UnitExtractor

    extractor = UnitExtractor.load(Path(kmeans_dir), dtype=dtype)

    def to_units(samples: np.ndarray) -> list[int]:
        return list(extractor([torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))])[0][0])

    return to_units
