"""Measurements the benchmarks share."""

from __future__ import annotations

import time

import torch


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, reps: int = 10) -> float:
    """GFLOP/s of an n x n matrix product on this CPU, in `dtype`, with the threads torch has now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
