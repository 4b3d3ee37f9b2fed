"""Sentences that make a corpus speak every word of some texts, without speaking those texts.

A recognizer never learns a word it never heard: the words that the held-out questions define or spell, a number
word that no training question happens to use. `covering_sentences` finds, for each word of the target texts that the
corpus' sentences lack, other sentences of a text pool that say it (WordNet: its example sentences, then its glosses),
so the corpus covers the vocabulary the chat will hear while the held-out questions stay unspoken.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from data_builders.text_sources import WORDNET_DIR, WORDNET_FILES, lines_of
from speechgpt.text.backbone_text import qa_question, read_qa_records

_WORD = re.compile(r"[a-z']+")


def words_of(text: str) -> list[str]:
    """Lower-case words of `text`, punctuation dropped."""
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


@dataclass
class Coverage:
    sentences: list[str] = field(default_factory=list)
    """Sentences added, in the order of the words they cover."""
    covered: dict[str, int] = field(default_factory=dict)
    """Word -> sentences added for it."""
    uncovered: list[str] = field(default_factory=list)
    """Words no pool sentence has."""


def covering_sentences(
    targets: Iterable[str], spoken: Iterable[str], pool: list[str], *, per_word: int, seed: int
) -> Coverage:
    """Up to `per_word` sentences of `pool` for each word of `targets` missing from `spoken`, drawn with `seed` (the
    shortest first among a seeded shuffle, so the corpus grows little); pool sentences equal to a target are never
    chosen, and a sentence added for one word counts for every word it has."""
    targets = list(targets)
    have = {w for s in spoken for w in words_of(s)}
    missing = sorted({w for t in targets for w in words_of(t)} - have)
    excluded = {" ".join(words_of(t)) for t in targets}
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    by_word: dict[str, list[int]] = {w: [] for w in missing}
    for index in sorted(order, key=lambda i: len(pool[i].split())):
        words = words_of(pool[index])
        if " ".join(words) in excluded:
            continue
        for word in set(words) & by_word.keys():
            by_word[word].append(index)
    coverage, chosen = Coverage(), set()
    for word in missing:
        if word in have:
            continue  # a sentence added for an earlier word says it
        picks = by_word[word][:per_word]
        if not picks:
            coverage.uncovered.append(word)
            continue
        coverage.covered[word] = len(picks)
        for index in picks:
            if index not in chosen:
                chosen.add(index)
                coverage.sentences.append(pool[index])
                have.update(words_of(pool[index]))
    return coverage


def wordnet_glosses(root: Path = WORDNET_DIR) -> list[str]:
    """The definitions of WordNet 3.0 glosses (the text before the first example or ';'), in file order."""
    glosses = []
    for path in (root / name for name in WORDNET_FILES):
        if not path.is_file():
            raise FileNotFoundError(f"WordNet data not found in {root} (install the Debian package wordnet-base)")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            gloss = line.split("|", 1)[1].split(";")[0].split('"')[0].strip()
            if gloss:
                glosses.append(gloss)
    return glosses


def target_texts(paths: Iterable[str]) -> list[str]:
    """The texts of each file: its lines, or the questions (instruction and input) of an Alpaca-style JSONL, which
    are what a listener hears."""
    texts = []
    for name in paths:
        path = Path(name)
        if path.suffix == ".jsonl":
            records = read_qa_records(path, keys=("instruction",))
            if any(not isinstance(r["instruction"], str) for r in records):
                raise ValueError(f"{path}: every record's 'instruction' must be a string")
            texts += [qa_question(r) for r in records]
        else:
            texts += lines_of(path)
    return texts
