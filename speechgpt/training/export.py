"""Exports of a trained DeepSpeed engine that every model family needs: the full state dict gathered across ranks
(ZeRO-3 shards), and a Hugging Face `save_pretrained` folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from speechgpt.training.packed_attention import restore_attention

log = logging.getLogger(__name__)
FINAL = "final"


def gathered_state_dict(engine: Any) -> dict[str, Any] | None:
    """The full state dict on rank 0: under ZeRO-3 every rank must take part in gathering; else None (use module's)."""
    if engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()
    return None


def export_full(engine: Any, tokenizer: Any, out: Path) -> None:
    """HF `save_pretrained` of the trained model and its tokenizer into <out>/final (ZeRO-3 shards gathered first)."""
    state = gathered_state_dict(engine)
    if engine.global_rank == 0:
        model = engine.module
        model.config.use_cache = True  # turned off for packed training only
        restore_attention(model)
        model.save_pretrained(out / FINAL, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out / FINAL)
        log.info("exported %s", out / FINAL)
