"""`speechgpt serve`'s HTTP API with a stand-in session (the browser test runs the real model): limits, errors,
the NDJSON event stream, one request at a time through the model."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from speechgpt.app.chat import ChatApp
from speechgpt.app.serve import ChatServer, Limits, start_in_thread
from speechgpt.infer import ChatEvent, ChatResult, SessionConfig, Timings
from speechgpt.text.template import ParsedAnswer

RATE = 16_000


@dataclass
class FakeSession:
    """ChatSession's surface: answers "four" in text and 0.3 s of speech in two chunks."""

    config: SessionConfig = field(default_factory=SessionConfig)
    speech_to_units: Any = "a k-means"
    vocoder: Any = "a vocoder"
    questions: list[tuple[str | None, int | None]] = field(default_factory=list)
    resets: int = 0
    gate: threading.Event | None = None
    """When set, an answer waits for it after its first event (to hold the model busy)."""

    def stream(self, text: str | None = None, audio: np.ndarray | None = None) -> Iterator[ChatEvent]:
        if audio is not None and audio.size < RATE // 10:
            raise ValueError("the spoken question has no units")
        if text == "crash":
            raise RuntimeError("out of memory")
        self.questions.append((text, None if audio is None else audio.size))
        if audio is not None:
            yield ChatEvent("transcript", text=" what is")
            yield ChatEvent("transcript", text=" two plus two")
        yield ChatEvent("text", text=" fo")
        if self.gate is not None:
            self.gate.wait(10)
        yield ChatEvent("text", text="ur")
        if text == "crash later":
            raise RuntimeError("vocoder exploded")
        chunks = [np.full(RATE // 10, 0.25, np.float32), np.full(RATE // 5, -0.5, np.float32)]
        for chunk in chunks:
            yield ChatEvent("units", units=[4, 5])
            yield ChatEvent("audio", audio=chunk, sample_rate=RATE)
        answer = ParsedAnswer(transcript="what is two plus two" if audio is not None else None, text="four")
        answer.units, answer.complete = [4, 5, 4, 5], True
        result = ChatResult(
            mode="s2s" if audio is not None else "t2s",
            answer=answer,
            raw="",
            question_text=text,
            question_units=None,
            prompt_tokens=10,
            new_tokens=8,
            dropped_turns=0,
            constrained=True,
            audio_streamed=True,
            timings=Timings(first_audio_s=0.1, total_s=0.3),
            sample_rate=RATE,
            audio=np.concatenate(chunks),
        )
        yield ChatEvent("done", result=result)

    def reset(self) -> None:
        self.resets += 1


@pytest.fixture
def served() -> Iterator[tuple[ChatServer, FakeSession]]:
    session = FakeSession()
    limits = Limits(max_upload_bytes=200_000, max_audio_s=2.0, max_text_chars=50, busy_timeout_s=0.5)
    server = start_in_thread(ChatApp(session, name="fake"), limits)  # type: ignore[arg-type]
    yield server, session
    server.shutdown()
    server.server_close()


def post(server: ChatServer, path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
    request = urllib.request.Request(server.url + path.lstrip("/"), data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get(server: ChatServer, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(server.url + path.lstrip("/"), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wav_bytes(seconds: float, rate: int = RATE, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone] * channels, axis=1), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def events_of(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def test_text_question_streams_text_then_audio_then_done(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    status, body = post(
        server, "/api/chat", json.dumps({"text": " what is two plus two "}).encode(), "application/json"
    )
    assert status == 200
    events = events_of(body)
    assert [e["type"] for e in events] == ["text", "text", "audio", "audio", "done"]
    assert [e["text"] for e in events if e["type"] == "text"] == ["fo", "four"]  # whole text so far, not pieces
    pcm = [np.frombuffer(base64.b64decode(e["pcm16"]), "<i2") for e in events if e["type"] == "audio"]
    assert [len(p) for p in pcm] == [RATE // 10, RATE // 5]
    assert pcm[0][0] == round(0.25 * 32767) and pcm[1][0] == round(-0.5 * 32767)
    result = events[-1]["result"]
    assert result["text"] == "four" and result["units"] == 4 and result["seconds_to_first_audio"] == 0.1
    assert result["audio_seconds"] == pytest.approx(0.3) and result["problems"] == []
    assert session.questions == [("what is two plus two", None)]


def test_wav_upload_is_resampled_and_transcribed(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    status, body = post(server, "/api/chat", wav_bytes(1.0, rate=8000, channels=2), "audio/wav")
    assert status == 200
    events = events_of(body)
    assert [e["text"] for e in events if e["type"] == "transcript"] == ["what is", "what is two plus two"]
    assert events[-1]["result"]["transcript"] == "what is two plus two"
    assert session.questions == [(None, RATE)]  # 1 s of 8 kHz stereo arrives as 16 kHz mono


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg decodes browser recordings")
def test_browser_recording_format_goes_through_ffmpeg(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    webm = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "wav", "-i", "pipe:0", "-c:a", "libopus", "-f", "webm", "pipe:1"],
        input=wav_bytes(0.5, rate=48_000),
        capture_output=True,
        check=True,
    ).stdout
    status, _ = post(server, "/api/chat", webm, "audio/webm;codecs=opus")
    assert status == 200
    assert session.questions[0][1] == pytest.approx(RATE // 2, abs=400)


def test_upload_over_the_size_limit_is_413_with_a_json_error(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    status, body = post(server, "/api/chat", b"\0" * 300_000, "audio/wav")
    assert status == 413
    assert json.loads(body)["error"] == "upload too large: 0.3 MB (limit 0.2 MB)"
    assert session.questions == []


def test_too_long_audio_is_400(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    status, body = post(server, "/api/chat", wav_bytes(3.0, rate=8000), "audio/wav")
    assert status == 400
    assert json.loads(body)["error"] == "audio too long: 3.0 s (limit 2 s)"
    assert session.questions == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"RIFF\x24\x00\x00\x00WAVEfmt garbage", "bad WAV file:"),
        (b"this is not audio at all", "unreadable audio: ffmpeg cannot decode it"),
        (b"", "empty upload"),
        (wav_bytes(0.5)[:44] + b"\0\0" * 8000, "silent audio"),
        (wav_bytes(2.0)[: 44 + 56], "truncated audio: the header promises 64000 bytes of audio, the file holds 56"),
    ],
    ids=["bad-wav", "not-audio", "empty", "silent", "truncated"],
)
def test_bad_audio_is_400_naming_the_problem(served: tuple[ChatServer, FakeSession], body: bytes, message: str) -> None:
    server, session = served
    status, reply = post(server, "/api/chat", body, "audio/wav")
    assert status == 400
    assert json.loads(reply)["error"].startswith(message)
    assert session.questions == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"text": "   "}', "empty question"),
        (b"{not json", "bad request"),
        (b'{"text": "' + b"x" * 60 + b'"}', "text too long: 60"),
    ],
)
def test_bad_text_is_400(served: tuple[ChatServer, FakeSession], payload: bytes, message: str) -> None:
    server, _ = served
    status, reply = post(server, "/api/chat", payload, "application/json")
    assert status == 400 and json.loads(reply)["error"].startswith(message)


def test_a_question_the_session_refuses_is_400_not_a_broken_stream(served: tuple[ChatServer, FakeSession]) -> None:
    server, _ = served
    status, reply = post(server, "/api/chat", wav_bytes(0.05), "audio/wav")
    assert status == 400 and json.loads(reply)["error"] == "the spoken question has no units"


def test_a_failing_model_is_reported_not_a_dropped_connection(served: tuple[ChatServer, FakeSession]) -> None:
    server, _ = served
    status, reply = post(server, "/api/chat", b'{"text": "crash"}', "application/json")
    assert status == 500 and json.loads(reply)["error"] == "answering failed: out of memory"
    status, reply = post(server, "/api/chat", b'{"text": "crash later"}', "application/json")
    assert status == 200
    assert events_of(reply)[-1] == {"type": "error", "error": "answering failed: vocoder exploded"}
    assert not server.model_lock.locked()


def test_one_request_at_a_time_while_the_page_stays_responsive(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    session.gate = threading.Event()
    first: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: first.update(
            zip(("status", "body"), post(server, "/api/chat", b'{"text": "a"}', "application/json"), strict=True)
        )
    )
    worker.start()
    for _ in range(100):
        if server.model_lock.locked():
            break
        threading.Event().wait(0.02)
    status, health = get(server, "/api/health")
    assert status == 200 and json.loads(health)["busy"] is True
    assert get(server, "/")[0] == 200
    status, reply = post(server, "/api/chat", b'{"text": "b"}', "application/json")
    assert status == 503 and "busy" in json.loads(reply)["error"]
    session.gate.set()
    worker.join(10)
    assert first["status"] == 200 and events_of(first["body"])[-1]["type"] == "done"
    assert [q for q, _ in session.questions] == ["a"]


def test_page_health_reset_and_static_files(served: tuple[ChatServer, FakeSession]) -> None:
    server, session = served
    status, page = get(server, "/")
    assert status == 200 and b'id="answer-audio"' in page and b"/static/app.js" in page
    assert get(server, "/static/app.js")[0] == 200 and get(server, "/static/style.css")[0] == 200
    assert get(server, "/static/../serve.py")[0] == 404 and get(server, "/nope")[0] == 404
    health = json.loads(get(server, "/api/health")[1])
    assert health["model"] == "fake" and health["hears"] and health["speaks"] and not health["busy"]
    assert health["limits"]["max_upload_bytes"] == 200_000 and health["limits"]["max_audio_s"] == 2.0
    assert post(server, "/api/reset", b"", "application/json")[0] == 200 and session.resets == 1
