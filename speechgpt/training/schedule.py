"""The learning-rate schedule every trainer uses: linear warmup, then cosine, linear or constant decay to a floor."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

Shape = Literal["cosine", "linear", "constant"]


def lr_factor(step: float, *, total: float, warmup: float, shape: Shape = "cosine", min_ratio: float = 0.1) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total`: (step + 1) / (warmup + 1) during
    warmup, then the decay `shape` from 1 down to `min_ratio` at `total`. Steps may be fractional (a run that is
    budgeted in seconds passes its progress scaled to `total`)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if shape == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if shape == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * decay


def lr_lambda(*, total: int, warmup: int, shape: Shape = "cosine", min_ratio: float = 0.1) -> Callable[[int], float]:
    """`lr_factor` as the function `torch.optim.lr_scheduler.LambdaLR` takes."""

    def factor(step: int) -> float:
        return lr_factor(step, total=total, warmup=warmup, shape=shape, min_ratio=min_ratio)

    return factor
