"""What the engine trains on: a batch source, one small protocol that any model's data implements.

The engine asks a source for the micro-batch at a global index (optimizer step s of a run with `accum` micro-batches
per step and `world` ranks uses indices [s * accum * world, (s + 1) * accum * world), rank r taking every world-th),
so the stream must be a pure function of the index: a resumed run then sees exactly the batches the uninterrupted
run would have. `TokenBatches` is the source of the LM stages; the frozen-LLM stages bring their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from speechgpt.training.config import TrainConfig
from speechgpt.training.data import BatchPlan, Tokenized, collate_padded
from speechgpt.training.run_signature import ContentDigest


@dataclass(frozen=True)
class MicroBatch:
    tensors: dict[str, torch.Tensor]
    """What the loss function receives (moved to the engine's device)."""
    epoch: int
    """Pass over the data this micro-batch belongs to."""
    ids: list[str]
    """Example ids in it (the data log audits order and rank disjointness with them)."""
    count: int
    """Useful units of work in it for throughput: real tokens, or feature frames."""


@dataclass(frozen=True)
class EvalBatch:
    group: str
    """What the metrics are reported under (e.g. the task: eval/<split>/<group>/<part>)."""
    tensors: dict[str, torch.Tensor]
    weight: float
    """Weight of its losses in the group's mean (e.g. its trained tokens)."""


class BatchSource(Protocol):
    count_name: str
    """What `MicroBatch.count` counts ("tokens", "frames"): metrics get `<count_name>` and `<count_name>_per_s`."""
    perplexity: bool
    """Whether the total eval loss is a per-token cross-entropy (then its perplexity is reported too)."""

    def micro_batch(self, index: int) -> MicroBatch: ...

    def fingerprint(self) -> str:
        """Digest of the training examples (a resume checks it: speechgpt.training.run_signature)."""
        ...

    def eval_batches(self, rank: int, world: int) -> Mapping[str, Iterator[EvalBatch]]:
        """Per split, this rank's share of the evaluation batches."""
        ...


class TokenBatches:
    """Token-id examples with loss labels, packed or padded (`BatchPlan`), evaluated one example per batch with
    its trained tokens as weight, grouped by task."""

    count_name = "tokens"
    perplexity = True

    def __init__(
        self,
        examples: Sequence[Tokenized],
        *,
        seq_len: int,
        micro_batch: int,
        packing: bool,
        seed: int,
        pad_id: int,
        eval_sets: Mapping[str, Sequence[Tokenized]] | None = None,
        shared_prefix: bool = False,
    ) -> None:
        self.examples = examples
        self.plan = BatchPlan(
            examples,
            seq_len=seq_len,
            micro_batch=micro_batch,
            packing=packing,
            seed=seed,
            pad_id=pad_id,
            shared_prefix=shared_prefix,
        )
        self.pad_id = pad_id
        self.eval_sets = dict(eval_sets or {})

    @classmethod
    def for_config(
        cls,
        cfg: TrainConfig,
        examples: Sequence[Tokenized],
        pad_id: int,
        eval_sets: Mapping[str, Sequence[Tokenized]] | None = None,
    ) -> TokenBatches:
        """The batches a TrainConfig asks for (its seq_len, micro_batch, packing, shared_prefix and seed)."""
        return cls(
            examples,
            seq_len=cfg.seq_len,
            micro_batch=cfg.micro_batch,
            packing=cfg.packing,
            seed=cfg.seed,
            pad_id=pad_id,
            eval_sets=eval_sets,
            shared_prefix=cfg.shared_prefix,
        )

    def micro_batch(self, index: int) -> MicroBatch:
        epoch, rows = self.plan.micro_batch_at(index)
        ids = [self.examples[i].id for row in rows for i in row]
        return MicroBatch(self.plan.collate(rows), epoch, ids, self.plan.real_tokens(rows))

    def fingerprint(self) -> str:
        digest = ContentDigest()
        for example in self.examples:
            digest.add(example.id, example.input_ids, example.labels)
        return digest.hexdigest()

    def eval_batches(self, rank: int, world: int) -> dict[str, Iterator[EvalBatch]]:
        return {split: self._eval_split(examples, rank, world) for split, examples in self.eval_sets.items()}

    def _eval_split(self, examples: Sequence[Tokenized], rank: int, world: int) -> Iterator[EvalBatch]:
        for example in list(examples)[rank::world]:
            yield EvalBatch(example.task, collate_padded([example], self.pad_id), example.trained_tokens)
