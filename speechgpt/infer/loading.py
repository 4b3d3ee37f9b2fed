"""Load a chat model for inference: an HF model folder (a stage's `final/` or a merged export), a peft adapter folder
(`adapter_config.json`) over its base, or SpeechGPT's released layout (a LLaMA base with legacy `<661>` unit tokens plus
a LoRA adapter folder without a tokenizer). The unit format is read off the tokenizer's vocabulary, never configured.

    loaded = load_chat_model("out/stage3/adapter")                       # base found in adapter_config.json
    loaded = load_chat_model("SpeechGPT-7B-com", base="SpeechGPT-7B-cm")  # released layout
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from speechgpt.model.load import DType, load_lm
from speechgpt.text.template import SYSTEM_CONFIG_KEY
from speechgpt.text.units import UnitFormat, detect_unit_format

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
Layout = Literal["model", "adapter"]


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready for `generate`, its tokenizer, and the unit format found in the tokenizer."""

    model: Any
    """The causal LM in eval mode (a LoRA adapter merged into it unless `merge=False`)."""
    tokenizer: Any
    """Its tokenizer, with the unit tokens (and, in our format, the template markers) as added tokens."""
    units: UnitFormat
    """Unit token format and codebook size, detected from the vocabulary."""
    layout: Layout
    """'model': a plain HF folder; 'adapter': a peft adapter applied over its base."""
    source: str
    """The folder (or hub id) the model was loaded from."""
    system: str | None = None
    """The system text the model was trained with (its config.json's `speechgpt_system`, written by the stages);
    None when the model does not say."""


def load_chat_model(
    path: str | Path,
    *,
    base: str | Path | None = None,
    dtype: DType = "float32",
    device: str | None = None,
    merge: bool = True,
) -> LoadedModel:
    """Load an HF model folder or a peft adapter folder for chat.

    `base` is the model the adapter was trained on; without it, the adapter's `base_model_name_or_path` is used. The
    tokenizer comes from the adapter folder when it has one (stage 3 saves it there), else from the base (SpeechGPT's
    released adapter). `device` defaults to CUDA when available."""
    import torch

    path = Path(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (path / ADAPTER_CONFIG).exists():
        model, tokenizer = _load_adapter(path, base, dtype, merge)
        layout: Layout = "adapter"
    else:
        if base is not None:
            raise ValueError(f"{path} is not an adapter folder (no {ADAPTER_CONFIG}), so `base` does not apply")
        model, tokenizer = load_lm(path, dtype)
        layout = "model"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    units = detect_unit_format(tokenizer)
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        raise ValueError(f"{path}: the model has {rows} embedding rows for a tokenizer of {len(tokenizer)} tokens")
    model.to(device).eval()
    log.info("loaded %s (%s, units %s k=%d) on %s", path, layout, units.name, units.k, device)
    system = getattr(model.config, SYSTEM_CONFIG_KEY, None)
    return LoadedModel(model, tokenizer, units, layout, str(path), system if isinstance(system, str) else None)


def _load_adapter(path: Path, base: str | Path | None, dtype: DType, merge: bool) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    settings = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = base or settings.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path / ADAPTER_CONFIG} names no base model: pass base=<folder of the model it adapts>")
    model, tokenizer = load_lm(base, dtype)
    if _has_tokenizer(path):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < len(tokenizer):
        log.warning("base %s: %d embedding rows for %d tokens; resizing before the adapter", base, rows, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    try:
        adapted = PeftModel.from_pretrained(model, str(path))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"cannot apply adapter {path} to base {base}: {err}") from None
    return (adapted.merge_and_unload() if merge else adapted), tokenizer


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))
