"""`speechgpt chat --duplex --audio FILE`: the frozen-LLM variant in full-duplex mode on a recording (several questions,
pauses, interruptions), streamed in 160 ms chunks as a microphone would send them. Each event is printed on the
recording's clock; `--out` gets the assistant's output track (its answers where they played, cut where they were
interrupted), which, beside the input, is the whole conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from speechgpt.app.chat import ChatApp
from speechgpt.data.audio import write_audio
from speechgpt.infer.duplex import DuplexEvent, DuplexSession
from speechgpt.infer.frozen_session import FrozenChatSession

CHUNK = 2560  # 160 ms at 16 kHz, the state head's chunk


def run_duplex(app: ChatApp, audio: np.ndarray, out: Path | None, quiet: bool) -> dict[str, Any]:
    """Stream `audio` (16 kHz) through a duplex session, then the listener's trailing silence; the summary (one
    row per answer, interruptions, the output track's path)."""
    if not isinstance(app.session, FrozenChatSession):
        raise ValueError("duplex mode is for the frozen-LLM variant (a model folder with speech_modules.json)")
    duplex = DuplexSession(app.session)
    silence = np.zeros(round(app.session.listener.trailing_silence_s * 16_000), np.float32)
    stream = np.concatenate([np.asarray(audio, np.float32).reshape(-1), silence])
    for start in range(0, stream.size, CHUNK):
        for event in duplex.push(stream[start : start + CHUNK]):
            _show(event, quiet)
    for event in duplex.finish():
        _show(event, quiet)
    answers = [
        {
            "at_s": round(start, 3),
            "text": result.answer.text,
            "units": len(result.answer.units),
            "audio_seconds": round(len(result.audio) / result.sample_rate, 3)
            if result.audio is not None and result.sample_rate
            else 0.0,
            "played_s": round(until - start, 3),
            "listening": result.listening,
        }
        for result, (start, until) in zip(duplex.answers, duplex.played, strict=True)
    ]
    path = None
    if out is not None:
        track, rate = duplex.output_track()
        write_audio(out, track, rate)
        path = str(out)
    return {"answers": answers, "interruptions": duplex.interruptions, "audio": path}


def _show(event: DuplexEvent, quiet: bool) -> None:
    if quiet:
        return
    clock = f"[{event.at_s:6.2f} s]"
    if event.kind == "answer" and event.result is not None:
        seconds = (
            len(event.result.audio) / event.result.sample_rate
            if event.result.audio is not None and event.result.sample_rate
            else 0.0
        )
        print(f"{clock} answer: {event.text or '(none)'} ({seconds:.2f} s of speech)", flush=True)
    elif event.kind == "interrupt":
        print(f"{clock} interrupted: the answer playing was cut after {event.played_s:.2f} s", flush=True)
    elif event.kind == "ignore":
        print(f"{clock} ignored (not addressed to the assistant)", flush=True)
    elif event.kind == "speech_start":
        print(f"{clock} listening", flush=True)
