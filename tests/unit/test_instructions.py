"""The shipped ASR/TTS instruction phrasings and their seeded sampling."""

from __future__ import annotations

import random

import pytest

from data_builders.instructions import (
    MIN_PHRASINGS,
    load_instructions,
    sample_instruction,
    sample_instructions,
    validate_instructions,
)
from speechgpt.text.conversation import parse_conversation
from speechgpt.text.template import AssistantTurn, ChatTemplate, UserTurn
from speechgpt.text.units import UnitFormat


@pytest.mark.parametrize("direction", ["asr", "tts"])
def test_at_least_50_distinct_phrasings(direction: str) -> None:
    phrasings = load_instructions(direction)  # type: ignore[arg-type]
    assert len(phrasings) >= MIN_PHRASINGS == 50
    assert len({p.casefold() for p in phrasings}) == len(phrasings)
    assert all(p.strip() == p and p for p in phrasings)


def test_directions_do_not_share_phrasings() -> None:
    assert not set(load_instructions("asr")) & set(load_instructions("tts"))


@pytest.mark.parametrize("direction", ["asr", "tts"])
def test_every_phrasing_survives_the_template(direction: str) -> None:
    template = ChatTemplate(UnitFormat("legacy", 1000))
    for phrasing in load_instructions(direction):  # type: ignore[arg-type]
        if direction == "asr":
            turn = (UserTurn(phrasing, units=(5, 7)), AssistantTurn(text="the cat sat"))
        else:
            turn = (UserTurn(phrasing, text="the cat sat"), AssistantTurn(units=(5, 7)))
        assert parse_conversation(template.format([turn]).text, template.units).turns == [turn]


def test_seeded_sampling_is_deterministic() -> None:
    first = sample_instructions("asr", 200, seed=3)
    assert first == sample_instructions("asr", 200, seed=3)
    assert first != sample_instructions("asr", 200, seed=4)
    assert len(set(first)) > 40, "sampling should spread over the phrasings"
    rng_a, rng_b = random.Random(9), random.Random(9)
    assert [sample_instruction("tts", rng_a) for _ in range(20)] == [
        sample_instruction("tts", rng_b) for _ in range(20)
    ]


def test_validation_names_the_problem() -> None:
    good = [f"Please transcribe clip number {i}." for i in range(50)]
    assert validate_instructions([*good, "", ""], "x") == tuple(good)
    with pytest.raises(ValueError, match="x:51: duplicate of line 1"):
        validate_instructions([*good, good[0].upper()], "x")
    with pytest.raises(ValueError, match="x:2: empty"):
        validate_instructions([good[0], "", *good[1:]], "x")
    with pytest.raises(ValueError, match="need at least 50"):
        validate_instructions(good[:49], "x")
    with pytest.raises(ValueError, match="template markup"):
        validate_instructions([*good, "Say it. This is input: now"], "x")
    with pytest.raises(ValueError, match="template markup"):
        validate_instructions([*good, "Say <12> now."], "x")
    with pytest.raises(ValueError, match="unknown direction"):
        load_instructions("s2s")  # type: ignore[arg-type]
