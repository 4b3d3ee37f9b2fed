"""Word coverage: the corpus says every word of the held-out questions, in other sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_builders.word_coverage import covering_sentences, target_texts, words_of


def test_missing_words_get_other_sentences_and_targets_stay_unspoken() -> None:
    pool = [
        "what does frog mean",  # a target itself: never chosen
        "the frog jumped over the log",
        "a green frog",
        "a frog and a goat",
        "the goat ate grass",
        "nothing useful here",
    ]
    coverage = covering_sentences(
        ["what does frog mean", "what does goat mean"], ["what does it mean"], pool, per_word=1, seed=0
    )
    assert "what does frog mean" not in coverage.sentences
    spoken = {w for s in coverage.sentences for w in words_of(s)}
    assert {"frog", "goat"} <= spoken
    assert coverage.uncovered == []
    assert coverage.sentences == ["a green frog", "the goat ate grass"]  # the shortest that say each word


def test_words_already_spoken_add_nothing_and_absent_words_are_listed() -> None:
    coverage = covering_sentences(
        ["the cat sat", "a zebu"], ["the cat sat down"], ["a cat", "cats"], per_word=2, seed=0
    )
    assert coverage.sentences == ["a cat"]  # for "a"; "the", "cat" and "sat" were already spoken
    assert coverage.covered == {"a": 1}
    assert coverage.uncovered == ["zebu"]


def test_targets_of_a_qa_file_are_its_questions(tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    rows = [{"instruction": "what does", "input": "wed mean", "output": "marry"}, {"instruction": "spell rat"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert target_texts([str(path)]) == ["what does wed mean", "spell rat"]
    path.write_text('{"input": "x"}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:1"):
        target_texts([str(path)])


def test_the_corpus_speaks_covering_sentences_after_its_own(tmp_path: Path) -> None:
    from data_builders.synth_corpus import Config, corpus_sentences
    from data_builders.text_sources import load_sentences

    source = tmp_path / "sentences.txt"
    source.write_text("the dog ran far\nthe kite flew high\na rat ran off\n")
    questions = tmp_path / "test.jsonl"
    questions.write_text(json.dumps({"instruction": "what does kite mean", "output": "a toy"}) + "\n")
    cfg = Config(out=tmp_path / "corpus", text_source=str(source), max_sentences=1, cover_words_of=[str(questions)])
    drawn = load_sentences(str(source), max_sentences=1, seed=0, min_words=3, max_words=16)
    sentences = corpus_sentences(cfg)
    assert sentences[:1] == drawn  # the drawn sentence keeps its index (and its clip ids)
    assert "kite" in {w for s in sentences for w in words_of(s)}
    report = json.loads((tmp_path / "corpus" / "coverage.json").read_text())
    assert report["uncovered"] == ["does", "mean", "what"]
    assert report["covered"].get("kite", 0) == (0 if "kite" in drawn[0] else 1)
