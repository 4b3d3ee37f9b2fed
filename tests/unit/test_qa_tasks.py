"""`speechgpt build qa`: answers are right, held-out questions stay out of train, bytes are deterministic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data_builders import qa_tasks
from speechgpt.eval.answers import answer_is_correct, words_to_number
from speechgpt.eval.text_normalize import number_to_words

# Written out independently of the module under test.
SPOKEN = {
    0: "zero",
    1: "one",
    7: "seven",
    12: "twelve",
    13: "thirteen",
    19: "nineteen",
    20: "twenty",
    21: "twenty one",
    40: "forty",
    99: "ninety nine",
    100: "one hundred",
    105: "one hundred five",
    342: "three hundred forty two",
    1000: "one thousand",
    2019: "two thousand nineteen",
}
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_TEENS = " seventeen eighteen nineteen"
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety"
DIGIT = {word: value for value, word in enumerate((_ONES + _TEENS).split())}
TENS = {word: 20 + 10 * index for index, word in enumerate(_TENS.split())}


def spoken_value(text: str) -> int:
    """Value of a spoken number below 100 (a second, independent reading for the tests)."""
    words = text.split()
    if len(words) == 2:
        return TENS[words[0]] + DIGIT[words[1]]
    return TENS.get(words[0], DIGIT.get(words[0], -1))


def records(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    counts = {"add": 60, "subtract": 40, "count_letters": 30, "next_number": 30, "previous_number": 30, "define": 40}
    return qa_tasks.run(qa_tasks.Config(out=tmp_path_factory.mktemp("qa"), counts=counts, heldout_fraction=0.25))


def test_number_words_read_back() -> None:
    for value, words in SPOKEN.items():
        assert number_to_words(value) == words
        assert words_to_number(words) == value
    assert words_to_number("one hundred and five") == 105
    assert words_to_number("seven apples") is None


def test_every_answer_is_right(qa_dir: Path) -> None:
    seen = set()
    for split in qa_tasks.SPLITS:
        for r in records(qa_dir, split):
            assert set(r) == {"id", "family", "instruction", "input", "output"} and r["input"] == ""
            question, answer = r["instruction"], r["output"]
            seen.add(r["family"])
            if match := re.fullmatch(r"what is (.+) (plus|minus) (.+)", question):
                a, b = spoken_value(match[1]), spoken_value(match[3])
                assert spoken_value(answer) == (a + b if match[2] == "plus" else a - b) >= 0
            elif match := re.fullmatch(r"how many letters are in the word ([a-z]+)", question):
                assert spoken_value(answer) == len(match[1])
            elif match := re.fullmatch(r"what number comes (after|before) (.+)", question):
                assert spoken_value(answer) == spoken_value(match[2]) + (1 if match[1] == "after" else -1)
            else:
                assert re.fullmatch(r"what does [a-z]+ mean", question), question
    assert seen == set(qa_tasks.FAMILIES)


def test_heldout_questions_never_in_train(qa_dir: Path) -> None:
    train = records(qa_dir, "train")
    heldout = records(qa_dir, "dev") + records(qa_dir, "test")
    assert len(heldout) > 40 and records(qa_dir, "dev") and records(qa_dir, "test")
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in heldout}
    # a held-out sum is held out in both orders, so training never shows the commuted twin
    train_pairs = {tuple(sorted(r["id"].split("-")[1:])) for r in train if r["family"] == "add"}
    for r in heldout:
        if r["family"] == "add":
            assert tuple(sorted(r["id"].split("-")[1:])) not in train_pairs
    summary = json.loads((qa_dir / "summary.json").read_text())
    assert summary["questions"] == 230
    assert sum(summary["per_split_family"]["train"].values()) == len(train)


def test_same_seed_same_bytes_other_seed_other_questions(qa_dir: Path, tmp_path: Path) -> None:
    counts = {"add": 60, "subtract": 40, "count_letters": 30, "next_number": 30, "previous_number": 30, "define": 40}
    again = qa_tasks.run(qa_tasks.Config(out=tmp_path / "a", counts=counts, heldout_fraction=0.25))
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "summary.json"):
        assert (again / name).read_bytes() == (qa_dir / name).read_bytes()
    other = qa_tasks.run(qa_tasks.Config(out=tmp_path / "b", counts=counts, heldout_fraction=0.25, seed=1))
    assert (other / "test.jsonl").read_bytes() != (qa_dir / "test.jsonl").read_bytes()


def test_wordnet_definitions_look_right() -> None:
    definitions = dict(qa_tasks.wordnet_definitions(max_answer_words=12))
    assert len(definitions) > 3000
    assert definitions["cat"].startswith("feline mammal")
    for lemma, gloss in definitions.items():
        assert lemma.isalpha() and lemma.islower() and "_" not in lemma
        assert 2 <= len(gloss.split()) <= 12
        assert re.fullmatch(r"[A-Za-z][A-Za-z ,'-]*", gloss) and ";" not in gloss and '"' not in gloss
        assert lemma not in gloss.lower().split()
    line = '01234567 05 n 01 thing 0 000 | a separate (and whole) entity; "a thing of beauty"'
    assert qa_tasks.definition_of(line, "thing", 12) == "a separate entity"
    assert qa_tasks.definition_of(line, "thing", 1) is None
    assert qa_tasks.definition_of(line.replace("separate", "separate thing"), "thing", 12) is None


def test_answer_is_correct_normalizes() -> None:
    assert answer_is_correct("add", "seven", "7")
    assert answer_is_correct("add", "seven", "Seven.")
    assert answer_is_correct("next_number", "twenty one", "Twenty-one!")
    assert answer_is_correct("next_number", "one hundred five", "one hundred and five")
    assert not answer_is_correct("add", "seven", "eight")
    assert not answer_is_correct("add", "seven", "seventy")
    assert answer_is_correct("define", "a separate entity", "A separate, entity.")
    assert not answer_is_correct("define", "a separate entity", "a separate thing")
    assert answer_is_correct("define", "it is twelve", "It's 12?") is False
    assert answer_is_correct("define", "one thousand cats", "1,000 cats")


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown question families"):
        qa_tasks.Config(counts={"multiply": 3})
    with pytest.raises(ValueError, match="heldout_fraction"):
        qa_tasks.Config(heldout_fraction=1.0)
    assert qa_tasks.Config(counts={"define": 0}).counts["add"] == qa_tasks.DEFAULT_COUNTS["add"]
