"""Stage 3, chain-of-modality fine-tuning with LoRA (SpeechGPT: r=8, alpha=16 on q and v). Unlike SpeechGPT, the
unit and marker embedding rows stay trainable (peft trainable tokens), so speech tokens keep adapting."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechgpt.model.load import load_lm
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.training.config import LoraSettings
from speechgpt.training.export import FINAL, gathered_state_dict
from speechgpt.training.lm_stage import LMStageConfig, Prepared, run_lm_stage

log = logging.getLogger(__name__)
ADAPTER = "adapter"
COM_TASKS = ["com_s2s", "com_s2t", "com_t2s", "com_t2t", "direct_s2t"]


@dataclass(kw_only=True)
class Config(LMStageConfig):
    """The stage-2 model (<stage2 out>/final) and the stage-3 dataset (`speechgpt build stage3`)."""

    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapter settings."""


def run(cfg: Config) -> Path:
    result = run_lm_stage(
        cfg,
        expected_tasks=COM_TASKS,
        adapt=lambda prepared: add_lora(prepared, cfg.lora),
        export=lambda engine, prepared, out: export_lora(engine, prepared, out, cfg),
    )
    return result.out / (FINAL if cfg.lora.merge else ADAPTER)


def add_lora(prepared: Prepared, settings: LoraSettings) -> Any:
    from peft import LoraConfig, get_peft_model

    model = prepared.model
    tokens: dict[str, list[int]] | None = None
    if settings.train_speech_embeddings:
        ids = prepared.vocab.new_ids
        tokens = {_module_name(model, model.get_input_embeddings()): ids}
        if not model.config.tie_word_embeddings:
            tokens[_module_name(model, model.get_output_embeddings())] = ids
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        trainable_token_indices=tokens,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def export_lora(engine: Any, prepared: Prepared, out: Path, cfg: Config) -> None:
    """The adapter (<out>/adapter, loads with peft) and, on request, base + adapter merged (<out>/final)."""
    state = gathered_state_dict(engine)
    if engine.global_rank != 0:
        return
    engine.module.save_pretrained(out / ADAPTER, state_dict=state)
    prepared.tokenizer.save_pretrained(out / ADAPTER)
    if cfg.lora.merge:
        from peft import PeftModel

        base, tokenizer = load_lm(cfg.model)
        add_speech_tokens(base, tokenizer, cfg.units)
        merged = PeftModel.from_pretrained(base, out / ADAPTER).merge_and_unload()
        merged.save_pretrained(out / FINAL, safe_serialization=True)
        prepared.tokenizer.save_pretrained(out / FINAL)
        log.info("exported adapter %s and merged model %s", out / ADAPTER, out / FINAL)


def _module_name(model: Any, module: Any) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name.rsplit(".", 1)[-1]
    raise ValueError("embedding module not found in the model")
