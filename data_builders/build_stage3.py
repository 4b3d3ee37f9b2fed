"""`speechgpt build stage3`: chain-of-modality data from text questions and answers and the units of their speech.

The speech comes from the corpus and units commands, as every other speech here does: `speechgpt corpus synth
qa=<questions>` speaks each question and its answer (clips `q-<id>`, `a-<id>`; train questions by training voices,
dev/test ones by held-out voices), and `speechgpt units extract` turns that corpus into units with the k-means of the
other stages. This builder joins the questions with those units by id, checks that each clip speaks its text, and
makes one example per question and mode (or a seeded subset of the modes):

    com_s2s  [Human]: <sosp>q units<eosp><eoh> [SpeechGPT]: {question}; [ta] {answer}; [ua] <sosp>a units<eosp><eoa>
    com_s2t  [Human]: <sosp>q units<eosp><eoh> [SpeechGPT]: {question}; [ta] {answer}<eoa>
    com_t2s  [Human]: {question}<eoh> [SpeechGPT]: [ta] {answer}; [ua] <sosp>a units<eosp><eoa>
    com_t2t  [Human]: {question}<eoh> [SpeechGPT]: [ta] {answer}<eoa>
    direct_s2t  [Human]: <sosp>q units<eosp><eoh> [SpeechGPT]: [ta] {answer}<eoa>   (no transcript: SpeechGPT's
                ablation of the chain of modality; not built unless asked)

The dataset is written with `instruct_common.write_instruct_dataset`; answers over `max_answer_words` and questions
whose clips have no units (rejected by the corpus or the extraction) are counted in summary.json and listed in
rejected.jsonl.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from data_builders.text_instructions import QAPair, qa_clip_ids, read_text_instructions
from speechgpt.config import save_config
from speechgpt.data.io import read_jsonl
from speechgpt.data.units import EncoderTag, load_units_rows
from speechgpt.text.template import AssistantTurn, ChatTemplate, UserTurn, system_text
from speechgpt.text.units import UnitFormat

log = logging.getLogger(__name__)

Mode = Literal["com_s2s", "com_s2t", "com_t2s", "com_t2t", "direct_s2t"]
MODES: tuple[Mode, ...] = ("com_s2s", "com_s2t", "com_t2s", "com_t2t", "direct_s2t")
CHAIN_MODES: tuple[Mode, ...] = ("com_s2s", "com_s2t", "com_t2s", "com_t2t")
SPEECH_IN = ("com_s2s", "com_s2t", "direct_s2t")
SPEECH_OUT = ("com_s2s", "com_t2s")
HELDOUT_SPLITS = ("dev", "test")
UNITS_COLUMNS = ["id", "text", "speaker", "split", "units"]

SpeechUnits = dict[str, tuple[int, ...] | str]
"""Units of each clip by corpus id, or the reason a clip has none."""


@dataclass(kw_only=True)
class Config:
    questions: Path
    """Alpaca/ShareGPT JSON or JSONL file, or a folder with train/dev/test .jsonl (e.g. from `speechgpt build qa`)."""
    units: Path
    """Units of the questions' speech: `speechgpt units extract` of the corpus `speechgpt corpus synth qa=...` made."""
    out: Path = Path("out/stage3")
    """Output folder: dataset/, summary.json, rejected.jsonl, token_lengths.png, config.yaml."""
    modes: list[Mode] = field(default_factory=lambda: list(CHAIN_MODES))
    """Tasks to build: the chain-of-modality com_s2s, com_s2t, com_t2s, com_t2t, and direct_s2t (a spoken question
    answered in text with no transcript, to compare the chain of modality against)."""
    modes_per_question: int | None = None
    """Examples per question: null builds every mode; n draws n of `modes` per question with the seed."""
    train_copies: dict[Mode, int] = field(default_factory=dict)
    """Times each train-split example of a mode is written (default 1), e.g. `{com_t2s: 6}`: a spoken answer's
    units are many tokens that only the speech-out modes train, and they need more passes than the text does."""
    all_pairs: bool = False
    """ShareGPT input: every human -> gpt pair of a conversation is a question (default: the first pair only)."""
    max_answer_words: int = 20
    """Answers longer than this (in words) are not used; they are counted and listed in rejected.jsonl."""
    unit_format: Literal["default", "legacy"] = "default"
    """Unit tokens in the text: `<|u12|>` (default) or SpeechGPT's `<12>` (legacy)."""
    tokenizer: str | None = None
    """Tokenizer folder or hub id for exact token counts in summary.json; null approximates them."""
    system: str | None = None
    """System text that starts every example; null: SpeechGPT's. It is recorded in summary.json, the stages write
    it into the trained model's config.json (`speechgpt_system`) and chat sessions prompt with it from there. A
    tiny model spends about half of its compute on SpeechGPT's 83-token text."""
    seed: int = 0
    """Seed of mode sampling (the voices were drawn by the corpus command)."""

    def __post_init__(self) -> None:
        if not self.modes or len(set(self.modes)) != len(self.modes) or not set(self.modes) <= set(MODES):
            raise ValueError(f"modes must be distinct names among {', '.join(MODES)}")
        if self.modes_per_question is not None and not 1 <= self.modes_per_question <= len(self.modes):
            raise ValueError(f"modes_per_question must be in 1..{len(self.modes)}")
        if self.max_answer_words < 1:
            raise ValueError("max_answer_words must be positive")
        if not set(self.train_copies) <= set(self.modes) or any(n < 1 for n in self.train_copies.values()):
            raise ValueError("train_copies must map modes being built to counts of at least 1")


