"""An LM's embedding rows from some id on as a parameter of their own, so an optimizer can give the speech tokens'
rows a learning rate of their own.

A pretrained LLM is fine-tuned at a rate that keeps what it knows (5e-5 for Gemma 3 270M, docs/pretrained_backbone.md),
and at that rate the rows added for units and markers, which start where real tokens live and know nothing, barely
move in a short stage. AdamW's step does not depend on the gradient's scale, so the only way to move some rows of one
matrix faster is a second parameter in a second optimizer group. Here a torch parametrization puts the matrix back
together at every use: the model's own modules (Gemma's scaled embedding included) run unchanged, and every optimizer
wrapper DeepSpeed puts around the optimizer sees two plain parameters.

    tail = split_rows(model, first=vocab.unit_ids[0])   # [input rows >= first] (+ output rows when untied)
    ... train with tail in a group of its own ...
    join_rows(model)                                    # plain weights again, ties restored, before save_pretrained
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize


class JoinedRows(nn.Module):
    """A weight held as two parameters, rows [0, first) and [first, end), joined on every read."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.first = first

    def forward(self, head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        return torch.cat([head, tail], dim=0)

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight[: self.first], weight[self.first :]


class SharedWeight(nn.Module):
    """A tied output layer's weight read from the input embedding's (joined) weight; it holds no data of its own."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.source: list[Any] = [source]  # not a submodule: its parameters are registered once, by the model

    def forward(self, _placeholder: torch.Tensor) -> torch.Tensor:
        return self.source[0].weight

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.new_empty(0)


def split_rows(model: Any, first: int) -> list[nn.Parameter]:
    """Hold rows >= `first` of the input embedding (and of an untied output layer) as parameters of their own and
    return them. The model computes exactly what it computed before."""
    embedding = model.get_input_embeddings()
    rows = embedding.weight.shape[0]
    if not 0 < first < rows:
        raise ValueError(f"cannot split the embedding's {rows} rows at row {first}")
    if is_split(model):
        raise ValueError("the embedding rows are already split")
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding.weight
    parametrize.register_parametrization(embedding, "weight", JoinedRows(first), unsafe=True)
    tails = [embedding.parametrizations.weight.original1]
    if tied:
        parametrize.register_parametrization(output, "weight", SharedWeight(embedding), unsafe=True)
        output.parametrizations.weight.original.requires_grad_(False)
    elif output is not None:
        if output.weight.shape[0] != rows:
            raise ValueError(f"output layer has {output.weight.shape[0]} rows, the embedding {rows}")
        parametrize.register_parametrization(output, "weight", JoinedRows(first), unsafe=True)
        tails.append(output.parametrizations.weight.original1)
    return tails


def is_split(model: Any) -> bool:
    return parametrize.is_parametrized(model.get_input_embeddings(), "weight")


def join_rows(model: Any) -> None:
    """Undo `split_rows`: plain weight parameters with the trained values, the output layer tied again if it was."""
    if not is_split(model):
        return
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    tied = output is not None and isinstance(output.parametrizations.weight[0], SharedWeight)
    parametrize.remove_parametrizations(embedding, "weight", leave_parametrized=True)
    if tied:
        parametrize.remove_parametrizations(output, "weight", leave_parametrized=False)
        output.weight = embedding.weight
    elif output is not None:
        parametrize.remove_parametrizations(output, "weight", leave_parametrized=True)


def speech_token_rows(model: Any, first_unit_id: int) -> list[nn.Parameter]:
    """The parameters that hold the speech tokens' rows, for a learning rate of their own: under LoRA, peft's
    trainable-token deltas (stage 3, which trains only those rows of the embedding); in full fine-tuning, the
    embedding rows from the first unit on (units, then the markers added after them), split off by `split_rows`."""
    deltas = [p for name, p in model.named_parameters() if "trainable_tokens_delta" in name and p.requires_grad]
    if deltas:
        return deltas
    if not model.get_input_embeddings().weight.requires_grad:
        raise ValueError("the speech tokens' rows do not train here (a frozen embedding without trainable tokens)")
    return split_rows(model, first_unit_id)
