"""A frozen encoder's output, computed once per clip before training.

When a stage of the frozen-LLM variant keeps the speech encoder frozen (frozen-asr training the adapter alone,
frozen-qa training the state head), the encoder gives every clip the same frames at every step. `encoded_examples`
runs it once over each clip, in eval mode and without gradients, and swaps the examples' features for its frames:
each training step then costs what the trained modules cost. The encoder's attention is causal in chunks and its
convolutions are causal, so a clip's frames do not depend on the clips batched beside it, and the cached frames are
those a step would compute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from tqdm import tqdm

from speechgpt.model.frozen_lm import FrozenSpeechLM
from speechgpt.training.speech_batches import SpeechExample, collate_speech


@torch.no_grad()
def encoded_examples(
    model: FrozenSpeechLM,
    sets: Mapping[str, Sequence[SpeechExample]],
    batch_size: int = 32,
    show_progress: bool = True,
) -> dict[str, list[SpeechExample]]:
    """Each set's examples with their features replaced by `model.encoder`'s output frames (`encoded`), in order."""
    if any(p.requires_grad for p in model.encoder.parameters()):
        raise ValueError("the encoder's frames can be computed once only while it is frozen (not in `trainable`)")
    was_training = model.encoder.training
    model.encoder.eval()
    total = sum(len(examples) for examples in sets.values())
    result: dict[str, list[SpeechExample]] = {}
    with tqdm(total=total, desc="encoder frames", unit="clip", disable=not show_progress) as bar:
        for name, examples in sets.items():
            order = sorted(range(len(examples)), key=lambda i: examples[i].frames)
            encoded: list[SpeechExample | None] = [None] * len(examples)
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                batch = collate_speech([dataclasses.replace(examples[i], targets={}) for i in chosen])
                frames, lengths = model.encoder(batch["features"], batch["feature_lengths"])
                for row, index in enumerate(chosen):
                    kept = frames[row, : int(lengths[row])].float().clone()
                    encoded[index] = dataclasses.replace(examples[index], features=kept, encoded=True)
                bar.update(len(chosen))
            result[name] = [e for e in encoded if e is not None]
    model.encoder.train(was_training)
    return result
