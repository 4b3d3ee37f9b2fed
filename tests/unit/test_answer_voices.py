"""benchmarks.answer_voices: answers counted per question and split, and scored as spoken answers are."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from benchmarks.answer_voices import judge_voice, question_answers
from speechgpt.eval.judge import JudgeScore, character_error_rate, word_error_rate

QUESTIONS = {
    "train": [
        {"id": "add-3-4", "family": "add", "instruction": "what is three plus four", "output": "seven"},
        {"id": "after-6", "family": "next_number", "instruction": "what comes after six", "output": "seven"},
        {"id": "letters-cat", "family": "count_letters", "instruction": "how many letters in cat", "output": "three"},
    ],
    "test": [{"id": "add-5-2", "family": "add", "instruction": "what is five plus two", "output": "seven"}],
}


class HearsSeven:
    """A judge that hears "7." in any audio, so what is scored right follows from the references alone."""

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        assert all(len(w) > 1600 for w in waves), "each clip is real speech"
        return ["7."] * len(waves)

    def score(self, waves: Sequence[np.ndarray], references: Sequence[str]) -> JudgeScore:
        heard = self.transcribe(waves)
        return JudgeScore(word_error_rate(references, heard), character_error_rate(references, heard), heard)


@pytest.fixture
def qa_dir(tmp_path: Path) -> Path:
    for split, rows in QUESTIONS.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_answers_are_counted_per_question_and_split(qa_dir: Path) -> None:
    assert question_answers(qa_dir, ["train", "test"]) == {
        ("add", "seven"): {"train": 1, "test": 1},
        ("next_number", "seven"): {"train": 1},
        ("count_letters", "three"): {"train": 1},
    }
    with pytest.raises(FileNotFoundError, match=r"dev\.jsonl: no such QA split"):
        question_answers(qa_dir, ["train", "dev"])


def test_a_voice_is_scored_on_open_sentences_and_on_its_answers(qa_dir: Path) -> None:
    result = judge_voice("flite:slt", ["seven", "a cat sat"], question_answers(qa_dir, ["train", "test"]), HearsSeven())
    assert result["sentences_wer"] == pytest.approx(3 / 4)  # "seven" heard as 7, the three words of the other lost
    assert result["answers_heard"] == {"train": pytest.approx(2 / 3), "test": 1.0}
    assert result["questions"] == {"train": 3, "test": 1}
    assert result["misses"] == ["three -> 7."]
