"""What the three SpeechGPT stages have in common: a causal LM with the speech vocabulary, an instruct dataset,
the engine, and a Hugging Face export. Each stage file only says which model, which data and what is trained."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechgpt.config import save_config
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.load import load_lm
from speechgpt.model.vocab import SpeechVocab, add_speech_tokens
from speechgpt.text.units import UnitFormat
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import Tokenized, tokenize_rows
from speechgpt.training.distributed import Dist, setup_process
from speechgpt.training.engine import RunResult, seed_everything, train
from speechgpt.training.packed_attention import restore_attention, use_packed_attention

log = logging.getLogger(__name__)
FINAL = "final"


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

    @property
    def units(self) -> UnitFormat:
        return UnitFormat(self.unit_format, self.units_k)


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
    prepare_attention(model, packing=cfg.train.packing)
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
    evals = {}
    for split in cfg.train.eval_splits:
        if split in data:
            rows = data[split].select(range(min(len(data[split]), cfg.train.max_eval_examples)))
            evals[split] = tokenize_rows(rows, tokenizer, cfg.train.seq_len)[0]
    return Prepared(model, tokenizer, vocab, train_rows, evals)


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
    trainable = sum(p.numel() for p in prepared.model.parameters() if p.requires_grad)
    if dist.is_main:
        log.info("trainable parameters: %d of %d", trainable, sum(p.numel() for p in prepared.model.parameters()))
    exporter = export or (lambda engine, prepared, out: export_full(engine, prepared.tokenizer, out))
    return train(
        cfg.train,
        prepared.model,
        prepared.train,
        cfg.out,
        pad_id=prepared.tokenizer.pad_token_id,
        eval_sets=prepared.evals,
        export=lambda engine, out: exporter(engine, prepared, out),
        dist=dist,
    )


def prepare_attention(model: Any, packing: bool = True) -> None:
    """Attention that keeps packed examples apart without computing across them: flash-attention's varlen kernel
    on GPU when installed, per-example SDPA otherwise. Padded batches (`packing=False`) keep transformers' SDPA
    with the padding mask, which batches the rows and measured faster than one causal call per row on CPU
    (`make bench-train`). The KV cache is off for training (with it, transformers would not read restarting
    position ids as packed examples)."""
    import importlib.util

    import torch

    model.config.use_cache = False
    if not packing:
        model.set_attn_implementation("sdpa")
    elif torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        model.set_attn_implementation("flash_attention_2")
    else:
        use_packed_attention(model)


def export_full(engine: Any, tokenizer: Any, out: Path) -> None:
    """HF `save_pretrained` of the trained model into <out>/final (ZeRO-3 shards gathered first)."""
    state = gathered_state_dict(engine)
    if engine.global_rank == 0:
        model = engine.module
        model.config.use_cache = True  # turned off for packed training only
        restore_attention(model)
        model.save_pretrained(out / FINAL, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out / FINAL)
        log.info("exported %s", out / FINAL)


def gathered_state_dict(engine: Any) -> dict[str, Any] | None:
    """The full state dict on rank 0: under ZeRO-3 every rank must take part in gathering; else None (use module's)."""
    if engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return None
