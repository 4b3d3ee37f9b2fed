"""Judge scoring without the ASR model: transcript normalization (numbers as words) and error rates."""

from __future__ import annotations

import pytest

from speechgpt.eval.judge import JudgeConfig, character_error_rate, word_error_rate
from speechgpt.eval.text_normalize import normalize_transcript, number_to_words, ordinal_words


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (105, "one hundred five"),
        (1000, "one thousand"),
        (1021, "one thousand twenty one"),
        (2_500_000, "two million five hundred thousand"),
        (1_000_001, "one million one"),
        (10**12, "one trillion"),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


@pytest.mark.parametrize(
    ("number", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (12, "twelfth"), (21, "twenty first"), (40, "fortieth")],
)
def test_ordinal_words(number: int, words: str) -> None:
    assert ordinal_words(number) == words


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat, sat!", "the cat sat"),
        ("The 21st century", "the twenty first century"),
        ("on the 3rd of May, the 2nd and 12th", "on the third of may the second and twelfth"),
        ("3.5 times", "three point five times"),
        ("1,000 apples", "one thousand apples"),
        ("one hundred and five", "one hundred five"),
        ("105", "one hundred five"),
        ("rock and 5", "rock and five"),
        ("10% off $5", "ten percent off five dollars"),
        ("twenty-one", "twenty one"),
        ("Don\u2019t stop", "don't stop"),
        ("'quoted' words", "quoted words"),
        ("007", "zero zero seven"),
        ("the 1990s", "the one thousand nine hundred nineties"),
        ("  \n ... ", ""),
    ],
)
def test_normalize_transcript(text: str, normalized: str) -> None:
    assert normalize_transcript(text) == normalized


def test_word_error_rate_counts_after_normalization() -> None:
    assert word_error_rate(["She bought 21 apples."], ["she bought twenty-one apples"]) == 0.0
    assert word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)  # 1 substitution, 1 deletion
    # corpus-level: errors over all reference words, not a mean of per-pair rates
    assert word_error_rate(["a b c", "d"], ["a b c", ""]) == pytest.approx(0.25)


def test_empty_references_are_handled() -> None:
    assert word_error_rate(["", "a b"], ["x", "a b"]) == pytest.approx(0.5)  # an insertion over 2 words
    assert word_error_rate([""], [""]) == 0.0
    assert word_error_rate(["..."], ["hello"]) == 1.0
    with pytest.raises(ValueError, match="nothing to score"):
        word_error_rate([], [])
    with pytest.raises(ValueError, match="references"):
        word_error_rate(["a"], [])


def test_character_error_rate() -> None:
    assert character_error_rate(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert character_error_rate(["21st"], ["twenty first"]) == 0.0


def test_judge_config_is_validated() -> None:
    with pytest.raises(ValueError):
        JudgeConfig(beam_size=0)
