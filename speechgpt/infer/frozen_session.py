"""`FrozenChatSession`: the frozen-LLM variant behind the same chat surface as `ChatSession` (`stream`, `respond`,
`reset`, `config`), so `speechgpt chat`, `serve` and `eval chat` drive either variant.

    session = FrozenChatSession(frozen, speaker=load_answer_speaker(decoder_dir, frozen), vocoder=vocoder)
    for event in session.stream(audio=samples_16k):   # "state" per chunk, "text" pieces, "units", "audio", "done"
        ...

A spoken question is listened to as a stream (speechgpt.infer.listening): each chunk's state decision is an event,
and an "answer" decision starts the text answer. A typed question goes to the frozen LLM as text, which it answers
as the backbone it is. With a speech decoder (`speaker`) and a vocoder, a spoken answer follows the text: the
decoder writes units from the answer's tokens and the LLM's hidden states at them, and the vocoder voices them in
chunks as they come (`config.stream_audio`) or at the end. Without them, asking for speech gets the text answer and
a note among the answer's problems. Decoding is greedy; `sampling.max_new_tokens` bounds an answer. Each question
is its own turn (no history).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from speechgpt.infer.frozen_loading import FrozenModel
from speechgpt.infer.frozen_speaking import AnswerSpeaker
from speechgpt.infer.listening import FrozenListener, ListenConfig, Turn
from speechgpt.infer.results import ChatEvent, ChatResult, Mode, Timings
from speechgpt.infer.session import Reply, SessionConfig
from speechgpt.infer.speaking import AnswerVoice
from speechgpt.infer.speech_input import question_samples
from speechgpt.infer.vocoding import UnitsToAudio
from speechgpt.model.state_labels import STATE_NAMES
from speechgpt.text.template import ParsedAnswer

log = logging.getLogger(__name__)
NO_SPEECH_OUT = "no speech decoder or no vocoder was given to the frozen-LLM variant's session: answered in text"
NO_DECISION = "the state head did not decide to answer (it said ignore, or nothing before the audio ended)"


class FrozenChatSession:
    """A conversation with the frozen-LLM variant; not thread-safe (one call at a time per session)."""

    variant = "frozen"
    speech_to_units = None
    """No units: the speech encoder hears the audio itself (kept for the chat front's checks)."""

    def __init__(
        self,
        frozen: FrozenModel,
        *,
        config: SessionConfig | None = None,
        listening: ListenConfig | None = None,
        speaker: AnswerSpeaker | None = None,
        vocoder: UnitsToAudio | None = None,
    ) -> None:
        self.frozen = frozen
        self.config = config or SessionConfig()
        self.listener = FrozenListener(frozen, listening)
        self.speaker, self.vocoder = speaker, vocoder
        if not self.config.sampling.greedy:
            log.info(
                "the frozen-LLM variant decodes greedily; the sampling settings other than max_new_tokens are unused"
            )

    @property
    def hears(self) -> bool:
        return True

    @property
    def speaks(self) -> bool:
        return self.speaker is not None and self.vocoder is not None

    def reset(self) -> None:
        self.listener.reset()

    def respond(
        self, text: str | None = None, audio: np.ndarray | str | Path | None = None, *, reply: Reply | None = None
    ) -> ChatResult:
        for event in self.stream(text, audio, reply=reply):
            if event.result is not None:
                return event.result
        raise RuntimeError("the answer stream ended without a result")

    def stream(
        self, text: str | None = None, audio: np.ndarray | str | Path | None = None, *, reply: Reply | None = None
    ) -> Iterator[ChatEvent]:
        """Answer one question (text or audio), yielding ChatEvents; the last one is "done" with the ChatResult."""
        if (text is None) == (audio is None):
            raise ValueError("give exactly one of text= or audio=")
        wanted = reply or self.config.reply
        if wanted not in ("same", "speech", "text"):
            raise ValueError(f"reply must be 'same', 'speech' or 'text', not {wanted!r}")
        start = time.perf_counter()
        if audio is not None:
            for decision in self.listener.hear(question_samples(audio, self.config.condition_input)):
                yield ChatEvent("state", text=STATE_NAMES[decision.state], chunk=decision.chunk)
        else:
            self.listener.read(text or "")
        yield from self.answer_turn(
            start,
            spoken=audio is not None,
            speech=wanted == "speech" or (wanted == "same" and audio is not None),
            question_text=text,
        )

    def answer_turn(
        self, start: float, *, spoken: bool, speech: bool, question_text: str | None = None
    ) -> Iterator[ChatEvent]:
        """The answer of the listener's current turn (decided, or read from text): text pieces, then (`speech`)
        units and audio, then "done". `start` is when the question began (perf_counter), for the timings."""
        turn, problems, timings = self.listener.turn, [], Timings()
        if turn.outcome == "answer":
            for piece in self.listener.answer(self.config.sampling.max_new_tokens):
                yield ChatEvent("text", text=piece)
        elif spoken:
            problems.append(NO_DECISION)
        voice = self._voice() if speech and turn.tokens else None
        units: list[int] = []
        if speech and not self.speaks:
            problems.append(NO_SPEECH_OUT)
        elif voice is not None:
            yield from self._speak(turn, voice, units, timings, start)
        if turn.first_token_s is not None:
            timings.first_token_s = turn.first_token_s - start
            timings.last_token_s = (turn.last_token_s or turn.first_token_s) - start
            timings.generate_time_s = (turn.last_token_s or turn.first_token_s) - (turn.decision_s or start)
        timings.total_s = time.perf_counter() - start
        answer = ParsedAnswer(
            transcript=None, text=turn.text or None, units=units, problems=problems, complete=turn.ended
        )
        mode: Mode = ("s2s" if voice is not None else "s2t") if spoken else ("t2s" if voice is not None else "t2t")
        result = ChatResult(
            mode=mode,
            answer=answer,
            raw=turn.text,
            question_text=question_text.strip() if question_text is not None else None,
            question_units=None,
            prompt_tokens=turn.llm_inputs,
            new_tokens=len(turn.tokens),
            dropped_turns=0,
            constrained=False,
            audio_streamed=voice is not None and voice.streaming and voice.audio.size > 0,
            timings=timings,
            sample_rate=voice.sample_rate if voice is not None else None,
            audio=voice.audio if voice is not None else None,
            listening=turn.to_json() if spoken else None,
        )
        yield ChatEvent("done", result=result)

    def _voice(self) -> AnswerVoice | None:
        if not self.speaks:
            return None
        cfg = self.config
        assert self.vocoder is not None
        return AnswerVoice(
            self.vocoder,
            stream=cfg.stream_audio,
            chunk_units=cfg.chunk_units,
            first_chunk_units=cfg.first_chunk_units,
            speaker=cfg.speaker,
        )

    def _speak(
        self, turn: Turn, voice: AnswerVoice, units: list[int], timings: Timings, start: float
    ) -> Iterator[ChatEvent]:
        """The spoken answer: units from the speech decoder as they come, audio as the vocoder makes it final."""
        assert self.speaker is not None
        hidden = self.listener.answer_hidden_states()
        for unit in self.speaker.units(turn.tokens, hidden):
            if turn.first_unit_s is None:
                turn.first_unit_s = time.perf_counter()
            units.append(unit)
            yield ChatEvent("units", units=[unit])
            chunk = voice.add([unit])
            if chunk is not None:
                yield self._audio_event(turn, chunk, voice, timings, start)
        for chunk in voice.finish(units):
            yield self._audio_event(turn, chunk, voice, timings, start)
        timings.vocode_time_s = voice.seconds

    @staticmethod
    def _audio_event(turn: Turn, chunk: np.ndarray, voice: AnswerVoice, timings: Timings, start: float) -> ChatEvent:
        if turn.first_audio_s is None:
            turn.first_audio_s = time.perf_counter()
            timings.first_audio_s = turn.first_audio_s - start
        return ChatEvent("audio", audio=chunk, sample_rate=voice.sample_rate)
