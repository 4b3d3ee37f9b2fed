"""Measurements the benchmarks share."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from speechgpt.training.data import BatchPlan, Tokenized


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, reps: int = 10) -> float:
    """GFLOP/s of an n x n matrix product on this CPU, in `dtype`, with the threads torch has now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def useful_tokens_per_second(out: Path, skip: int) -> float:
    """Non-pad tokens per second of a training run's steps after the first `skip`, from its metrics.jsonl."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "tokens" in r and r["step"] > skip]
    return sum(r["tokens"] for r in timed) / sum(r["seconds"] for r in timed)


def flops_per_token(model: torch.nn.Module, examples: Sequence[Tokenized]) -> float:
    """Model FLOPs per trained-on token (forward and backward) of a decoder LM on these examples:
    6 * matmul parameters (LM head included, embedding lookup not) + 6 * layers * hidden * n, where
    n = sum(len^2) / sum(len) (causal attention within each example)."""
    config = model.config
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    lengths = [len(e.input_ids) for e in examples]
    attended = sum(n * n for n in lengths) / sum(lengths)
    return 6 * matmul + 6 * config.num_hidden_layers * config.hidden_size * attended


def padding_share(examples: Sequence[Tokenized], batch: int) -> float:
    """Share of the padded micro-batches' tokens that are padding, over one epoch of the padded plan."""
    plan = BatchPlan(examples, seq_len=10**9, micro_batch=batch, packing=False, seed=0, pad_id=0)
    real = sum(plan.real_tokens(rows) for rows in plan.epoch(0))
    total = sum(plan.collate(rows)["input_ids"].numel() for rows in plan.epoch(0))
    return 1 - real / total
