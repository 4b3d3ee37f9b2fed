"""Tiny causal LMs and tokenizers built from scratch: the embedded default's backbone and the tests' models.

`build_tiny_lm` makes a random Llama, Qwen2 or Gemma 3 model from flat arguments; `train_tokenizer` trains a
byte-level BPE tokenizer on given text, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

Family = Literal["llama", "qwen2", "gemma3"]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> Any:
    """A byte-level BPE tokenizer (HF fast tokenizer) trained on `texts`; deterministic for the same texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL)


def build_tiny_lm(
    family: Family,
    tokenizer: Any,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    tie_embeddings: bool = True,
    max_positions: int = 2048,
    seed: int = 0,
) -> Any:
    """A randomly initialized causal LM of the given family (fp32) sized to the tokenizer, with its special ids."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 4 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": tie_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    if family == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=hidden_size // num_heads, sliding_window=max_positions)
        return Gemma3ForCausalLM(config)
    raise ValueError(f"unknown family {family!r} (llama, qwen2, gemma3)")
