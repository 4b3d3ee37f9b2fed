"""`ChatSession`: multi-turn chain-of-modality chat with a speech LM, vocoder-agnostic.

    from speechgpt.infer import ChatSession, SessionConfig, speech_to_units_from_kmeans

    session = ChatSession.from_pretrained(
        "out/stage3/final",                      # HF folder, adapter folder, or SpeechGPT's adapter with base=...
        speech_to_units=speech_to_units_from_kmeans("out/kmeans"),  # 16 kHz float32 samples -> merged units
        vocoder=vocoder,                         # speechgpt.infer.vocoding.UnitsToAudio or StreamingVocoder
        config=SessionConfig(system="You are a speech assistant.\\n"),
    )
    result = session.respond(text="what is two plus two", reply="speech")   # -> ChatResult
    for event in session.stream(audio="question.wav"):                      # -> ChatEvent, "done" last
        ...

A question is `text=`, `audio=` (numpy samples at 16 kHz or a file path; needs `speech_to_units`) or `units=`. The
answer comes in the modality `reply` asks for ("same" by default: a spoken question gets a spoken answer). Each turn
is kept in the history; the prompt keeps as many recent turns as fit `max_prompt_tokens`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria

from speechgpt.infer.constrain import (
    AnswerShape,
    EndOfAnswer,
    StructureConstraint,
    StructureDone,
    TokenClasses,
    fewest_new_tokens,
)
from speechgpt.infer.generation import Sampling, stream_tokens
from speechgpt.infer.loading import LoadedModel, load_chat_model
from speechgpt.infer.passes import AnswerPass, with_units
from speechgpt.infer.results import ChatEvent, ChatResult, Mode, Timings
from speechgpt.infer.routing import AnswerRouter, Delta
from speechgpt.infer.speaking import AnswerVoice
from speechgpt.infer.speech_input import SpeechToUnits, question_samples
from speechgpt.infer.vocoding import UnitsToAudio
from speechgpt.model.load import DType
from speechgpt.text.template import TA, UA, AssistantTurn, ChatTemplate, ParsedAnswer, UserTurn, system_text
from speechgpt.text.units import SOSP
from speechgpt.units.runs import merge_repeats

log = logging.getLogger(__name__)
Turn = tuple[UserTurn, AssistantTurn]
Reply = Literal["same", "speech", "text"]


class PromptTooLongError(ValueError):
    """The question alone does not fit the prompt budget."""


@dataclass(kw_only=True)
class SessionConfig:
    """How a session prompts, decodes and voices."""

    system: str | None = None
    """System text that starts every prompt; None: the one the model was trained with (its config.json's
    `speechgpt_system`, which the stages write), else SpeechGPT's."""
    instruction: str = ""
    """Instruction put before each question (`{instruction} This is input: {question}`); empty: the question only."""
    reply: Reply = "same"
    """Default answer modality: 'same' as the question, or always 'speech' / 'text'."""
    constrained: bool = True
    """Structure-constrained decoding (speechgpt.infer.constrain); off: the model writes freely, the parser reports."""
    min_units: int = 1
    """Fewest units in a spoken answer (constrained decoding only)."""
    max_units: int | None = None
    """Most units in a spoken answer (constrained decoding only); None: bounded by max_new_tokens."""
    transcript_tag: bool = False
    """Start the transcript of a spoken question with `[tq]` (constrained decoding only): True for SpeechGPT's
    released model, whose chain-of-modality answers read `[tq] question; [ta] answer; [ua] units`."""
    chain_of_modality: bool = True
    """A spoken question is transcribed before it is answered; False answers it directly (`[ta]` first, the mode a
    model learns from `direct_s2t` examples; constrained decoding only)."""
    speak_from: Literal["chain", "text"] = "chain"
    """Where a spoken question's spoken answer is written from (chain of modality, constrained decoding only).
    'chain': in the same pass, after the transcript and the text answer (SpeechGPT's one pass). 'text': the chain
    stops at its text answer, and a second pass writes the units from the transcript typed and that answer given,
    as a typed question's spoken answer is written (`[Human]: <transcript> [SpeechGPT]: [ta] <answer>; [ua]
    <sosp>`): the units no longer read the question's speech. One more prompt to read before the first unit."""
    stream_audio: bool = True
    """Vocode while generating when the vocoder can stream; off: one synthesis of the whole answer at the end."""
    chunk_units: int = 20
    """Units per push to a streaming vocoder (50 Hz units merged: about 0.5-0.8 s of speech)."""
    first_chunk_units: int = 4
    """Units per push until the first audio comes out: a streaming vocoder emits audio once its look-ahead is
    known, so small first pushes make the first audio wait for that look-ahead and not for a whole chunk."""
    max_prompt_tokens: int | None = None
    """Prompt budget in tokens; None: the model's max positions minus max_new_tokens."""
    speaker: str | None = None
    """Speaker for a multi-speaker vocoder."""
    sampling: Sampling = field(default_factory=Sampling)
    """Default decoding settings (each call may pass its own)."""
    condition_input: bool = True
    """Condition a spoken question like the training clips: its noisy edges cut to 0.15 s around its speech, its
    speech scaled to -20 dBFS (`speechgpt.infer.speech_input.condition_question`); False: the samples as given."""

    def __post_init__(self) -> None:
        if self.speak_from not in ("chain", "text"):
            raise ValueError(f"speak_from must be 'chain' or 'text', not {self.speak_from!r}")


