"""The frozen-LLM variant behind `speechgpt serve`: a tiny frozen folder answers an uploaded question with its state
decisions streamed before the text, the page's JSON carries them, and typed questions go to the frozen LLM as text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from speechgpt.app.chat import ChatApp, ChatSetup, load_chat_app
from speechgpt.app.serve import ChatServer, Limits, start_in_thread
from speechgpt.infer.frozen_session import NO_SPEECH_OUT, FrozenChatSession
from tests.chat_fixtures import make_frozen_model
from tests.unit.test_serve import events_of, get, post, wav_bytes


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> ChatApp:
    folder = make_frozen_model(tmp_path_factory.mktemp("frozen-serve"), state_bias=(60.0, 0.0, 0.0))
    setup = ChatSetup(model=folder, kmeans=Path("no/such/kmeans"), vocoder=Path("no/such/vocoder"))
    setup.session.sampling.max_new_tokens = 6
    return load_chat_app(setup)  # the frozen folder alone: k-means and vocoder are not looked for


@pytest.fixture
def served(app: ChatApp) -> Iterator[ChatServer]:
    server = start_in_thread(app, Limits(max_audio_s=5.0))
    yield server
    server.shutdown()
    server.server_close()


def test_the_folder_makes_a_frozen_app_that_hears_without_units(app: ChatApp) -> None:
    assert isinstance(app.session, FrozenChatSession) and app.variant == "frozen"
    assert app.describe() == {"model": str(app.session.frozen.source), "variant": "frozen", "mode": "same",
                              "hears": True, "speaks": False}  # fmt: skip


def test_upload_streams_state_decisions_then_the_text_answer(served: ChatServer) -> None:
    status, body = post(served, "/api/chat", wav_bytes(1.0, rate=8000), "audio/wav")
    assert status == 200
    events = events_of(body)
    kinds = [e["type"] for e in events]
    # 1 s + 0.48 s of trailing silence = 36 encoder frames = 9 chunks, each decided before any text
    assert kinds[:9] == ["state"] * 9 and "state" not in kinds[9:] and kinds[-1] == "done"
    assert [e["chunk"] for e in events[:9]] == list(range(9)) and {e["state"] for e in events[:9]} == {"keep_listening"}
    texts = [e["text"] for e in events if e["type"] == "text"]
    result = events[-1]["result"]
    assert texts and texts[-1] == result["text"] and result["mode"] == "s2t"  # whole text so far, as for unified
    assert result["listening"]["states"] == ["keep_listening"] * 9 and result["listening"]["forced"]
    assert NO_SPEECH_OUT in result["problems"] and result["units"] == 0
    health = json.loads(get(served, "/api/health")[1])
    assert health["variant"] == "frozen" and health["hears"] and not health["speaks"]


def test_typed_question_is_answered_by_the_frozen_llm_as_text(served: ChatServer) -> None:
    status, body = post(served, "/api/chat", b'{"text": "what is two plus two"}', "application/json")
    events = events_of(body)
    assert status == 200 and "state" not in {e["type"] for e in events}
    result = events[-1]["result"]
    assert result["mode"] == "t2t" and result["text"] and result["listening"] is None and result["problems"] == []


def test_page_shows_the_state_decisions(served: ChatServer) -> None:
    page = get(served, "/")[1].decode()
    script = get(served, "/static/app.js")[1].decode()
    assert 'id="states"' in page and 'id="states-row"' in page
    assert 'event.type === "state"' in script and "addState(event.state, event.chunk)" in script
    assert 'id="duplex"' in page and '"/api/chat?duplex=1"' in script  # a recording played as a live stream
    assert 'event.type === "interrupt"' in script and "player.stop()" in script


def test_a_recordings_quiet_edges_are_cut_before_the_frozen_variant_listens(app: ChatApp) -> None:
    import numpy as np

    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(16_000) / 16_000)).astype(np.float32)
    padded = np.concatenate([np.zeros(16_000, np.float32), tone, np.zeros(16_000, np.float32)])

    def chunks_heard() -> int:
        events = list(app.session.stream(audio=padded))
        return sum(e.kind == "state" for e in events)

    conditioned = chunks_heard()  # 1 s + 2 x 0.15 s kept, then 0.48 s of trailing silence
    app.session.config.condition_input = False
    try:
        assert chunks_heard() > conditioned + 8  # 1.7 s more: over ten 160 ms chunks
    finally:
        app.session.config.condition_input = True
