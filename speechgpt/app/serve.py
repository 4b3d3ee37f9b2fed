"""`speechgpt serve`: a local web page to talk to a model by voice (record or upload) or text.

Standard library only: a ThreadingHTTPServer serves the page (speechgpt/app/static/) and a small JSON API:

    GET  /api/health  model, answer mode, limits, whether the model is busy
    POST /api/chat    body: JSON {"text": ...} or audio bytes (WAV/FLAC/OGG; anything else through ffmpeg, e.g. the
                      browser's webm recordings) -> NDJSON events, one per line, as they happen:
                      {"type": "transcript"|"text", "text": ...}, {"type": "audio", "sample_rate", "pcm16": base64},
                      {"type": "done", "result": {...}}, or {"type": "error", "error": ...}
                      ?duplex=1 (frozen variant, a recording): the recording as a live stream, several questions;
                      also {"type": "listening"|"interrupt"|"answered"|"ignored", "at_s": ...}
    POST /api/reset   forget the conversation

Bad input is refused before the model is touched, with a JSON `{"error": ...}`: 413 for an upload over the size
limit, 400 for unreadable, empty or too-long audio and empty or too-long text. One request at a time goes through
the model (a lock; a request that waits longer than `busy_timeout_s` gets 503), while the page and the API's other
routes keep answering.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import itertools
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from speechgpt.app.chat import ChatSetup, load_chat_app
from speechgpt.data.audio import SAMPLE_RATE, Audio16k, AudioError, read_samples, to_16k_mono

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


@dataclasses.dataclass(kw_only=True)
class Config(ChatSetup):
    host: str = "127.0.0.1"
    """Address to bind; 127.0.0.1 keeps the page on this machine (0.0.0.0 opens it to the network, without auth)."""
    port: int = 8000
    """TCP port (0 picks a free one; the URL is logged)."""
    max_upload_mb: float = 10.0
    """Largest accepted request body in MB (10^6 bytes); larger uploads get HTTP 413."""
    max_audio_s: float = 30.0
    """Longest accepted question audio in seconds; longer gets HTTP 400."""
    max_text_chars: int = 2000
    """Longest accepted typed question in characters."""
    busy_timeout_s: float = 120.0
    """How long a request waits while the model answers another one before it gets HTTP 503."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if min(self.max_upload_mb, self.max_audio_s, self.max_text_chars, self.busy_timeout_s) <= 0:
            raise ValueError("max_upload_mb, max_audio_s, max_text_chars and busy_timeout_s must be positive")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the server accepts; sent to the page so it can refuse early with the same messages."""

    max_upload_bytes: int = 10_000_000
    max_audio_s: float = 30.0
    max_text_chars: int = 2000
    busy_timeout_s: float = 120.0


class RequestError(Exception):
    """Input refused before it reaches the model: HTTP status + message for the page."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class Responder(Protocol):
    """What the server needs from a chat: ChatApp, or a test's stand-in."""

    def describe(self) -> dict[str, Any]: ...

    def events(
        self, text: str | None = None, audio: np.ndarray | None = None, duplex: bool = False
    ) -> Iterator[dict[str, Any]]: ...

    def reset(self) -> None: ...


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], chat: Responder, limits: Limits) -> None:
        super().__init__(address, ChatHandler)
        self.chat = chat
        self.limits = limits
        self.model_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Shortcut flags; each sets the config key named by its dest."""
    parser.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="TCP port (0: a free one)")


def run(cfg: Config) -> Path:
    """Serve until Ctrl-C; returns the model folder."""
    chat = load_chat_app(cfg)
    limits = Limits(
        max_upload_bytes=int(cfg.max_upload_mb * 1e6),
        max_audio_s=cfg.max_audio_s,
        max_text_chars=cfg.max_text_chars,
        busy_timeout_s=cfg.busy_timeout_s,
    )
    server = ChatServer((cfg.host, cfg.port), chat, limits)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the model", cfg.host)
    print(f"speechgpt serve: open {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return Path(cfg.model)


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer
    server_version = "speechgpt"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/health":
            busy = self.server.model_lock.locked()
            limits = dataclasses.asdict(self.server.limits)
            self._send_json(HTTPStatus.OK, {**self.server.chat.describe(), "busy": busy, "limits": limits})
        elif path in ("/", "/index.html"):
            self._send_static("index.html")
        elif path.startswith("/static/"):
            self._send_static(path.removeprefix("/static/"))
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/api/chat":
                self._chat()
            elif path == "/api/reset":
                self._read_body()
                with self._model():
                    self.server.chat.reset()
                self._send_json(HTTPStatus.OK, {"ok": True})
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
        except RequestError as err:
            self._send_json(err.status, {"error": str(err)})

    def _chat(self) -> None:
        body = self._read_body()
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        text, audio = None, None
        if ctype == "application/json":
            text = parse_text_request(body, self.server.limits)
        else:
            audio = decode_upload(body, self.server.limits).samples
        duplex = "duplex=1" in self.path.partition("?")[2].split("&")
        with self._model():
            events = self.server.chat.events(text=text, audio=audio, **({"duplex": True} if duplex else {}))
            try:  # the question is checked when the first event is asked for: refuse it with a 400, not mid-stream
                first = next(events)
            except (ValueError, StopIteration) as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(err) or "no answer") from None
            except Exception as err:
                log.exception("answering failed")
                raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"answering failed: {err}") from None
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.close_connection = True  # the stream ends when the connection closes (no Content-Length)
            try:
                for event in itertools.chain([first], events):
                    self.wfile.write(json.dumps(event).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                log.info("client left before the answer was complete")
            except Exception as err:  # the page shows it; the server keeps serving
                log.exception("answering failed")
                self._write_event({"type": "error", "error": f"answering failed: {err}"})
            finally:
                close = getattr(events, "close", None)
                if close is not None:
                    close()

    def _write_event(self, event: Mapping[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(json.dumps(event).encode() + b"\n")

    @contextlib.contextmanager
    def _model(self) -> Iterator[None]:
        """Hold the model for one request; a request that cannot get it in time is a 503."""
        if not self.server.model_lock.acquire(timeout=self.server.limits.busy_timeout_s):
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "the model is busy with another request; try again")
        try:
            yield
        finally:
            self.server.model_lock.release()

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "bad Content-Length header") from None
        limit = self.server.limits.max_upload_bytes
        if length > limit:
            self._discard(length)
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"upload too large: {length / 1e6:.1f} MB (limit {limit / 1e6:.1f} MB)",
            )
        return self.rfile.read(length) if length > 0 else b""

    def _discard(self, length: int) -> None:
        """Read an oversized body away (up to a bound) so the client sees the 413 instead of a reset connection."""
        left = min(length, 20 * self.server.limits.max_upload_bytes)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)
        self.close_connection = True

    def _send_static(self, name: str) -> None:
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or path.suffix not in STATIC_TYPES or not path.is_file():
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {name}"})
            return
        self._send_bytes(HTTPStatus.OK, path.read_bytes(), STATIC_TYPES[path.suffix])

    def _send_json(self, status: HTTPStatus, payload: Mapping[str, Any]) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json")

    def _send_bytes(self, status: HTTPStatus, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def parse_text_request(body: bytes, limits: Limits) -> str:
    """The question of a JSON body `{"text": ...}`; empty or over-long text is a 400."""
    try:
        payload = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RequestError(HTTPStatus.BAD_REQUEST, 'bad request: expected JSON {"text": "..."}') from None
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty question: type some text")
    if len(text) > limits.max_text_chars:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"text too long: {len(text)} characters (limit {limits.max_text_chars})"
        )
    return text.strip()


def decode_upload(body: bytes, limits: Limits) -> Audio16k:
    """Audio bytes -> 16 kHz mono; unreadable, empty, silent or too-long audio is a 400 that names the problem."""
    if not body:
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty upload: no audio bytes received")
    try:
        audio = decode_audio_bytes(body)
    except AudioError as err:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(err)) from None
    if audio.duration_s > limits.max_audio_s:
        raise RequestError(
            HTTPStatus.BAD_REQUEST, f"audio too long: {audio.duration_s:.1f} s (limit {limits.max_audio_s:g} s)"
        )
    return audio


def decode_audio_bytes(body: bytes) -> Audio16k:
    """libsndfile for WAV/FLAC/OGG; ffmpeg for the rest (webm/opus from MediaRecorder, mp4/aac, ...)."""
    import soundfile as sf

    try:
        data, rate = read_samples(io.BytesIO(body))
        return to_16k_mono(data, rate)
    except sf.LibsndfileError as err:
        reason = str(err).rsplit(": ", 1)[-1]  # drop "Error opening <_io.BytesIO object at 0x...>"
        if body[:4] == b"RIFF":
            raise AudioError(f"bad WAV file: {reason}") from None
    except (RuntimeError, TypeError) as err:
        raise AudioError(f"bad audio file: {err}") from None
    if shutil.which("ffmpeg") is None:
        raise AudioError(f"unreadable audio: not WAV/FLAC/OGG ({reason}) and ffmpeg is not installed")
    return to_16k_mono(_ffmpeg_decode(body), SAMPLE_RATE)


def _ffmpeg_decode(body: bytes) -> np.ndarray:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-f", "f32le", "-ac", "1"]
    try:
        done = subprocess.run(
            [*cmd, "-ar", str(SAMPLE_RATE), "pipe:1"], input=body, capture_output=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise AudioError("unreadable audio: ffmpeg took longer than 60 s to decode it") from None
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"unreadable audio: ffmpeg cannot decode it ({reason[-1] if reason else 'no audio stream'})")
    return np.frombuffer(done.stdout, dtype=np.float32)


def start_in_thread(chat: Responder, limits: Limits, host: str = "127.0.0.1", port: int = 0) -> ChatServer:
    """A server answering in a daemon thread (tests, notebooks); stop it with `server.shutdown()`."""
    server = ChatServer((host, port), chat, limits)
    threading.Thread(target=server.serve_forever, name="speechgpt-serve", daemon=True).start()
    return server
