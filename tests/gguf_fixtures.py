"""A tiny Llama written as a GGUF file, the way llama.cpp's convert_hf_to_gguf.py writes one (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

TENSOR_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
CONTROL, NORMAL = 3, 1


def interleave_rotary(weight: torch.Tensor, heads: int) -> np.ndarray:
    """llama.cpp's `permute`: each head's rotary halves interleaved (transformers undoes it on load)."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols).numpy()


def write_llama_gguf(model: Any, tokenizer: Any, path: Path) -> Path:
    """A float32 GGUF of a LlamaForCausalLM and its byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`)."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    add_tokenizer(writer, tokenizer)
    for name, tensor in model.state_dict().items():
        gguf_name = tensor_name(name)
        if gguf_name is None:
            continue
        data = tensor.detach().float()
        if name.endswith("q_proj.weight"):
            array = interleave_rotary(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            array = interleave_rotary(data, cfg.num_key_value_heads)
        else:
            array = data.numpy()
        writer.add_tensor(gguf_name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def tensor_name(name: str) -> str | None:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")  # model.layers.<i>.<module>.<proj>.weight
    if parts[:2] == ["model", "layers"]:
        return f"blk.{parts[2]}.{TENSOR_NAMES['.'.join(parts[3:-1])]}.weight"
    return None


def add_tokenizer(writer: Any, tokenizer: Any) -> None:
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([CONTROL if token in special else NORMAL for token in tokens])
    merges = state["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
