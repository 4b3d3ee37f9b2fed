"""Load and save causal LMs with their tokenizers (a local folder in HF layout or a hub id)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)
DType = Literal["float32", "bfloat16", "float16"]


def load_lm(path: str | Path, dtype: DType = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a folder or hub id; a folder that is not an LM gives a clear error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load a causal LM from {path}: {err}") from None
    return model, tokenizer


def save_lm(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """`save_pretrained` (safetensors) of model and tokenizer into one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    log.info("saved model and tokenizer to %s", out)
    return out
