"""The losses that align what the frozen LLM reads from speech with what it reads from text: the word-token loss of
an adapter that reads words, and cross-modal distillation of the LLM's states. `frozen_lm`'s stage losses add them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from speechgpt.model.frozen_lm import Assembled, FrozenSpeechLM

IGNORE = -100


def align_loss(model: FrozenSpeechLM, assembled: Assembled, word_ids: torch.Tensor) -> torch.Tensor:
    """Where the adapter reads words and a clip has as many as its transcript has tokens (`word_ids` (B, W), the
    transcript's token ids, IGNORE-padded), the cross-entropy of each word's token logits against its token,
    averaged over those words (0 when no clip has them)."""
    speech = assembled.speech
    counts = (word_ids != IGNORE).sum(1)
    rows = [b for b in range(word_ids.shape[0]) if counts[b] > 0 and int(speech.lengths[b]) == counts[b]]
    if speech.token_logits is None or not rows:
        return speech.embeds.sum() * 0.0
    logits = torch.cat([speech.token_logits[b, : int(counts[b])] for b in rows]).float()
    return F.cross_entropy(logits, torch.cat([word_ids[b, : int(counts[b])] for b in rows]))


def distill_loss(
    model: FrozenSpeechLM,
    layers: tuple[torch.Tensor, ...],
    attention_mask: torch.Tensor,
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """Cross-modal distillation (as BLSP and DiVA align a frozen LLM's behaviour on speech with its behaviour on the
    transcript): at the text after the speech (`text_ids`), the LLM's states after every layer are pulled toward
    the states it has there when it reads the transcript's text in the speech's place. The teacher's input is
    batch teacher_ids (B, V) with teacher_lengths (B,): prefix, transcript, then the same text_ids; a row of
    length 0 distills nothing. Squared error per position, over the teacher state's mean square, averaged over
    layers and distilled positions (0 when none)."""
    text_lengths, teacher_lengths = batch["text_lengths"], batch["teacher_lengths"]
    rows = torch.nonzero(teacher_lengths > 0).flatten()
    if rows.numel() == 0:
        return layers[-1].sum() * 0.0
    teacher_ids = batch["teacher_ids"][rows]
    width = torch.arange(teacher_ids.shape[1], device=teacher_ids.device)[None, :]
    teacher_mask = (width < teacher_lengths[rows, None]).long()
    with torch.no_grad():
        teacher = model.lm.base_model(
            input_ids=teacher_ids, attention_mask=teacher_mask, use_cache=False, output_hidden_states=True
        ).hidden_states[1:]
    student_end = attention_mask[rows].sum(1)
    student_at, teacher_at = (
        _last_positions(student_end, text_lengths[rows]),
        _last_positions(teacher_lengths[rows], text_lengths[rows]),
    )
    losses = []
    for student_layer, teacher_layer in zip(layers, teacher, strict=True):
        want = teacher_layer[teacher_at].float()
        got = student_layer[rows][student_at].float()
        losses.append(((got - want) ** 2).mean(-1) / (want**2).mean(-1).clamp(min=1e-6))
    return torch.stack(losses).mean()


def _last_positions(ends: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) index pairs of the last `counts[b]` positions before `ends[b]` of each row b."""
    rows = torch.repeat_interleave(torch.arange(len(ends), device=ends.device), counts)
    offsets = torch.cat([torch.arange(int(c), device=ends.device) for c in counts])
    return rows, (ends - counts).repeat_interleave(counts) + offsets
