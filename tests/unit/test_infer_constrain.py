"""Structure-constrained decoding on UNTRAINED tiny models sampled hot: whatever the model wants, the answer follows
the template of its mode; with the constraint off the parser reports the mess instead of raising."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechgpt.infer import AnswerShape, ChatSession, Sampling, StructureConstraint, TokenClasses
from speechgpt.text.template import EOA, EOSP, SOSP, TA, UA, UserTurn, marker_tokens
from speechgpt.text.units import UnitFormat
from tests.lm_fixtures import UNITS
from tests.unit.test_infer_fixtures import make_speech_lm, noisy_config

LEGACY = UnitFormat("legacy", UNITS.k)
QUESTIONS = {"t": {"text": "what is two plus two"}, "s": {"units": [3, 7, 7, 1, 19, 0]}}


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_lm(tmp_path_factory.mktemp("infer") / "lm")


@pytest.fixture(scope="module")
def legacy_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech_lm(tmp_path_factory.mktemp("infer") / "legacy", LEGACY)


def _ask(session: ChatSession, mode: str, **sampling) -> tuple:
    settings = {"temperature": 1.5, "top_p": 1.0, "top_k": 0, "max_new_tokens": 40, **sampling}
    reply = "speech" if mode[2] == "s" else "text"
    session.reset()  # one-turn questions: the same prompt every time
    events = list(session.stream(**QUESTIONS[mode[0]], reply=reply, sampling=Sampling(**settings)))
    return events[-1].result, events


@pytest.mark.parametrize("mode", ["s2s", "s2t", "t2s", "t2t"])
def test_hot_sampling_on_a_random_model_always_parses(lm: Path, mode: str) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config())
    unit_tokens = set(UNITS.tokens())
    for seed in range(13):  # 13 x 4 modes = 52 generations
        result, events = _ask(session, mode, seed=seed)
        answer = result.answer
        assert answer.problems == [] and answer.complete, (seed, result.raw)
        assert result.raw.endswith(EOA) and result.new_tokens <= 40
        assert (answer.transcript is not None) == (mode[0] == "s"), result.raw
        assert answer.text, result.raw
        assert (len(answer.units) > 0) == (mode[2] == "s") and (UA in result.raw) == (mode[2] == "s")
        for part in (answer.transcript or "", answer.text):
            assert not any(m in part for m in [*marker_tokens(), *unit_tokens, "<", "["]), part
        if mode[2] == "s":
            span = result.raw.split(SOSP, 1)[1].split(EOSP, 1)[0]
            assert span == "".join(UNITS.token(u) for u in answer.units), "only unit tokens inside the span"
        streamed = {kind: "".join(e.text for e in events if e.kind == kind) for kind in ("transcript", "text")}
        assert streamed == {"transcript": answer.transcript or "", "text": answer.text}
        assert [u for e in events if e.kind == "units" for u in e.units] == answer.units


def test_legacy_layout_with_spelled_markers(legacy_lm: Path) -> None:
    """SpeechGPT's layout: [ta], [ua], <eoa> are several ordinary tokens each; the constraint forces them whole."""
    config = noisy_config(max_new_tokens=50, transcript_tag=True)
    session = ChatSession.from_pretrained(legacy_lm, device="cpu", config=config)
    assert session.units == LEGACY and TA not in session.classes.markers
    for seed in range(4):
        for mode in ("s2s", "t2t"):
            result, _ = _ask(session, mode, seed=seed, max_new_tokens=50)
            assert result.answer.problems == [] and result.answer.text, result.raw
            assert (len(result.answer.units) > 0) == (mode == "s2s")
            assert result.raw.startswith(" [tq]") == (mode == "s2s")
            assert (result.answer.transcript is None) == (mode == "t2t")


