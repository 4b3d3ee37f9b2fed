"""Pieces of a streaming speech encoder: strided causal convolutions that stream with a left-context cache, chunk
attention masks with limited left context, rotary positions, and a pre-norm transformer layer that runs either on a
whole masked sequence or on one chunk after its cached keys and values.

Rotary positions keep attention a function of frame distance only, and limited left context bounds that distance,
so an encoder listening for minutes never meets a distance it was not trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KeyValue = tuple[torch.Tensor, torch.Tensor]


def causal_strided_conv(
    conv: nn.Module, x: torch.Tensor, history: torch.Tensor | None, kernel: int, stride: int
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Run `conv` (kernel and stride along dim 2, no padding of its own) over `history` + `x` along dim 2.

    Output frame j reads input frames stride*j - (kernel - stride) .. stride*j + stride - 1, so a clip of T frames
    gives T // stride outputs, none reading past the clip. `history` (None: zeros, the clip start) holds the
    kernel - stride frames before `x` plus any frames not yet consumed; the returned one goes with the next piece,
    so feeding a clip piece by piece gives the same outputs as one call. Output None: no frame completed."""
    context = kernel - stride
    if history is None:
        shape = list(x.shape)
        shape[2] = context
        history = x.new_zeros(shape)
    x = torch.cat([history, x], dim=2)
    count = (x.shape[2] - context) // stride
    rest = x.narrow(2, stride * count, x.shape[2] - stride * count)
    if count == 0:
        return None, rest
    return conv(x.narrow(2, 0, context + stride * count)), rest


def chunk_attention_mask(lengths: torch.Tensor, max_len: int, chunk: int, left_chunks: int) -> torch.Tensor:
    """(B, 1, T, T) bool, True where query frame i may read key frame j: j in i's chunk or in the `left_chunks`
    chunks before it (all before it when negative), and j inside the clip. Every frame reads itself, so padding
    rows stay finite; valid rows are unchanged by that."""
    pos = torch.arange(max_len, device=lengths.device)
    chunk_of = pos // chunk
    allowed = chunk_of[None, :] <= chunk_of[:, None]
    if left_chunks >= 0:
        allowed &= chunk_of[None, :] >= chunk_of[:, None] - left_chunks
    inside = pos[None, :] < lengths[:, None]  # (B, T) keys
    mask = allowed[None] & inside[:, None, :]
    mask |= torch.eye(max_len, dtype=torch.bool, device=lengths.device)[None]
    return mask[:, None]


class Rotary(nn.Module):
    """Rotary position embedding of query/key heads at absolute frame positions."""

    inv_freq: torch.Tensor

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: (B, heads, T, head_dim) at positions start .. start + T - 1."""
        pos = torch.arange(start, start + x.shape[2], dtype=torch.float32, device=x.device)
        angles = pos[:, None] * self.inv_freq[None, :]  # (T, head_dim / 2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: self-attention (rotary) then a feed-forward block, each with a residual."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, rotary: Rotary) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"encoder width {dim} is not a multiple of its {num_heads} heads")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.rotary = rotary

    def forward(
        self, x: torch.Tensor, start: int, mask: torch.Tensor | None, past: KeyValue | None = None
    ) -> tuple[torch.Tensor, KeyValue]:
        """x: (B, T, dim) at positions start..; mask: (B, 1, T, T + past frames) or None (all readable).
        Returns the output and this call's keys/values (rotated), for a cache."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = self.rotary(q, start), self.rotary(k, start)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(b, t, d)))
        x = x + self.dropout(self.ffn(self.norm2(x)))
        return x, (k, v)
