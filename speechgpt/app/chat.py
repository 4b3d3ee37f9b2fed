"""`speechgpt chat`: talk to a model from the terminal, typed or spoken, one question or a whole conversation.

    speechgpt chat --config configs/tiny/chat.yaml                                   # interactive
    speechgpt chat --config configs/tiny/chat.yaml --audio in.wav --out answer.wav   # one spoken question
    speechgpt chat --config configs/tiny/chat.yaml --text "what is two plus two" --out answer.wav --json

The wiring lives here (the front layer may import everything): a model folder, a k-means folder (speech -> units)
and a vocoder folder (units -> speech) become one `speechgpt.infer.ChatSession`. A frozen-LLM variant folder (its
speech_modules.json says variant "frozen"; or `variant=frozen`) becomes a `FrozenChatSession` instead: it hears
with its own speech encoder (k-means unused), shows the state head's decisions, answers in text and, given its
speech decoder (`speech_decoder`), in speech through the same vocoder.
`ChatApp` wraps either session for the terminal and for `speechgpt serve`: wire events for the page and a short
JSON summary of each answer.

Typed text is always a question, never a file name: a WAV is only read from `--audio` or the `/audio PATH` command.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechgpt.app.frozen_chat import load_frozen_session
from speechgpt.data.audio import AudioError, read_audio
from speechgpt.infer import ChatEvent, ChatResult, ChatSession
from speechgpt.infer import SessionConfig as InferConfig
from speechgpt.infer.frozen_loading import Variant, VariantChoice
from speechgpt.infer.frozen_session import FrozenChatSession
from speechgpt.infer.listening import ListenConfig
from speechgpt.model.load import DType

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ChatSetup:
    """What `chat` and `serve` load: the model, how speech becomes units, how units become speech."""

    model: Path = Path("out/demo/stage3/final")
    """Model folder: a stage's merged export (`final/`), a peft adapter folder, an HF folder with unit tokens, or a
    frozen-LLM variant's `final/` (speech_modules.*, naming its backbone)."""
    variant: VariantChoice = "auto"
    """'auto': the model folder says (speech_modules.json with variant "frozen", else unified); 'unified' or
    'frozen' insist on one (a folder of the other kind is an error)."""
    base: Path | None = None
    """Base model of an adapter folder whose adapter_config.json does not name a reachable one; for the frozen
    variant, its backbone when the one named in speech_modules.json is not reachable."""
    kmeans: Path | None = Path("out/demo/kmeans")
    """k-means folder from `speechgpt units fit` (names its encoder); None: typed questions only."""
    vocoder: Path | None = Path("out/demo/vocoder")
    """Unit vocoder folder (or a legacy CodeHiFiGAN checkpoint); None: spoken answers stay units, no audio."""
    speech_decoder: Path | None = None
    """Frozen variant: its speech decoder folder (`speechgpt train frozen-speak`'s final/); None: text answers."""
    session: InferConfig = field(default_factory=InferConfig)
    """How the session prompts, decodes and voices (system text, answer modality, sampling, streaming); the frozen
    variant uses its reply and sampling.max_new_tokens (greedy)."""
    listening: ListenConfig = field(default_factory=ListenConfig)
    """Frozen variant: how a spoken question is streamed to the state head (trailing silence, pace)."""
    dtype: DType = "float32"
    """Model weights' precision."""
    device: str | None = None
    """torch device for the model; None: CUDA when available, else CPU."""
    num_threads: int = 1
    """torch CPU threads; `eval chat` gives its Whisper judge as many."""

    def __post_init__(self) -> None:
        if self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")


@dataclass(kw_only=True)
class Config(ChatSetup):
    audio: Path | None = None
    """One-shot: ask with this audio file (WAV/FLAC/OGG, any rate, mono or stereo)."""
    text: str | None = None
    """One-shot: ask this typed question."""
    out: Path | None = None
    """One-shot: write the spoken answer to this WAV."""
    json: bool = False
    """One-shot: print one JSON object (transcript, text, units, audio path, timings, problems) instead of text."""
    answers_dir: Path = Path("out/chat")
    """Interactive: each spoken answer is written here as turn-NNN.wav."""
    duplex: bool = False
    """Frozen variant, with --audio: stream the file as a live conversation (several questions, interruptions;
    speechgpt.app.duplex_chat); --out gets the assistant's output track."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.audio is not None and self.text is not None:
            raise ValueError("give --audio or --text, not both")
        one_shot = self.audio is not None or self.text is not None
        if not one_shot and (self.out is not None or self.json):
            raise ValueError("--out and --json are for one-shot use: add --audio FILE or --text '...'")
        if self.duplex and self.audio is None:
            raise ValueError("--duplex streams a recording: add --audio FILE")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Shortcut flags; each sets the config key named by its dest."""
    parser.add_argument("--audio", type=Path, help="one-shot: ask with this audio file")
    parser.add_argument("--text", help="one-shot: ask this typed question (never read as a file name)")
    parser.add_argument("--out", type=Path, help="one-shot: write the spoken answer to this WAV")
    parser.add_argument("--json", action="store_true", default=None, help="one-shot: print one JSON object")
    parser.add_argument("--duplex", action="store_true", default=None, help="frozen variant: --audio as a live stream")
    parser.add_argument(
        "--mode",
        dest="session.reply",
        choices=["same", "speech", "text"],
        help="answer modality: same as the question (default), or always speech / text",
    )


class ChatApp:
    """A ChatSession (or the frozen variant's FrozenChatSession) as the terminal and the web page use it."""

    def __init__(self, session: ChatSession | FrozenChatSession, *, name: str) -> None:
        self.session = session
        self.name = name

    @property
    def variant(self) -> Variant:
        return "frozen" if isinstance(self.session, FrozenChatSession) else "unified"

    @property
    def hears(self) -> bool:
        return self.variant == "frozen" or self.session.speech_to_units is not None

    @property
    def speaks(self) -> bool:
        if isinstance(self.session, FrozenChatSession):
            return self.session.speaks
        return self.session.vocoder is not None

    def describe(self) -> dict[str, Any]:
        cfg = self.session.config
        return {
            "model": self.name,
            "variant": self.variant,
            "mode": cfg.reply,
            "hears": self.hears,
            "speaks": self.speaks,
        }

    def reset(self) -> None:
        self.session.reset()

    def stream(self, text: str | None = None, audio: np.ndarray | None = None) -> Iterator[ChatEvent]:
        if audio is not None and not self.hears:
            raise ValueError("this chat has no k-means folder, so it cannot hear: ask in text or set `kmeans`")
        return self.session.stream(text=text, audio=audio)

    def events(
        self, text: str | None = None, audio: np.ndarray | None = None, duplex: bool = False
    ) -> Iterator[dict[str, Any]]:
        """The page's events: the frozen variant's state decisions, the transcript and text so far (whole, not
        pieces), audio chunks as base64 16-bit PCM, then `done` with `summarize`'s result. `duplex` (frozen
        variant, a recording): the whole recording as a live stream (speechgpt.app.duplex_chat.page_events)."""
        if duplex:
            from speechgpt.app.duplex_chat import page_events

            if audio is None:
                raise ValueError("duplex mode needs audio (a recording), not text")
            yield from page_events(self.session, audio)
            return
        parts = {"transcript": "", "text": ""}
        for event in self.stream(text, audio):
            if event.kind == "state":
                yield {"type": "state", "state": event.text, "chunk": event.chunk}
            elif event.kind in parts:
                parts[event.kind] += event.text
                yield {"type": event.kind, "text": parts[event.kind].strip()}
            elif event.kind == "audio" and event.audio is not None and event.audio.size:
                yield {"type": "audio", "sample_rate": event.sample_rate, "pcm16": pcm16_base64(event.audio)}
            elif event.kind == "done" and event.result is not None:
                yield {"type": "done", "result": summarize(event.result)}


def pcm16_base64(samples: np.ndarray) -> str:
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    return base64.b64encode(pcm.tobytes()).decode("ascii")


def summarize(result: ChatResult, audio_path: Path | None = None) -> dict[str, Any]:
    """What a script wants to know about one answer (`--json`, and the page's `done` event)."""
    answer, timings = result.answer, result.timings
    audio_seconds = len(result.audio) / result.sample_rate if result.audio is not None and result.sample_rate else 0.0
    return {
        "mode": result.mode,
        "transcript": answer.transcript,
        "text": answer.text,
        "units": len(answer.units),
        "audio": str(audio_path) if audio_path is not None else None,
        "audio_seconds": round(audio_seconds, 3),
        "seconds_to_first_audio": None if timings.first_audio_s is None else round(timings.first_audio_s, 3),
        "seconds_total": round(timings.total_s, 3),
        "problems": list(answer.problems),
        "complete": answer.complete,
        "listening": result.listening,
    }


def load_chat_app(setup: ChatSetup) -> ChatApp:
    """Model + k-means + vocoder -> ChatApp (the frozen variant: its model folder alone); a missing folder is named
    before anything loads."""
    import torch

    from speechgpt.infer import speech_to_units_from_kmeans
    from speechgpt.infer.frozen_loading import resolve_variant
    from vocoder.load import load_answer_vocoder

    if not Path(setup.model).exists():
        raise FileNotFoundError(f"model folder not found: {setup.model} (set `model=...`)")
    frozen = resolve_variant(setup.model, setup.variant) == "frozen"
    speaks = not frozen or setup.speech_decoder is not None  # a frozen variant without a decoder needs no vocoder
    for key in (
        ("base", "speech_decoder", *(["vocoder"] if speaks else [])) if frozen else ("base", "kmeans", "vocoder")
    ):
        path = getattr(setup, key)
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{key} folder not found: {path} (set `{key}=...`; None leaves it out)")
    torch.set_num_threads(setup.num_threads)
    if frozen:
        return ChatApp(load_frozen_session(setup), name=_display_name(setup.model))
    with contextlib.redirect_stdout(sys.stderr):  # loaders that print progress must not mix it into the answers
        to_units = speech_to_units_from_kmeans(setup.kmeans) if setup.kmeans is not None else None
        voice = load_answer_vocoder(setup.vocoder) if setup.vocoder is not None else None
        session = ChatSession.from_pretrained(
            setup.model,
            base=setup.base,
            speech_to_units=to_units,
            vocoder=voice,
            config=setup.session,
            dtype=setup.dtype,
            device=setup.device,
        )
    if voice is None:
        log.warning("no vocoder: spoken answers come back as units only, without audio")
    return ChatApp(session, name=_display_name(setup.model))


def _display_name(model: Path) -> str:
    return Path(model).name if Path(model).name != "final" else str(model)


def read_question_audio(path: Path) -> np.ndarray:
    """16 kHz samples of a question file, with errors that say what is wrong with it."""
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an audio file: {path} is a directory")
    try:
        return read_audio(path).samples
    except AudioError as err:
        raise AudioError(f"{path}: {err}") from None


def run(cfg: Config) -> Path:
    """One question (--audio / --text) or an interactive conversation; returns the answer WAV when one was written,
    else the answers folder (interactive) or the model folder."""
    from speechgpt.app.chat_terminal import interactive, one_shot

    if cfg.audio is None and cfg.text is None:
        return interactive(load_chat_app(cfg), cfg)
    stdout = sys.stdout
    try:  # with --json nothing but the one JSON object may reach stdout, whatever a library prints
        with contextlib.redirect_stdout(sys.stderr) if cfg.json else contextlib.nullcontext():
            audio = read_question_audio(cfg.audio) if cfg.audio is not None else None
            if cfg.text is not None and not cfg.text.strip():
                raise ValueError("--text is empty")
            if cfg.duplex and audio is not None:
                from speechgpt.app.duplex_chat import run_duplex

                summary = run_duplex(load_chat_app(cfg), audio, cfg.out, quiet=cfg.json)
            else:
                summary = one_shot(load_chat_app(cfg), cfg, audio)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if cfg.json:
            print(json.dumps({"error": str(err)}), file=stdout, flush=True)
        raise
    if cfg.json:
        print(json.dumps(summary), file=stdout, flush=True)
    return Path(summary["audio"]) if summary["audio"] else Path(cfg.model)
