"""Shared pieces of the inference tests: tiny speech LMs (our format and SpeechGPT's legacy layout) and fake vocoders
that return `per_unit` samples per unit, whole or streamed with one unit of look-ahead."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speechgpt.infer import Sampling, SessionConfig, StreamingVocoder, UnitsToAudio
from speechgpt.model.load import load_lm, save_lm
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.text.units import EOSP, SOSP, UnitFormat
from tests.lm_fixtures import SYSTEM, UNITS, make_tiny_lm


def make_speech_lm(out: Path, units: UnitFormat = UNITS) -> Path:
    """An untrained tiny Llama with the unit tokens (and, in our format, the markers) added."""
    base = make_tiny_lm(out.with_name(out.name + "-text"))
    model, tokenizer = load_lm(base)
    if units.name == "default":
        add_speech_tokens(model, tokenizer, units)
    else:  # SpeechGPT-7B-cm: only units, <sosp> and <eosp> are tokens; [ta], <eoa>, ... are plain text
        tokenizer.add_tokens([*units.tokens(), SOSP, EOSP], special_tokens=True)
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    return save_lm(model, tokenizer, out)


def noisy_config(max_new_tokens: int = 40, **kw) -> SessionConfig:
    sampling = Sampling(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
    return SessionConfig(system=SYSTEM, sampling=sampling, **kw)


class FakeVocoder:
    """Whole-answer synthesis only: unit u -> `per_unit` samples of value (u + 1) / 100."""

    sample_rate = 800

    def __init__(self, per_unit: int = 4) -> None:
        self.per_unit = per_unit
        self.calls: list[list[int]] = []

    def __call__(
        self, units: Sequence[int], durations: Sequence[int] | None = None, speaker: str | None = None
    ) -> np.ndarray:
        self.calls.append(list(units))
        return np.repeat((np.asarray(units, dtype=np.float32) + 1) / 100, self.per_unit)


class _FakeStream:
    def __init__(self, vocoder: FakeStreamingVocoder) -> None:
        self.vocoder = vocoder
        self.held: list[int] = []

    def push(self, units: Sequence[int]) -> np.ndarray:
        self.vocoder.pushes.append(list(units))
        self.held.extend(units)
        cut = max(0, len(self.held) - self.vocoder.lookahead)  # audio waits for the look-ahead, as a real one does
        ready, self.held = self.held[:cut], self.held[cut:]
        return FakeVocoder.__call__(self.vocoder, ready)

    def finish(self) -> np.ndarray:
        rest, self.held = self.held, []
        return FakeVocoder.__call__(self.vocoder, rest)


class FakeStreamingVocoder(FakeVocoder):
    def __init__(self, per_unit: int = 4, lookahead: int = 1) -> None:
        super().__init__(per_unit)
        self.lookahead = lookahead
        self.pushes: list[list[int]] = []

    def stream(self, speaker: str | None = None) -> _FakeStream:
        return _FakeStream(self)


def test_fakes_satisfy_the_protocols() -> None:
    plain, streaming = FakeVocoder(), FakeStreamingVocoder()
    whole: UnitsToAudio = plain
    assert not isinstance(plain, StreamingVocoder) and isinstance(streaming, StreamingVocoder)
    stream = streaming.stream()
    chunks = [stream.push([3, 1]), stream.push([4]), stream.finish()]
    assert np.array_equal(np.concatenate(chunks), whole([3, 1, 4])) and len(chunks[0]) == 4
