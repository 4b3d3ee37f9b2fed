"""Judge scoring without the ASR model: transcript normalization (numbers as words) and error rates."""

from __future__ import annotations

import random

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


# The spelling the toolkit used before num2words, kept as the oracle: WER and the QA data must not move.
_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth"}


def reference_words(n: int) -> str:
    if n >= 10**15:
        return " ".join(_ONES[int(d)] for d in str(n))
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f" {_ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{_ONES[n // 100]} hundred" + (f" {reference_words(n % 100)}" if n % 100 else "")
    value, name = next((value, name) for value, name in _SCALES if n >= value)
    return f"{reference_words(n // value)} {name}" + (f" {reference_words(n % value)}" if n % value else "")


def reference_ordinal(n: int) -> str:
    *head, last = reference_words(n).split()
    last = {**_IRREGULAR, "twelve": "twelfth"}.get(last) or (last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join([*head, last])


def test_number_words_match_the_reference_spelling_everywhere() -> None:
    rng = random.Random(0)
    edges = [0, 10, 11, 13, 19, 20, 99, 100, 101, 110, 999, 1000, 1001, 10**6, 10**12 + 5, 10**15 - 1, 10**15, 10**20]
    numbers = [*range(2100), *edges, *(rng.randrange(10 ** rng.randint(4, 19)) for _ in range(3000))]
    for n in numbers:
        assert number_to_words(n) == reference_words(n), n
        assert ordinal_words(n) == reference_ordinal(n), n


def test_negative_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        number_to_words(-1)
    with pytest.raises(ValueError, match="non-negative"):
        ordinal_words(-21)


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zeroth"),
        (1, "first"),
        (2, "second"),
        (3, "third"),
        (5, "fifth"),
        (12, "twelfth"),
        (21, "twenty first"),
        (40, "fortieth"),
    ],
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
        ("the 80's and the 20s", "the eighties and the twenties"),
        ("113th and 1,000,000th", "one hundred thirteenth and one millionth"),
        ("one hundred and fifth, one hundred and sixth", "one hundred fifth one hundred and sixth"),
        ("0.05 and $1", "zero point zero five and one dollar"),
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
