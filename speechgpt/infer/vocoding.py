"""What inference needs from a vocoder, as protocols: `speechgpt.infer` never imports `vocoder/` (DESIGN.md's layers),
so any object with these methods can voice a model's answers (our unit vocoders, a legacy CodeHiFiGAN, a test fake).

Units are merged units (repeats removed), as the language model emits them; a vocoder expands them with its own
duration predictor unless `durations` (50 Hz frames per unit) are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


class UnitsToAudio(Protocol):
    """Whole-answer synthesis: merged units -> float32 mono samples at `sample_rate`."""

    sample_rate: int

    def __call__(
        self, units: Sequence[int], durations: Sequence[int] | None = None, speaker: str | None = None
    ) -> np.ndarray: ...


class UnitAudioStream(Protocol):
    """One streamed answer: units go in as they are generated, audio comes out as soon as it is final."""

    def push(self, units: Sequence[int]) -> np.ndarray:
        """Add newly generated units; returns the audio that became final (possibly empty)."""
        ...

    def finish(self) -> np.ndarray:
        """No more units: returns the rest of the audio."""
        ...


@runtime_checkable
class StreamingVocoder(Protocol):
    """A vocoder that can also synthesize chunk by chunk; the concatenated chunks approximate whole synthesis."""

    sample_rate: int

    def __call__(
        self, units: Sequence[int], durations: Sequence[int] | None = None, speaker: str | None = None
    ) -> np.ndarray: ...

    def stream(self, speaker: str | None = None) -> UnitAudioStream: ...
