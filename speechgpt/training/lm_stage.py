"""What the three SpeechGPT stages have in common: a causal LM with the speech vocabulary, an instruct dataset,
the engine, and a Hugging Face export. Each stage file only says which model, which data and what is trained."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechgpt.config import save_config
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.load import load_lm
from speechgpt.model.row_split import join_rows, speech_token_rows
from speechgpt.model.vocab import SpeechVocab, add_speech_tokens
from speechgpt.text.template import SYSTEM_CONFIG_KEY, AssistantTurn, ChatTemplate, UserTurn
from speechgpt.text.units import UnitFormat
from speechgpt.training.batches import TokenBatches
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import Tokenized, tokenize_rows
from speechgpt.training.distributed import Dist, setup_process
from speechgpt.training.engine import RunResult, train
from speechgpt.training.export import FINAL, export_full
from speechgpt.training.packed_attention import prepare_attention

log = logging.getLogger(__name__)
__all__ = ["FINAL", "LMStageConfig", "Prepared", "prepare", "run_lm_stage"]


@dataclass(kw_only=True)
class LMStageConfig:
    model: str
    """Causal LM to start from: a folder in HF layout (e.g. the previous stage's <out>/final) or a hub id."""
    data: Path
    """Instruct dataset folder from `speechgpt build stage1|stage2|stage3`."""
    out: Path
    """Run folder: config.yaml, metrics.jsonl, loss_curve.png, checkpoints/, final/ (HF export)."""
    unit_format: Literal["default", "legacy"] = "default"
    """How units are written in the data (legacy: SpeechGPT's `<661>`)."""
    units_k: int = 1000
    """Size of the unit codebook (k-means k); one token per unit is added."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Engine settings (steps, batch, schedule, DeepSpeed, checkpoints)."""
    replay: TextReplay = field(default_factory=lambda: TextReplay())
    """Rehearsal: the backbone's own text mixed into the stage's training rows, so the LLM keeps what it knew."""
    speech_token_lr: float | None = None
    """Peak learning rate of the speech tokens' embedding rows (units and the markers added after them; the output
    layer's too when untied), on train.lr's schedule; null: train.lr. A pretrained LLM fine-tuned at a rate that
    keeps its text leaves its new rows nearly where they started; this lets them learn at a rate of their own
    (docs/pretrained_backbone.md). Not with ZeRO-3."""

    def __post_init__(self) -> None:
        if self.speech_token_lr is not None and self.speech_token_lr <= 0:
            raise ValueError("speech_token_lr must be > 0")
        if self.speech_token_lr is not None and self.train.zero_stage == 3:
            raise ValueError("speech_token_lr needs train.zero_stage <= 2 (its row split is not built for ZeRO-3)")

    @property
    def units(self) -> UnitFormat:
        return UnitFormat(self.unit_format, self.units_k)


@dataclass(kw_only=True)
class TextReplay:
    """Text of the kind the backbone learned (stage 0's `question? answer.` lines and corpus sentences, closed by the
    model's EOS), mixed into a stage's training rows. A small LM fine-tuned on speech alone forgets its facts within a
    few hundred steps (the demo's: 100% of the test questions answered in text before stage 1, 0% after an ASR-only
    stage 2); rehearsing its own text keeps them. No speech comes with it: the speech skills still come from the
    stage's data alone."""

    fraction: float = 0.0
    """Share of the trained tokens that are replayed text (0: none)."""
    qa: Path | None = None
    """Folder from `speechgpt build qa` whose lines are replayed."""
    qa_splits: list[str] = field(default_factory=lambda: ["train", "dev", "test"])
    """Its splits replayed: those the backbone learned."""
    corpus: Path | None = None
    """Corpus whose train-split transcripts are replayed too."""
    forms: list[Literal["plain", "chat", "chain"]] = field(default_factory=lambda: ["plain"])
    """How a QA line is replayed: 'plain' as stage 0 wrote it (`question? answer.` + EOS), 'chat' as a text-only
    chat turn of the stage's template (`[Human]: question<eoh> [SpeechGPT]: [ta] answer<eoa>`, the answer trained):
    the facts in the form the chain of modality answers in, as an instruction-tuned LLM knows them; 'chain' the
    same turn with the question repeated where a spoken question's transcript goes (`[SpeechGPT]: question; [ta]
    answer<eoa>`, only `; [ta] answer<eoa>` trained): the answer after a transcript. A tiny backbone does not carry a
    fact from one form to the other by itself; no speech comes with any."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError("replay.fraction must be in [0, 1)")
        if not self.forms or not set(self.forms) <= {"plain", "chat", "chain"}:
            raise ValueError("replay.forms must name 'plain', 'chat' and/or 'chain'")
        if self.fraction > 0 and self.qa is None and self.corpus is None:
            raise ValueError("replay.fraction > 0 needs replay.qa or replay.corpus")


def replay_rows(
    cfg: TextReplay,
    train: list[Tokenized],
    tokenizer: Any,
    seq_len: int,
    seed: int,
    units: UnitFormat,
    system: str | None = None,
) -> list[Tokenized]:
    """Text rows (cycled through in a seeded order) whose trained tokens make `cfg.fraction` of all trained tokens;
    the chat form starts with `system` (None: SpeechGPT's), the system text of the stage's data."""
    import random

    from speechgpt.text.backbone_text import corpus_sentences, load_qa_split, qa_rows, sentence_rows
    from speechgpt.text.template import system_text

    if cfg.fraction == 0:
        return []
    eos, template = tokenizer.eos_token, ChatTemplate(units, system=system_text(system))
    records = [r for s in cfg.qa_splits for r in load_qa_split(cfg.qa, s)] if cfg.qa is not None else []
    rows = qa_rows(records, eos, prefix="replay-qa") if "plain" in cfg.forms else []
    for form in [f for f in ("chat", "chain") if f in cfg.forms]:
        rows += [chat_row(record, template, form) for record in records]
    if cfg.corpus is not None:
        rows += sentence_rows(corpus_sentences(cfg.corpus, trained=True), eos, "replay-text")
    pool = tokenize_rows(rows, tokenizer, seq_len)[0]
    if not pool:
        raise ValueError("replay: no text row fits seq_len")
    random.Random(seed).shuffle(pool)
    wanted = cfg.fraction / (1 - cfg.fraction) * sum(r.trained_tokens for r in train)
    chosen: list[Tokenized] = []
    total = 0
    while total < wanted:
        row = pool[len(chosen) % len(pool)]
        chosen.append(Tokenized(f"{row.id}#{len(chosen) // len(pool)}", row.task, row.input_ids, row.labels))
        total += row.trained_tokens
    return chosen


def chat_row(record: dict[str, Any], template: ChatTemplate, form: Literal["chat", "chain"]) -> dict[str, Any]:
    """A QA record as a text-only chat turn: `chat` answers the typed question (`[ta] answer`); `chain` first
    repeats it where a spoken question's transcript goes (`question; [ta] answer`). Only `[ta] answer<eoa>` (with the
    `;` before it) is trained: the chain form teaches the answer after a transcript, not the transcript."""
    from speechgpt.text.backbone_text import qa_text

    question, answer = qa_text(record)
    transcript = question if form == "chain" else None
    chat = template.format([(UserTurn(text=question), AssistantTurn(transcript=transcript, text=answer, chain=True))])
    start, end = chat.loss_spans[0]
    if transcript is not None:
        start += len(f" {transcript}")  # the repeated question is read, not trained
    return {"id": f"replay-{form}-{record['id']}", "task": "text", "text": chat.text, "loss_spans": [[start, end]]}


@dataclass
class Prepared:
    model: Any
    tokenizer: Any
    vocab: SpeechVocab
    train: list[Tokenized]
    evals: dict[str, list[Tokenized]]


def prepare(cfg: LMStageConfig, dist: Dist, expected_tasks: Sequence[str] | None = None) -> Prepared:
    """Load the LM, add the speech vocabulary, tokenize the train split and the eval splits."""
    model, tokenizer = load_lm(cfg.model)
    prepare_attention(model, packing=cfg.train.packing, shared_prefix=cfg.train.shared_prefix)
    vocab = add_speech_tokens(model, tokenizer, cfg.units)
    data = load_instruct_dataset(cfg.data)
    if "train" not in data:
        raise ValueError(f"{cfg.data}: no 'train' split (splits: {list(data)})")
    if expected_tasks is not None:
        found = set(data["train"]["task"])
        if not found <= set(expected_tasks):
            raise ValueError(
                f"{cfg.data}: tasks {sorted(found - set(expected_tasks))} do not belong to this stage "
                f"(expected {sorted(expected_tasks)})"
            )
    train_rows, skipped = tokenize_rows(data["train"], tokenizer, cfg.train.seq_len)
    if skipped and dist.is_main:
        log.warning("train examples skipped: %s", dict(skipped))
    system = data_system(cfg.data)
    if system is not None:  # the export's config.json carries it to chat sessions
        setattr(model.config, SYSTEM_CONFIG_KEY, system)
    replayed = replay_rows(cfg.replay, train_rows, tokenizer, cfg.train.seq_len, cfg.train.seed, cfg.units, system)
    if replayed and dist.is_main:
        log.info("replay: %d text rows mixed into %d training rows", len(replayed), len(train_rows))
    train_rows += replayed
    evals = {}
    for split in cfg.train.eval_splits:
        if split in data:
            rows = data[split].select(range(min(len(data[split]), cfg.train.max_eval_examples)))
            evals[split] = tokenize_rows(rows, tokenizer, cfg.train.seq_len)[0]
    return Prepared(model, tokenizer, vocab, train_rows, evals)


def data_system(data: Path) -> str | None:
    """The system text an instruction dataset's examples start with (its builder's summary.json), None when the
    folder does not say (stage 1's unit sequences, or a dataset made elsewhere)."""
    summary = Path(data) / "summary.json"
    if not summary.is_file():
        return None
    value = json.loads(summary.read_text(encoding="utf-8")).get("system")
    return value if isinstance(value, str) else None


def run_lm_stage(
    cfg: LMStageConfig,
    expected_tasks: Sequence[str],
    adapt: Callable[[Prepared], Any] | None = None,
    export: Callable[[Any, Prepared, Path], None] | None = None,
) -> RunResult:
    """Prepare, optionally adapt the model (freeze, LoRA: return the model to train), train, export."""
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)  # new embedding rows are sampled: same seed, same model
    prepared = prepare(cfg, dist, expected_tasks)
    if adapt is not None:
        prepared.model = adapt(prepared)
    lr_groups = []
    if cfg.speech_token_lr is not None:
        lr_groups.append((speech_token_rows(prepared.model, min(prepared.vocab.unit_ids)), cfg.speech_token_lr))
    trainable = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    if dist.is_main:
        log.info("trainable parameters: %d of %d", trainable, sum(p.numel() for p in prepared.model.parameters()))
    exporter = export or (lambda engine, prepared, out: export_full(engine, prepared.tokenizer, out))

    def joined_export(engine: Any, out: Path) -> None:
        join_rows(engine.module)
        exporter(engine, prepared, out)

    batches = TokenBatches.for_config(cfg.train, prepared.train, prepared.tokenizer.pad_token_id, prepared.evals)
    return train(
        cfg.train,
        prepared.model,
        batches,
        cfg.out,
        export=joined_export,
        dist=dist,
        lr_groups=lr_groups,
        settings=cfg,
    )
