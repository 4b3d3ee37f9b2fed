"""`speechgpt build stage3`: chain-of-modality data from text questions and answers.

Each question is spoken by a voice drawn for it with the seed (train: `voices`; dev/test: `heldout_voices` only), and
so is its answer. The speech goes through `CorpusBuild` into `<out>/speech/` (ids `q-<id>`, `a-<id>`; journaled, so a
rerun synthesizes nothing twice) and through `speechgpt.units.extract` into `<out>/units/` (resumable shards). Then
every question yields one example per mode (or a seeded subset of the modes):

    com_s2s  [Human]: <sosp>q units<eosp><eoh> [SpeechGPT]: {question}; [ta] {answer}; [ua] <sosp>a units<eosp><eoa>
    com_s2t  [Human]: <sosp>q units<eosp><eoh> [SpeechGPT]: {question}; [ta] {answer}<eoa>
    com_t2s  [Human]: {question}<eoh> [SpeechGPT]: [ta] {answer}; [ua] <sosp>a units<eosp><eoa>
    com_t2t  [Human]: {question}<eoh> [SpeechGPT]: [ta] {answer}<eoa>

The dataset is written with `instruct_common.write_instruct_dataset`; answers over `max_answer_words` and questions
whose speech or units were rejected are counted in summary.json and listed in rejected.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from data_builders.text_instructions import QAPair, read_text_instructions
from data_builders.tts import check_voice, parse_voice, tts_item
from speechgpt.config import save_config
from speechgpt.data.corpus import CorpusBuild, SourceItem, load_corpus
from speechgpt.data.io import read_jsonl
from speechgpt.text.template import AssistantTurn, ChatTemplate, UserTurn
from speechgpt.text.units import UnitFormat

log = logging.getLogger(__name__)

Mode = Literal["com_s2s", "com_s2t", "com_t2s", "com_t2t"]
MODES: tuple[Mode, ...] = ("com_s2s", "com_s2t", "com_t2s", "com_t2t")
SPEECH_IN = ("com_s2s", "com_s2t")
SPEECH_OUT = ("com_s2s", "com_t2s")
HELDOUT_SPLITS = ("dev", "test")


@dataclass(kw_only=True)
class Config:
    questions: Path
    """Alpaca/ShareGPT JSON or JSONL file, or a folder with train/dev/test .jsonl (e.g. from `speechgpt build qa`)."""
    kmeans: Path
    """k-means folder from `speechgpt units fit`; its encoder turns the synthesized speech into units."""
    out: Path = Path("out/stage3")
    """Output folder: dataset/, speech/ (corpus), units/, summary.json, rejected.jsonl, config.yaml."""
    voices: list[str] = field(
        default_factory=lambda: ["flite:slt", "flite:rms", "flite:awb", "festival:kal_diphone", "espeak-ng:en-us+m3"]
    )
    """Voices (engine:name) speaking train questions and answers; one is drawn per question with the seed."""
    heldout_voices: list[str] = field(default_factory=lambda: ["flite:kal16", "festival:ked_diphone"])
    """Voices speaking dev/test questions and answers (never in `voices`, so they stay unseen in training)."""
    modes: list[Mode] = field(default_factory=lambda: list(MODES))
    """Chain-of-modality tasks to build: com_s2s, com_s2t, com_t2s, com_t2t."""
    modes_per_question: int | None = None
    """Examples per question: null builds every mode; n draws n of `modes` per question with the seed."""
    all_pairs: bool = False
    """ShareGPT input: every human -> gpt pair of a conversation is a question (default: the first pair only)."""
    max_answer_words: int = 20
    """Answers longer than this (in words) are not used; they are counted and listed in rejected.jsonl."""
    max_duration_s: float = 20.0
    """Synthesized clips longer than this are rejected (with the questions that need them)."""
    num_workers: int = 2
    """Synthesis processes."""
    unit_format: Literal["default", "legacy"] = "default"
    """Unit tokens in the text: `<|u12|>` (default) or SpeechGPT's `<12>` (legacy)."""
    tokenizer: str | None = None
    """Tokenizer folder or hub id for exact token counts in summary.json; null approximates them."""
    seed: int = 0
    """Seed of voice and mode sampling."""

    def __post_init__(self) -> None:
        for key in [*self.voices, *self.heldout_voices]:
            parse_voice(key)
        if not self.voices or not self.heldout_voices:
            raise ValueError("voices and heldout_voices must both name at least one voice")
        shared = sorted(set(self.voices) & set(self.heldout_voices))
        if shared:
            raise ValueError(f"heldout_voices {shared} are also in voices; held-out voices must stay unseen")
        if not self.modes or len(set(self.modes)) != len(self.modes) or not set(self.modes) <= set(MODES):
            raise ValueError(f"modes must be distinct names among {', '.join(MODES)}")
        if self.modes_per_question is not None and not 1 <= self.modes_per_question <= len(self.modes):
            raise ValueError(f"modes_per_question must be in 1..{len(self.modes)}")
        if self.max_answer_words < 1 or self.max_duration_s <= 0:
            raise ValueError("max_answer_words and max_duration_s must be positive")


