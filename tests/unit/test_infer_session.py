"""ChatSession on an untrained tiny model: streamed audio arrives before generation ends and adds up to whole-answer
synthesis, inputs and outputs per mode, the history budget, JSON results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechgpt.infer import AnswerShape, ChatSession, PromptTooLongError, Sampling
from speechgpt.text.template import EOA, EOSP, SOSP, TA, UA, AssistantTurn, UserTurn
from tests.unit.test_infer_fixtures import FakeStreamingVocoder, FakeVocoder, make_speech_lm, noisy_config

SPEECH = Sampling(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=60, seed=3)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_lm(tmp_path_factory.mktemp("session") / "lm")


def test_streamed_audio_comes_before_generation_ends_and_matches_whole_synthesis(lm: Path) -> None:
    vocoder = FakeStreamingVocoder(per_unit=4)
    config = noisy_config(min_units=30, chunk_units=5, first_chunk_units=5)
    session = ChatSession.from_pretrained(lm, device="cpu", vocoder=vocoder, config=config)
    events = list(session.stream(text="two plus two", reply="speech", sampling=SPEECH))
    kinds = [e.kind for e in events]
    result = events[-1].result
    assert kinds[-1] == "done" and result is not None and result.mode == "t2s"
    assert kinds.index("audio") < max(i for i, k in enumerate(kinds) if k == "units")
    assert len(vocoder.pushes) >= 6 and all(len(p) == 5 for p in vocoder.pushes[:-1])
    assert result.audio_streamed and len(result.answer.units) >= 30
    streamed = np.concatenate([e.audio for e in events if e.kind == "audio"])
    assert np.array_equal(streamed, result.audio)
    assert np.array_equal(streamed, FakeVocoder(per_unit=4)(result.answer.units))
    timings = result.timings
    assert timings.first_audio_s is not None and timings.last_token_s is not None
    assert timings.first_token_s < timings.first_audio_s < timings.last_token_s <= timings.total_s  # type: ignore[operator]

    session.reset()
    whole_events = list(session.stream(text="two plus two", reply="speech", sampling=SPEECH, stream_audio=False))
    whole = whole_events[-1].result
    assert whole is not None and whole.answer.units == result.answer.units  # same seed, same prompt
    audio_at = [i for i, e in enumerate(whole_events) if e.kind == "audio"]
    assert len(audio_at) == 1 and audio_at[0] > max(i for i, e in enumerate(whole_events) if e.kind == "units")
    assert np.array_equal(whole.audio, streamed) and not whole.audio_streamed


def test_small_first_pushes_until_the_vocoder_look_ahead_is_met(lm: Path) -> None:
    vocoder = FakeStreamingVocoder(per_unit=4, lookahead=7)
    config = noisy_config(min_units=30, chunk_units=6, first_chunk_units=3)
    session = ChatSession.from_pretrained(lm, device="cpu", vocoder=vocoder, config=config)
    result = session.respond(text="two plus two", reply="speech", sampling=SPEECH)
    assert [len(p) for p in vocoder.pushes[:5]] == [3, 3, 3, 6, 6]  # audio first comes out at 9 > 7 units
    assert result.audio is not None and np.array_equal(result.audio, FakeVocoder(per_unit=4)(result.answer.units))


def test_plain_vocoder_gets_one_whole_answer(lm: Path) -> None:
    vocoder = FakeVocoder(per_unit=2)
    session = ChatSession.from_pretrained(lm, device="cpu", vocoder=vocoder, config=noisy_config())
    result = session.respond(units=[1, 2, 3], sampling=SPEECH)
    assert result.mode == "s2s" and vocoder.calls == [result.answer.units]
    assert result.audio is not None and len(result.audio) == 2 * len(result.answer.units)
    assert not result.audio_streamed and result.sample_rate == FakeVocoder.sample_rate
    text_answer = session.respond(units=[1, 2, 3], reply="text", sampling=SPEECH)
    assert text_answer.mode == "s2t" and text_answer.audio is None and text_answer.answer.units == []


def test_spoken_question_goes_through_speech_to_units(lm: Path, tmp_path: Path) -> None:
    heard: list[int] = []

    def to_units(samples: np.ndarray) -> list[int]:
        heard.append(len(samples))
        return [4, 4, 4, 9, 9, 2, 4, 4]  # frame-level ids: repeats are merged before prompting

    session = ChatSession.from_pretrained(lm, device="cpu", speech_to_units=to_units, config=noisy_config())
    tone = np.sin(np.arange(8000, dtype=np.float32) / 10)
    result = session.respond(audio=tone[:1600], sampling=SPEECH)
    assert result.question_units == [4, 9, 2, 4] and result.mode == "s2s" and heard == [1600]
    assert session.history[-1][0] == UserTurn(units=(4, 9, 2, 4))
    wav = tmp_path / "q.wav"
    sf.write(wav, tone, 8000)  # resampled to 16 kHz on reading
    assert session.respond(audio=wav, reply="text", sampling=SPEECH).mode == "s2t" and heard[-1] == 16000
    # a recording's quiet edges are cut to 0.15 s around its sound (SessionConfig.condition_input)
    padded = np.concatenate([np.zeros(8000, np.float32), tone, np.zeros(8000, np.float32)])
    session.respond(audio=padded, reply="text", sampling=SPEECH)
    assert heard[-1] == 8000 + 2 * 2400
    session.config.condition_input = False
    session.respond(audio=padded, reply="text", sampling=SPEECH)
    assert heard[-1] == padded.size


def test_bad_questions_are_refused(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config())
    with pytest.raises(ValueError, match="exactly one"):
        session.respond(text="two", units=[1])
    with pytest.raises(ValueError, match="speech_to_units"):
        session.respond(audio=np.ones(10, dtype=np.float32))
    with pytest.raises(ValueError, match="outside this model's codebook"):
        session.respond(units=[1, 99])
    with pytest.raises(ValueError, match="reply must be"):
        session.respond(text="two", reply="video")  # type: ignore[arg-type]


def test_history_keeps_the_newest_turns_within_the_budget(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config())
    greedy = Sampling(greedy=True, max_new_tokens=16)
    asked = ["question zero"]
    alone = len(session.build_prompt(UserTurn(text="question nine"), 16)[0])
    session.respond(text=asked[0], reply="text", sampling=greedy)
    one_turn = len(session.build_prompt(UserTurn(text="question nine"), 16)[0]) - alone
    session.config.max_prompt_tokens = budget = alone + int(2.5 * one_turn)  # room for about two earlier turns
    dropped = 0
    for number in ("one", "two", "three", "four", "five"):
        asked.append(f"question {number}")
        result = session.respond(text=asked[-1], reply="text", sampling=greedy)
        assert result.prompt_tokens <= budget
        dropped += result.dropped_turns
        kept = [user.text for user, _ in session.history]
        assert kept == asked[len(asked) - len(kept) :]  # the newest turns, oldest dropped first
    assert dropped >= 2 and len(session.history) >= 2
    session.config.max_prompt_tokens = alone - 1
    with pytest.raises(PromptTooLongError, match="question alone needs"):
        session.respond(text="question zero", reply="text")


def test_results_and_events_are_json(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", vocoder=FakeStreamingVocoder(), config=noisy_config())
    events = list(session.stream(units=[5, 6], sampling=SPEECH))
    lines = [json.dumps(e.to_json()) for e in events]
    done = json.loads(lines[-1])["result"]
    assert done["mode"] == "s2s" and done["answer"]["units"] == events[-1].result.answer.units  # type: ignore[union-attr]
    assert done["audio_samples"] == 4 * len(done["answer"]["units"]) and "timings" in done and "raw" in done
    assert {json.loads(line)["kind"] for line in lines} >= {"transcript", "text", "units", "audio", "done"}


def test_closing_the_stream_early_stops_generation(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config(max_new_tokens=400))
    stream = session.stream(text="two", reply="speech", sampling=Sampling(max_new_tokens=400, seed=0))
    first = next(stream)
    stream.close()  # joins the generation thread: returns only if it stopped
    assert first.kind in ("text", "units") and session.history == []


def test_an_answer_voiced_from_its_text_is_written_in_a_second_pass(lm: Path) -> None:
    vocoder = FakeStreamingVocoder(per_unit=3)
    session = ChatSession.from_pretrained(lm, device="cpu", vocoder=vocoder, config=noisy_config(speak_from="text"))
    passes: list[tuple[list[int], AnswerShape, int]] = []
    generate = session._generate

    def recorded(prompt_ids: list[int], shape: AnswerShape, sampling: Sampling):
        passes.append((list(prompt_ids), shape, sampling.max_new_tokens))
        return generate(prompt_ids, shape, sampling)

    session._generate = recorded  # type: ignore[method-assign]
    events = list(session.stream(units=[3, 7, 7, 1], sampling=SPEECH))
    result = events[-1].result
    assert result is not None and result.mode == "s2s"
    answer = result.answer
    assert answer.problems == [] and answer.complete and answer.transcript and answer.text and answer.units
    (_, chain_shape, chain_budget), (units_prompt, units_shape, units_budget) = passes
    assert chain_shape.transcript and not chain_shape.speech and units_shape.units_only
    chain_raw, units_raw = result.raw.split(EOA, 1)
    assert SOSP not in chain_raw and units_raw.endswith(f"{EOSP}{EOA}")
    assert chain_budget + units_budget >= SPEECH.max_new_tokens >= result.new_tokens
    assert [u for e in events if e.kind == "units" for u in e.units] == answer.units
    assert result.audio is not None and np.array_equal(result.audio, FakeVocoder(per_unit=3)(answer.units))
    assert session.history[-1][1] == AssistantTurn(
        text=answer.text, units=tuple(answer.units), transcript=answer.transcript, chain=True
    )
    session.reset()  # the prompt the units pass was given had no history
    typed, _ = session.build_prompt(UserTurn(text=answer.transcript), SPEECH.max_new_tokens)
    given = session.tokenizer.encode(f" {TA} {answer.text}; {UA} {SOSP}", add_special_tokens=False)
    assert units_prompt == typed + given  # the units read the transcript typed, not the question's speech
    with pytest.raises(ValueError, match="speak_from"):
        noisy_config(speak_from="speech")