def run(cfg: Config) -> Path:
    """Join the questions with the units of their speech and write the chain-of-modality dataset. Returns cfg.out."""
    save_config(cfg, cfg.out)
    pairs, bad = read_text_instructions(cfg.questions, all_pairs=cfg.all_pairs)
    rejected = [{"id": b.id, "origin": b.origin, "reason": b.reason} for b in bad]
    skipped = Counter("bad record" for _ in bad)
    usable = []
    for pair in pairs:
        words = len(pair.answer.split())
        if words > cfg.max_answer_words:
            reason = f"answer too long: {words} words over the limit of {cfg.max_answer_words}"
            rejected.append({"id": pair.id, "origin": pair.origin, "reason": reason})
            skipped["answer too long"] += 1
        else:
            usable.append(pair)
    tag, units, speech_summary = speech_units(cfg.units, usable)
    template = ChatTemplate(UnitFormat(cfg.unit_format, tag.k), system=system_text(cfg.system))
    count = TokenCounter(template.units, cfg.tokenizer)
    rows = [to_row(example, template, count) for example in build_examples(cfg, usable, units, rejected, skipped)]
    extra = {
        "questions": len(pairs),
        "answers_too_long": skipped["answer too long"],
        "speech": speech_summary,
        "kmeans": {"k": tag.k, "fingerprint": tag.fingerprint},
        "system": template.system,
    }
    write_instruct_dataset(
        rows, cfg.out, skipped=skipped, rejected=rejected, extra=extra, exact_tokens=cfg.tokenizer is not None
    )
    return cfg.out


def speech_units(path: Path, pairs: list[QAPair]) -> tuple[EncoderTag, SpeechUnits, dict[str, Any]]:
    """The units dataset's tag, the units of every clip of `pairs` (or why it has none), and a summary of the clips.

    ValueError when a clip speaks other text than its question or answer (speech made from other questions), or when
    a voice speaks both train and dev/test questions (held-out voices must stay unseen; answers are what the model
    says, so one answer voice may speak them all)."""
    tag, rows = load_units_rows(path, UNITS_COLUMNS)
    by_id = {row["id"]: row for row in rows}
    found: SpeechUnits = {}
    folder = path.parent if path.name == "dataset" else path
    for record in read_jsonl(folder / "rejected.jsonl"):
        found[record["id"]] = f"units rejected: {record['reason']}"
    spoken: list[tuple[str, str]] = []
    questions_spoken: list[tuple[str, str]] = []
    for pair in pairs:
        clips = zip(qa_clip_ids(pair.id), (pair.question, pair.answer), (True, False), strict=True)
        for clip_id, text, is_question in clips:
            row = by_id.get(clip_id)
            if row is None:
                found.setdefault(clip_id, f"not in {path} (rejected by the corpus? see its rejected.jsonl)")
                continue
            if row["text"] != " ".join(text.split()):
                raise ValueError(
                    f"{path}: clip {clip_id} speaks {row['text']!r}, not {text!r} ({pair.origin}): its speech was "
                    "made from other questions; run `speechgpt corpus synth qa=...` and `units extract` again"
                )
            found[clip_id] = tuple(row["units"])
            spoken.append((row["speaker"], pair.split))
            if is_question:
                questions_spoken.append((row["speaker"], pair.split))
    _check_heldout_voices(path, questions_spoken)
    summary = {"clips": len(spoken), "speakers": len({speaker for speaker, _ in spoken}), "encoder": str(tag)}
    return tag, found, summary


