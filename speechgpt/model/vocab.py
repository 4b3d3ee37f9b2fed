"""Add unit and marker tokens to any Hugging Face causal LM and its tokenizer.

New embedding rows (input, and output when untied) are drawn from a normal distribution with the mean and covariance
of the existing rows (transformers' mean resizing), so the model's predictions do not change at step 0 and new
tokens start where real tokens live, not at a default random init.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from speechgpt.text.template import marker_tokens
from speechgpt.text.units import UnitFormat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechVocab:
    """Token ids of the speech vocabulary inside one tokenizer."""

    unit_ids: list[int]
    """Token id of unit 0, 1, ..., k-1."""
    marker_ids: dict[str, int]
    """Token id of each template marker ([Human]:, <eoa>, <sosp>, ...)."""

    @property
    def new_ids(self) -> list[int]:
        return sorted(set(self.unit_ids) | set(self.marker_ids.values()))


def add_speech_tokens(
    model: Any, tokenizer: Any, units: UnitFormat, pad_to_multiple_of: int | None = 64
) -> SpeechVocab:
    """Add every unit token and template marker as special tokens, resize the embeddings, return their ids.

    Idempotent: tokens already in the tokenizer are kept, so a stage-1 checkpoint passes through unchanged.
    """
    wanted = units.tokens() + marker_tokens()
    added = tokenizer.add_tokens(wanted, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or "<eoa>"
    if added or model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)
        log.info(
            "added %d speech tokens; embeddings %d -> %d rows", added, old, model.get_input_embeddings().weight.shape[0]
        )
    return speech_vocab(tokenizer, units)


def speech_vocab(tokenizer: Any, units: UnitFormat) -> SpeechVocab:
    """Ids of the speech tokens in a tokenizer that already has them; raises naming a missing one."""

    def single_id(token: str) -> int:
        ids = tokenizer.convert_tokens_to_ids([token])
        if not ids or ids[0] is None or ids[0] == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no token {token!r}: run add_speech_tokens first")
        return int(ids[0])

    return SpeechVocab([single_id(t) for t in units.tokens()], {m: single_id(m) for m in marker_tokens()})
