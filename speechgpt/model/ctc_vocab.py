"""Character vocabulary and greedy decoding for the speech encoder's CTC head (the frozen variant's input stage 1).

Index 0 is the CTC blank. Transcripts are lower-cased with whitespace collapsed before they are spelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

BLANK = "<blank>"


def normalize_transcript(text: str) -> str:
    return " ".join(text.lower().split())


def build_char_vocab(texts: Iterable[str]) -> list[str]:
    """[BLANK] + the sorted characters of the normalized `texts` (deterministic for the same set of texts)."""
    chars: set[str] = set()
    for text in texts:
        chars.update(normalize_transcript(text))
    return [BLANK, *sorted(chars)]


def encode_chars(text: str, vocab: Sequence[str]) -> list[int]:
    """Indices of the normalized text's characters; characters outside `vocab` are dropped."""
    index = {c: i for i, c in enumerate(vocab) if i > 0}
    return [index[c] for c in normalize_transcript(text) if c in index]


def ctc_greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, vocab: Sequence[str]) -> list[str]:
    """Best path of (B, T, V) logits: argmax per frame, repeats merged, blanks dropped."""
    best = logits.argmax(-1).tolist()
    texts = []
    for path, length in zip(best, lengths.tolist(), strict=True):
        chars, previous = [], 0
        for index in path[:length]:
            if index != previous and index != 0:
                chars.append(vocab[index])
            previous = index
        texts.append("".join(chars))
    return texts
