"""Varlen attention for packed rows without flash-attn: causal SDPA run per example segment.

transformers isolates packed examples (position ids restarting at 0) with a block-diagonal mask, but SDPA still
computes the whole row-by-row square and discards the cross-example part, so on CPU packing bought nothing. This
attention function cuts each row at its position-id restarts and runs causal SDPA on each example alone, the way
flash-attention's varlen kernel does on GPU. Training batches are right-padded, so causal attention never lets a
real token see padding and no mask is needed. Use it for training only: `use_packed_attention` switches a model to
it, `restore_attention` switches back before export.
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
        bounds = segment_bounds(row_positions, query.shape[2])
        parts = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                is_causal=True,
                scale=scaling,
                dropout_p=dropout_p,
            )
            for s, e in bounds
        ]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def segment_bounds(positions: torch.Tensor | None, length: int) -> list[tuple[int, int]]:
    """[start, end) of each example in a row: a new one starts wherever the position id is 0."""
    if positions is None:
        return [(0, length)]
    starts = (positions == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
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


def prepare_attention(model: Any, packing: bool = True) -> None:
    """Attention that keeps packed examples apart without computing across them: flash-attention's varlen kernel
    on GPU when installed, per-example SDPA otherwise. Padded batches (`packing=False`) keep transformers' SDPA
    with the padding mask, which batches the rows and measured faster than one causal call per row on CPU
    (`make bench-train`). The KV cache is off for training (with it, transformers would not read restarting
    position ids as packed examples)."""
    import importlib.util

    model.config.use_cache = False
    if not packing:
        model.set_attn_implementation("sdpa")
    elif torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        model.set_attn_implementation("flash_attention_2")
    else:
        use_packed_attention(model)
