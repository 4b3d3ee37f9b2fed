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
    """The frozen variant of `setup.model` (its backbone from speech_modules.json, or `setup.base`)."""
    from speechgpt.infer.frozen_loading import load_frozen_model

    with contextlib.redirect_stdout(sys.stderr):  # loaders that print progress must not mix it into the answers
        frozen = load_frozen_model(setup.model, backbone=setup.base, dtype=setup.dtype, device=setup.device)
    log.info("frozen-LLM variant: answers in text (its speech decoder is not built yet); kmeans and vocoder unused")
    return FrozenChatSession(frozen, config=setup.session, listening=setup.listening)


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
    for key, label in (("decision_s", "decision"), ("first_token_s", "first text token")):
        if lat.get(key) is not None:
            line += f"; {label} {1000 * lat[key]:.0f} ms after the end of speech"
    return line