def run(cfg: Config) -> Path:
    """Synthesize, extract units and write the chain-of-modality dataset. Returns cfg.out."""
    save_config(cfg, cfg.out)
    for key in [*cfg.voices, *cfg.heldout_voices]:
        check_voice(parse_voice(key))
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
    meta = _kmeans_meta(cfg.kmeans)
    units, speech_summary = speech_units(cfg, usable, meta)
    template = ChatTemplate(UnitFormat(cfg.unit_format, int(meta["k"])))
    count = TokenCounter(template.units, cfg.tokenizer)
    rows = [to_row(example, template, count) for example in build_examples(cfg, usable, units, rejected, skipped)]
    extra = {
        "questions": len(pairs),
        "answers_too_long": skipped["answer too long"],
        "speech": speech_summary,
        "kmeans": {"k": meta["k"], "fingerprint": meta["fingerprint"]},
    }
    write_instruct_dataset(
        rows, cfg.out, skipped=skipped, rejected=rejected, extra=extra, exact_tokens=cfg.tokenizer is not None
    )
    return cfg.out


def needs_speech(cfg: Config) -> bool:
    return any(m in SPEECH_IN or m in SPEECH_OUT for m in cfg.modes)


def speech_items(cfg: Config, pairs: list[QAPair]) -> list[SourceItem]:
    """A question clip `q-<id>` and an answer clip `a-<id>` per pair, each spoken by a voice drawn for the pair."""
    items = []
    for pair in sorted(pairs, key=lambda p: p.id):
        pool = cfg.heldout_voices if pair.split in HELDOUT_SPLITS else cfg.voices
        rng = random.Random(f"{cfg.seed}:voice:{pair.id}")
        for prefix, text in (("q", pair.question), ("a", pair.answer)):
            voice = parse_voice(rng.choice(pool))
            origin = f"{voice.key} {'question' if prefix == 'q' else 'answer'} of {pair.id}"
            items.append(tts_item(f"{prefix}-{pair.id}", voice, text, pair.split, origin))
    return items


