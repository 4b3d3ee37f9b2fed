"""Unit token formats, the chat template, the answer parser and SpeechInstruct records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechgpt.text.conversation import (
    ConversationError,
    from_speechinstruct,
    parse_conversation,
    to_speechinstruct,
)
from speechgpt.text.template import AssistantTurn, ChatTemplate, UserTurn, marker_tokens
from speechgpt.text.units import UnitFormat, convert_units_text

K = 50
DEFAULT = ChatTemplate(UnitFormat("default", K))
LEGACY = ChatTemplate(UnitFormat("legacy", 1000))

words = st.text(alphabet="abcdefghij klmnop,.?'", min_size=1, max_size=30).map(lambda s: " ".join(s.split()))
words = words.filter(bool)
unit_seq = st.lists(st.integers(0, K - 1), min_size=1, max_size=20).map(tuple)


@st.composite
def turns(draw):
    speech_in = draw(st.booleans())
    user = UserTurn(
        instruction=draw(st.one_of(st.just(""), words)) if speech_in else draw(words),
        units=draw(unit_seq) if speech_in else None,
    )
    kind = draw(st.sampled_from(["text", "units", "s2s", "s2t", "t2s", "t2t"]))
    if kind == "text":
        answer = AssistantTurn(text=draw(words))
    elif kind == "units":
        answer = AssistantTurn(units=draw(unit_seq))
    else:
        answer = AssistantTurn(
            transcript=draw(words) if kind[0] == "s" else None,
            text=draw(words),
            units=draw(unit_seq) if kind[-1] == "s" else None,
            chain=True,
        )
    return user, answer


@settings(max_examples=200, deadline=None)
@given(st.lists(turns(), min_size=1, max_size=3))
def test_format_parse_round_trip(conversation) -> None:
    formatted = DEFAULT.format(conversation)
    parsed = parse_conversation(formatted.text, DEFAULT.units)
    assert parsed.system == DEFAULT.system
    assert parsed.turns == conversation
    assert formatted.text == formatted.prompt + formatted.response


@settings(max_examples=100, deadline=None)
@given(st.lists(turns(), min_size=1, max_size=3))
def test_loss_spans_cover_exactly_the_answers(conversation) -> None:
    formatted = DEFAULT.format(conversation)
    trained = [formatted.text[a:b] for a, b in formatted.loss_spans]
    assert trained == [DEFAULT.answer_text(answer) for _, answer in conversation]
    assert all(t.endswith("<eoa>") and t.startswith(" ") for t in trained)
    assert all("[Human]:" not in t and "<eoh>" not in t for t in trained)
    everything = ChatTemplate(DEFAULT.units, loss_on="after_system").format(conversation)
    assert everything.loss_spans == [(len(DEFAULT.system), len(everything.text))]


def test_speechgpt_markers_in_the_text() -> None:
    user = UserTurn(units=(661, 588, 604))
    answer = AssistantTurn(transcript="what is two plus two", text="four", units=(5, 9), chain=True)
    formatted = LEGACY.format([(user, answer)])
    assert formatted.text.endswith(
        "[Human]: <sosp><661><588><604><eosp><eoh> [SpeechGPT]: what is two plus two; [ta] four; [ua] "
        "<sosp><5><9><eosp><eoa>"
    )
    asr = LEGACY.format([(UserTurn(instruction="Transcribe the speech.", units=(1, 2)), AssistantTurn(text="hi"))])
    assert "[Human]: Transcribe the speech. This is input: <sosp><1><2><eosp><eoh> [SpeechGPT]: hi<eoa>" in asr.text
    record = to_speechinstruct(formatted)
    assert record["plain_text"].startswith(record["prefix"]) and record["prefix"].endswith("[SpeechGPT]: ")
    assert from_speechinstruct(record, LEGACY).turns == [(user, answer)]


def test_default_units_do_not_collide_with_text() -> None:
    fmt = UnitFormat("default", K)
    text = "<5> and <|u5|>"
    assert fmt.pattern.findall(text) == ["5"]
    assert set(fmt.tokens()).isdisjoint(marker_tokens())
    legacy_text = LEGACY.format([(UserTurn(units=(7, 8)), AssistantTurn(text="ok"))]).text
    converted = convert_units_text(legacy_text, LEGACY.units, fmt)
    assert "<sosp><|u7|><|u8|><eosp>" in converted


@pytest.mark.parametrize(
    ("output", "expect_speech", "problem"),
    [
        ("what; [ta] four<eoa>", True, "no speech answer"),
        ("what; [ta] four; [ua] <sosp><|u1|><|u2|><eoa>", None, "unclosed unit span"),
        ("what; [ta] four; [ua] <sosp><|u1|><|u99|><eosp><eoa>", None, "unknown unit id 99"),
        ("what; [ta] four; [ua] <sosp><|u1|> hello <|u2|><eosp><eoa>", None, "text inside unit span"),
        ("what; [ta] four<|u3|>; [ua] <sosp><|u1|><eosp><eoa>", None, "units inside the text answer"),
        ("what; [ta] four; [ua] <sosp><|u1|><eosp>", None, "no <eoa>"),
        ("what; [ua] <sosp><|u1|><eosp><eoa>", None, "no [ta]"),
        ("what; [ta] four; [ua] <eoa>", None, "[ua] without units"),
        ("<sosp><|u1|><eosp> trailing words<eoa>", None, "text after the unit span"),
    ],
)
def test_parser_reports_malformed_answers(output: str, expect_speech: bool | None, problem: str) -> None:
    parsed = DEFAULT.parse(output, expect_speech=expect_speech)
    assert any(problem in p for p in parsed.problems), parsed.problems


def test_parser_keeps_what_is_usable() -> None:
    parsed = DEFAULT.parse("junk [SpeechGPT]: two plus two; [ta] four; [ua] <sosp><|u1|><|u99|><|u3|><eoa>")
    assert parsed.transcript == "two plus two" and parsed.text == "four" and parsed.units == [1, 3]
    assert parsed.complete and len(parsed.problems) == 2
    good = DEFAULT.parse("[tq] two plus two; [ta] four; [ua] <sosp><|u4|><eosp><eoa>", expect_speech=True)
    assert good.problems == [] and good.transcript == "two plus two" and good.units == [4] and good.complete


PIECES = [
    "<sosp>",
    "<eosp>",
    "<|u3|>",
    "<|u77|>",
    "[ta]",
    "[ua]",
    "<eoa>",
    ";",
    " ",
    "a",
    "[SpeechGPT]:",
    "<",
    ">",
    "|",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_parser_never_raises(garbage: str) -> None:
    parsed = DEFAULT.parse(garbage, expect_speech=True)
    assert all(0 <= u < K for u in parsed.units)


def test_bad_conversations_are_reported() -> None:
    with pytest.raises(ConversationError, match="no '\\[Human\\]:'"):
        parse_conversation("hello", DEFAULT.units)
    with pytest.raises(ConversationError, match="answer without"):
        parse_conversation("[Human]: hi<eoh> [SpeechGPT]: there", DEFAULT.units)
    with pytest.raises(ValueError, match=r"outside 0\.\.49"):
        DEFAULT.format([(UserTurn(units=(50,)), AssistantTurn(text="x"))])