def _check_heldout_voices(path: Path, spoken: list[tuple[str, str]]) -> None:
    """Raise when a voice speaks clips of train questions and of dev/test questions."""
    heldout = {speaker for speaker, split in spoken if split in HELDOUT_SPLITS}
    shared = sorted(heldout & {speaker for speaker, split in spoken if split not in HELDOUT_SPLITS})
    if shared:
        raise ValueError(
            f"{path}: voices {shared} speak both train and dev/test questions; held-out voices must stay unseen"
        )


def build_examples(
    cfg: Config,
    pairs: list[QAPair],
    units: SpeechUnits,
    rejected: list[dict[str, str]],
    skipped: Counter[str],
) -> list[Example]:
    """One example per (question, mode), train ones `train_copies` times; a mode whose speech is missing is rejected
    with the clip's reason."""
    examples = []
    for pair in sorted(pairs, key=lambda p: p.id):
        question_id, answer_id = qa_clip_ids(pair.id)
        for mode in modes_for(cfg, pair.id):
            needed = [question_id] * (mode in SPEECH_IN) + [answer_id] * (mode in SPEECH_OUT)
            missing = [i for i in needed if not isinstance(units.get(i), tuple)]
            if missing:
                reason = f"no speech units: {missing[0]}: {units.get(missing[0], 'no such clip')}"
                rejected.append({"id": f"{mode}-{pair.id}", "origin": pair.origin, "reason": reason})
                skipped["no speech units"] += 1
                continue
            speech = {i: units[i] for i in needed}
            example = chain_example(mode, pair, speech.get(question_id), speech.get(answer_id), needed)
            copies = cfg.train_copies.get(mode, 1) if pair.split == "train" else 1
            examples += [example, *(replace(example, id=f"{example.id}-copy{n}") for n in range(2, copies + 1))]
    return examples


def modes_for(cfg: Config, pair_id: str) -> list[Mode]:
    """Every configured mode, or `modes_per_question` of them drawn for this question (in `MODES` order)."""
    if cfg.modes_per_question is None:
        return list(cfg.modes)
    chosen = set(random.Random(f"{cfg.seed}:modes:{pair_id}").sample(list(cfg.modes), cfg.modes_per_question))
    return [m for m in cfg.modes if m in chosen]


def chain_example(mode: Mode, pair: QAPair, question_units: Any, answer_units: Any, source_ids: list[str]) -> Example:
    """The chain-of-modality turn of one mode: a spoken question is transcribed first, a spoken answer comes last."""
    if mode == "direct_s2t":
        user = UserTurn(units=question_units)
        assistant = AssistantTurn(text=pair.answer, chain=True)
    elif mode in SPEECH_IN:
        user = UserTurn(units=question_units)
        assistant = AssistantTurn(transcript=pair.question, text=pair.answer, chain=True)
    else:
        user = UserTurn(text=pair.question)
        assistant = AssistantTurn(text=pair.answer, chain=True)
    if mode in SPEECH_OUT:
        assistant = AssistantTurn(transcript=assistant.transcript, text=pair.answer, units=answer_units, chain=True)
    return Example(
        id=f"{mode}-{pair.id}", task=mode, split=pair.split, turns=[(user, assistant)], source_ids=source_ids
    )
