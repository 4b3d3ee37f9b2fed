"""How much of a spoken question a transcript got, beyond WER.

WER hides how little is recognized in a closed question domain: the question's pattern ("what is ... plus ...") is
most of its words, so a transcript with the pattern right and every number wrong still scores a low WER. Two more
numbers say what was heard:

- `exact`: the share of transcripts equal to their question (both normalized as for WER);
- `content_words`: the share of the questions' content words found in their transcripts, where a question's content
  words are those not shared by every question of its family (the numbers of "what is three plus five", the word of
  "how many letters are in the word apple"), counted with multiplicity.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from speechgpt.eval.judge import word_error_rate
from speechgpt.eval.text_normalize import normalize_transcript


def family_patterns(questions: Sequence[str], families: Sequence[str]) -> dict[str, set[str]]:
    """Per family, the normalized words every one of its questions has."""
    patterns: dict[str, set[str]] = {}
    for question, family in zip(questions, families, strict=True):
        words = set(normalize_transcript(question).split())
        patterns[family] = patterns[family] & words if family in patterns else words
    return patterns


def content_words(question: str, pattern: set[str]) -> Counter[str]:
    """The normalized words of `question` outside its family's pattern, with their counts."""
    return Counter(word for word in normalize_transcript(question).split() if word not in pattern)


def transcript_scores(
    questions: Sequence[str], transcripts: Sequence[str], families: Sequence[str]
) -> dict[str, float | int | None]:
    """WER, exact-transcript rate and content-word accuracy of `transcripts` against `questions`; a family with a
    single question has no pattern to tell content from, so all its words count as content."""
    if len(questions) != len(transcripts):
        raise ValueError(f"{len(questions)} questions but {len(transcripts)} transcripts")
    if not questions:
        return {"wer": None, "exact": None, "content_words": None, "questions": 0}
    patterns = family_patterns(questions, families)
    singles = {f for f, n in Counter(families).items() if n == 1}
    found = total = exact = 0
    for question, transcript, family in zip(questions, transcripts, families, strict=True):
        wanted = content_words(question, set() if family in singles else patterns[family])
        heard = Counter(normalize_transcript(transcript).split())
        found += sum((wanted & heard).values())
        total += sum(wanted.values())
        exact += normalize_transcript(question) == normalize_transcript(transcript)
    return {
        "wer": round(word_error_rate(list(questions), list(transcripts)), 4),
        "exact": round(exact / len(questions), 4),
        "content_words": round(found / total, 4) if total else None,
        "questions": len(questions),
    }
