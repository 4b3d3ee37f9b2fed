"""Reading a given text aloud with either variant, as a TTS does (`speechgpt eval tts`): no question, no history.

- The unified variant (`ChatSession`) is asked as stage 2's TTS examples ask for speech, `[Human]: {instruction} This
  is input: {text}<eoh> [SpeechGPT]: <sosp>`, and writes units only (constrained) until `<eosp>`.
- The frozen variant (`FrozenChatSession`) says the text as if its LLM had written it: the speech decoder reads the
  text's tokens and the LLM's hidden states of the text alone.

Either way the vocoder voices the units whole (`AnswerVoice` without streaming).
"""

from __future__ import annotations

import numpy as np

from speechgpt.infer.constrain import AnswerShape
from speechgpt.infer.frozen_session import NO_SPEECH_OUT, FrozenChatSession
from speechgpt.infer.session import ChatSession
from speechgpt.infer.speaking import AnswerVoice
from speechgpt.model.frozen_speaker import spoken_text_ids
from speechgpt.text.template import ParsedAnswer, UserTurn
from speechgpt.text.units import SOSP


def read_aloud(
    session: ChatSession | FrozenChatSession, text: str, *, instruction: str | None = None
) -> tuple[ParsedAnswer, np.ndarray | None]:
    """The units the session's model writes for `text` and their audio (None without a vocoder or without units);
    `instruction`: the unified variant's TTS instruction (the frozen variant reads without one)."""
    text = text.strip()
    if not text:
        raise ValueError("the text to read aloud is empty")
    if isinstance(session, FrozenChatSession):
        answer = frozen_units(session, text)
    elif instruction is None:
        raise ValueError("the unified variant reads after a TTS instruction: pass instruction=")
    else:
        answer = unified_units(session, text, instruction)
    if session.vocoder is None or not answer.units:
        return answer, None
    voice = AnswerVoice(session.vocoder, stream=False, chunk_units=1, speaker=session.config.speaker)
    voice.finish(answer.units)
    return answer, voice.audio


def unified_units(session: ChatSession, text: str, instruction: str) -> ParsedAnswer:
    cfg, sampling = session.config, session.config.sampling
    shape = AnswerShape(
        transcript=False, speech=True, units_only=True, min_units=cfg.min_units, max_units=cfg.max_units
    )
    given = session.tokenizer.encode(f" {SOSP}", add_special_tokens=False)
    prompt_ids, _ = session.build_prompt(
        UserTurn(instruction=instruction, text=text), sampling.max_new_tokens + len(given)
    )
    generated = list(session._generate(prompt_ids + given, shape, sampling))
    return session.template.parse(SOSP + session.tokenizer.decode(generated), expect_speech=True)


def frozen_units(session: FrozenChatSession, text: str) -> ParsedAnswer:
    if not session.speaks or session.speaker is None:
        raise ValueError(NO_SPEECH_OUT)
    tokenizer = session.frozen.tokenizer
    tokens = spoken_text_ids(tokenizer, text)
    units = list(session.speaker.units_of_text(tokens, tokenizer.bos_token_id))
    answer = ParsedAnswer(text=text, units=units, complete=True)
    if not units:
        answer.problems.append("the speech decoder wrote no units")
    return answer