def test_constraint_off_reports_problems_without_raising(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config(constrained=False))
    results = [_ask(session, "s2s", seed=seed)[0] for seed in range(6)]
    assert all(r.answer.problems for r in results), [r.raw for r in results]  # a random model breaks the chain
    assert all(not r.constrained and r.new_tokens <= 40 for r in results)
    assert any(r.new_tokens == 40 and not r.answer.complete for r in results)


def test_unit_count_limits(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config(min_units=6, max_units=8))
    for seed in range(6):
        result, _ = _ask(session, "t2s", seed=seed)
        assert 6 <= len(result.answer.units) <= 8 and not result.answer.problems, result.raw


def test_same_seed_same_answer_and_greedy_is_deterministic(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config())
    assert _ask(session, "s2s", seed=5)[0].raw == _ask(session, "s2s", seed=5)[0].raw
    assert _ask(session, "s2s", seed=5)[0].raw != _ask(session, "s2s", seed=6)[0].raw
    greedy = {_ask(session, "t2s", seed=s, greedy=True)[0].raw for s in (1, 2)}
    assert len(greedy) == 1


def test_too_small_a_budget_is_refused(lm: Path) -> None:
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config())
    with pytest.raises(ValueError, match="max_new_tokens=5 cannot hold"):
        StructureConstraint(TokenClasses(session.tokenizer, UNITS), AnswerShape(transcript=True, speech=True), 5)
    with pytest.raises(ValueError, match="min_units"):
        AnswerShape(transcript=False, speech=True, min_units=4, max_units=2)


@pytest.mark.parametrize("transcript", [False, True])
def test_the_models_own_eos_ends_a_text_part(lm: Path, transcript: bool) -> None:
    """A model that wants to stop (EOS, as the backbone ended its texts) ends the transcript or the answer there,
    instead of writing on with its next-best token."""
    import torch
    from transformers import AutoTokenizer

    from speechgpt.text.template import ChatTemplate

    tokenizer = AutoTokenizer.from_pretrained(lm)
    classes = TokenClasses(tokenizer, UNITS)
    constraint = StructureConstraint(classes, AnswerShape(transcript=transcript, speech=False), max_new_tokens=30)
    word, other = (int(i) for i in torch.nonzero(classes.content_ok)[:2, 0])
    ids = torch.tensor([[tokenizer.bos_token_id]])
    for _ in range(30):
        scores = torch.full((1, len(tokenizer)), -10.0)
        scores[0, other] = -1.0  # always a plausible way to go on
        scores[0, tokenizer.eos_token_id if ids[0, -1] == word else word] = 5.0  # one word, then "I am done"
        ids = torch.cat([ids, constraint(ids, scores).argmax(-1, keepdim=True)], dim=1)
        if ids[0, -1] == tokenizer.convert_tokens_to_ids(EOA):
            break
    answer = ChatTemplate(UNITS).parse(tokenizer.decode(ids[0, 1:]))
    said = tokenizer.decode([word]).strip()
    assert answer.complete and answer.text == said
    assert answer.transcript == (said if transcript else None)


def test_a_units_only_answer_is_units_then_its_close(lm: Path) -> None:
    with pytest.raises(ValueError, match="units-only"):
        AnswerShape(transcript=True, speech=True, units_only=True)
    session = ChatSession.from_pretrained(lm, device="cpu", config=noisy_config())
    prompt, _ = session.build_prompt(UserTurn(text="two plus two"), 20)
    prompt += session.tokenizer.encode(f" {TA} four; {UA} {SOSP}", add_special_tokens=False)
    shape = AnswerShape(transcript=False, speech=True, units_only=True, min_units=3)
    close = [session.classes.eosp, *session.classes.sequences["eoa"]]
    for seed in range(6):
        sampling = Sampling(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=20, seed=seed)
        written = list(session._generate(prompt, shape, sampling))
        units, tail = written[: -len(close)], written[-len(close) :]
        assert tail == close and len(units) >= 3 and len(written) <= 20, written
        assert all(token in session.classes.unit_index for token in units), written
