"""Sentences to speak: a one-sentence-per-line file, an Alpaca-style JSONL (the `instruction` and `output` of each
record, e.g. the checkable questions of `speechgpt build qa`), or WordNet's example sentences (Debian's wordnet-base).

Sentences are cleaned (whitespace collapsed, characters every English TTS engine reads), filtered by word count,
de-duplicated, and sampled with a seed; the same arguments always give the same list in the same order.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z ,.;:'?!-]*$")
_QUOTED = re.compile(r'"([^"]+)"')


def load_sentences(source: str, *, max_sentences: int | None, seed: int, min_words: int, max_words: int) -> list[str]:
    """Sentences from `source` ('wordnet', a text file or a .jsonl file), cleaned, filtered and sampled
    deterministically."""
    raw = wordnet_examples() if source == "wordnet" else lines_of(Path(source))
    sentences = clean_sentences(raw, min_words, max_words)
    if not sentences:
        raise ValueError(f"text source {source!r} gave no sentence of {min_words}-{max_words} speakable words")
    if max_sentences is not None and max_sentences < len(sentences):
        chosen = sorted(random.Random(seed).sample(range(len(sentences)), max_sentences))
        sentences = [sentences[i] for i in chosen]
    return sentences


def clean_sentences(raw: list[str], min_words: int, max_words: int) -> list[str]:
    """`raw` with whitespace collapsed, keeping speakable sentences of `min_words`-`max_words` words, each once."""
    kept: dict[str, None] = {}
    for sentence in raw:
        text = " ".join(sentence.split())
        if _SPEAKABLE.match(text) and min_words <= len(text.split()) <= max_words:
            kept.setdefault(text, None)
    return list(kept)


def lines_of(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"text source {path} does not exist (give a file with one sentence per line)")
    lines = path.read_text(encoding="utf-8").splitlines()
    return qa_sentences(path, lines) if path.suffix == ".jsonl" else lines


def qa_sentences(path: Path, lines: list[str]) -> list[str]:
    """The questions and answers of Alpaca-style records ({"instruction", "output"}), in file order."""
    sentences = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str):
            raise ValueError(f"{path}:{number}: expected an object with a string 'instruction'")
        sentences += [record["instruction"], *([record["output"]] if isinstance(record.get("output"), str) else [])]
    return sentences


def wordnet_examples(root: Path = WORDNET_DIR) -> list[str]:
    """The quoted example sentences of WordNet 3.0 glosses, in file order."""
    files = [root / name for name in WORDNET_FILES]
    if not all(f.is_file() for f in files):
        raise FileNotFoundError(f"WordNet data not found in {root} (install the Debian package wordnet-base)")
    examples = []
    for path in files:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:  # license header lines start with spaces
                continue
            examples += _QUOTED.findall(line.split("|", 1)[1])
    return examples
