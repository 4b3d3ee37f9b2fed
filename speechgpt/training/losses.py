"""Loss functions the engine calls: `(engine, batch) -> {"loss": total, <part>: ...}`.

"loss" is what is back-propagated; every other entry is a named part (CTC, decoder, state head, ...) that is
logged beside it. The LM stages' loss has no parts: the cross-entropy of the trained tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from speechgpt.training.data import IGNORE

LossParts = dict[str, torch.Tensor]
LossFn = Callable[[Any, dict[str, torch.Tensor]], LossParts]


def token_loss(model: Any, logits_at: str = "trained") -> LossFn:
    """The loss of a token batch: the model's own `.loss`, or (logits_at='trained', models that take transformers'
    `logits_to_keep`) the mean cross-entropy of the trained tokens with the LM head run only where they are
    predicted, which is the same loss as transformers' over all positions."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model passes kwargs on
    if logits_at == "all" or "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return model_loss
    return trained_positions_loss


def model_loss(engine: Any, batch: dict[str, torch.Tensor]) -> LossParts:
    return {"loss": engine(**batch).loss}


def trained_positions_loss(engine: Any, batch: dict[str, torch.Tensor]) -> LossParts:
    """Mean cross-entropy of the trained tokens, with the LM head only where one is predicted."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)  # position t predicts t+1
    keep = targets != IGNORE
    logits = engine(**inputs, logits_to_keep=keep).logits  # (trained tokens, vocab)
    return {"loss": torch.nn.functional.cross_entropy(logits.float(), targets[keep])}


def under_autocast(loss_of: LossFn) -> LossFn:
    """`loss_of` with its forward pass under bfloat16 autocast (its backward follows the same casts); the parts
    come back in float32."""

    def autocast_loss(engine: Any, batch: dict[str, torch.Tensor]) -> LossParts:
        device = next(iter(batch.values())).device.type
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            parts = loss_of(engine, batch)
        return {name: value.float() for name, value in parts.items()}

    return autocast_loss
