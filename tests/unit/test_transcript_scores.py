"""Transcript scores beyond WER: exact questions and content words."""

from __future__ import annotations

import pytest

from speechgpt.eval.transcript_scores import transcript_scores

QUESTIONS = ["what is three plus five", "what is four plus six", "how many letters are in the word frog"]
FAMILIES = ["add", "add", "count_letters"]


def test_right_pattern_wrong_numbers_has_a_low_wer_but_no_content() -> None:
    heard = ["what is ten plus ten", "what is ten plus ten", "how many letters are in the word frog"]
    scores = transcript_scores(QUESTIONS, heard, FAMILIES)
    assert scores["wer"] == pytest.approx(4 / 18, abs=1e-4)
    assert scores["exact"] == pytest.approx(1 / 3, abs=1e-4)
    # content: three, five, four, six (pattern: what is plus) and every word of the lone count_letters question
    assert scores["content_words"] == pytest.approx(8 / 12, abs=1e-4)


def test_numbers_in_digits_count_as_their_words() -> None:
    scores = transcript_scores(QUESTIONS[:2], ["What is 3 plus 5?", "what is four plus six"], FAMILIES[:2])
    assert scores == {"wer": 0.0, "exact": 1.0, "content_words": 1.0, "questions": 2}


def test_repeated_content_words_count_each_time() -> None:
    scores = transcript_scores(
        ["what is two plus two", "what is one plus three"], ["what is two plus one"] * 2, ["add", "add"]
    )
    assert scores["content_words"] == pytest.approx(2 / 4)  # one "two" of two; "one" of one plus three


def test_empty_and_mismatched_inputs() -> None:
    assert transcript_scores([], [], [])["wer"] is None
    with pytest.raises(ValueError, match="2 questions but 1 transcripts"):
        transcript_scores(QUESTIONS[:2], ["x"], FAMILIES[:2])
