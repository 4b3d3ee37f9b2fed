"""How good are speech units? Two checks that can fail.

1. Consistency: the units of one sentence spoken twice (the same clip with noise and a shift, say) must be much
   closer by normalized edit distance than the units of different sentences (`paired_distance_report`).
2. Content and speaker independence: a small CTC recognizer trained on units -> characters (`train_unit_ctc`),
   scored by word and character error rate (`wer_of`, `error_rates`) on held-out sentences of training voices and on
   held-out voices. Units that encode the speaker rather than what is said do well on training voices only.

Every backend gets the same recognizer and the same training time (`budget_s`), so error rates compare the units.
benchmarks/compare_unit_encoders.py runs both on a TTS corpus; docs/units_quality.md has its results.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein
from torch import nn

from speechgpt.training.schedule import lr_factor

log = logging.getLogger(__name__)

ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
"""CTC output characters; index 0 is the blank, so character i of ALPHABET is class i + 1."""
_NOT_SPOKEN = re.compile(r"[^a-z' ]+")


def normalize_text(text: str) -> str:
    """Lowercase words of a-z and apostrophes, single-spaced (hyphens and other punctuation become spaces)."""
    return " ".join(_NOT_SPOKEN.sub(" ", text.lower()).split())


def edit_distance(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    """Levenshtein distance (unit-cost insertions, deletions, substitutions) between two id sequences."""
    return int(Levenshtein.distance(_id_list(a), _id_list(b)))


def normalized_edit_distance(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Edit distance divided by the longer length: 0 for equal sequences, 1 for nothing in common; 0 if both empty."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def _id_list(ids: Sequence[int] | np.ndarray) -> list[int]:
    """The ids as a flat list of Python ints, which rapidfuzz compares by value."""
    return np.asarray(ids).reshape(-1).tolist()


@dataclass(frozen=True)
class PairedDistanceReport:
    same_mean: float
    """Mean normalized edit distance of pairs that say the same thing."""
    different_mean: float
    """Mean normalized edit distance of pairs of different sentences."""
    n_same: int
    """Number of same-sentence pairs."""
    n_different: int
    """Number of different-sentence pairs."""

    @property
    def ratio(self) -> float:
        """same_mean / different_mean: well below 1 when units follow what is said."""
        return self.same_mean / self.different_mean if self.different_mean else math.inf

    def passes(self, max_ratio: float = 0.6) -> bool:
        return self.ratio < max_ratio


def paired_distance_report(
    same_pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    different_pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
) -> PairedDistanceReport:
    """Compares unit sequences of same-sentence pairs against pairs of different sentences."""
    if not same_pairs or not different_pairs:
        raise ValueError("need at least one same-sentence pair and one different-sentence pair")
    same = [normalized_edit_distance(a, b) for a, b in same_pairs]
    different = [normalized_edit_distance(a, b) for a, b in different_pairs]
    return PairedDistanceReport(float(np.mean(same)), float(np.mean(different)), len(same), len(different))


def perturb(
    samples: np.ndarray, rng: np.random.Generator, *, snr_db: float | None = 25.0, max_shift_ms: float = 15.0
) -> np.ndarray:
    """The same clip said "again": 0 to `max_shift_ms` of leading silence (frames fall on other boundaries), then
    white noise over the whole clip at `snr_db` below the clip's mean power (None: no noise)."""
    shift = int(rng.integers(0, int(max_shift_ms * 16) + 1))
    shifted = np.concatenate([np.zeros(shift, np.float32), np.asarray(samples, dtype=np.float32)])
    if snr_db is None:
        return shifted
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    noise = rng.standard_normal(len(shifted)) * math.sqrt(power / 10 ** (snr_db / 10))
    return (shifted + noise).astype(np.float32)


def unit_consistency_report(
    extract: Callable[[list[torch.Tensor]], list[tuple[list[int], list[int]]]],
    clips: Sequence[tuple[np.ndarray, str, str]],
    *,
    seed: int = 0,
    snr_db: float | None = 25.0,
    max_shift_ms: float = 15.0,
) -> PairedDistanceReport:
    """Same-sentence pairs: each clip's units against those of its perturbed copy (`perturb`). Different-sentence
    pairs: each clip against the next clip of the same speaker with another text (so the voice is no help).
    `extract` maps waveforms to (merged units, durations), e.g. a UnitExtractor; clips are (samples, text, speaker)."""
    rng = np.random.default_rng(seed)
    waves = [torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)) for samples, _, _ in clips]
    noisy = [torch.from_numpy(perturb(w.numpy(), rng, snr_db=snr_db, max_shift_ms=max_shift_ms)) for w in waves]
    units = [u for u, _ in extract(waves)]
    perturbed = [u for u, _ in extract(noisy)]
    different = []
    for i, (_, text, speaker) in enumerate(clips):
        others = [j for j in range(i + 1, i + len(clips)) if clips[j % len(clips)][2] == speaker]
        partner = next((j % len(clips) for j in others if clips[j % len(clips)][1] != text), None)
        if partner is not None:
            different.append((units[i], units[partner]))
    return paired_distance_report(list(zip(units, perturbed, strict=True)), different)


