"""The batch source of the frozen-LLM variant's stages: clips of precomputed frame features with their targets
(CTC characters, LLM text ids and labels, per-chunk state labels), in length-bucketed micro-batches.

Epoch e shuffles the clips with seed + e, sorts each window of `micro_batch * bucket` clips by length, cuts it into
micro-batches (at most `micro_batch` clips and, when set, `max_batch_frames` padded frames) and shuffles the
micro-batches: the stream is a pure function of the global index, so a resumed run sees the batches of an
uninterrupted one. Evaluation batches hold one group (clip kind) each, weighted by their targets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from speechgpt.training.batches import EvalBatch, MicroBatch
from speechgpt.training.run_signature import ContentDigest

IGNORE = -100
LENGTHS = {
    "text_ids": "text_lengths",
    "prefix_ids": "prefix_lengths",
    "context_ids": "context_lengths",
    "teacher_ids": "teacher_lengths",
}
"""Id sequences padded with 0 and given lengths; every other target is padded with IGNORE."""


@dataclass(frozen=True)
class SpeechExample:
    id: str
    group: str
    """What evaluation reports it under (asr, question, ignore, noise)."""
    features: torch.Tensor | None
    """(frames, dim) float32; None for examples of id sequences only (the speech decoder's text and units)."""
    targets: Mapping[str, Sequence[int]]
    """Per batch key (ctc_targets, prefix_ids, text_ids, labels, state_labels, units) the example's sequence."""
    encoded: bool = False
    """Whether `features` are a frozen encoder's output frames (batch keys frames, frame_lengths) rather than
    its input (features, feature_lengths); bucketing then counts encoder frames."""

    @property
    def frames(self) -> int:
        """Its size for bucketing: feature frames, or (no features) its longest sequence."""
        if self.features is None:
            return max(len(sequence) for sequence in self.targets.values())
        return int(self.features.shape[0])


def collate_speech(examples: Sequence[SpeechExample]) -> dict[str, torch.Tensor]:
    """features (B, T, dim) zero-padded with feature_lengths (frames and frame_lengths for encoded examples) when
    the examples have features, and each target right-padded (see LENGTHS)."""
    batch: dict[str, torch.Tensor] = {}
    first = examples[0].features
    if first is not None:
        longest = max(e.frames for e in examples)
        features = first.new_zeros(len(examples), longest, first.shape[1])
        for row, example in enumerate(examples):
            if example.features is None or example.encoded != examples[0].encoded:
                raise ValueError(f"{example.id}: its features are not of the kind of the first example's in its batch")
            features[row, : example.frames] = example.features
        key = "frame" if examples[0].encoded else "feature"
        batch = {f"{key}s": features, f"{key}_lengths": torch.tensor([e.frames for e in examples])}
    for key in examples[0].targets:
        sequences = [list(e.targets[key]) for e in examples]
        width = max(len(s) for s in sequences)
        pad = 0 if key in LENGTHS else IGNORE
        batch[key] = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], dtype=torch.long)
        if key in LENGTHS:
            batch[LENGTHS[key]] = torch.tensor([len(s) for s in sequences])
    return batch


def cut_batches(indices: Sequence[int], frames: Sequence[int], micro_batch: int, max_frames: int) -> list[list[int]]:
    """Consecutive runs of `indices`: at most `micro_batch` clips and (max_frames > 0) clips x longest clip at most
    `max_frames`; a clip longer than that alone forms a batch."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in indices:
        wider = max(longest, frames[index])
        if current and (len(current) == micro_batch or (max_frames and wider * (len(current) + 1) > max_frames)):
            batches.append(current)
            current, wider = [], frames[index]
        current.append(index)
        longest = wider
    if current:
        batches.append(current)
    return batches


class SpeechBatches:
    """A `BatchSource` of speech clips (see the module doc); `count` is feature frames."""

    count_name = "frames"

    def __init__(
        self,
        examples: Sequence[SpeechExample],
        *,
        micro_batch: int,
        seed: int,
        max_batch_frames: int = 0,
        bucket: int = 16,
        perplexity: bool = False,
        weight_key: str | None = None,
        eval_sets: Mapping[str, Sequence[SpeechExample]] | None = None,
    ) -> None:
        if not examples:
            raise ValueError("no training clips (every clip was skipped, or the split is empty)")
        keys = set(examples[0].targets)
        for example in [*examples, *(e for s in (eval_sets or {}).values() for e in s)]:
            if set(example.targets) != keys:
                raise ValueError(f"{example.id}: targets {sorted(example.targets)} differ from {sorted(keys)}")
        self.examples = list(examples)
        self.frames = [e.frames for e in self.examples]
        self.batch_size, self.seed, self.max_batch_frames, self.bucket = micro_batch, seed, max_batch_frames, bucket
        self.perplexity = perplexity
        """Whether the total loss is a per-token cross-entropy (the engine then reports its perplexity)."""
        self.weight_key = weight_key
        self.eval_sets = {split: list(s) for split, s in (eval_sets or {}).items() if s}
        self._epochs: list[list[list[int]]] = []

    def epoch(self, number: int) -> list[list[int]]:
        """Micro-batches (lists of example indices) of an epoch."""
        while len(self._epochs) <= number:
            rng = random.Random(self.seed * 1_000_003 + len(self._epochs))
            order = list(range(len(self.examples)))
            rng.shuffle(order)
            window = self.batch_size * self.bucket
            batches: list[list[int]] = []
            for start in range(0, len(order), window):
                part = sorted(order[start : start + window], key=lambda i: self.frames[i])
                batches += cut_batches(part, self.frames, self.batch_size, self.max_batch_frames)
            rng.shuffle(batches)
            self._epochs.append(batches)
        return self._epochs[number]

    def micro_batch(self, index: int) -> MicroBatch:
        epoch = 0
        while index >= len(self.epoch(epoch)):
            index -= len(self.epoch(epoch))
            epoch += 1
        chosen = [self.examples[i] for i in self.epoch(epoch)[index]]
        return MicroBatch(collate_speech(chosen), epoch, [e.id for e in chosen], sum(e.frames for e in chosen))

    def fingerprint(self) -> str:
        digest = ContentDigest()
        for example in self.examples:
            features = () if example.features is None else (example.features,)
            digest.add(f"{example.id}|{example.group}|{example.encoded}", *features)
            for key in sorted(example.targets):
                digest.add(key, example.targets[key])
        return digest.hexdigest()

    def eval_batches(self, rank: int, world: int) -> dict[str, Iterator[EvalBatch]]:
        return {split: self._eval_split(examples[rank::world]) for split, examples in self.eval_sets.items()}

    def _eval_split(self, examples: Sequence[SpeechExample]) -> Iterator[EvalBatch]:
        ordered = sorted(examples, key=lambda e: (e.group, e.frames, e.id))
        frames = [e.frames for e in ordered]
        for group in sorted({e.group for e in ordered}):
            indices = [i for i, e in enumerate(ordered) if e.group == group]
            for batch in cut_batches(indices, frames, self.batch_size, self.max_batch_frames):
                chosen = [ordered[i] for i in batch]
                yield EvalBatch(group, collate_speech(chosen), self.weight(chosen))

    def weight(self, examples: Sequence[SpeechExample]) -> float:
        """An eval batch's weight: its targets in `weight_key` that are not IGNORE, else its feature frames."""
        if self.weight_key is None:
            return float(sum(e.frames for e in examples))
        return float(sum(t != IGNORE for e in examples for t in e.targets[self.weight_key]))
