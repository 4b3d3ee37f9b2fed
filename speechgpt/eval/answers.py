"""Whether an answer to a checkable question is right (the task domain of `speechgpt build qa`).

Both sides are normalized as transcripts are for WER (`text_normalize`); answers of the number families compare by
value, so `7`, `Seven.` and `seven` agree, and other answers by their normalized words.
"""

from __future__ import annotations

from speechgpt.eval.text_normalize import normalize_transcript, number_to_words

NUMBER_FAMILIES = ("add", "subtract", "count_letters", "next_number", "previous_number")
_WORD_VALUES = {number_to_words(n): n for n in [*range(20), *range(20, 100, 10)]}


def words_to_number(text: str) -> int | None:
    """The value of a cardinal in words (`one hundred and five` -> 105, up to the thousands); None when the text is
    not only a number."""
    words = [w for w in text.split() if w != "and"]
    if not words:
        return None
    total = current = 0
    for word in words:
        if word in _WORD_VALUES:
            current += _WORD_VALUES[word]
        elif word == "hundred" and current:
            current *= 100
        elif word == "thousand" and current:
            total, current = total + current * 1000, 0
        else:
            return None
    return total + current


def answer_is_correct(family: str, expected: str, got: str) -> bool:
    """Whether `got` answers a question of `family` whose reference answer is `expected`."""
    want, have = normalize_transcript(expected), normalize_transcript(got)
    if family in NUMBER_FAMILIES:
        value = words_to_number(want)
        if value is not None:
            return words_to_number(have) == value
    return want == have
