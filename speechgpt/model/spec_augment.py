"""SpecAugment (Park et al., 2019) for the frozen variant's speech encoder: while it trains, bands of feature
dimensions and spans of frames of each clip are masked, so a recognizer trained on a few voices leans less on what
is particular to them. A masked value is the feature's CMVN mean, which the encoder normalizes to 0."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(kw_only=True)
class SpecAugment:
    feature_masks: int = 0
    """Bands of feature dimensions masked per clip (0: none)."""
    feature_width: int = 0
    """Each band's width at most (drawn uniformly from 0 to it)."""
    time_masks: int = 0
    """Spans of frames masked per clip (0: none)."""
    time_width: int = 0
    """Each span's length in frames at most (drawn uniformly from 0 to it; never past the clip's end)."""

    @property
    def active(self) -> bool:
        return (self.feature_masks > 0 and self.feature_width > 0) or (self.time_masks > 0 and self.time_width > 0)


def spec_augment(
    features: torch.Tensor,
    lengths: torch.Tensor,
    settings: SpecAugment,
    fill: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T, F) padded features with each clip's masks applied (a copy); `fill` (F,) is what a masked value
    becomes; frames past a clip's length are left as they are."""
    if not settings.active:
        return features
    out = features.clone()
    batch, _, dims = features.shape
    positions = torch.arange(features.shape[1], device=features.device)
    dim_positions = torch.arange(dims, device=features.device)

    def draw(high: int) -> int:
        return int(torch.randint(0, max(high, 0) + 1, (1,), generator=generator))

    for b in range(batch):
        length = int(lengths[b])
        for _ in range(settings.feature_masks if settings.feature_width > 0 else 0):
            width = min(draw(settings.feature_width), dims)
            start = draw(dims - width)
            band = (dim_positions >= start) & (dim_positions < start + width)
            out[b, :length, band] = fill[band].to(out.dtype)
        for _ in range(settings.time_masks if settings.time_width > 0 else 0):
            width = min(draw(settings.time_width), length)
            start = draw(length - width)
            span = (positions >= start) & (positions < start + width)
            out[b, span] = fill.to(out.dtype)
    return out
