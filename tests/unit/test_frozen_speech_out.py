"""The frozen-LLM variant speaking: a tiny frozen folder with a speech decoder and a vocoder answers a spoken
question in text and then speech (units streamed to the vocoder), with the latency of each component; a decoder
fitted to another LLM is refused with the command that re-aligns it; the page streams the spoken answer; and a
duplex stream is interrupted by a new question while an answer plays, but not by noise or silence, and hears a quiet
question in steady noise and not the noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speechgpt.app.chat import ChatSetup, load_chat_app
from speechgpt.app.serve import Limits, start_in_thread
from speechgpt.infer.duplex import DuplexSession
from speechgpt.infer.frozen_loading import load_frozen_model
from speechgpt.infer.frozen_session import NO_SPEECH_OUT, FrozenChatSession
from speechgpt.infer.frozen_speaking import load_answer_speaker
from speechgpt.model.frozen_speaker import FrozenSpeaker, load_speech_decoder, read_decoder_meta, save_speech_decoder
from speechgpt.model.load import load_lm
from tests.chat_fixtures import chirp, make_frozen_model, make_speech_decoder, make_vocoder
from tests.lm_fixtures import make_tiny_lm
from tests.unit.test_serve import events_of, post, wav_bytes

KEEP, ANSWER, IGNORE = (60.0, 0.0, 0.0), (0.0, 60.0, 0.0), (0.0, 0.0, 60.0)
CHUNK = 2560  # 160 ms


def make_parts(root: Path, state_bias: tuple[float, ...]) -> dict[str, Path]:
    model = make_frozen_model(root, state_bias=state_bias)
    return {
        "model": model,
        "decoder": make_speech_decoder(model, root / "decoder"),
        "vocoder": make_vocoder(root / "vocoder"),
    }


def session_of(parts: dict[str, Path], max_new_tokens: int = 6) -> FrozenChatSession:
    setup = ChatSetup(model=parts["model"], speech_decoder=parts["decoder"], vocoder=parts["vocoder"])
    setup.session.sampling.max_new_tokens = max_new_tokens
    session = load_chat_app(setup).session
    assert isinstance(session, FrozenChatSession)
    return session


@pytest.fixture(scope="module")
def listening(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_parts(tmp_path_factory.mktemp("frozen-speak"), KEEP)


def test_a_spoken_question_gets_text_then_streamed_speech(listening: dict[str, Path]) -> None:
    session = session_of(listening)
    assert session.speaks
    events = list(session.stream(audio=chirp(1.0)))
    kinds = [e.kind for e in events]
    result = events[-1].result
    assert result is not None and result.mode == "s2s" and NO_SPEECH_OUT not in result.answer.problems
    streamed = [u for e in events if e.kind == "units" for u in e.units]
    assert streamed and streamed == result.answer.units
    assert max(i for i, k in enumerate(kinds) if k == "text") < kinds.index("units") < kinds.index("audio")
    audio = np.concatenate([e.audio for e in events if e.kind == "audio"])
    assert result.audio is not None and np.array_equal(audio, result.audio) and result.audio_streamed
    latency = result.listening["latencies"]
    order = [latency[k] for k in ("decision_s", "first_token_s", "first_unit_s", "first_audio_s")]
    assert all(v is not None for v in order[1:]) and order[1:] == sorted(order[1:])
    text_only = session.respond(audio=chirp(1.0), reply="text")
    assert text_only.mode == "s2t" and text_only.audio is None and text_only.answer.units == []


def test_a_decoder_fitted_to_another_llm_is_refused(listening: dict[str, Path], tmp_path: Path) -> None:
    other = make_tiny_lm(tmp_path / "other")
    lm, _ = load_lm(other)
    decoder = load_speech_decoder(listening["decoder"])
    save_speech_decoder(FrozenSpeaker(lm, decoder), tmp_path / "moved", stage="frozen-speak", backbone=str(other))
    moved, ours = (read_decoder_meta(p)["lm_fingerprint"] for p in (tmp_path / "moved", listening["decoder"]))
    assert moved != ours
    frozen = load_frozen_model(listening["model"])
    with pytest.raises(ValueError, match="re-align it: speechgpt train frozen-speak"):
        load_answer_speaker(tmp_path / "moved", frozen)
    assert load_answer_speaker(listening["decoder"], frozen).use_prefix


def test_the_page_streams_the_spoken_answer(listening: dict[str, Path]) -> None:
    setup = ChatSetup(model=listening["model"], speech_decoder=listening["decoder"], vocoder=listening["vocoder"])
    setup.session.sampling.max_new_tokens = 4
    server = start_in_thread(load_chat_app(setup), Limits(max_audio_s=5.0))
    try:
        status, body = post(server, "/api/chat", wav_bytes(1.0, rate=16000), "audio/wav")
    finally:
        server.shutdown()
        server.server_close()
    events = events_of(body)
    kinds = [e["type"] for e in events]
    assert status == 200 and "audio" in kinds and kinds[-1] == "done"
    result = events[-1]["result"]
    assert result["mode"] == "s2s" and result["units"] > 0 and result["audio_seconds"] > 0
    assert result["listening"]["latencies"]["first_audio_s"] is not None


def pieces(wave: np.ndarray) -> list[np.ndarray]:
    return [wave[i : i + CHUNK] for i in range(0, len(wave), CHUNK)]


def test_duplex_a_new_question_interrupts_the_answer_playing(tmp_path: Path) -> None:
    duplex = DuplexSession(session_of(make_parts(tmp_path, ANSWER), max_new_tokens=6))
    events = [e for piece in pieces(np.zeros(CHUNK * 3, np.float32)) for e in duplex.push(piece)]
    assert events == []  # silence opens no utterance
    speech = pieces(chirp(2.0))
    while not duplex.answers:  # this state head answers at the first chunk it decides
        events += duplex.push(speech.pop(0))
    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_start" and events[0].at_s == pytest.approx(0.48)
    assert kinds[1:3] == ["state", "text"] and "interrupt" not in kinds and kinds[-1] == "answer"
    first = duplex.answers[0]
    seconds = len(first.audio) / first.sample_rate
    assert seconds > 0.5 and duplex.playing and events[-1].at_s == duplex.playing_from_s
    later: list = []
    while len(duplex.answers) == 1:  # the speech goes on: a new utterance, decided "answer" while the first plays
        later += duplex.push(speech.pop(0))
    kinds = [e.kind for e in later]
    cut = [e for e in later if e.kind == "interrupt"]
    assert kinds[0] == "speech_start" and len(cut) == 1 and duplex.interruptions == 1
    assert 0 < cut[0].played_s < seconds and kinds.index("interrupt") < kinds.index("answer")


def test_duplex_speech_not_for_the_assistant_does_not_interrupt(tmp_path: Path) -> None:
    duplex = DuplexSession(session_of(make_parts(tmp_path, IGNORE)))
    events = [e for piece in pieces(chirp(1.0)) for e in duplex.push(piece)]
    kinds = [e.kind for e in events]
    assert "ignore" in kinds and "answer" not in kinds and "interrupt" not in kinds and not duplex.answers


def test_duplex_hears_a_quiet_question_in_steady_noise_and_not_the_noise(tmp_path: Path) -> None:
    """Steady hiss at -40 dBFS (which a fixed -45 dBFS detector took for speech from the first piece) opens nothing;
    a question 14 dB above it, at -26 dBFS, opens where it starts (and nothing after it), heard raised toward a whole
    question's level."""
    duplex = DuplexSession(session_of(make_parts(tmp_path, ANSWER)))
    hiss = (np.random.default_rng(0).standard_normal(CHUNK * 30) * 10 ** (-40 / 20)).astype(np.float32)
    assert not [e for piece in pieces(hiss[: CHUNK * 12]) for e in duplex.push(piece)]
    question = chirp(1.0)
    question *= 10 ** (-26 / 20) / np.sqrt(np.mean(question**2))
    hiss[CHUNK * 14 : CHUNK * 14 + question.size] += question
    events = [e for piece in pieces(hiss[CHUNK * 12 :]) for e in duplex.push(piece)]
    kinds = [e.kind for e in events]
    starts = [e.at_s for e in events if e.kind == "speech_start"]  # this head answers at once: the rest reopens
    assert kinds[0] == "speech_start" and "answer" in kinds and duplex.conditioner.gain_db > 3
    assert starts[0] == pytest.approx(14 * CHUNK / 16_000) and max(starts) < (14 * CHUNK + question.size) / 16_000


