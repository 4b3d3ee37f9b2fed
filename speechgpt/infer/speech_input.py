"""A spoken question as the chat sessions read it: its samples (an array or an audio file, 16 kHz mono) and the
units a `speechgpt units fit` folder makes of them (the unified variant's question)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

SpeechToUnits = Callable[[np.ndarray], Sequence[int]]
"""16 kHz mono float32 samples -> units (repeats are merged afterwards, so frame-level ids are fine)."""


def question_samples(audio: np.ndarray | str | Path) -> np.ndarray:
    """16 kHz mono float32; an array is taken to be at 16 kHz already (channels last are down-mixed)."""
    from speechgpt.data.audio import SAMPLE_RATE, read_audio, to_16k_mono

    if isinstance(audio, np.ndarray):
        return to_16k_mono(audio, SAMPLE_RATE).samples
    return read_audio(audio).samples


def speech_to_units_from_kmeans(kmeans_dir: str | Path, dtype: str = "float32") -> SpeechToUnits:
    """A SpeechToUnits from a `speechgpt units fit` folder (its encoder + k-means), as the stage data was made."""
    from speechgpt.units.extract import UnitExtractor

    extractor = UnitExtractor.load(Path(kmeans_dir), dtype=dtype)

    def to_units(samples: np.ndarray) -> list[int]:
        return list(extractor([torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))])[0][0])

    return to_units