@dataclass(frozen=True, kw_only=True)
class CtcConfig:
    width: int = 192
    """Unit embedding and conv channels (~0.8M parameters with 4 blocks of kernel 5)."""
    blocks: int = 4
    """Residual conv blocks (layer norm, conv, GELU); the receptive field is 1 + blocks * (kernel - 1) units."""
    kernel: int = 5
    """Conv kernel size, in merged units."""
    upsample: int = 3
    """CTC steps emitted per merged unit (a linear layer predicts them all), so CTC has more steps than characters
    even for units as sparse as ~12/s while the convs run over the units only."""
    dropout: float = 0.1
    """Dropout on the embedded units and on each block's output."""
    batch_size: int = 32
    """Utterances per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 3% of training, cosine decay to 5%)."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""

    def __post_init__(self) -> None:
        if min(self.width, self.blocks, self.upsample, self.batch_size) < 1 or self.kernel % 2 == 0:
            raise ValueError("width, blocks, upsample and batch_size must be >= 1 and kernel odd")


class UnitCtcModel(nn.Module):
    """Merged units -> character log-probs: embedding, residual conv blocks, and a linear layer that emits
    `upsample` CTC steps per unit (class 0 is the blank). On one CPU thread, convs learned faster per second than
    a bidirectional GRU or a small transformer of similar size (measured for docs/units_quality.md)."""

    def __init__(self, num_units: int, cfg: CtcConfig) -> None:
        super().__init__()
        self.num_units, self.cfg = num_units, cfg
        self.embed = nn.Embedding(num_units, cfg.width)
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.width) for _ in range(cfg.blocks))
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.width, cfg.width, cfg.kernel, padding=cfg.kernel // 2) for _ in range(cfg.blocks)
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.width, cfg.upsample * (len(ALPHABET) + 1))
        self.steps_done = 0
        """Optimizer steps `train_unit_ctc` ran (a time budget makes it machine-dependent)."""

    def forward(self, units: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, T) unit ids (padding: any id) and lengths -> (batch, T * upsample, classes) log-probs, lengths."""
        batch, steps = units.shape
        # Zero the padding before every conv, so that a clip's output is the same in a batch as alone.
        keep = (torch.arange(steps)[None, :] < lengths[:, None]).unsqueeze(-1)
        x = self.drop(self.embed(units)) * keep
        for norm, conv in zip(self.norms, self.convs, strict=True):
            hidden = conv((norm(x) * keep).transpose(1, 2)).transpose(1, 2)
            x = x + self.drop(nn.functional.gelu(hidden))
        logits = self.out(x).reshape(batch, steps * self.cfg.upsample, len(ALPHABET) + 1)
        return logits.log_softmax(-1), lengths * self.cfg.upsample


