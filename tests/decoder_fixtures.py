"""Stand-ins for what the frozen variant's speech decoder reads of an LLM (its input embeddings and its tokenizer's
decode; no model, no download), and one short fit of a decoder on a batch."""

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


def fit_decoder(
    decoder: torch.nn.Module, embeds: torch.Tensor, lengths: torch.Tensor, units: torch.Tensor, **read: object
) -> tuple[float, dict[str, torch.Tensor]]:
    """150 Adam steps (lr 3e-3) of the decoder's teacher-forced loss on one batch, `read` its spelled / phonemes;
    returns the first step's units loss and the last step's loss parts, and leaves the decoder in eval mode."""
    decoder.train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        parts = decoder.loss(embeds, lengths, units, **read)
        first = first if first is not None else float(parts["units"])
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
    decoder.eval()
    return float(first), parts
