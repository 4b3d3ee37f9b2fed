"""Text normalization for scoring transcripts: the judge writes "21st", "3.5" and "$5" where a reference may spell
the words out, so both sides become lowercase words with numbers written in English before WER is counted.

Rules (applied to references and hypotheses alike): unicode apostrophes become ', `&` becomes "and", `%` "percent",
`$N` "N dollars"; integers (with or without thousands commas), decimals ("three point one four"), ordinals
("twenty first"), plurals of numbers ("nineteen nineties") are spelled out; "and" between a scale word (hundred,
thousand, ...) and a following number word is dropped so "one hundred and five" == "105"; every other character that
is not a letter, digit or in-word apostrophe becomes a space (hyphens split words: "twenty-one" == "twenty one");
whitespace is collapsed. Numbers with leading zeros ("007") and digits glued to letters ("a5") are read as
integers or digit by digit. Number words come from num2words, without its "and"s, hyphens and commas.
"""

from __future__ import annotations

import re

from num2words import num2words

_DIGIT_READING_FROM = 10**15
"""Integers this large are read digit by digit ("one two three ..."), as people read long codes."""

_NUMBER = re.compile(
    r"(?<![\w.])(?P<currency>\$)?(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<suffix>st|nd|rd|th|s|'s)?(?![\w])(?P<percent>\s*%)?",
    re.IGNORECASE,
)
_DIGITS = re.compile(r"\d+")
_NOT_WORD = re.compile(r"[^a-z0-9']+")


def number_to_words(number: int) -> str:
    """English cardinal words for a non-negative integer: 1021 -> "one thousand twenty one" (no "and", no hyphens);
    numbers of 10**15 and above are read digit by digit."""
    if number < 0:
        raise ValueError(f"number_to_words takes non-negative integers, got {number}")
    if number >= _DIGIT_READING_FROM:
        return " ".join(number_to_words(int(digit)) for digit in str(number))
    return _plain_words(num2words(number))


def ordinal_words(number: int) -> str:
    """English ordinal words: 21 -> "twenty first", 12 -> "twelfth", 40 -> "fortieth"."""
    if number < 0:
        raise ValueError(f"ordinal_words takes non-negative integers, got {number}")
    if number >= _DIGIT_READING_FROM:
        digits = str(number)
        return " ".join([*(number_to_words(int(digit)) for digit in digits[:-1]), ordinal_words(int(digits[-1]))])
    return _plain_words(num2words(number, to="ordinal"))


def _plain_words(words: str) -> str:
    """num2words' British style ("one hundred and twenty-one, ...") as bare words: "one hundred twenty one"."""
    return " ".join(word for word in words.replace("-", " ").replace(",", " ").split() if word != "and")


_SCALE_WORDS = frozenset(["hundred", "thousand", "million", "billion", "trillion"])
_NUMBER_WORDS = frozenset(
    [
        *(number_to_words(n) for n in [*range(20), *range(20, 100, 10)]),
        *_SCALE_WORDS,
        *(ordinal_words(n) for n in (1, 2, 3, 5, 8, 9, 12)),  # ordinals not made by adding "th"
    ]
)
"""Words that may follow "and" after a scale word in a spoken number ("one hundred and five")."""


def _digits_to_words(digits: str) -> str:
    if len(digits) > 1 and digits.startswith("0"):
        return " ".join(number_to_words(int(digit)) for digit in digits)
    return number_to_words(int(digits))


def _spell_number(match: re.Match[str]) -> str:
    digits = match["int"].replace(",", "")
    suffix = (match["suffix"] or "").lower()
    if suffix in ("st", "nd", "rd", "th") and not match["frac"]:
        words = ordinal_words(int(digits))
    else:
        words = _digits_to_words(digits)
        if match["frac"]:
            words += " point " + " ".join(number_to_words(int(digit)) for digit in match["frac"])
        if suffix in ("s", "'s"):
            words = words[:-1] + "ies" if words.endswith("y") else words + "s"
    if match["percent"]:
        words += " percent"
    if match["currency"]:
        words += " dollar" if words == "one" else " dollars"
    return f" {words} "


def _drop_scale_and(words: list[str]) -> list[str]:
    kept = []
    for index, word in enumerate(words):
        between_numbers = 0 < index < len(words) - 1 and words[index - 1] in _SCALE_WORDS
        if word == "and" and between_numbers and words[index + 1] in _NUMBER_WORDS:
            continue
        kept.append(word)
    return kept


def normalize_transcript(text: str) -> str:
    """Lowercase words with numbers spelled out and punctuation removed (see the module docstring)."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("&", " and ")
    text = _NUMBER.sub(_spell_number, text).replace("%", " percent ")
    text = _DIGITS.sub(lambda match: f" {_digits_to_words(match[0])} ", text)  # digits glued to letters or dots
    words = [word.strip("'") for word in _NOT_WORD.split(text.lower())]
    return " ".join(_drop_scale_and([word for word in words if word]))