def _unit_batch(units: Sequence[Sequence[int]], num_units: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([max(1, len(u)) for u in units])
    batch = torch.zeros(len(units), int(lengths.max()), dtype=torch.long)
    for i, seq in enumerate(units):
        if len(seq) and (min(seq) < 0 or max(seq) >= num_units):
            raise ValueError(f"unit ids must lie in [0, {num_units}), got {min(seq)}..{max(seq)}")
        batch[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return batch, lengths


def _encode_text(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in normalize_text(text)]


def train_unit_ctc(
    rows: Sequence[tuple[Sequence[int], str]],
    *,
    num_units: int,
    budget_s: float,
    seed: int = 0,
    max_steps: int | None = None,
    cfg: CtcConfig | None = None,
) -> UnitCtcModel:
    """Trains a CTC recognizer on (merged units, transcript) rows for `budget_s` seconds of wall time (or
    `max_steps`, whichever comes first) in the calling thread. The same seed gives the same batches and initial
    weights; with `max_steps` (and a budget that does not run out first) the whole run is reproducible, while a time
    budget lets the step count, and so the result, depend on the machine's speed."""
    cfg = cfg or CtcConfig()
    examples = [(list(u), _encode_text(t)) for u, t in rows if normalize_text(t)]
    if not examples:
        raise ValueError("no training rows with a transcript")
    if budget_s <= 0 or (max_steps is not None and max_steps < 1):
        raise ValueError("budget_s and max_steps must be positive")
    too_long = sum(len(t) > cfg.upsample * len(u) for u, t in examples)
    if too_long:
        log.warning("%d of %d transcripts are longer than their CTC steps (they add no loss)", too_long, len(examples))
    torch.manual_seed(seed)
    model = UnitCtcModel(num_units, cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CTCLoss(blank=0, zero_infinity=True)
    batches = _length_bucketed_batches(examples, cfg.batch_size, num_units, random.Random(seed))
    started = last_log = time.perf_counter()
    losses: list[float] = []
    while (elapsed := time.perf_counter() - started) < budget_s and (max_steps is None or model.steps_done < max_steps):
        progress = model.steps_done / max_steps if max_steps is not None else elapsed / budget_s
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(1000 * progress, total=1000, warmup=30, min_ratio=0.05)
        units, lengths, targets, target_lengths = next(batches)
        log_probs, out_lengths = model(units, lengths)
        loss = loss_fn(log_probs.transpose(0, 1), targets, out_lengths, target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.steps_done += 1
        losses.append(float(loss.detach()))
        if time.perf_counter() - last_log > 30:
            last_log = time.perf_counter()
            log.info("ctc step %d, %.0fs, loss %.3f", model.steps_done, elapsed, float(np.mean(losses[-50:])))
    log.info("ctc: %d steps in %.1fs, final loss %.3f", model.steps_done, time.perf_counter() - started, losses[-1])
    return model.eval()


def _length_bucketed_batches(
    examples: list[tuple[list[int], list[int]]], batch_size: int, num_units: int, rng: random.Random
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless (units, lengths, targets, target lengths) batches: each epoch is shuffled, cut into pools of 20
    batches, each pool sorted by length (little padding) and cut into batches, and the batches shuffled."""
    while True:
        order = rng.sample(range(len(examples)), len(examples))
        pool = 20 * batch_size
        batches = []
        for start in range(0, len(order), pool):
            ranked = sorted(order[start : start + pool], key=lambda i: len(examples[i][0]))
            batches += [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]
        rng.shuffle(batches)
        for chosen in batches:
            units, lengths = _unit_batch([examples[i][0] for i in chosen], num_units)
            targets = [examples[i][1] for i in chosen]
            yield units, lengths, torch.tensor([c for t in targets for c in t]), torch.tensor([len(t) for t in targets])


@torch.inference_mode()
def transcribe(model: UnitCtcModel, units: Sequence[Sequence[int]], batch_size: int = 64) -> list[str]:
    """Greedy CTC decoding: best class per step, repeats collapsed, blanks dropped."""
    model.eval()
    texts = []
    for start in range(0, len(units), batch_size):
        batch, lengths = _unit_batch(units[start : start + batch_size], model.num_units)
        log_probs, out_lengths = model(batch, lengths)
        for row, length in zip(log_probs.argmax(-1).tolist(), out_lengths.tolist(), strict=True):
            chars, previous = [], 0
            for cls in row[:length]:
                if cls != previous and cls != 0:
                    chars.append(ALPHABET[cls - 1])
                previous = cls
            texts.append(" ".join("".join(chars).split()))
    return texts


def wer_of(model: UnitCtcModel, rows: Sequence[tuple[Sequence[int], str]]) -> float:
    """Word error rate (jiwer) of greedy transcripts of rows (units, text) against their normalized texts."""
    return error_rates(model, rows)["wer"]


def error_rates(model: UnitCtcModel, rows: Sequence[tuple[Sequence[int], str]]) -> dict[str, float]:
    """Word and character error rates ("wer", "cer") of greedy transcripts of rows (units, text); CER still
    ranks weak recognizers whose WER is near 1."""
    import jiwer

    kept = [(u, normalize_text(t)) for u, t in rows if normalize_text(t)]
    if not kept:
        raise ValueError("no rows with a transcript to score")
    references, hypotheses = [t for _, t in kept], transcribe(model, [u for u, _ in kept])
    return {"wer": float(jiwer.wer(references, hypotheses)), "cer": float(jiwer.cer(references, hypotheses))}