def test_chat_duplex_streams_a_recording_and_writes_the_output_track(tmp_path: Path, capsys) -> None:
    from speechgpt.app import chat
    from speechgpt.data.audio import read_audio, write_audio

    parts = make_parts(tmp_path, ANSWER)
    recording = tmp_path / "talk.wav"
    write_audio(recording, np.concatenate([np.zeros(8000, np.float32), chirp(1.5)]), 16_000)
    cfg = chat.Config(
        model=parts["model"], speech_decoder=parts["decoder"], vocoder=parts["vocoder"], audio=recording,
        duplex=True, out=tmp_path / "assistant.wav",
    )  # fmt: skip
    cfg.session.sampling.max_new_tokens = 6
    chat.run(cfg)
    printed = capsys.readouterr().out
    assert (
        "[  0.48 s] listening" in printed
    )  # the 160 ms chunk in which the speech begins and "interrupted" in printed and "answer:" in printed
    track = read_audio(tmp_path / "assistant.wav")
    assert track.samples.size and np.abs(track.samples).max() > 0


def test_the_page_streams_a_recording_in_duplex(tmp_path: Path) -> None:
    from speechgpt.data.audio import write_audio

    parts = make_parts(tmp_path, ANSWER)
    setup = ChatSetup(model=parts["model"], speech_decoder=parts["decoder"], vocoder=parts["vocoder"])
    setup.session.sampling.max_new_tokens = 6
    server = start_in_thread(load_chat_app(setup), Limits(max_audio_s=5.0))
    recording = tmp_path / "talk.wav"
    write_audio(recording, np.concatenate([np.zeros(8000, np.float32), chirp(1.5)]), 16_000)
    try:
        status, body = post(server, "/api/chat?duplex=1", recording.read_bytes(), "audio/wav")
        typed, _ = post(server, "/api/chat?duplex=1", b'{"text": "hi"}', "application/json")
    finally:
        server.shutdown()
        server.server_close()
    events = events_of(body)
    kinds = [e["type"] for e in events]
    assert status == 200 and kinds[0] == "listening" and kinds[-1] == "done"
    assert "interrupt" in kinds and kinds.count("answered") >= 2 and "audio" in kinds
    assert events[-1]["result"]["duplex"]["answers"] == kinds.count("answered")
    assert events[-1]["result"]["duplex"]["interruptions"] == kinds.count("interrupt")
    assert typed == 400  # duplex takes a recording, not text
