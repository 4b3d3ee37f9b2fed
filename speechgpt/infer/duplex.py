"""Full-duplex conversation with the frozen-LLM variant over one audio stream (Freeze-Omni's duplex mode).

    duplex = DuplexSession(session)            # a FrozenChatSession, with a speech decoder and vocoder to speak
    for chunk in microphone_chunks():          # 16 kHz float32, any length (160 ms, the state head's chunk, is natural)
        for event in duplex.push(chunk):
            ...                                # DuplexEvent: speech_start, state, text, units, audio, interrupt, answer
    duplex.finish()                            # the stream ended

The microphone never stops. A speech detector that follows the stream's own noise floor starts an utterance
(Freeze-Omni puts a VAD there too; speechgpt.infer.stream_input, which also scales the speech to the level the models
trained at, as a whole spoken question is conditioned); from then on the listener hears every chunk and the state
head decides when the utterance ends: "answer" answers it, "ignore" drops it (noise, speech not addressed to the
assistant). An answer plays on the input clock: its audio starts when it is made and lasts its length. An "answer"
decision while an answer is still playing interrupts it: the rest is dropped, an "interrupt" event says how much had
played, and the new question is answered. An "ignore" decision does not interrupt. The input is assumed echo-free (the
assistant does not hear itself), as with a headset or an echo canceller.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from speechgpt.infer.frozen_session import FrozenChatSession
from speechgpt.infer.listening import SAMPLE_RATE
from speechgpt.infer.results import ChatResult
from speechgpt.infer.stream_input import StreamConditioner, StreamSettings
from speechgpt.model.state_labels import STATE_NAMES

DuplexKind = Literal["speech_start", "state", "text", "units", "audio", "interrupt", "answer", "ignore"]


@dataclass
class DuplexEvent:
    """Something that happened on the stream. `at_s` is the input clock (seconds of audio pushed) when it happened.
    - speech_start: the speech detector opened an utterance;
    - state: the state head's decision `text` at the end of chunk `chunk` of the utterance;
    - text / units / audio: the answer's next text piece, units, audio chunk (float32 at `sample_rate`);
    - interrupt: the answer playing was cut; `played_s` of it had played;
    - answer: an answer is complete (`result`); it plays from `at_s` for `result`'s audio length;
    - ignore: the utterance was not for the assistant."""

    kind: DuplexKind
    at_s: float
    text: str = ""
    chunk: int | None = None
    units: list[int] = field(default_factory=list)
    audio: np.ndarray | None = field(default=None, repr=False)
    sample_rate: int | None = None
    result: ChatResult | None = None
    played_s: float | None = None


@dataclass(kw_only=True)
class DuplexConfig:
    stream: StreamSettings = field(default_factory=StreamSettings)
    """How speech is found in the stream and scaled (its gain follows the session's `condition_input`)."""
    speech: bool = True
    """Answer in speech (when the session has a speech decoder and a vocoder), else in text."""


class DuplexSession:
    """One duplex conversation; not thread-safe (push from one thread)."""

    def __init__(self, session: FrozenChatSession, config: DuplexConfig | None = None) -> None:
        self.session, self.config = session, config or DuplexConfig()
        self.listener = session.listener
        self.clock_s = 0.0
        """Seconds of audio pushed so far."""
        self.playing_from_s = self.playing_until_s = 0.0
        """The current answer's audio plays in [playing_from_s, playing_until_s) of the input clock."""
        self.answers: list[ChatResult] = []
        self.played: list[list[float]] = []
        """Per answer, [from_s, until_s]: when it played on the input clock (cut short by an interruption)."""
        self.interruptions = 0
        gain = self.config.stream.gain and session.config.condition_input
        self.conditioner = StreamConditioner(replace(self.config.stream, gain=gain))
        self._open = False

    @property
    def playing(self) -> bool:
        return self.clock_s < self.playing_until_s

    def push(self, samples: np.ndarray) -> list[DuplexEvent]:
        """Hear the next piece of the stream; the events it caused, in order."""
        wave = np.asarray(samples, dtype=np.float32).reshape(-1)
        events: list[DuplexEvent] = []
        if self._open:
            heard = self.conditioner.follow(wave)
        else:
            opening = self.conditioner.start(wave)
            if opening is None:
                self.clock_s += wave.size / SAMPLE_RATE
                return events
            self._open, heard = True, opening
            self.listener.reset()
            events.append(DuplexEvent("speech_start", self.clock_s))
        self.clock_s += wave.size / SAMPLE_RATE
        decisions = self.listener.push(heard)
        events += [DuplexEvent("state", self.clock_s, STATE_NAMES[d.state], chunk=d.chunk) for d in decisions]
        return events + self._after_decisions()

    def finish(self) -> list[DuplexEvent]:
        """The stream ended: an open utterance is decided at its last chunk (and answered at its end when the
        state head said nothing, as `ListenConfig.answer_at_end` asks)."""
        if not self._open:
            return []
        decisions = self.listener.finish()
        events = [DuplexEvent("state", self.clock_s, STATE_NAMES[d.state], chunk=d.chunk) for d in decisions]
        if self.listener.turn.outcome is None and self.listener.config.answer_at_end:
            self.listener.force_answer()
        return events + self._after_decisions()

    def _after_decisions(self) -> list[DuplexEvent]:
        outcome = self.listener.turn.outcome
        if outcome is None:
            return []
        self._open = False
        self.conditioner.end()
        if outcome == "ignore":
            return [DuplexEvent("ignore", self.clock_s)]
        events = []
        if self.playing:
            self.interruptions += 1
            events.append(DuplexEvent("interrupt", self.clock_s, played_s=round(self.clock_s - self.playing_from_s, 4)))
            self.playing_until_s = self.played[-1][1] = self.clock_s
        return events + self._answer()

    def _answer(self) -> list[DuplexEvent]:
        events, start = [], time.perf_counter()
        for event in self.session.answer_turn(start, spoken=True, speech=self.config.speech):
            if event.kind == "done" and event.result is not None:
                result = event.result
                self.answers.append(result)
                seconds = (
                    len(result.audio) / result.sample_rate if result.audio is not None and result.sample_rate else 0.0
                )
                self.playing_from_s, self.playing_until_s = self.clock_s, self.clock_s + seconds
                self.played.append([self.playing_from_s, self.playing_until_s])
                events.append(DuplexEvent("answer", self.clock_s, result.answer.text or "", result=result))
            elif event.kind in ("text", "units", "audio"):
                events.append(
                    DuplexEvent(
                        event.kind,
                        self.clock_s,
                        event.text,
                        units=list(event.units),
                        audio=event.audio,
                        sample_rate=event.sample_rate,
                    )
                )
        return events

    def output_track(self) -> tuple[np.ndarray, int]:
        """What the assistant said, on the input clock: each answer's audio from when it started playing, cut
        where it was interrupted; silence elsewhere. (samples, sample rate)."""
        rates = {r.sample_rate for r in self.answers if r.audio is not None and r.sample_rate}
        rate = rates.pop() if len(rates) == 1 else SAMPLE_RATE
        end = max([until for _, until in self.played] + [self.clock_s])
        track = np.zeros(round(end * rate), np.float32)
        for result, (start, until) in zip(self.answers, self.played, strict=True):
            if result.audio is None or not result.audio.size:
                continue
            first = round(start * rate)
            audio = result.audio[: max(0, round(until * rate) - first)]
            track[first : first + audio.size] = audio[: track.size - first]
        return track, rate
