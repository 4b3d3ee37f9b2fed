"""`speechgpt build stage2`: cross-modal instructions (ASR and TTS) from a units dataset.

ASR: `[Human]: {asr phrasing} This is input: <sosp>..<eosp><eoh> [SpeechGPT]: {transcript}<eoa>`;
TTS: `[Human]: {tts phrasing} This is input: {transcript}<eoh> [SpeechGPT]: <sosp>..<eosp><eoa>`.

Splits keep speakers AND sentences unseen: each distinct sentence falls by a stable hash into a train, dev or test
bucket. Training voices with train sentences -> 'train'; held-out voices with dev/test sentences -> 'dev'/'test';
training voices with dev/test sentences -> 'dev_seen_voices' (WER on known voices, unknown sentences). Held-out
voices never speak a training sentence in the output (such rows are skipped and counted).

Examples of one split and task are packed (seeded shuffle of the id-sorted examples) into multi-turn sequences up to
`max_tokens`; an example that alone exceeds the budget is skipped and counted, never truncated.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from data_builders.instructions import sample_instruction
from speechgpt.config import save_config
from speechgpt.data.instruct import Task
from speechgpt.data.units import codebook_size, load_units_rows
from speechgpt.text.conversation import Turn
from speechgpt.text.template import (
    INPUT_JOIN,
    TQ,
    AssistantTurn,
    ChatTemplate,
    LossOn,
    UserTurn,
    marker_tokens,
    system_text,
)
from speechgpt.text.units import UnitFormat, UnitFormatName

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test", "dev_seen_voices")
COLUMNS = ["id", "text", "speaker", "split", "units"]
HELDOUT_TRAIN_SENTENCE = "held-out voice with a training sentence"
OVER_BUDGET = "over max_tokens"


@dataclass(kw_only=True)
class Config:
    units: Path
    """Units dataset folder (from `speechgpt units extract`)."""
    out: Path = Path("out/stage2")
    """Output folder: dataset/ (one folder per split), summary.json, token_lengths.png, config.yaml."""
    unit_format: UnitFormatName = "default"
    """How units are written: 'default' (`<|u12|>`) or 'legacy' (SpeechGPT's `<12>`)."""
    k: int | None = None
    """Codebook size; null: the `km<k>` of the units' encoder tag."""
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    """Corpus splits of training voices; speakers found only in other corpus splits are held-out voices."""
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    """Output splits to write (train, dev, test, dev_seen_voices)."""
    tokenizer: str | None = None
    """Tokenizer (HF folder or hub id) for exact token counts; null: an approximation (one per unit or word)."""
    seed: int = 0
    """Seed of the task draws, instruction phrasings and packing order (not of the sentence buckets)."""
    min_units: int = 1
    """Utterances with fewer units are skipped (counted in summary.json)."""
    asr_fraction: float = 0.5
    """Chance that an utterance becomes an ASR example (else TTS); ignored with both_tasks."""
    both_tasks: bool = False
    """Every utterance yields an ASR and a TTS example."""
    tts_units: Path | None = None
    """Units dataset of one answer voice (e.g. `voice_units`, the vocoder's speech) that the TTS examples say their
    sentences in, so a sentence's units follow from its text alone, as the answers of stage 3 and the vocoder's
    voice; `units` then gives the ASR examples only. Its sentences fall into the same train/dev/test buckets. Null:
    TTS examples come from the utterances of `units`, in their many voices."""
    tts_share: float = 1.0
    """With both_tasks or tts_units: the chance that an utterance's TTS example is kept (its ASR one always is). A
    TTS example trains ~5x the tokens of an ASR one, so a small model given both for every utterance learns speech
    out at the cost of recognition; fewer TTS examples rebalance the two without losing any ASR example."""
    max_tokens: int = 1024
    """Token budget of one (multi-turn) example; a single turn over it is skipped and counted."""
    turns_per_example: int = 4
    """Most turns packed into one example (1: one turn per example, as SpeechGPT)."""
    pack_splits: list[str] = field(default_factory=lambda: ["train"])
    """Splits that are packed; the others keep one turn per example, so each answer is a prompt/response to score."""
    dev_fraction: float = 0.1
    """Share of distinct sentences in the dev bucket."""
    test_fraction: float = 0.1
    """Share of distinct sentences in the test bucket."""
    loss_on: LossOn = "answers"
    """'answers': train on the answers only; 'after_system': everything after the system prompt (SpeechGPT)."""
    system: str | None = None
    """System text that starts every example; null: SpeechGPT's. It is recorded in summary.json, the stages write
    it into the trained model's config.json (`speechgpt_system`) and chat sessions prompt with it from there. A
    tiny model spends about half of its compute on SpeechGPT's 83-token text."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.asr_fraction <= 1.0 or not 0.0 <= self.tts_share <= 1.0:
            raise ValueError("asr_fraction and tts_share must be in [0, 1]")
        if self.dev_fraction < 0 or self.test_fraction < 0 or self.dev_fraction + self.test_fraction >= 1:
            raise ValueError("need dev_fraction, test_fraction >= 0 with a sum below 1")
        if self.max_tokens < 1 or self.turns_per_example < 1 or self.min_units < 0:
            raise ValueError("max_tokens and turns_per_example must be >= 1, min_units >= 0")
        if self.k is not None and self.k < 1:
            raise ValueError("k must be >= 1")
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown splits {unknown} (choose from {list(SPLITS)})")


@dataclass(frozen=True)
class Single:
    """One turn made from one utterance, before packing."""

    task: Task
    split: str
    turn: Turn
    source_id: str


def sentence_key(text: str) -> str:
    """What makes two transcripts the same sentence: case and spacing do not count."""
    return " ".join(text.casefold().split())


def sentence_bucket(text: str, dev_fraction: float, test_fraction: float) -> str:
    """'train', 'dev' or 'test' for a sentence, by a hash that is the same on every machine and run."""
    position = int(hashlib.sha256(sentence_key(text).encode("utf-8")).hexdigest()[:15], 16) / 16**15
    if position < test_fraction:
        return "test"
    return "dev" if position < test_fraction + dev_fraction else "train"


def assign_split(row: dict[str, Any], bucket: str, train_voices: set[str], train_splits: list[str]) -> str:
    """The output split of a units row, or the reason it is not used (prefixed with 'skip:')."""
    if row["speaker"] in train_voices:
        if bucket != "train":
            return "dev_seen_voices"
        return "train" if row["split"] in train_splits else "skip:training voice's row outside train_splits"
    return f"skip:{HELDOUT_TRAIN_SENTENCE}" if bucket == "train" else bucket


def unsafe_transcript(text: str) -> bool:
    """Text that would not parse back: template markers or unit-like tokens (either format)."""
    return any(m in text for m in (*marker_tokens(), TQ, INPUT_JOIN.strip())) or any(
        UnitFormat(name, 1).pattern.search(text) for name in ("default", "legacy")
    )


def make_singles(
    rows: list[dict[str, Any]], cfg: Config, skipped: Counter[str], tts_rows: list[dict[str, Any]] | None = None
) -> list[Single]:
    """The turns of `rows` (ASR, and TTS unless `tts_rows`), then the TTS turns of `tts_rows` (one answer voice)."""
    train_voices = {r["speaker"] for r in rows if r["split"] in cfg.train_splits}
    singles = singles_of(
        rows,
        cfg,
        skipped,
        lambda row, bucket: assign_split(row, bucket, train_voices, cfg.train_splits),
        only=None if tts_rows is None else "asr",
    )
    if tts_rows is not None:
        singles += singles_of(tts_rows, cfg, skipped, lambda row, bucket: bucket, only="tts")
    return singles


def singles_of(
    rows: list[dict[str, Any]],
    cfg: Config,
    skipped: Counter[str],
    split_of: Callable[[dict[str, Any], str], str],
    only: Task | None = None,
) -> list[Single]:
    """The turns of `rows` in the splits `split_of` gives: ASR and TTS as the config mixes them, or `only` one task
    (a TTS turn kept at tts_share)."""
    singles = []
    for row in rows:
        bucket = sentence_bucket(row["text"], cfg.dev_fraction, cfg.test_fraction)
        split = split_of(row, bucket)
        reason = split.removeprefix("skip:") if split.startswith("skip:") else None
        if reason is None and split not in cfg.splits:
            reason = f"split {split} not in splits"
        if reason is None and len(row["units"]) < cfg.min_units:
            reason = "fewer than min_units units"
        transcript = " ".join(row["text"].split())
        if reason is None and (not transcript or unsafe_transcript(transcript)):
            reason = "transcript empty or holding template markup"
        if reason is not None:
            skipped[reason] += 1
            continue
        # a generator per row: a row's task and phrasing do not depend on which other rows exist
        rng = random.Random(f"{cfg.seed}/{row['id']}")
        if only == "asr":
            tasks: list[Task] = ["asr"]
        elif only == "tts":
            tasks = ["tts"] if _keep_tts(cfg, rng) else []
        elif cfg.both_tasks:
            tasks = ["asr", "tts"] if _keep_tts(cfg, rng) else ["asr"]
        else:
            tasks = ["asr" if rng.random() < cfg.asr_fraction else "tts"]
        units = tuple(row["units"])
        for task in tasks:
            if task == "asr":
                turn = (UserTurn(sample_instruction("asr", rng), units=units), AssistantTurn(text=transcript))
            else:
                turn = (UserTurn(sample_instruction("tts", rng), text=transcript), AssistantTurn(units=units))
            singles.append(Single(task, split, turn, row["id"]))
    return singles


def _keep_tts(cfg: Config, rng: random.Random) -> bool:
    """Whether a row's TTS turn is kept (chance tts_share; no draw at 1, so the data stay as without the share)."""
    return cfg.tts_share >= 1 or rng.random() < cfg.tts_share


def pack(
    singles: list[Single],
    measure: Callable[[list[Turn]], int],
    max_tokens: int,
    max_turns: int,
    rng: random.Random,
    skipped: Counter[str],
) -> list[list[Single]]:
    """Greedy packing of one split and task, in a seeded shuffle of the id-sorted examples."""
    order = sorted(singles, key=lambda s: s.source_id)
    rng.shuffle(order)
    groups: list[list[Single]] = []
    current: list[Single] = []
    for single in order:
        if measure([single.turn]) > max_tokens:
            skipped[OVER_BUDGET] += 1
            continue
        candidate = [*current, single]
        if current and (len(candidate) > max_turns or measure([s.turn for s in candidate]) > max_tokens):
            groups.append(current)
            candidate = [single]
        current = candidate
    if current:
        groups.append(current)
    return groups


def build_examples(
    singles: list[Single], cfg: Config, measure: Callable[[list[Turn]], int]
) -> tuple[list[Example], Counter[str]]:
    skipped: Counter[str] = Counter()
    by_key: dict[tuple[str, str], list[Single]] = defaultdict(list)
    for single in singles:
        by_key[(single.split, single.task)].append(single)
    examples = []
    for (split, task), group in sorted(by_key.items()):
        rng = random.Random(f"{cfg.seed}/pack/{split}/{task}")
        max_turns = cfg.turns_per_example if split in cfg.pack_splits else 1
        for packed in pack(group, measure, cfg.max_tokens, max_turns, rng, skipped):
            first = packed[0].source_id
            examples.append(
                Example(
                    id=f"{task}-{first}" + (f"+{len(packed) - 1}" if len(packed) > 1 else ""),
                    task=packed[0].task,
                    split=split,
                    turns=[s.turn for s in packed],
                    source_ids=[s.source_id for s in packed],
                )
            )
    return examples, skipped


def run(cfg: Config) -> Path:
    """Write the stage-2 dataset to cfg.out and return it."""
    save_config(cfg, cfg.out)
    tag, rows = load_units_rows(cfg.units, COLUMNS)
    units = UnitFormat(cfg.unit_format, codebook_size(tag, rows, cfg.k))
    template = ChatTemplate(units, loss_on=cfg.loss_on, system=system_text(cfg.system))
    count = TokenCounter(units, cfg.tokenizer)
    tts_rows = None
    if cfg.tts_units is not None:
        tts_tag, tts_rows = load_units_rows(cfg.tts_units, COLUMNS)
        if tts_tag != tag:
            raise ValueError(
                f"{cfg.tts_units}: units from {tts_tag}, but {cfg.units} has {tag}; extract both with the same k-means"
            )
        codebook_size(tag, tts_rows, units.k)
    skipped: Counter[str] = Counter()
    singles = make_singles(rows, cfg, skipped, tts_rows)
    examples, pack_skipped = build_examples(singles, cfg, lambda turns: count(template.format(turns).text))
    skipped.update(pack_skipped)
    sentences = {sentence_key(r["text"]) for r in [*rows, *(tts_rows or [])]}
    buckets = Counter(sentence_bucket(t, cfg.dev_fraction, cfg.test_fraction) for t in sentences)
    extra = {
        "unit_format": units.name,
        "k": units.k,
        "encoder": str(tag),
        "sentences_per_bucket": dict(sorted(buckets.items())),
        "turns": len(singles) - skipped[OVER_BUDGET],
        "system": template.system,
    }
    out_rows = [to_row(example, template, count) for example in examples]
    write_instruct_dataset(out_rows, cfg.out, skipped=skipped, extra=extra, exact_tokens=count.exact)
    return cfg.out
