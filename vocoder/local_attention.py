"""Self-attention over a band of frames, for the mel route's net.

Each frame attends to at most `left` frames behind and `right` frames ahead, so the block's receptive field is
bounded like a convolution's and a stream computes exactly the frames offline synthesis computes (vocoder/streaming.py
recomputes each frame over a window of `left_context` past and `right_context` future frames).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def band_mask(length: int, left: int, right: int, device: torch.device) -> Tensor:
    """(length, length) boolean mask: query i may read key j when i - left <= j <= i + right."""
    offset = torch.arange(length, device=device)[None, :] - torch.arange(length, device=device)[:, None]
    return (offset >= -left) & (offset <= right)


class LocalAttentionBlock(nn.Module):
    """Pre-norm transformer layer on (B, C, T) features: banded multi-head self-attention, then a GELU feed-forward
    network 4x wide, each residual. The conv layers before it give the frames their positions."""

    def __init__(self, channels: int, heads: int, left: int, right: int, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} attention heads")
        if left < 0 or right < 0:
            raise ValueError("attention window sides must be >= 0")
        self.heads, self.left, self.right = heads, left, right
        self.attention_norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.ffn_norm = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = x.transpose(1, 2)
        batch, length, channels = h.shape
        q, k, v = self.qkv(self.attention_norm(h)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        mask = band_mask(length, self.left, self.right, h.device)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, length, channels)))
        h = h + self.dropout(self.ffn(self.ffn_norm(h)))
        return h.transpose(1, 2)
