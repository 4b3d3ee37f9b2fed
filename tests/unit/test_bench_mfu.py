"""The MFU bench's FLOPs per token against torch's own count of a forward and backward pass."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from benchmarks.bench_mfu import PRESETS, make_examples
from benchmarks.measure import flops_per_token


def test_flops_per_token_match_torch_flop_counter() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**PRESETS["tiny"], attn_implementation="eager"))
    (example,) = make_examples(1, PRESETS["tiny"]["vocab_size"], seed=3)
    ids = torch.tensor([example.input_ids])
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    n, config = ids.shape[1], model.config
    # eager attention computes the whole square; the bench counts the causal half
    masked_half = 6 * config.num_hidden_layers * config.hidden_size * n
    assert counter.get_total_flops() / n == pytest.approx(flops_per_token(model, [example]) + masked_half, rel=1e-9)