def speech_units(
    cfg: Config, pairs: list[QAPair], meta: dict[str, Any]
) -> tuple[dict[str, tuple[int, ...] | str], dict[str, Any]]:
    """Units of every clip by corpus id, or the reason a clip has none; plus a summary of the speech corpus."""
    if not needs_speech(cfg):
        return {}, {}
    items = speech_items(cfg, pairs)
    digest = hashlib.sha256(
        json.dumps([[i.id, i.source, i.split, i.text] for i in items], ensure_ascii=False).encode()
    ).hexdigest()
    speech_dir, units_dir = cfg.out / "speech", cfg.out / "units"
    build = CorpusBuild(
        speech_dir,
        {"items_sha256": digest, "max_duration_s": cfg.max_duration_s},
        cfg.max_duration_s,
        num_workers=cfg.num_workers,
    )
    summary = build.run(items, desc="synthesize")
    if not summary["complete"]:
        raise RuntimeError(f"{speech_dir}: synthesis did not finish; rerun the same command to resume")
    _extract_units(cfg, speech_dir, units_dir, meta, fresh_speech=summary["new_items"] > 0)
    found: dict[str, tuple[int, ...] | str] = {}
    for folder in (speech_dir, units_dir):
        for record in read_jsonl(folder / "rejected.jsonl"):
            found[record["id"]] = f"{'speech' if folder == speech_dir else 'units'} rejected: {record['reason']}"
    for row in load_corpus(units_dir).select_columns(["id", "units"]).to_list():
        found[row["id"]] = tuple(row["units"])
    keep = ("utterances", "rejected", "rejected_by_reason", "hours", "speakers")
    return found, {k: summary[k] for k in keep}


def _extract_units(cfg: Config, speech: Path, out: Path, meta: dict[str, Any], fresh_speech: bool) -> None:
    """Run unit extraction unless `out` already holds units of this speech by this k-means."""
    from speechgpt.units import extract

    summary_path = out / "summary.json"
    if summary_path.exists() and (out / "dataset").is_dir():
        encoder = json.loads(summary_path.read_text())["encoder"]
        if not fresh_speech and encoder.endswith(f"+km{meta['k']}:{meta['fingerprint']}"):
            log.info("%s: units already extracted with k-means %s; nothing to do", out, meta["fingerprint"])
            return
    if fresh_speech or summary_path.exists():
        shutil.rmtree(out, ignore_errors=True)  # units of other speech or another k-means: redo them all
    extract.run(extract.Config(corpus=speech, kmeans=cfg.kmeans, out=out))


def build_examples(
    cfg: Config,
    pairs: list[QAPair],
    units: dict[str, tuple[int, ...] | str],
    rejected: list[dict[str, str]],
    skipped: Counter[str],
) -> list[Example]:
    """One example per (question, mode); a mode whose speech is missing is rejected with the clip's reason."""
    examples = []
    for pair in sorted(pairs, key=lambda p: p.id):
        for mode in modes_for(cfg, pair.id):
            needed = [f"q-{pair.id}"] * (mode in SPEECH_IN) + [f"a-{pair.id}"] * (mode in SPEECH_OUT)
            missing = [i for i in needed if not isinstance(units.get(i), tuple)]
            if missing:
                reason = f"no speech units: {missing[0]}: {units.get(missing[0], 'not synthesized')}"
                rejected.append({"id": f"{mode}-{pair.id}", "origin": pair.origin, "reason": reason})
                skipped["no speech units"] += 1
                continue
            speech = {i: units[i] for i in needed}
            examples.append(chain_example(mode, pair, speech.get(f"q-{pair.id}"), speech.get(f"a-{pair.id}"), needed))
    return examples


def modes_for(cfg: Config, pair_id: str) -> list[Mode]:
    """Every configured mode, or `modes_per_question` of them drawn for this question (in `MODES` order)."""
    if cfg.modes_per_question is None:
        return list(cfg.modes)
    chosen = set(random.Random(f"{cfg.seed}:modes:{pair_id}").sample(list(cfg.modes), cfg.modes_per_question))
    return [m for m in cfg.modes if m in chosen]


def chain_example(mode: Mode, pair: QAPair, question_units: Any, answer_units: Any, source_ids: list[str]) -> Example:
    """The chain-of-modality turn of one mode: a spoken question is transcribed first, a spoken answer comes last."""
    if mode in SPEECH_IN:
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


def _kmeans_meta(kmeans: Path) -> dict[str, Any]:
    path = kmeans / "kmeans.json"
    if not path.is_file():
        raise FileNotFoundError(f"{kmeans}: no kmeans.json (fit one with `speechgpt units fit`)")
    return json.loads(path.read_text(encoding="utf-8"))
