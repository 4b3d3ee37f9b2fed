"""Frozen-LLM variant, input stage 3: spoken questions answered through the frozen LLM, plus the state head on each
160 ms chunk (Freeze-Omni's third stage). Labels per chunk: 0 (keep listening) while a clip's speech lasts, then 1
(answer) for a question and 2 (ignore) for speech not addressed to the assistant: corpus sentences that are not
questions, and noise clips made here. Every clip gets `trailing_silence_s` of silence, so the decision falls after
the speech as it does when listening.

Answers come from the QA dataset, or (`answers: backbone`) from the frozen LLM itself, greedy from the question's
text as Freeze-Omni does. Speech training uses only the train questions' speech (DESIGN.md's protocol): dev and
test questions, spoken by held-out voices, are only evaluated.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from speechgpt.config import save_config
from speechgpt.model.ctc_vocab import normalize_transcript
from speechgpt.model.frozen_checkpoint import load_speech_modules, read_speech_meta
from speechgpt.model.frozen_lm import FrozenSpeechLM
from speechgpt.model.state_labels import STATE_NAMES, chunk_state_labels
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.distributed import Dist, setup_process
from speechgpt.training.encoded_examples import encoded_examples
from speechgpt.training.export import FINAL
from speechgpt.training.feature_cache import ClipFeatures, cached_features
from speechgpt.training.frozen_stage import (
    FrozenLM,
    SpeechTemplate,
    capped,
    clips_of,
    corpus_rows,
    engine_bf16,
    init_feature_settings,
    load_frozen_lm,
    report_skipped,
    set_trainable,
    speech_examples,
    speech_lm_meta,
    token_ids,
    train_speech_lm,
)
from speechgpt.training.speech_batches import SpeechBatches, SpeechExample
from speechgpt.training.spoken_qa_data import (
    QARecord,
    chosen_answers,
    question_clip_id,
    read_qa_records,
    write_noise_clips,
)

log = logging.getLogger(__name__)
STAGE = "frozen-qa"
Rows = dict[str, list[dict[str, Any]]]


@dataclass(kw_only=True)
class Config:
    init: Path
    """The `frozen-asr` export (<out>/final) this stage starts from."""
    qa: Path
    """Question/answer folder from `speechgpt build qa` (train/dev/test.jsonl with ids)."""
    qa_speech: Path
    """Corpus of the spoken questions (`speechgpt corpus synth qa=<qa>`: clip q-<id> speaks question <id>)."""
    out: Path = Path("out/frozen_qa")
    """Run folder: config.yaml, features/, noise/, skipped.json, metrics.jsonl, checkpoints/, final/."""
    feature_cache: Path | None = None
    """Folder of the feature cache (null: <out>/features); stages over the same clips may share one."""
    backbone: str | None = None
    """The frozen LLM (null: the one `init` was trained with); it must be that LLM (its fingerprint is checked)."""
    answers: Literal["dataset", "backbone"] = "dataset"
    """Target answers: the QA dataset's, or the frozen LLM's own greedy answers to the questions' text."""
    max_answer_tokens: int = 32
    """answers=backbone: tokens generated per answer at most."""
    template: str = "{speech}? {target}."
    """The LLM's text around a clip ({speech}: prompt and speech embeddings, {target}: the answer). The default
    fits the demo's backbone, which learned `question? answer.` lines; a chat LLM takes its chat turns."""
    eos: bool = False
    """Also train the tokenizer's EOS after the answer."""
    train_split: str = "train"
    """Split of the questions (and of ignore_corpus) trained on; train.eval_splits are evaluated."""
    ignore_corpus: Path | None = None
    """Corpus whose sentences that are not questions are speech to ignore (state 2), e.g. the demo's corpus."""
    ignore_clips: int = 200
    """Sentences of ignore_corpus trained on at most (drawn with the seed)."""
    noise_clips: int = 50
    """Noise clips (white or brown, state 2) trained on; a tenth as many more are evaluated."""
    noise_seconds: tuple[float, float] = (0.5, 2.0)
    """Length range of a noise clip."""
    noise_db: tuple[float, float] = (-60.0, -35.0)
    """RMS level range of a noise clip, dB full scale."""
    trailing_silence_s: float = 0.32
    """Silence appended to every clip (the decision after the speech is trained in it)."""
    state_weight: float = 1.0
    """Weight of the state head's loss beside the answer's."""
    distill_weight: float = 0.0
    """Weight of cross-modal distillation (0: none): at a spoken question's answer text, the LLM's states after
    every layer are pulled toward those it has after reading the question's text (speech_alignment.distill_loss)."""
    trainable: list[str] = field(default_factory=lambda: ["prompt", "state_head"])
    """Speech modules trained (of encoder, adapter, prompt, state_head); Freeze-Omni trains the prompt here. With the
    encoder frozen, its frames are computed once per clip before training (encoded_examples)."""
    max_batch_frames: int = 0
    """Padded frames per micro-batch at most (clips x longest clip; encoder frames when the encoder is frozen, else
    feature frames; 0: only train.micro_batch limits)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(micro_batch=8, lr=5e-4, eval_splits=["dev"], max_eval_examples=100)
    )
    """Engine settings; eval_splits name question splits (held-out voices speak the dev and test questions)."""

    def __post_init__(self) -> None:
        SpeechTemplate(self.template, self.eos)
        if self.trailing_silence_s < 0 or self.noise_clips < 0 or self.ignore_clips < 0:
            raise ValueError("trailing_silence_s, noise_clips and ignore_clips must be >= 0")


def _plain(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", normalize_transcript(text)).strip()


def question_rows(cfg: Config, records: dict[str, QARecord], splits: Sequence[str]) -> Rows:
    """Per split, the spoken questions that have a QA record (group question, with the record id)."""
    by_clip = {question_clip_id(rid): rid for rid in records}
    rows = corpus_rows(cfg.qa_speech, splits)
    return {
        split: [{**r, "group": "question", "record": by_clip[r["id"]]} for r in found if r["id"] in by_clip]
        for split, found in rows.items()
    }


def ignore_rows(cfg: Config, records: dict[str, QARecord], splits: Sequence[str]) -> Rows:
    """Per split, corpus sentences that are not questions (train: at most ignore_clips), and noise clips."""
    asked = {_plain(r.question) for r in records.values()}
    rows: Rows = {s: [] for s in splits}
    if cfg.ignore_corpus is not None:
        for split, found in corpus_rows(cfg.ignore_corpus, splits).items():
            sentences = [{**r, "group": "ignore"} for r in found if _plain(r["text"]) not in asked]
            limit = cfg.ignore_clips if split == cfg.train_split else cfg.train.max_eval_examples
            rows[split] += capped(sentences, limit, cfg.train.seed)
    if cfg.noise_clips:
        noise = cfg.out / "noise"
        for split in splits:
            prefix, count = ("noise-train", cfg.noise_clips) if split == cfg.train_split else ("noise-eval", 0)
            count = count or max(1, cfg.noise_clips // 10)
            made = write_noise_clips(noise, prefix, count, cfg.train.seed, cfg.noise_seconds, cfg.noise_db)
            rows[split] += [{**r, "group": "noise"} for r in made]
    return rows


def clip_targets(
    row: dict[str, Any],
    frames: int,
    model: FrozenSpeechLM,
    template: SpeechTemplate,
    tokenizer: Any,
    feats: Any,
    distill: bool = False,
) -> dict[str, list[int]] | str:
    """Answer tokens (questions) and per-chunk state labels of a clip, or why it is left out."""
    group = row["group"]
    if group != "noise" and not row["text"].strip():
        return "empty text"
    if group == "question" and not row.get("answer"):
        return "no answer"
    encoder = model.encoder
    chunks = int(encoder.num_chunks(torch.tensor([frames])))
    end = 0.0 if group == "noise" else feats.speech_end_s[row["id"]]
    states = chunk_state_labels(
        chunks, speech_end_s=end, addressed=group == "question", chunk_s=encoder.chunk / encoder.frame_rate
    )
    targets = {**template.targets(tokenizer, row.get("answer")), "state_labels": states}
    if distill:
        asked = token_ids(tokenizer, row.get("question") or "") if group == "question" else []
        targets["teacher_ids"] = targets["prefix_ids"] + asked + targets["text_ids"] if asked else []
    return targets


def build_examples(
    cfg: Config, rows: Rows, feats: ClipFeatures, model: FrozenSpeechLM, frozen: FrozenLM, dist: Dist
) -> dict[str, list[SpeechExample]]:
    template = SpeechTemplate(cfg.template, cfg.eos)
    examples, skipped = {}, {}
    for split, split_rows in rows.items():
        examples[split], skipped[split] = speech_examples(
            split_rows,
            feats,
            lambda row, f: clip_targets(
                row, f.shape[0], model, template, frozen.tokenizer, feats, distill=cfg.distill_weight > 0
            ),
        )
    report_skipped(cfg.out, skipped, dist)
    return examples


def run(cfg: Config) -> Path:
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)
    frozen = load_frozen_lm(cfg.backbone or read_speech_meta(cfg.init)["backbone"], engine_bf16(cfg.train, dist))
    model = load_speech_modules(frozen.lm, cfg.init)
    count = set_trainable(model, cfg.trainable)
    splits = list(dict.fromkeys([cfg.train_split, *cfg.train.eval_splits]))
    records = read_qa_records(cfg.qa)
    questions = question_rows(cfg, records, splits)
    for split in set(splits) - {cfg.train_split}:
        questions[split] = capped(questions[split], cfg.train.max_eval_examples, cfg.train.seed)
    answers = chosen_answers(
        cfg.answers,
        records,
        {r["record"] for s in questions.values() for r in s},
        frozen,
        SpeechTemplate(cfg.template, cfg.eos),
        max_new_tokens=cfg.max_answer_tokens,
        cache=cfg.out / "backbone_answers.json",
        dist=dist,
    )
    others = ignore_rows(cfg, records, splits)
    rows = {
        s: [{**r, "answer": answers.get(r["record"]), "question": records[r["record"]].question} for r in questions[s]]
        + others[s]
        for s in splits
    }
    feats = cached_features(
        clips_of(*rows.values()),
        init_feature_settings(cfg.init),
        cfg.feature_cache or cfg.out / "features",
        pad_s=cfg.trailing_silence_s,
        rank=dist.rank,
        world=dist.world,
    )
    examples = build_examples(cfg, rows, feats, model, frozen, dist)
    if "encoder" not in cfg.trainable:
        examples = encoded_examples(model, examples, show_progress=dist.is_main)
    train_set = examples.pop(cfg.train_split)
    groups = {g: sum(e.group == g for e in train_set) for g in ("question", "ignore", "noise")}
    log.info("%s: training clips %s, %d trainable parameters (%s)", STAGE, groups, count, cfg.trainable)
    batches = SpeechBatches(
        train_set,
        micro_batch=cfg.train.micro_batch,
        seed=cfg.train.seed,
        max_batch_frames=cfg.max_batch_frames,
        weight_key="state_labels",
        eval_sets=examples,
    )
    extra = speech_lm_meta(STAGE, frozen, model, cfg.init, SpeechTemplate(cfg.template, cfg.eos))
    extra |= {"answers": cfg.answers, "states": list(STATE_NAMES), "trailing_silence_s": cfg.trailing_silence_s}
    train_speech_lm(
        cfg.train,
        model,
        frozen,
        batches,
        cfg.out,
        extra,
        dist,
        "qa",
        cfg,
        state_weight=cfg.state_weight,
        distill_weight=cfg.distill_weight,
    )
    return cfg.out / FINAL
