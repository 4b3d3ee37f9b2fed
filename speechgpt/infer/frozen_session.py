"""`FrozenChatSession`: the frozen-LLM variant behind the same chat surface as `ChatSession` (`stream`, `respond`,
`reset`, `config`), so `speechgpt chat`, `serve` and `eval chat` drive either variant.

    session = FrozenChatSession(load_frozen_model("out/demo/frozen_qa/final"), config=SessionConfig())
    for event in session.stream(audio=samples_16k):   # "state" per chunk, then "text" pieces, then "done"
        ...

A spoken question is listened to as a stream (speechgpt.infer.listening): each chunk's state decision is an event,
and an "answer" decision starts the text answer. A typed question goes to the frozen LLM as text, which it answers
as the backbone it is. The answer is always text: this variant has no speech output yet, so asking for
speech gets a text answer with a note saying so among the answer's problems. Decoding is greedy; the session's
`sampling.max_new_tokens` bounds an answer. Each question is its own turn (no history).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from speechgpt.infer.frozen_loading import FrozenModel
from speechgpt.infer.listening import FrozenListener, ListenConfig
from speechgpt.infer.results import ChatEvent, ChatResult, Mode, Timings
from speechgpt.infer.session import Reply, SessionConfig
from speechgpt.model.state_labels import STATE_NAMES
from speechgpt.text.template import ParsedAnswer

log = logging.getLogger(__name__)
NO_SPEECH_OUT = "speech output is not available for the frozen-LLM variant yet (no speech decoder): answered in text"
NO_DECISION = "the state head did not decide to answer (it said ignore, or nothing before the audio ended)"


class FrozenChatSession:
    """A conversation with the frozen-LLM variant; not thread-safe (one call at a time per session)."""

    variant = "frozen"
    speech_to_units = None
    """No units: the speech encoder hears the audio itself (kept for the chat front's checks)."""
    vocoder = None
    """No speech out yet (the speech decoder is not built)."""

    def __init__(
        self, frozen: FrozenModel, *, config: SessionConfig | None = None, listening: ListenConfig | None = None
    ) -> None:
        self.frozen = frozen
        self.config = config or SessionConfig()
        self.listener = FrozenListener(frozen, listening)
        if not self.config.sampling.greedy:
            log.info(
                "the frozen-LLM variant decodes greedily; the sampling settings other than max_new_tokens are unused"
            )

    @property
    def hears(self) -> bool:
        return True

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
        start, timings = time.perf_counter(), Timings()
        listener, problems = self.listener, []
        if audio is not None:
            samples = _samples(audio)
            for decision in listener.hear(samples):
                yield ChatEvent("state", text=STATE_NAMES[decision.state], chunk=decision.chunk)
            mode: Mode = "s2t"
        else:
            listener.read(text or "")
            mode = "t2t"
        turn = listener.turn
        if turn.outcome == "answer":
            for piece in listener.answer(self.config.sampling.max_new_tokens):
                yield ChatEvent("text", text=piece)
        elif audio is not None:
            problems.append(NO_DECISION)
        if wanted == "speech" or (wanted == "same" and audio is not None):
            problems.append(NO_SPEECH_OUT)
        if turn.first_token_s is not None:
            timings.first_token_s = turn.first_token_s - start
            timings.last_token_s = (turn.last_token_s or turn.first_token_s) - start
            timings.generate_time_s = (turn.last_token_s or turn.first_token_s) - (turn.decision_s or start)
        timings.total_s = time.perf_counter() - start
        answer = ParsedAnswer(transcript=None, text=turn.text or None, problems=problems, complete=turn.ended)
        result = ChatResult(
            mode=mode,
            answer=answer,
            raw=turn.text,
            question_text=text.strip() if text is not None else None,
            question_units=None,
            prompt_tokens=turn.llm_inputs,
            new_tokens=len(turn.tokens),
            dropped_turns=0,
            constrained=False,
            audio_streamed=False,
            timings=timings,
            listening=turn.to_json() if audio is not None else None,
        )
        yield ChatEvent("done", result=result)


def _samples(audio: np.ndarray | str | Path) -> np.ndarray:
    """16 kHz mono float32; an array is taken to be at 16 kHz already (channels last are down-mixed)."""
    from speechgpt.data.audio import SAMPLE_RATE, read_audio, to_16k_mono

    if isinstance(audio, np.ndarray):
        return to_16k_mono(audio, SAMPLE_RATE).samples
    return read_audio(audio).samples
