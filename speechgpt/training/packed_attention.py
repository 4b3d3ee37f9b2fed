"""Varlen attention for packed rows without flash-attn: causal SDPA run per example segment.

transformers isolates packed examples (position ids restarting at 0) with a block-diagonal mask, but SDPA still
computes the whole row-by-row square and discards the cross-example part, so on CPU packing bought nothing. This
attention function cuts each row at its position-id restarts and runs causal SDPA on each example alone, the way
flash-attention's varlen kernel does on GPU. Training batches are right-padded, so causal attention never lets a
real token see padding and no mask is needed. Use it for training only: `use_packed_attention` switches a model to
it, `restore_attention` switches back before export.

A segment whose position ids start above 0 continues the row's first tokens (shared-prefix packing,
`speechgpt.training.data`): it attends to the row's first p tokens, p its first position id, and causally to
itself, as if it followed that prefix in a row of its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

PACKED_SDPA = "packed_sdpa"


def packed_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """(batch, heads, time, dim) in -> (batch, time, heads, dim) out, causal within each example segment."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    positions = kwargs.get("position_ids")
    dropout_p = dropout if module.training else 0.0
    rows = []
    for b in range(query.shape[0]):
        row_positions = None if positions is None else positions[b if positions.shape[0] > 1 else 0]
        parts = []
        for s, e in segment_bounds(row_positions, query.shape[2]):
            prefix = int(row_positions[s]) if row_positions is not None and s > 0 else 0
            q, k, v = query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e]
            if prefix == 0:
                parts.append(
                    F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, dropout_p=dropout_p)
                )
                continue
            k = torch.cat([key[b : b + 1, :, :prefix], k], dim=2)
            v = torch.cat([value[b : b + 1, :, :prefix], v], dim=2)
            # query i reads key j when j <= prefix + i: the whole prefix, then itself causally
            mask = torch.ones(e - s, prefix + e - s, dtype=torch.bool, device=q.device).tril(prefix)
            parts.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, dropout_p=dropout_p))
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def segment_bounds(positions: torch.Tensor | None, length: int) -> list[tuple[int, int]]:
    """[start, end) of each example in a row: a new one starts wherever the position id does not go up by one from
    the token before (back to 0, or back to a shared prefix's length)."""
    if positions is None:
        return [(0, length)]
    restarts = torch.ones_like(positions, dtype=torch.bool)
    restarts[1:] = positions[1:] != positions[:-1] + 1
    starts = restarts.nonzero().flatten().tolist()
    return list(zip(starts, [*starts[1:], length], strict=True))


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_forward)
    AttentionMaskInterface.register(PACKED_SDPA, _no_mask)


def use_packed_attention(model: Any) -> None:
    register()
    model.set_attn_implementation(PACKED_SDPA)


def restore_attention(model: Any) -> None:
    """Back to plain SDPA (what any transformers install can load and generate with)."""
    model.set_attn_implementation("sdpa")


def prepare_attention(model: Any, packing: bool = True, shared_prefix: bool = False) -> None:
    """Attention that keeps packed examples apart without computing across them: flash-attention's varlen kernel
    on GPU when installed, per-example SDPA otherwise (always with `shared_prefix`, which flash-attention's kernel
    does not read). Padded batches (`packing=False`) keep transformers' SDPA
    with the padding mask, which batches the rows and measured faster than one causal call per row on CPU
    (`make bench-train`). The KV cache is off for training (with it, transformers would not read restarting
    position ids as packed examples)."""
    import importlib.util

    model.config.use_cache = False
    if not packing:
        model.set_attn_implementation("sdpa")
    elif shared_prefix:
        use_packed_attention(model)
    elif torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        model.set_attn_implementation("flash_attention_2")
    else:
        use_packed_attention(model)
