"""`speechgpt eval text`: the text knowledge of a model, so what speech training cost in text ability is measured
by asking the stage-0 backbone and each later model the same way.

Two numbers, both in the backbone's own text format (`speechgpt.text.backbone_text`, the lines stage 0 trained on):

- `text_accuracy`: each question of a `speechgpt build qa` split is asked as `question?` (BOS first, as stage 0 fed
  its lines); the greedy continuation up to the first "." or EOS is the answer, scored by
  `speechgpt.eval.answers.answer_is_correct` (numbers compare by value);
- `heldout_text_loss`: the mean cross-entropy per token of held-out sentences, each closed by EOS and BOS first as
  stage 0 tokenized its rows; every token but BOS counts, sentences weigh by their tokens. The sentences are
  `heldout_sentences` drawn (seeded) from `heldout_text` (a text source as for `speechgpt corpus synth`: 'wordnet' or
  a file) among those no clip of `corpus` says: text of the backbone's kind that it never trained on.

The model is an HF causal-LM folder (the backbone's export, a unified stage's merged export: the unit tokens its
tokenizer gained change nothing here) or a frozen-variant folder, whose backbone (named in its speech_modules.json
and checked against the modules' weights fingerprint) is what is asked.

    speechgpt eval text model=out/demo/backbone/final qa=out/demo/qa out=out/eval_text/backbone
    speechgpt eval text model=out/demo/stage3/final qa=out/demo/qa heldout_text=wordnet corpus=out/demo/corpus \
        out=out/eval_text/stage3
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from speechgpt.config import save_config
from speechgpt.data.io import atomic_write_text
from speechgpt.eval.answers import answer_is_correct
from speechgpt.text.backbone_text import (
    ANSWER_END,
    QA_KEYS,
    corpus_sentences,
    load_qa_split,
    qa_prompt,
    qa_text,
    text_row,
)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    model: Path
    """HF causal-LM folder (the backbone's export, a unified stage's merged export) or a frozen-variant folder (with
    speech_modules.json; its backbone is what is asked)."""
    qa: Path
    """Folder from `speechgpt build qa` (train/dev/test.jsonl)."""
    split: str = "test"
    """QA split whose questions are asked."""
    max_questions: int | None = None
    """Questions asked (the first ones, in file order); null for all."""
    heldout_text: str | None = None
    """Text source of the held-out sentences ('wordnet' or a file with one sentence per line); null: no loss."""
    heldout_sentences: int = 200
    """Held-out sentences drawn (seeded) from `heldout_text`."""
    corpus: Path | None = None
    """The corpus the backbone trained on: sentences any of its clips says are never held out."""
    max_new_tokens: int = 16
    """Longest answer generated, in tokens."""
    batch_size: int = 16
    """Questions generated together (left-padded), and sentences scored together."""
    num_threads: int = 1
    """torch threads on CPU."""
    out: Path = Path("out/eval_text")
    """Output folder: report.json, answers.jsonl, config.yaml."""

    def __post_init__(self) -> None:
        if min(self.max_new_tokens, self.batch_size, self.num_threads) < 1:
            raise ValueError("max_new_tokens, batch_size and num_threads must be >= 1")
        if self.heldout_sentences < 1:
            raise ValueError("heldout_sentences must be >= 1")
        if self.max_questions is not None and self.max_questions < 1:
            raise ValueError("max_questions must be >= 1 or null")


def run(cfg: Config) -> Path:
    """Ask the questions, score the held-out text, write report.json and answers.jsonl; returns report.json's path."""
    save_config(cfg, cfg.out)
    torch.set_num_threads(cfg.num_threads)
    records = load_qa_split(cfg.qa, cfg.split, (*QA_KEYS, "family"))[: cfg.max_questions]
    if not records:
        raise ValueError(f"{cfg.qa / f'{cfg.split}.jsonl'}: no questions")
    variant, backbone = asked_model(cfg.model)
    sentences = heldout_sentences(cfg) if cfg.heldout_text is not None else []
    model, tokenizer = load_asked_lm(cfg.model, variant, backbone)

    questions = [qa_text(r)[0] for r in records]
    answers = answer_questions(model, tokenizer, questions, cfg.batch_size, cfg.max_new_tokens)
    rows = [score_answer(r, answer) for r, answer in zip(records, answers, strict=True)]
    loss = heldout_loss(model, tokenizer, sentences, cfg.batch_size) if sentences else None
    report = {
        "model": str(cfg.model),
        "variant": variant,
        "backbone": str(backbone),
        "split": cfg.split,
        **accuracy_report(rows),
        "heldout_text_loss": None if loss is None else round(loss.loss, 4),
        "heldout_sentences": 0 if loss is None else loss.sentences,
        "heldout_tokens": 0 if loss is None else loss.tokens,
    }
    atomic_write_text(cfg.out / "answers.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    heldout = "none" if loss is None else f"{loss.loss:.4f} over {loss.sentences} sentences"
    log.info(
        "text %s (%s): accuracy %.1f%% over %d %s questions; held-out text loss %s",
        cfg.model,
        variant,
        100 * report["text_accuracy"],
        len(rows),
        cfg.split,
        heldout,
    )
    return cfg.out / "report.json"


def score_answer(record: dict[str, Any], answer: str) -> dict[str, Any]:
    """A line of answers.jsonl: the record's id, family, question and expected answer, the answer and its mark."""
    question, expected = qa_text(record)
    return {
        "id": record["id"],
        "family": record["family"],
        "question": question,
        "expected": expected,
        "answer": answer,
        "correct": answer_is_correct(record["family"], expected, answer),
    }


def accuracy_report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """`questions`, `text_accuracy` and `by_family` ({family: {questions, accuracy}}) of scored answers."""
    families: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        families[row["family"]].append(row["correct"])
    return {
        "questions": len(rows),
        "text_accuracy": round(sum(r["correct"] for r in rows) / len(rows), 4),
        "by_family": {
            family: {"questions": len(marks), "accuracy": round(sum(marks) / len(marks), 4)}
            for family, marks in sorted(families.items())
        },
    }


def heldout_sentences(cfg: Config) -> list[str]:
    """`cfg.heldout_sentences` sentences of `cfg.heldout_text` that no clip of `cfg.corpus` says, drawn with seed 0."""
    import random

    from data_builders.text_sources import load_sentences

    assert cfg.heldout_text is not None
    said = set()
    if cfg.corpus is not None:
        said = set(corpus_sentences(cfg.corpus, trained=True)) | set(corpus_sentences(cfg.corpus, trained=False))
    pool = load_sentences(cfg.heldout_text, max_sentences=None, seed=0, min_words=3, max_words=16)
    pool = [s for s in pool if s not in said]
    if not pool:
        raise ValueError(f"{cfg.heldout_text}: no sentence that {cfg.corpus} does not say")
    chosen = sorted(random.Random(0).sample(range(len(pool)), min(cfg.heldout_sentences, len(pool))))
    return [pool[i] for i in chosen]


def asked_model(folder: Path) -> tuple[str, str | Path]:
    """(variant, the LM asked): `folder` itself (or a `.gguf` file), or the backbone a frozen-variant folder names
    (a folder, or a hub id that `load_lm` resolves); a folder without config.json is an error before anything loads."""
    from speechgpt.infer.frozen_loading import META, model_variant
    from speechgpt.model.frozen_checkpoint import META as META_FILE
    from speechgpt.model.frozen_checkpoint import read_speech_meta
    from speechgpt.model.load import is_gguf

    if is_gguf(folder) and folder.is_file():
        return "unified", folder
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    variant = model_variant(folder)
    backbone = folder if variant == "unified" else read_speech_meta(folder).get(META["backbone"])
    if not backbone:
        raise ValueError(f"{folder / META_FILE}: names no backbone (key {META['backbone']!r})")
    local = Path(backbone)
    if local.is_dir() and not (local / "config.json").is_file():
        named = f" (the backbone {folder / META_FILE} names)" if variant == "frozen" else ""
        raise ValueError(f"{local}{named}: no config.json, not an HF causal-LM folder")
    return variant, backbone


def load_asked_lm(folder: Path, variant: str, backbone: str | Path) -> tuple[Any, Any]:
    """The LM asked, in float32 and eval mode, with its tokenizer; a frozen variant's backbone must be the LLM its
    speech modules trained with (weights fingerprint), else the numbers would describe another model."""
    from speechgpt.infer.frozen_loading import META, load_checked_lm
    from speechgpt.model.frozen_checkpoint import read_speech_meta
    from speechgpt.model.load import load_lm

    fingerprint = read_speech_meta(folder).get(META["lm_fingerprint"]) if variant == "frozen" else None
    if fingerprint:
        model, tokenizer = load_checked_lm(backbone, fingerprint, "float32", folder)
    else:
        model, tokenizer = load_lm(backbone)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{backbone}: its tokenizer has no EOS token (stage 0 closes every line with one)")
    return model.float().eval(), tokenizer


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """BOS (when the tokenizer has one), then the text's tokens: how stage 0's rows were tokenized."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + list(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.inference_mode()
def answer_questions(
    model: Any, tokenizer: Any, questions: list[str], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy answers to `question?` prompts, batched with left padding: the continuation up to EOS, cut at the
    first "." and stripped."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        prompts = [prompt_ids(tokenizer, qa_prompt(q)) for q in questions[start : start + batch_size]]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        generated = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for tokens in generated[:, width:].tolist():
            tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            answers.append(text.split(ANSWER_END)[0].strip())
    return answers


@dataclass(frozen=True)
class HeldoutLoss:
    loss: float
    """Mean cross-entropy per scored token (nats)."""
    sentences: int
    """Sentences scored."""
    tokens: int
    """Tokens scored (every token but BOS, EOS included)."""


@torch.inference_mode()
def heldout_loss(model: Any, tokenizer: Any, sentences: list[str], batch_size: int) -> HeldoutLoss:
    """Token-weighted mean cross-entropy of `sentences`, each tokenized as stage 0 tokenized its text rows (BOS,
    the sentence, EOS; every token after BOS predicted), scored in right-padded batches."""
    from speechgpt.training.data import IGNORE, tokenize_rows

    rows = [text_row(f"heldout-text-{i:05d}", s, tokenizer.eos_token) for i, s in enumerate(sentences)]
    limit = int(getattr(model.config, "max_position_embeddings", None) or 1 << 30)
    examples, skipped = tokenize_rows(rows, tokenizer, limit)
    if skipped:
        log.warning("held-out sentences left out: %s", dict(skipped))
    if not examples:
        raise ValueError("no held-out sentence fits the model's context")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        width = max(len(e.input_ids) for e in batch)
        input_ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [IGNORE] * (width - len(e.labels)) for e in batch])
        attention_mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch])
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
        targets = labels[:, 1:].to(logits.device).reshape(-1)
        predicted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
        total += F.cross_entropy(predicted, targets, ignore_index=IGNORE, reduction="sum").item()
        tokens += int((targets != IGNORE).sum())
    return HeldoutLoss(total / tokens, len(examples), tokens)
