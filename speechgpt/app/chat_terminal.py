"""`speechgpt chat` in the terminal: one question answered and summarized (`one_shot`), or a conversation typed
line by line with its commands (`interactive`); answers print as they stream."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from speechgpt.app.chat import ChatApp, Config, read_question_audio, summarize
from speechgpt.app.frozen_chat import describe_listening
from speechgpt.data.audio import write_audio
from speechgpt.infer import ChatEvent, ChatResult

COMMANDS_HELP = (
    "type a question and press Enter; /audio PATH.wav asks with a recording; /reply same|speech|text sets the "
    "answer modality; /reset starts a new conversation; /quit (or Ctrl-D) ends"
)


def one_shot(app: ChatApp, cfg: Config, audio: np.ndarray | None) -> dict[str, Any]:
    printer = None if cfg.json else _Printer()
    result = _answer(app, cfg.text, audio, printer)
    path = None
    if cfg.out is not None and result.audio is not None and result.audio.size:
        write_audio(cfg.out, result.audio, result.sample_rate or 16_000)
        path = cfg.out
    summary = summarize(result, path)
    if cfg.out is not None and path is None:
        summary["problems"].append("no speech to write: the answer has no audio (text answer, or no vocoder)")
    if not cfg.json:
        _print_summary(summary, wanted_audio=cfg.out is not None)
    return summary


def interactive(app: ChatApp, cfg: Config) -> Path:
    print(f"speechgpt chat with {app.name}: {COMMANDS_HELP}", flush=True)
    turn = 0
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return cfg.answers_dir
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return cfg.answers_dir
        try:
            question = _command(app, line)
            if question is None:
                continue
            text, audio = question
            turn += 1
            result = _answer(app, text, audio, _Printer())
            path = None
            if result.audio is not None and result.audio.size:
                path = cfg.answers_dir / f"turn-{turn:03d}.wav"
                write_audio(path, result.audio, result.sample_rate or 16_000)
            _print_summary(summarize(result, path), wanted_audio=False)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", flush=True)


def _command(app: ChatApp, line: str) -> tuple[str | None, np.ndarray | None] | None:
    """(text, audio) for a question; None after a command that asks nothing."""
    if not line.startswith("/"):
        return line, None
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name == "/audio":
        if not arg:
            raise ValueError("usage: /audio PATH.wav")
        return None, read_question_audio(Path(arg).expanduser())
    if name == "/reset":
        app.reset()
        print("(new conversation)", flush=True)
        return None
    if name == "/reply":
        if arg not in ("same", "speech", "text"):
            raise ValueError("usage: /reply same|speech|text")
        app.session.config = dataclasses.replace(app.session.config, reply=arg)  # type: ignore[arg-type]
        print(f"(answers: {arg})", flush=True)
        return None
    raise ValueError(f"unknown command {name}; {COMMANDS_HELP}")


class _Printer:
    """Prints the transcript and the answer text as their pieces arrive."""

    def __init__(self) -> None:
        self.current: str | None = None

    def __call__(self, event: ChatEvent) -> None:
        if event.kind not in ("transcript", "text"):
            return
        if event.kind != self.current:
            self.end()
            sys.stdout.write("heard:  " if event.kind == "transcript" else "answer: ")
            self.current = event.kind
            sys.stdout.write(event.text.lstrip())
        else:
            sys.stdout.write(event.text)
        sys.stdout.flush()

    def end(self) -> None:
        if self.current is not None:
            sys.stdout.write("\n")
            self.current = None


def _answer(app: ChatApp, text: str | None, audio: np.ndarray | None, printer: _Printer | None) -> ChatResult:
    result = None
    for event in app.stream(text, audio):
        if printer is not None:
            printer(event)
        if event.kind == "done":
            result = event.result
    if printer is not None:
        printer.end()
    if result is None:
        raise RuntimeError("the answer stream ended without a result")
    return result


def _print_summary(summary: dict[str, Any], *, wanted_audio: bool) -> None:
    if summary["listening"] is not None:
        print(describe_listening(summary["listening"]))
    if summary["audio"]:
        first = summary["seconds_to_first_audio"]
        print(
            f"speech: {summary['audio']} ({summary['audio_seconds']:.1f} s, {summary['units']} units; "
            f"first audio after {first:.2f} s, total {summary['seconds_total']:.2f} s)"
        )
    elif summary["units"] and not wanted_audio:
        print(f"speech: {summary['units']} units (no audio written)")
    for problem in summary["problems"]:
        print(f"problem: {problem}")
    sys.stdout.flush()