class ChatSession:
    """A conversation with one model; not thread-safe (one call at a time per session)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        speech_to_units: SpeechToUnits | None = None,
        vocoder: UnitsToAudio | None = None,
        config: SessionConfig | None = None,
    ) -> None:
        self.model, self.tokenizer, self.units = loaded.model, loaded.tokenizer, loaded.units
        self.speech_to_units, self.vocoder = speech_to_units, vocoder
        self.config = config or SessionConfig()
        system = self.config.system if self.config.system is not None else loaded.system
        self.template = ChatTemplate(self.units, system=system_text(system))
        self.classes = TokenClasses(self.tokenizer, self.units)
        self._history: list[Turn] = []

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        base: str | Path | None = None,
        speech_to_units: SpeechToUnits | None = None,
        vocoder: UnitsToAudio | None = None,
        config: SessionConfig | None = None,
        dtype: DType = "float32",
        device: str | None = None,
    ) -> ChatSession:
        """Load the model with `load_chat_model` (HF folder, adapter folder, or adapter + `base`)."""
        loaded = load_chat_model(path, base=base, dtype=dtype, device=device)
        return cls(loaded, speech_to_units=speech_to_units, vocoder=vocoder, config=config)

    @property
    def history(self) -> list[Turn]:
        """The turns the next prompt may include, oldest first (a copy)."""
        return list(self._history)

    def reset(self) -> None:
        self._history.clear()

    def respond(
        self,
        text: str | None = None,
        audio: np.ndarray | str | Path | None = None,
        units: Sequence[int] | None = None,
        *,
        reply: Reply | None = None,
        sampling: Sampling | None = None,
        stream_audio: bool | None = None,
    ) -> ChatResult:
        """Answer one question (exactly one of text, audio, units) and return the result; see `stream`."""
        for event in self.stream(text, audio, units, reply=reply, sampling=sampling, stream_audio=stream_audio):
            if event.result is not None:
                return event.result
        raise RuntimeError("the answer stream ended without a result")

    def stream(
        self,
        text: str | None = None,
        audio: np.ndarray | str | Path | None = None,
        units: Sequence[int] | None = None,
        *,
        reply: Reply | None = None,
        sampling: Sampling | None = None,
        stream_audio: bool | None = None,
    ) -> Iterator[ChatEvent]:
        """Answer one question, yielding ChatEvents as they happen; the last one is "done" with the ChatResult."""
        start, timings = time.perf_counter(), Timings()
        sampling = sampling or self.config.sampling
        user, question_units = self._question(text, audio, units, timings)
        mode = self._mode(user, reply)
        shape = self._shape(mode)
        from_text = self._speaks_from_text(shape)
        chain_shape = replace(shape, speech=False) if from_text else shape
        prompt_ids, dropped = self.build_prompt(user, sampling.max_new_tokens)
        voice = self._voice(shape, stream_audio)
        generation_start = time.perf_counter()
        chain = AnswerPass(prompt_ids, AnswerRouter(self.tokenizer, self.classes, speech_in=shape.transcript))
        units_shape = replace(shape, transcript=False, units_only=True) if from_text else None
        if units_shape is not None:  # the chain leaves the units pass the tokens it needs at least
            chain.budget = sampling.max_new_tokens - fewest_new_tokens(self.classes, units_shape)
        yield from self._run_pass(chain, chain_shape, sampling, voice, timings, start)
        answer = self.template.parse(chain.raw, expect_speech=chain_shape.speech)
        passes = [chain]
        if units_shape is not None:
            spoken = self._spoken_pass(user, answer, units_shape, sampling.max_new_tokens - len(chain.generated))
            if spoken is not None:
                yield from self._run_pass(spoken, units_shape, sampling, voice, timings, start)
                answer = with_units(answer, self.template.parse(spoken.forced + spoken.raw, expect_speech=True))
                passes.append(spoken)
            else:
                answer.problems.append("no spoken answer: the chain left no text answer, or no tokens, to voice")
        timings.last_token_s = time.perf_counter() - start
        timings.generate_time_s = time.perf_counter() - generation_start
        yield from self._last_audio(voice, answer.units, timings, start)
        self._remember(user, answer, shape)
        timings.total_s = time.perf_counter() - start
        result = ChatResult(
            mode=mode,
            answer=answer,
            raw="".join(one.raw for one in passes),
            question_text=user.text,
            question_units=question_units,
            prompt_tokens=sum(len(one.prompt_ids) for one in passes),
            new_tokens=sum(len(one.generated) for one in passes),
            dropped_turns=dropped,
            constrained=self.config.constrained,
            audio_streamed=voice is not None and voice.streaming and voice.audio.size > 0,
            timings=timings,
            sample_rate=voice.sample_rate if voice is not None else None,
            audio=voice.audio if voice is not None else None,
        )
        if answer.problems:
            log.info("answer problems (%s): %s", mode, "; ".join(answer.problems))
        yield ChatEvent("done", result=result)

    def _run_pass(
        self,
        one: AnswerPass,
        shape: AnswerShape,
        sampling: Sampling,
        voice: AnswerVoice | None,
        timings: Timings,
        start: float,
    ) -> Iterator[ChatEvent]:
        """Generate one pass of the answer, routing its tokens to events (and its units to the voice)."""
        if one.budget is not None:
            sampling = replace(sampling, max_new_tokens=one.budget)
        for token in self._generate(one.prompt_ids, shape, sampling):
            if timings.first_token_s is None:
                timings.first_token_s = time.perf_counter() - start
            one.generated.append(token)
            for delta in one.router.feed(token):
                yield from self._events(delta, voice, timings, start)
        for delta in one.router.finish():
            yield from self._events(delta, voice, timings, start)
        one.raw = self.tokenizer.decode(one.generated)

    def _speaks_from_text(self, shape: AnswerShape) -> bool:
        cfg = self.config
        return shape.speech and shape.transcript and cfg.speak_from == "text" and cfg.constrained

    def _spoken_pass(
        self, user: UserTurn, answer: ParsedAnswer, units_shape: AnswerShape, budget: int
    ) -> AnswerPass | None:
        """The second pass of `speak_from="text"`: the question as its transcript, typed, with the chain's text
        answer and ` [ua] <sosp>` given, as a com_t2s example reads; None when there is nothing to voice or no
        token budget left for it."""
        if not answer.transcript or not answer.text or budget < fewest_new_tokens(self.classes, units_shape):
            return None
        typed = UserTurn(instruction=user.instruction, text=answer.transcript)
        forced = f" {TA} {answer.text}; {UA} {SOSP}"
        given = self.tokenizer.encode(forced, add_special_tokens=False)
        prompt_ids, _ = self.build_prompt(typed, budget + len(given))  # the given answer counts as generated room
        router = AnswerRouter(self.tokenizer, self.classes, speech_in=False)
        router.feed(self.classes.sosp)  # the prompt has opened the speech part
        return AnswerPass(prompt_ids + given, router, forced=forced, budget=budget)

    def _shape(self, mode: Mode) -> AnswerShape:
        cfg = self.config
        return AnswerShape(
            transcript=mode[0] == "s" and cfg.chain_of_modality,
            speech=mode[2] == "s",
            transcript_tag=cfg.transcript_tag,
            min_units=cfg.min_units,
            max_units=cfg.max_units,
        )

    def _last_audio(
        self, voice: AnswerVoice | None, units: list[int], timings: Timings, start: float
    ) -> Iterator[ChatEvent]:
        """The streamed audio's tail, or the whole answer voiced at once."""
        if voice is None:
            return
        for chunk in voice.finish(units):
            timings.first_audio_s = timings.first_audio_s or time.perf_counter() - start
            yield ChatEvent("audio", audio=chunk, sample_rate=voice.sample_rate)
        timings.vocode_time_s = voice.seconds

    def build_prompt(self, user: UserTurn, max_new_tokens: int) -> tuple[list[int], int]:
        """Prompt ids (BOS, system, kept history, the question) and how many oldest turns were dropped to fit the
        budget; dropped turns leave the history for good. Raises PromptTooLongError if the question alone is over."""
        budget = self.config.max_prompt_tokens
        if budget is None:
            budget = int(getattr(self.model.config, "max_position_embeddings", 2048)) - max_new_tokens
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        dropped = 0
        while True:
            text = self.template.prompt(self._history, user)
            ids = bos + self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) <= budget:
                return ids, dropped
            if not self._history:
                raise PromptTooLongError(
                    f"the question alone needs {len(ids)} prompt tokens, over the budget of {budget} "
                    "(shorten it, or raise max_prompt_tokens / lower max_new_tokens)"
                )
            self._history.pop(0)
            dropped += 1

    def _question(
        self, text: str | None, audio: np.ndarray | str | Path | None, units: Sequence[int] | None, timings: Timings
    ) -> tuple[UserTurn, list[int] | None]:
        if sum(x is not None for x in (text, audio, units)) != 1:
            raise ValueError("give exactly one of text=, audio= or units=")
        if text is not None:
            if not text.strip():
                raise ValueError("the text question is empty")
            return UserTurn(instruction=self.config.instruction, text=text.strip()), None
        if audio is not None:
            if self.speech_to_units is None:
                raise ValueError("a spoken question needs the session's speech_to_units")
            started = time.perf_counter()
            units = list(self.speech_to_units(question_samples(audio, self.config.condition_input)))
            timings.units_time_s = time.perf_counter() - started
        merged, _ = merge_repeats(units or [])  # the language model reads merged units
        if not merged:
            raise ValueError("the spoken question has no units")
        bad = [u for u in merged if not 0 <= u < self.units.k]
        if bad:
            raise ValueError(f"units {bad[:5]} are outside this model's codebook 0..{self.units.k - 1}")
        return UserTurn(instruction=self.config.instruction, units=tuple(merged)), merged

    def _mode(self, user: UserTurn, reply: Reply | None) -> Mode:
        speech_in = user.units is not None
        wanted = reply or self.config.reply
        if wanted not in ("same", "speech", "text"):
            raise ValueError(f"reply must be 'same', 'speech' or 'text', not {wanted!r}")
        speech_out = speech_in if wanted == "same" else wanted == "speech"
        return f"{'s' if speech_in else 't'}2{'s' if speech_out else 't'}"  # type: ignore[return-value]

    def _voice(self, shape: AnswerShape, stream_audio: bool | None) -> AnswerVoice | None:
        if not shape.speech or self.vocoder is None:
            return None
        stream = self.config.stream_audio if stream_audio is None else stream_audio
        cfg = self.config
        return AnswerVoice(
            self.vocoder,
            stream=stream,
            chunk_units=cfg.chunk_units,
            first_chunk_units=cfg.first_chunk_units,
            speaker=cfg.speaker,
        )

    def _generate(self, prompt_ids: list[int], shape: AnswerShape, sampling: Sampling) -> Iterator[int]:
        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        if self.config.constrained:
            constraint = StructureConstraint(self.classes, shape, sampling.max_new_tokens)
            processors: list[LogitsProcessor] = [constraint]
            stopping: list[StoppingCriteria] = [StructureDone(constraint)]
        else:
            processors, stopping = [], [EndOfAnswer(self.tokenizer, len(prompt_ids))]
        config = sampling.generation_config(self.tokenizer)
        seed = None if sampling.greedy else sampling.seed
        return stream_tokens(self.model, input_ids, config, processors=processors, stopping=stopping, seed=seed)

    def _events(self, delta: Delta, voice: AnswerVoice | None, timings: Timings, start: float) -> Iterator[ChatEvent]:
        if delta.kind != "units":
            yield ChatEvent(delta.kind, text=delta.text)
            return
        yield ChatEvent("units", units=delta.units)
        chunk = voice.add(delta.units) if voice is not None else None
        if chunk is not None and voice is not None:
            timings.first_audio_s = timings.first_audio_s or time.perf_counter() - start
            yield ChatEvent("audio", audio=chunk, sample_rate=voice.sample_rate)

    def _remember(self, user: UserTurn, answer: ParsedAnswer, shape: AnswerShape) -> None:
        text = answer.text or None
        speech = tuple(answer.units) if answer.units else None
        if text is None and speech is None:
            log.warning("answer has neither text nor units; not kept in the history")
            return
        transcript = answer.transcript if shape.transcript else None
        self._history.append((user, AssistantTurn(text=text, units=speech, transcript=transcript, chain=True)))
