"""How each text token is spelled, for a speech decoder that must say words it rarely or never heard.

The frozen variant's speech decoder reads the LLM's token embeddings, which say what a token means to the LLM, not
how it sounds: a token the answer voice seldom spoke is a row the decoder barely learned. Its spelling (the UTF-8
bytes the tokenizer decodes it to, leading space included) is shared with every other word that has those letters,
so the decoder can learn letters -> sounds once and say new words with it.

    spelling = TokenSpelling(tokenizer)
    spelled = spelling(ids)          # (B, T) token ids -> (B, T, SPELLING_BYTES) byte ids + 1, 0 past the end
    vectors = Speller(256)(spelled)  # (B, T, 256)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SPELLING_BYTES = 16
"""Bytes of a token's spelling that are read (a longer token is cut; byte-level BPE tokens rarely are)."""


class TokenSpelling:
    """Token ids -> the bytes of their text, from a tokenizer; each id is decoded once and remembered."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._rows: dict[int, list[int]] = {}

    def row(self, token: int) -> list[int]:
        """SPELLING_BYTES byte ids of one token (byte + 1; 0 pads)."""
        if token not in self._rows:
            data = self.tokenizer.decode([token]).encode("utf-8")[:SPELLING_BYTES]
            self._rows[token] = [b + 1 for b in data] + [0] * (SPELLING_BYTES - len(data))
        return self._rows[token]

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """(..., T) token ids -> (..., T, SPELLING_BYTES) byte ids; negative ids (padding) spell nothing."""
        flat = [self.row(int(i)) if i >= 0 else [0] * SPELLING_BYTES for i in ids.reshape(-1).tolist()]
        return torch.tensor(flat, dtype=torch.long, device=ids.device).reshape(*ids.shape, SPELLING_BYTES)


class Speller(nn.Module):
    """(B, T, SPELLING_BYTES) byte ids -> (B, T, dim): each byte's embedding plus its place in the token, summed
    over the token's bytes, through a small MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bytes = nn.Embedding(257, dim, padding_idx=0)
        self.places = nn.Parameter(torch.zeros(SPELLING_BYTES, dim))
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        nn.init.normal_(self.bytes.weight, std=0.02)
        nn.init.normal_(self.places, std=0.02)
        with torch.no_grad():
            self.bytes.weight[0].zero_()

    def forward(self, spelled: torch.Tensor) -> torch.Tensor:
        if spelled.shape[-1] != SPELLING_BYTES:
            raise ValueError(f"spelled tokens have {spelled.shape[-1]} bytes, expected {SPELLING_BYTES}")
        present = (spelled > 0).unsqueeze(-1).to(self.places.dtype)
        return self.mlp(((self.bytes(spelled) + self.places) * present).sum(-2))
