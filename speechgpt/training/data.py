"""Instruct rows -> token ids with loss labels -> micro-batches, packed (per-example isolation) or padded.

Labels are the token ids inside the row's loss spans and -100 elsewhere. In packed mode several examples share a
row; their position ids restart at 0, which transformers turns into a block-diagonal causal mask (SDPA/eager) or
varlen flash-attention, so no token attends across examples. The batch plan is a pure function of (seed, epoch),
so a resumed run continues with exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    id: str
    task: str
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def tokenize_rows(rows: Iterable[dict[str, Any]], tokenizer: Any, max_len: int) -> tuple[list[Tokenized], Counter[str]]:
    """Token ids and labels of each row; rows longer than `max_len` are skipped and counted, never truncated."""
    skipped: Counter[str] = Counter()
    out = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for row in rows:
        enc = tokenizer(row["text"], add_special_tokens=False, return_offsets_mapping=True)
        ids = bos + list(enc["input_ids"])
        offsets = [(0, 0)] * len(bos) + [tuple(o) for o in enc["offset_mapping"]]
        if len(ids) > max_len:
            skipped[f"longer than seq_len={max_len}"] += 1
            continue
        spans = [tuple(span) for span in row["loss_spans"]]
        labels = [
            tok if any(s < b and e > a for a, b in spans) else IGNORE for tok, (s, e) in zip(ids, offsets, strict=True)
        ]
        labels[0] = IGNORE  # the first token of an example is never predicted (in a packed row: not from its neighbour)
        if all(label == IGNORE for label in labels):
            skipped["no trained token"] += 1
            continue
        out.append(Tokenized(row["id"], row["task"], ids, labels))
    return out, skipped


def pack(examples: Sequence[Tokenized], order: Sequence[int], seq_len: int) -> list[list[int]]:
    """Indices of examples per packed row: fill rows in the given order, start a new row when the next one won't fit."""
    rows: list[list[int]] = []
    used = seq_len
    for index in order:
        size = len(examples[index].input_ids)
        if used + size > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(index)
        used += size
    return rows


class BatchPlan:
    """The deterministic stream of micro-batches: epoch e shuffles examples with seed + e, then packs or chunks them.

    Micro-batch m of the run goes to rank m % world; optimizer step s uses micro-batches
    [s * accum * world, (s + 1) * accum * world). Epoch lengths are computed on demand and cached.
    """

    def __init__(
        self, examples: Sequence[Tokenized], *, seq_len: int, micro_batch: int, packing: bool, seed: int, pad_id: int
    ) -> None:
        if not examples:
            raise ValueError("no training examples (all skipped or empty dataset)")
        self.examples = examples
        self.seq_len, self.micro_batch, self.packing, self.seed, self.pad_id = (
            seq_len,
            micro_batch,
            packing,
            seed,
            pad_id,
        )
        self._epochs: list[list[list[list[int]]]] = []

    def epoch(self, number: int) -> list[list[list[int]]]:
        """Micro-batches of an epoch; each is a list of rows, each row a list of example indices."""
        while len(self._epochs) <= number:
            e = len(self._epochs)
            order = list(range(len(self.examples)))
            random.Random(self.seed * 1_000_003 + e).shuffle(order)
            rows = pack(self.examples, order, self.seq_len) if self.packing else [[i] for i in order]
            self._epochs.append([rows[i : i + self.micro_batch] for i in range(0, len(rows), self.micro_batch)])
        return self._epochs[number]

    def micro_batch_at(self, index: int) -> tuple[int, list[list[int]]]:
        """(epoch, rows) of the index-th micro-batch of the run."""
        epoch = 0
        while index >= len(self.epoch(epoch)):
            index -= len(self.epoch(epoch))
            epoch += 1
        return epoch, self.epoch(epoch)[index]

    def real_tokens(self, rows: list[list[int]]) -> int:
        """Tokens of the micro-batch that are not padding (what 'useful tokens/s' counts)."""
        return sum(len(self.examples[i].input_ids) for row in rows for i in row)

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return (
            collate_packed(self.examples, rows, self.pad_id)
            if self.packing
            else collate_padded([self.examples[r[0]] for r in rows], self.pad_id)
        )


def collate_packed(examples: Sequence[Tokenized], rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids / labels / position_ids; rows padded to the longest, padding as its own isolated segment."""
    width = max(sum(len(examples[i].input_ids) for i in row) for row in rows)
    ids, labels, positions = [], [], []
    for row in rows:
        row_ids: list[int] = []
        row_labels: list[int] = []
        row_pos: list[int] = []
        for i in row:
            row_ids += examples[i].input_ids
            row_labels += examples[i].labels
            row_pos += list(range(len(examples[i].input_ids)))
        pad = width - len(row_ids)
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [IGNORE] * pad)
        positions.append(row_pos + list(range(pad)))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(positions)}


def collate_padded(examples: Sequence[Tokenized], pad_id: int, multiple: int = 8) -> dict[str, torch.Tensor]:
    """SpeechGPT-style (DataCollatorForSeq2Seq, pad_to_multiple_of=8): one example per row, right-padded to the
    longest rounded up to `multiple`, with an attention mask."""
    longest = max(len(e.input_ids) for e in examples)
    width = -(-longest // multiple) * multiple
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in examples]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in examples]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
