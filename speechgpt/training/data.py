"""Instruct rows -> token ids with loss labels -> micro-batches, packed (per-example isolation) or padded.

Labels are the token ids inside the row's loss spans and -100 elsewhere. In packed mode several examples share a
row; their position ids restart at 0, which transformers turns into a block-diagonal causal mask (SDPA/eager) or
varlen flash-attention, so no token attends across examples. The batch plan is a pure function of (seed, epoch),
so a resumed run continues with exactly the batches the uninterrupted run would have seen.

Shared-prefix packing (`shared_prefix`): most examples start with the same untrained tokens (a system prompt, over
half of a short SpeechGPT example). The rows are packed as before (the same examples in each, `seq_len` counting
them whole), but a row that holds any of them starts with that prefix once; each of them keeps only its own tokens,
with the position ids they have in the whole example (from the prefix's length on), and the attention of
`speechgpt.training.packed_attention` lets them read the row's prefix and themselves only. Other examples (replayed
text) sit in the same rows whole. The same batches, losses and gradients, without computing the prefix again for
every example.
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


def shared_prefixes(examples: Sequence[Tokenized], key_tokens: int = 4) -> list[int]:
    """Per example, the length of the prefix it shares (0: none): the longest common prefix of the largest group of
    examples that begin with the same `key_tokens` tokens, cut so that no example trains a token of it or the token
    after it (that token must be predicted from inside its own example)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(tuple(example.input_ids[:key_tokens]), []).append(index)
    members = max(groups.values(), key=len)
    if len(members) < 2:
        return [0] * len(examples)
    first = examples[members[0]].input_ids
    length = len(first)
    for i in members:
        ids, labels = examples[i].input_ids, examples[i].labels
        same = next((t for t, (a, b) in enumerate(zip(first, ids, strict=False)) if a != b), min(len(first), len(ids)))
        first_trained = next((t for t, label in enumerate(labels) if label != IGNORE), len(labels))
        length = min(length, same, first_trained - 1)
    if length < 1:
        return [0] * len(examples)
    shared = set(members)
    return [length if i in shared else 0 for i in range(len(examples))]


class BatchPlan:
    """The deterministic stream of micro-batches: epoch e shuffles examples with seed + e, then packs or chunks them.

    Micro-batch m of the run goes to rank m % world; optimizer step s uses micro-batches
    [s * accum * world, (s + 1) * accum * world). Epoch lengths are computed on demand and cached.
    """

    def __init__(
        self,
        examples: Sequence[Tokenized],
        *,
        seq_len: int,
        micro_batch: int,
        packing: bool,
        seed: int,
        pad_id: int,
        shared_prefix: bool = False,
    ) -> None:
        if not examples:
            raise ValueError("no training examples (all skipped or empty dataset)")
        self.examples = examples
        self.prefixes = shared_prefixes(examples) if packing and shared_prefix else None
        """Per example, the length of the prefix its packed row holds once (None: every example whole)."""
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
        """Tokens of the micro-batch that are not padding (what 'useful tokens/s' counts), a shared prefix once."""
        total = 0
        for row in rows:
            starts = row_starts(row, self.prefixes)
            total += max(starts) + sum(len(self.examples[i].input_ids) - s for i, s in zip(row, starts, strict=True))
        return total

    def collate(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        return (
            collate_packed(self.examples, rows, self.pad_id, self.prefixes)
            if self.packing
            else collate_padded([self.examples[r[0]] for r in rows], self.pad_id)
        )


def row_starts(row: list[int], prefixes: Sequence[int] | None) -> list[int]:
    """Where each example of a packed row starts in its own tokens: after its shared prefix (held once by the row,
    as long as the longest of these), or at 0."""
    return [prefixes[i] for i in row] if prefixes is not None else [0] * len(row)


def collate_rows(
    examples: Sequence[Tokenized], rows: list[list[int]], prefixes: Sequence[int] | None = None
) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """(input ids, labels, position ids) of each packed row, unpadded: the shared prefix once at the row's start when
    any of its examples has one (`prefixes`), then each example: its tokens after the prefix with their positions
    in the example, or the whole example from position 0."""
    ids, labels, positions = [], [], []
    for row in rows:
        starts = row_starts(row, prefixes)
        prefix = max(starts)
        row_ids = list(examples[row[starts.index(prefix)]].input_ids[:prefix])
        row_labels, row_pos = [IGNORE] * prefix, list(range(prefix))
        for i, start in zip(row, starts, strict=True):
            row_ids += examples[i].input_ids[start:]
            row_labels += examples[i].labels[start:]
            row_pos += list(range(start, len(examples[i].input_ids)))
        ids.append(row_ids)
        labels.append(row_labels)
        positions.append(row_pos)
    return ids, labels, positions


def collate_packed(
    examples: Sequence[Tokenized], rows: list[list[int]], pad_id: int, prefixes: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """input_ids / labels / position_ids; rows padded to the longest, padding as its own isolated segment."""
    ids, labels, positions = collate_rows(examples, rows, prefixes)
    width = max(len(row) for row in ids)
    pads = [width - len(row) for row in ids]
    return {
        "input_ids": torch.tensor([row + [pad_id] * pad for row, pad in zip(ids, pads, strict=True)]),
        "labels": torch.tensor([row + [IGNORE] * pad for row, pad in zip(labels, pads, strict=True)]),
        "position_ids": torch.tensor([row + list(range(pad)) for row, pad in zip(positions, pads, strict=True)]),
    }


def collate_padded(examples: Sequence[Tokenized], pad_id: int, multiple: int = 8) -> dict[str, torch.Tensor]:
    """SpeechGPT-style (DataCollatorForSeq2Seq, pad_to_multiple_of=8): one example per row, right-padded to the
    longest rounded up to `multiple`, with an attention mask."""
    longest = max(len(e.input_ids) for e in examples)
    width = -(-longest // multiple) * multiple
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in examples]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in examples]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}
