"""The frozen-LLM variant in `speechgpt chat` / `serve`: its session, loaded from the model folder alone, and the
line the terminal prints about its state decisions."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from speechgpt.infer.frozen_session import FrozenChatSession

if TYPE_CHECKING:
    from speechgpt.app.chat import ChatSetup

log = logging.getLogger(__name__)


def load_frozen_session(setup: ChatSetup) -> FrozenChatSession:
    """The frozen variant of `setup.model` (its backbone from speech_modules.json, or `setup.base`), speaking
    through `setup.speech_decoder` and `setup.vocoder` when both are given."""
    from speechgpt.infer.frozen_loading import load_frozen_model
    from speechgpt.infer.frozen_speaking import load_answer_speaker
    from vocoder.load import load_answer_vocoder

    with contextlib.redirect_stdout(sys.stderr):  # loaders that print progress must not mix it into the answers
        frozen = load_frozen_model(setup.model, backbone=setup.base, dtype=setup.dtype, device=setup.device)
        speaker = load_answer_speaker(setup.speech_decoder, frozen) if setup.speech_decoder is not None else None
        voice = load_answer_vocoder(setup.vocoder) if speaker is not None and setup.vocoder is not None else None
    if speaker is None:
        log.info("frozen-LLM variant without speech_decoder: answers in text; kmeans and vocoder unused")
    elif voice is None:
        log.warning("frozen-LLM variant: a speech decoder but no vocoder, so answers stay in text")
    return FrozenChatSession(frozen, config=setup.session, listening=setup.listening, speaker=speaker, vocoder=voice)


def describe_listening(listening: dict[str, Any]) -> str:
    """One line about the frozen variant's decisions: the states per chunk (0 keep listening, 1 answer, 2 ignore)
    and the latencies from the end of speech."""
    codes = {"keep_listening": "0", "answer": "1", "ignore": "2"}
    states = "".join(codes.get(s, "?") for s in listening["states"])
    if listening["forced"]:
        ended = "no decision: answered at the end of the audio"
    elif listening["outcome"] is None:
        ended = "no decision"
    else:
        ended = f"{listening['outcome']} at chunk {listening['decision_chunk']}"
    line = f"states: {states or '-'} ({ended})"
    lat = listening["latencies"]
    labels = (("decision_s", "decision"), ("first_token_s", "first text token"), ("first_unit_s", "first unit"))
    for key, label in (*labels, ("first_audio_s", "first audio")):
        if lat.get(key) is not None:
            line += f"; {label} {1000 * lat[key]:.0f} ms after the end of speech"
    return line
