"""Load and save causal LMs with their tokenizers: a local folder in HF layout, a hub id, or a GGUF file."""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)
DType = Literal["float32", "bfloat16", "float16"]


def is_gguf(path: str | Path) -> bool:
    """Whether `path` names a GGUF file (by its suffix), which `load_lm` reads as one model."""
    return str(path).endswith(".gguf")


def load_lm(path: str | Path, dtype: DType = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a folder, a hub id or a `.gguf` file; a path that is not an LM gives a clear error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_gguf(path):
        return load_gguf_lm(Path(path), dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot load a causal LM from {path}: {err}") from None
    return model, tokenizer


def load_gguf_lm(path: Path, dtype: DType = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file (llama.cpp's format, any quantization transformers reads), dequantized to
    `dtype`: from then on a plain model that trains and saves as safetensors. Needs the `gguf` package."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.is_file():
        raise ValueError(f"cannot load a causal LM from {path}: no such GGUF file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=getattr(torch, dtype)
        )
    except ImportError as err:
        raise ValueError(f"cannot read {path}: {err} (pip install gguf)") from None
    except (OSError, ValueError, KeyError, struct.error) as err:  # struct.error: a file cut short
        raise ValueError(f"cannot load a causal LM from {path}: {err}") from None
    # the weights are dequantized as they load; what stays of the quantization is the bookkeeping that would keep
    # save_pretrained from writing them and .float() from casting them
    if model.hf_quantizer is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model, tokenizer


def save_lm(model: Any, tokenizer: Any, out: str | Path) -> Path:
    """`save_pretrained` (safetensors) of model and tokenizer into one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    log.info("saved model and tokenizer to %s", out)
    return out
