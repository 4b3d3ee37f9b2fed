"""Voicing a spoken answer: units are pushed to a `StreamingVocoder` in chunks while the answer is still being
generated, or given to the vocoder once at the end (a plain `UnitsToAudio`, or streaming turned off)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from speechgpt.infer.vocoding import StreamingVocoder, UnitAudioStream, UnitsToAudio


class AnswerVoice:
    """Collects the audio of one answer and the time spent in the vocoder."""

    def __init__(
        self,
        vocoder: UnitsToAudio,
        *,
        stream: bool,
        chunk_units: int,
        first_chunk_units: int | None = None,
        speaker: str | None,
    ) -> None:
        first_chunk_units = first_chunk_units or chunk_units
        if chunk_units < 1 or first_chunk_units < 1:
            raise ValueError("chunk_units and first_chunk_units must be >= 1")
        self.vocoder, self.speaker = vocoder, speaker
        self.chunk_units, self.first_chunk_units = chunk_units, first_chunk_units
        self.streaming = stream and isinstance(vocoder, StreamingVocoder)
        self.sample_rate = int(vocoder.sample_rate)
        self.chunks: list[np.ndarray] = []
        self.seconds = 0.0
        self._stream: UnitAudioStream | None = None
        self._pending: list[int] = []

    def add(self, units: Sequence[int]) -> np.ndarray | None:
        """New units of the answer; when streaming and a chunk is full, returns the audio that became final.
        Chunks hold `first_chunk_units` until audio has come out (the vocoder's look-ahead decides when), then
        `chunk_units`."""
        if not self.streaming:
            return None
        self._pending.extend(units)
        if len(self._pending) < (self.chunk_units if self.chunks else self.first_chunk_units):
            return None
        return self._push()

    def finish(self, all_units: Sequence[int]) -> list[np.ndarray]:
        """The answer is complete: the remaining streamed audio, or the whole answer synthesized at once."""
        if self.streaming:
            tail = [self._push()] if self._pending else []
            if self._stream is not None:
                started = time.perf_counter()
                tail.append(self._keep(np.asarray(self._stream.finish(), dtype=np.float32)))
                self.seconds += time.perf_counter() - started
            return [chunk for chunk in tail if chunk is not None and chunk.size]
        if not all_units:
            return []
        started = time.perf_counter()
        whole = self._keep(np.asarray(self.vocoder(list(all_units), speaker=self.speaker), dtype=np.float32))
        self.seconds += time.perf_counter() - started
        return [whole] if whole.size else []

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.float32)

    def _push(self) -> np.ndarray | None:
        started = time.perf_counter()
        if self._stream is None:
            self._stream = self.vocoder.stream(self.speaker)  # type: ignore[attr-defined]
        units, self._pending = self._pending, []
        audio = self._keep(np.asarray(self._stream.push(units), dtype=np.float32))
        self.seconds += time.perf_counter() - started
        return audio if audio.size else None

    def _keep(self, audio: np.ndarray) -> np.ndarray:
        audio = audio.reshape(-1)
        if audio.size:
            self.chunks.append(audio)
        return audio
