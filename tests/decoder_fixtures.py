"""Stand-ins for what the frozen variant's speech decoder reads of an LLM: its input embeddings and its tokenizer's
decode (no model, no download)."""

from __future__ import annotations

import torch


class WordTokenizer:
    """decode() joins fixed texts per token id, and remembers the ids it decoded."""

    def __init__(self, words: dict[int, str]) -> None:
        self.words = words
        self.decoded: list[int] = []

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        self.decoded += ids
        return "".join(self.words[i] for i in ids)


class EmbeddingLM(torch.nn.Module):
    """An LLM with nothing but its input embeddings (vocab x width)."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed
