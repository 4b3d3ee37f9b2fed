"""Unit duration predictor: how many 50 Hz frames each merged unit lasts.

The layout is fairseq's `VariancePredictor` (fairseq/models/text_to_speech/fastspeech2.py), which CodeHiFiGAN
vocoders with `dur_predictor_params` (SpeechGPT's mHuBERT vocoder among them) store under `dur_predictor.*`, so a
legacy state dict loads here by name. Like fairseq, the model predicts log(1 + duration) and inference rounds
exp(y) - 1 to an integer of at least one frame (CodeGenerator.forward with `dur_prediction=True`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class DurationPredictor(nn.Module):
    """Two conv + LayerNorm blocks and a linear head over unit embeddings: (B, T, C) -> log(1 + frames) (B, T)."""

    def __init__(
        self, embedding_dim: int = 128, hidden_dim: int = 128, kernel_size: int = 3, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv1d(embedding_dim, hidden_dim, kernel_size, padding=(kernel_size - 1) // 2), nn.ReLU()
        )
        self.ln1 = nn.LayerNorm(hidden_dim)
        # fairseq pads the second conv by 1 whatever the kernel size (exact for its kernel size 3); kept for parity.
        self.conv2 = nn.Sequential(nn.Conv1d(hidden_dim, hidden_dim, kernel_size, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden_dim)
        self.proj = nn.Linear(hidden_dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Log-durations log(1 + frames) for unit embeddings `x` of shape (B, T, C); returns (B, T)."""
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.ln1(x))
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.ln2(x))
        return self.proj(x).squeeze(2)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Frames per unit (LongTensor, (B, T), each >= 1) as fairseq's CodeGenerator rounds them; dropout is off
        for the call even when the module is in training mode."""
        was_training = self.training
        self.eval()
        try:
            return durations_from_log(self(x))
        finally:
            self.train(was_training)


def durations_from_log(log_durations: Tensor) -> Tensor:
    """Predicted log(1 + frames) -> frames: clamp(round(exp(y) - 1), min=1), a LongTensor."""
    return torch.clamp(torch.round(torch.exp(log_durations) - 1).long(), min=1)


def frames_carried(log_durations: Tensor, carry: float = 0.0) -> tuple[list[int], float]:
    """Predicted log(1 + frames) of one sequence (T,) -> frames per unit, rounding the running total instead of
    each unit: unit i gets round(carry + d_i), where d_i = max(exp(y_i) - 1, 1), and the rounding error carries to
    the next unit. The frames then add up to the predicted length (per-unit rounding, fairseq's, made speech ~8%
    short of the real length on the demo's answer voice, docs/benchmarks.md), every unit keeps at least one frame,
    and a stream that passes `carry` from one call to the next gets the frames of one call over the whole."""
    frames = []
    for value in torch.clamp(torch.exp(log_durations.float()) - 1, min=1.0).tolist():
        whole = max(1, round(carry + value))
        carry += value - whole
        frames.append(whole)
    return frames, carry


def duration_targets(durations: Tensor) -> Tensor:
    """Training targets for the predictor: log(1 + frames) as float."""
    return torch.log1p(durations.float())


def duration_loss(pred: Tensor, durations: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between predicted log-durations and log(1 + `durations`) over positions where `mask`
    is true (all positions when None); `pred`, `durations` and `mask` share the shape (B, T)."""
    errors = F.mse_loss(pred, duration_targets(durations), reduction="none")
    if mask is None:
        return errors.mean()
    weights = mask.to(errors.dtype)
    return (errors * weights).sum() / weights.sum().clamp(min=1.0)


def expand_units(units: Tensor, durations: Tensor) -> Tensor:
    """Repeats each unit for its duration in frames: `units` (T, ...) with integer `durations` (T,) -> (sum, ...).

    Works on ids (T,) and on embeddings (T, C) alike; a duration of 0 drops the unit.
    """
    _check_durations(durations)
    if durations.dim() != 1 or units.shape[0] != durations.shape[0]:
        raise ValueError(f"units {tuple(units.shape)} and durations {tuple(durations.shape)} do not match")
    return torch.repeat_interleave(units, durations, dim=0)


def expand_units_batch(units: Tensor, durations: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Batched `expand_units`: `units` (B, T, ...) and `durations` (B, T), of which the first `lengths[b]` positions
    are valid (all when None) -> (frames (B, F, ...) right-padded with zeros, frame counts (B,))."""
    _check_durations(durations)
    if durations.dim() != 2 or units.shape[:2] != durations.shape:
        raise ValueError(f"units {tuple(units.shape)} and durations {tuple(durations.shape)} do not match")
    batch, steps = durations.shape
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long, device=durations.device)
    valid = torch.arange(steps, device=durations.device)[None, :] < lengths.to(durations.device)[:, None]
    durations = durations * valid
    frame_counts = durations.sum(dim=1)
    longest = int(frame_counts.max()) if batch else 0
    out = units.new_zeros((batch, longest, *units.shape[2:]))
    for b in range(batch):
        out[b, : int(frame_counts[b])] = torch.repeat_interleave(units[b], durations[b], dim=0)
    return out, frame_counts


def _check_durations(durations: Tensor) -> None:
    if durations.dtype.is_floating_point or durations.dtype == torch.bool:
        raise TypeError(f"durations must be integer frame counts, got {durations.dtype}")
    if durations.numel() and bool((durations < 0).any()):
        raise ValueError("durations must be non-negative")


def unit_ids_tensor(units: Sequence[int] | Tensor, n_units: int, device: torch.device) -> Tensor:
    """One sequence of merged unit ids as a LongTensor on `device`, checked against the codebook size."""
    tensor = torch.as_tensor(units, dtype=torch.long, device=device)
    if tensor.dim() != 1:
        raise ValueError(f"units must be one sequence, got shape {tuple(tensor.shape)}")
    if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= n_units):
        raise ValueError(f"unit ids must lie in [0, {n_units}), got {int(tensor.min())}..{int(tensor.max())}")
    return tensor
