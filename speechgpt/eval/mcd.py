"""Mel-cepstral distortion (MCD, dB) between a reference and a generated 16 kHz waveform, DTW-aligned.

Uses unit-hifigan's implementation (`unit_hifigan.mcd`): SPTK-style mel cepstra of order 23 (warping 0.42, Hamming
windows of 512 samples, hop 256, energy c(0) dropped, so the level of the audio does not matter) and an exact DTW
over frame distances. Lower is closer; identical audio scores 0. Absolute values differ by about 1 dB from recipes
that use iterative mcep or WORLD envelopes (see unit_hifigan.mcd.MelCepstrum), so compare numbers from this function
with each other only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SAMPLE_RATE = 16_000
MIN_SAMPLES = 512
"""One analysis window: shorter audio has no mel cepstrum."""


@functools.cache
def _mel_cepstrum(n_mcep: int, alpha: float) -> Any:
    from unit_hifigan.mcd import MelCepstrum  # pulls in polars / torchdtw: only when MCD is wanted

    return MelCepstrum(n_mcep, alpha).eval()


def _as_tensor(wave: np.ndarray, sample_rate: int, name: str) -> torch.Tensor:
    audio = torch.as_tensor(np.asarray(wave, dtype=np.float32).reshape(-1))
    if sample_rate != SAMPLE_RATE:
        import torchaudio.functional as AF

        audio = AF.resample(audio, sample_rate, SAMPLE_RATE)
    if audio.numel() < MIN_SAMPLES:
        raise ValueError(f"{name} audio has {audio.numel()} samples at 16 kHz; MCD needs at least {MIN_SAMPLES}")
    return audio


def mel_cepstral_distortion(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_mcep: int = 23,
    alpha: float = 0.42,
) -> float:
    """MCD in dB between two mono waveforms (resampled to 16 kHz when `sample_rate` differs), frames aligned by DTW."""
    from unit_hifigan.mcd import distortion

    mel_cepstrum = _mel_cepstrum(n_mcep, alpha)
    with torch.inference_mode():
        reference_mc = mel_cepstrum(_as_tensor(reference, sample_rate, "reference"))
        generated_mc = mel_cepstrum(_as_tensor(generated, sample_rate, "generated"))
        mcd, _ = distortion(reference_mc, generated_mc)
    return mcd


def mean_mel_cepstral_distortion(
    references: Sequence[np.ndarray], generated: Sequence[np.ndarray], *, sample_rate: int = SAMPLE_RATE
) -> float:
    """Mean per-pair MCD (dB) over paired waveforms."""
    if len(references) != len(generated) or not references:
        raise ValueError(f"need equally many references and generations, got {len(references)} and {len(generated)}")
    scores = [
        mel_cepstral_distortion(r, g, sample_rate=sample_rate) for r, g in zip(references, generated, strict=True)
    ]
    return float(np.mean(scores))
