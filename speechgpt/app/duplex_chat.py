"""`speechgpt chat --duplex --audio FILE`: the frozen-LLM variant in full-duplex mode on a recording (several questions,
pauses, interruptions), streamed in 160 ms chunks as a microphone would send them. Each event is printed on the
recording's clock; `--out` gets the assistant's output track (its answers where they played, cut where they were
interrupted), which, beside the input, is the whole conversation. `speechgpt serve` streams the same events to its
page for a recording posted to `/api/chat?duplex=1` (`page_events`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from speechgpt.app.chat import ChatApp
from speechgpt.data.audio import write_audio
from speechgpt.infer.duplex import DuplexEvent, DuplexSession
from speechgpt.infer.frozen_session import FrozenChatSession

CHUNK = 2560  # 160 ms at 16 kHz, the state head's chunk


def stream_recording(session: Any, audio: np.ndarray) -> tuple[DuplexSession, Iterator[DuplexEvent]]:
    """A duplex session over `audio` (16 kHz) pushed in 160 ms chunks, then the listener's trailing silence, and
    the stream's events as they happen."""
    if not isinstance(session, FrozenChatSession):
        raise ValueError("duplex mode is for the frozen-LLM variant (a model folder with speech_modules.json)")
    duplex = DuplexSession(session)
    silence = np.zeros(round(session.listener.trailing_silence_s * 16_000), np.float32)
    stream = np.concatenate([np.asarray(audio, np.float32).reshape(-1), silence])

    def events() -> Iterator[DuplexEvent]:
        for start in range(0, stream.size, CHUNK):
            yield from duplex.push(stream[start : start + CHUNK])
        yield from duplex.finish()

    return duplex, events()


def page_events(session: Any, audio: np.ndarray) -> Iterator[dict[str, Any]]:
    """The page's events for a recording in duplex mode: listening, state, text (whole so far), audio (base64
    16-bit PCM), interrupt, answered, ignored; then done with the last answer's summary and the counts."""
    from speechgpt.app.chat import pcm16_base64, summarize

    duplex, events = stream_recording(session, audio)
    text = ""
    for event in events:
        if event.kind == "speech_start":
            text = ""
            yield {"type": "listening", "at_s": round(event.at_s, 3)}
        elif event.kind == "state":
            yield {"type": "state", "state": event.text, "chunk": event.chunk}
        elif event.kind == "text":
            text += event.text
            yield {"type": "text", "text": text.strip()}
        elif event.kind == "audio" and event.audio is not None and event.audio.size:
            yield {"type": "audio", "sample_rate": event.sample_rate, "pcm16": pcm16_base64(event.audio)}
        elif event.kind == "interrupt":
            yield {"type": "interrupt", "at_s": round(event.at_s, 3), "played_s": event.played_s}
        elif event.kind == "answer" and event.result is not None:
            yield {"type": "answered", "at_s": round(event.at_s, 3), "result": summarize(event.result)}
        elif event.kind == "ignore":
            yield {"type": "ignored", "at_s": round(event.at_s, 3)}
    if not duplex.answers:
        raise ValueError("nothing in the recording was answered (no speech, or the state head ignored it all)")
    last = summarize(duplex.answers[-1])
    yield {
        "type": "done",
        "result": {**last, "duplex": {"answers": len(duplex.answers), "interruptions": duplex.interruptions}},
    }


def run_duplex(app: ChatApp, audio: np.ndarray, out: Path | None, quiet: bool) -> dict[str, Any]:
    """Stream `audio` (16 kHz) through a duplex session, then the listener's trailing silence; the summary (one
    row per answer, interruptions, the output track's path)."""
    duplex, events = stream_recording(app.session, audio)
    for event in events:
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
