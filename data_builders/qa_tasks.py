"""`speechgpt build qa`: questions whose answers a program can check, for the embedded default.

Families: small arithmetic (`what is three plus four` -> `seven`), counting (`how many letters are in the word cat`,
`what number comes after twelve`) and WordNet definitions (`what does cat mean` -> the first clause of the gloss of
its most frequent sense, from Debian's wordnet-base). Numbers are written as words, the spoken form, so TTS and ASR
agree with the text. Each family's questions are drawn with the seed and split by groups (an operand pair and its
commuted twin, a word, a number): dev and test groups never appear in train.

Output: `<out>/{train,dev,test}.jsonl` (Alpaca-style `{"id", "family", "instruction", "input", "output"}`),
`summary.json` and `config.yaml`; the same config gives the same bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data_builders.text_sources import WORDNET_DIR
from speechgpt.config import config_to_dict, save_config
from speechgpt.data.io import atomic_write_text
from speechgpt.eval.answers import NUMBER_FAMILIES
from speechgpt.eval.text_normalize import number_to_words

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
FAMILIES = (*NUMBER_FAMILIES, "define")
DEFAULT_COUNTS = {
    "add": 100,
    "subtract": 60,
    "count_letters": 100,
    "next_number": 80,
    "previous_number": 80,
    "define": 200,
}
# Everyday words for the letter-counting family: short, spelled as they sound to a TTS engine.
_COUNT_WORDS_TEXT = (
    "a an at be by do go he if in is it me my no of on or so to up us we "
    "ant arm bag bed bee box boy bus cat cow cup day dog ear egg eye fox hat hen ice jam key leg man map "
    "net nut owl pen pig pot rat red sea sun tea toy van web "
    "ball bird boat book cake coat door duck fish frog girl goat hand kite lamp leaf lion milk moon nest "
    "rain ring road rock rose seed ship shoe snow star tree wind wolf "
    "apple bread chair cloud grass horse house juice lemon mouse paper plant river sheep snake spoon table "
    "tiger train water whale window garden rabbit orange pencil basket bottle button candle carrot "
    "kitchen monkey rocket turtle blanket chicken dolphin giraffe penguin teacher "
    "elephant mountain sandwich umbrella"
)
COUNT_WORDS = tuple(_COUNT_WORDS_TEXT.split())
_GLOSS_SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z ,'-]*[A-Za-z]$")
_PARENTHESES = re.compile(r"\s*\([^()]*\)")
_WORDNET_POS = ("noun", "verb", "adj")
_VOWEL = frozenset("aeiouy")


@dataclass(kw_only=True)
class Config:
    out: Path = Path("out/qa")
    """Output folder: train.jsonl, dev.jsonl, test.jsonl, summary.json, config.yaml."""
    counts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    """Questions per family (see FAMILIES); a family not listed keeps its default count, 0 leaves it out."""
    seed: int = 0
    """Seed of question sampling and of the train/dev/test split."""
    heldout_fraction: float = 0.2
    """Share of each family's questions held out of train, split evenly into dev and test."""
    max_answer_words: int = 12
    """Longest answer kept, in words (WordNet glosses over it are not used)."""
    max_operand: int = 10
    """Largest operand of the add and subtract questions (answers of subtract are never negative)."""
    max_number: int = 99
    """Largest number asked about in next_number / previous_number questions."""
    wordnet_dir: Path = WORDNET_DIR
    """WordNet database folder (index.* and data.* files of Debian's wordnet-base)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.counts) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown question families {unknown} (known: {', '.join(FAMILIES)})")
        self.counts = {f: self.counts.get(f, DEFAULT_COUNTS[f]) for f in FAMILIES}
        if any(n < 0 for n in self.counts.values()):
            raise ValueError("counts must be >= 0")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be in [0, 1)")
        if self.max_answer_words < 1 or self.max_operand < 1 or not 1 <= self.max_number <= 999_998:
            raise ValueError("max_answer_words and max_operand must be >= 1, max_number in 1..999998")


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    family: str
    question: str
    answer: str
    group: str
    """Questions of one group go to the same split (e.g. `3 + 4` and `4 + 3`)."""


def run(cfg: Config) -> Path:
    """Write the three split files and summary.json. Returns cfg.out."""
    save_config(cfg, cfg.out)
    splits: dict[str, list[Question]] = {s: [] for s in SPLITS}
    available = {}
    odd_to_dev = False  # alternates across families, so small held-out sets do not all lean to test
    for family in FAMILIES:
        if cfg.counts[family] == 0:
            continue
        candidates = family_candidates(family, cfg)
        available[family] = len(candidates)
        rng = random.Random(f"{cfg.seed}:{family}")
        chosen = split_questions(candidates, cfg.counts[family], cfg.heldout_fraction, rng, odd_to_dev)
        odd_to_dev ^= (len(chosen["dev"]) + len(chosen["test"])) % 2 == 1
        for split in SPLITS:
            splits[split] += chosen[split]
    for split, questions in splits.items():
        lines = "".join(json.dumps(to_record(q), ensure_ascii=False) + "\n" for q in sorted(questions, key=_order))
        atomic_write_text(cfg.out / f"{split}.jsonl", lines)
    summary = {
        "questions": sum(len(q) for q in splits.values()),
        "per_split_family": {s: dict(sorted(Counter(q.family for q in qs).items())) for s, qs in splits.items()},
        "available": available,
        "config": {k: v for k, v in config_to_dict(cfg).items() if k != "out"},
    }
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("qa %s: %s", cfg.out, summary["per_split_family"])
    return cfg.out


def to_record(question: Question) -> dict[str, str]:
    return {
        "id": question.id,
        "family": question.family,
        "instruction": question.question,
        "input": "",
        "output": question.answer,
    }


def _order(question: Question) -> tuple[int, str]:
    return FAMILIES.index(question.family), question.id


def split_questions(
    candidates: list[Question], count: int, heldout_fraction: float, rng: random.Random, odd_to_dev: bool = False
) -> dict[str, list[Question]]:
    """Draw `count` questions by whole groups, then put whole groups into dev+test until the held-out share is met;
    those are halved into dev and test (an odd one out goes to dev when `odd_to_dev`)."""
    groups: dict[str, list[Question]] = {}
    for question in candidates:
        groups.setdefault(question.group, []).append(question)
    order = list(groups)
    rng.shuffle(order)
    if count > len(candidates):
        log.warning("only %d questions exist for the family asked for %d", len(candidates), count)
    chosen: list[list[Question]] = []
    total = 0
    for key in order:
        if total + len(groups[key]) <= count:
            chosen.append(groups[key])
            total += len(groups[key])
    wanted_heldout = round(total * heldout_fraction)
    heldout: list[Question] = []
    train: list[Question] = []
    for group in chosen:
        (heldout if len(heldout) + len(group) <= wanted_heldout else train).extend(group)
    half = (len(heldout) + odd_to_dev) // 2
    return {"train": train, "dev": heldout[:half], "test": heldout[half:]}


def family_candidates(family: str, cfg: Config) -> list[Question]:
    """Every question a family can ask under the config, in a fixed order."""
    if family == "define":
        return [
            Question(f"define-{lemma}", family, f"what does {lemma} mean", gloss, lemma)
            for lemma, gloss in wordnet_definitions(cfg.wordnet_dir, cfg.max_answer_words)
        ]
    if family in ("add", "subtract"):
        return _arithmetic(family, cfg.max_operand)
    if family == "count_letters":
        return [
            Question(f"{family}-{w}", family, f"how many letters are in the word {w}", number_to_words(len(w)), w)
            for w in sorted(set(COUNT_WORDS))
        ]
    if family in ("next_number", "previous_number"):
        step, where = (1, "after") if family == "next_number" else (-1, "before")
        numbers = range(max(0, -step), cfg.max_number + 1)
        return [
            Question(
                f"{family}-{n:06d}",
                family,
                f"what number comes {where} {number_to_words(n)}",
                number_to_words(n + step),
                str(n),
            )
            for n in numbers
        ]
    raise ValueError(f"unknown question family {family!r}")


def _arithmetic(family: str, max_operand: int) -> list[Question]:
    """`a plus b` grouped with `b plus a` (one split for both); `a minus b` for a >= b."""
    found = []
    for a in range(max_operand + 1):
        for b in range(max_operand + 1):
            spoken = f"{number_to_words(a)} {'plus' if family == 'add' else 'minus'} {number_to_words(b)}"
            if family == "add":
                answer, group = a + b, f"{min(a, b)}+{max(a, b)}"
            elif a >= b:
                answer, group = a - b, f"{a}-{b}"
            else:
                continue
            found.append(
                Question(f"{family}-{a:03d}-{b:03d}", family, f"what is {spoken}", number_to_words(answer), group)
            )
    return found


@functools.cache
def wordnet_definitions(root: Path = WORDNET_DIR, max_answer_words: int = 12) -> tuple[tuple[str, str], ...]:
    """(lemma, definition) for single-word lowercase lemmas: the first clause of the gloss of the lemma's most
    frequent sense (the first synset its index line lists), kept when it is short and speakable. Sorted by lemma;
    a lemma found in several parts of speech is asked about as a noun, else a verb, else an adjective."""
    found: dict[str, str] = {}
    taken: set[str] = set()  # lemmas of an earlier part of speech, whether or not their gloss was kept
    for pos in _WORDNET_POS:
        index, data = root / f"index.{pos}", root / f"data.{pos}"
        if not (index.is_file() and data.is_file()):
            raise FileNotFoundError(f"WordNet data not found in {root} (install the Debian package wordnet-base)")
        synsets = data.read_bytes()
        for line in index.read_text(encoding="utf-8").splitlines():
            first = _first_tagged_sense(line)
            if first is None or first[0] in taken:
                continue
            lemma, offset = first
            taken.add(lemma)
            end = synsets.index(b"\n", offset)
            gloss = definition_of(synsets[offset:end].decode("utf-8", errors="replace"), lemma, max_answer_words)
            if gloss is not None:
                found[lemma] = gloss
    return tuple(sorted(found.items()))


def _first_tagged_sense(line: str) -> tuple[str, int] | None:
    """`lemma pos synset_cnt p_cnt [ptr]*p_cnt sense_cnt tagsense_cnt offset...`: the lemma and its first synset's
    offset, for plain lemmas seen at least once in WordNet's sense-tagged corpus (so the word is in common use)."""
    if line.startswith(" "):  # license header
        return None
    fields = line.split()
    lemma = fields[0]
    speakable = lemma.isascii() and lemma.isalpha() and lemma.islower() and not _VOWEL.isdisjoint(lemma)
    if not (speakable and 3 <= len(lemma) <= 12):  # no abbreviations like `cps`
        return None
    pointers = int(fields[3])
    tagged, offsets = int(fields[5 + pointers]), fields[6 + pointers :]
    return (lemma, int(offsets[0])) if tagged > 0 and offsets else None


def definition_of(synset_line: str, lemma: str, max_answer_words: int) -> str | None:
    """The first clause of a data.* line's gloss (`... | gloss; "example"`, clauses end at `;` or `:`), without
    parentheses; None when it is not a short speakable phrase or it uses the lemma itself."""
    if "|" not in synset_line:
        return None
    clause = re.split(r"[;:]", synset_line.split("|", 1)[1], maxsplit=1)[0]
    clause = " ".join(_PARENTHESES.sub("", clause).split()).rstrip(",")
    words = clause.split()
    if not _GLOSS_SPEAKABLE.match(clause) or not 2 <= len(words) <= max_answer_words:
        return None
    if lemma in {w.strip(",").lower() for w in words}:
        return None
    return clause
