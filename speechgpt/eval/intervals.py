"""How much an accuracy over a few dozen questions can say: the Wilson score interval of a rate."""

from __future__ import annotations

import math


def wilson_interval(rate: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z = 1.96) of a rate measured over `total` trials. Unlike the normal
    approximation it stays inside [0, 1] and is not zero-width at 0% or 100%: 0 of 46 is 0-7.7%."""
    if total < 1:
        raise ValueError("an interval needs at least one trial")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"a rate is in [0, 1], got {rate}")
    z2 = z * z
    centre = (rate + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * math.sqrt(rate * (1 - rate) / total + z2 / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)
