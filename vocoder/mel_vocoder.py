"""The "mel" route: frame-level units (+ speaker) -> log-mel spectrogram with a small conv net, then back to audio
with torchaudio's InverseMelScale and Griffin-Lim. Trains in minutes on a CPU; the embedded default.

The net is position-wise normalized and purely convolutional, so a mel frame depends on `left_context` past and
`right_context` future frames and no more: streaming can compute exactly the frames offline synthesis computes. The
future reach (`lookahead_frames`) sets how many frames a stream must wait for before a frame is final; by default
the convolutions are centered (0.6 s of look-ahead), a smaller budget shifts their windows to the past. Griffin-Lim is
iterative over the whole signal; `griffin_lim` takes a known prefix of samples so a stream can continue audio it
already emitted (RTISI-LA style) instead of stitching independent phase estimates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn
from torch.nn import functional as F
from torchaudio.transforms import InverseMelScale, MelSpectrogram

from vocoder.data import HOP_LENGTH

LOG_FLOOR = 1e-5


@dataclass(frozen=True, kw_only=True)
class MelSettings:
    """Spectrogram analysis shared by the training target and the inversion (saved with the model)."""

    n_fft: int = 1024
    """FFT size (and window length) of the STFT."""
    n_mels: int = 80
    """Mel bins."""
    f_max: float = 8000.0
    """Highest mel filter frequency in Hz."""
    griffin_lim_iters: int = 32
    """Griffin-Lim iterations (per stream chunk when streaming)."""
    momentum: float = 0.99
    """Fast Griffin-Lim momentum (torchaudio's default)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LogMel(nn.Module):
    """Audio (B, N) -> natural-log magnitude mel spectrogram (B, n_mels, N // HOP_LENGTH + 1), centered frames."""

    def __init__(self, settings: MelSettings) -> None:
        super().__init__()
        self.mel = MelSpectrogram(
            sample_rate=16_000,
            n_fft=settings.n_fft,
            hop_length=HOP_LENGTH,
            f_max=settings.f_max,
            n_mels=settings.n_mels,
            power=1.0,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, audio: Tensor) -> Tensor:
        return torch.clamp(self.mel(audio), min=LOG_FLOOR).log()


class ShiftedConv(nn.Conv1d):
    """A length-preserving Conv1d that reads `right` positions ahead and the rest of its span behind (its parameters
    are a plain Conv1d's, so centered checkpoints load unchanged)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, right: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        span = dilation * (kernel_size - 1)
        if not 0 <= right <= span:
            raise ValueError(f"look-ahead {right} outside 0..{span}")
        self.left, self.right = span - right, right

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left, self.right)))


class ResidualConv(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, right: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = ShiftedConv(channels, channels, kernel_size, dilation, right)
        self.norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dropout(F.gelu(self.conv(x)))
        return x + self.norm(y.transpose(1, 2)).transpose(1, 2)


def split_lookahead(spans: list[int], lookahead: int | None) -> list[int]:
    """Look-ahead per conv layer: half of each span (centered) when `lookahead` is None, else the budget spent
    centered from the first layer on, and the layers after it causal."""
    if lookahead is None:
        return [span // 2 for span in spans]
    if lookahead < 0:
        raise ValueError("lookahead_frames must be >= 0")
    rights = []
    for span in spans:
        rights.append(min(span // 2, lookahead))
        lookahead -= rights[-1]
    return rights


class MelNet(nn.Module, PyTorchModelHubMixin):
    """Frame units (B, T) and speaker indices (B,) -> log-mel (B, n_mels, T). 1.4M parameters by default (500 units);
    each output frame reads 30 frames (0.6 s) on each side, or `lookahead_frames` ahead and the rest behind;
    `dropout` acts in training only, after each residual block's convolution."""

    def __init__(
        self,
        n_units: int,
        *,
        n_speakers: int = 0,
        embedding_dim: int = 128,
        speaker_dim: int = 64,
        channels: int = 192,
        kernel_size: int = 5,
        dilations: tuple[int, ...] | list[int] = (1, 2, 4, 1, 2, 4),
        n_mels: int = 80,
        lookahead_frames: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd (the net is centered)")
        self.unit_embedding = nn.Embedding(n_units, embedding_dim)
        self.speaker_embedding = nn.Embedding(n_speakers, speaker_dim) if n_speakers else None
        in_dim = embedding_dim + (speaker_dim if n_speakers else 0)
        spans = [(kernel_size - 1) * d for d in (1, *dilations)]
        rights = split_lookahead(spans, lookahead_frames)
        self.pre = ShiftedConv(in_dim, channels, kernel_size, 1, rights[0])
        self.blocks = nn.ModuleList(
            ResidualConv(channels, kernel_size, d, right, dropout)
            for d, right in zip(dilations, rights[1:], strict=True)
        )
        self.post = nn.Conv1d(channels, n_mels, 1)
        self.n_mels = n_mels
        self.right_context = sum(rights)
        """Future frames an output frame depends on (the look-ahead a stream waits for)."""
        self.left_context = sum(spans) - self.right_context
        """Past frames an output frame depends on."""

    @property
    def n_units(self) -> int:
        return self.unit_embedding.num_embeddings

    def forward(self, frames: Tensor, speaker: Tensor | None = None) -> Tensor:
        x = self.unit_embedding(frames).transpose(1, 2)
        if self.speaker_embedding is not None:
            if speaker is None:
                raise ValueError("this MelNet is multi-speaker: pass speaker indices")
            s = self.speaker_embedding(speaker)[:, :, None].expand(-1, -1, x.shape[-1])
            x = torch.cat([x, s], dim=1)
        x = self.pre(x)
        for block in self.blocks:
            x = block(x)
        return self.post(x)


def mel_loss(predicted: Tensor, log_mel: LogMel, audio: Tensor) -> Tensor:
    """L1 between predicted log-mel frames (B, n_mels, T) and the log-mel of the aligned audio (B, T * HOP_LENGTH),
    in float32 whatever precision the prediction was computed in."""
    target = log_mel(audio.float())[..., : predicted.shape[-1]]
    return F.l1_loss(predicted.float(), target)


class MelInverter(nn.Module):
    """Log-mel (n_mels, T) -> magnitude STFT (n_fft // 2 + 1, T + 1) -> audio (T * HOP_LENGTH,) by Griffin-Lim."""

    def __init__(self, settings: MelSettings) -> None:
        super().__init__()
        self.settings = settings
        self.inverse_mel = InverseMelScale(
            n_stft=settings.n_fft // 2 + 1,
            n_mels=settings.n_mels,
            sample_rate=16_000,
            f_max=settings.f_max,
            norm="slaney",
            mel_scale="slaney",
        )
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(settings.n_fft), persistent=False)

    def magnitude(self, log_mel: Tensor) -> Tensor:
        """Linear-frequency magnitudes of log-mel frames (time last)."""
        return self.inverse_mel(log_mel.exp())

    def forward(self, log_mel: Tensor) -> Tensor:
        magnitude = self.magnitude(log_mel)
        # T frames stand for T * HOP samples; a centered STFT of that many samples has T + 1 frames
        return self.griffin_lim(torch.cat([magnitude, magnitude[:, -1:]], dim=1))

    def griffin_lim(self, magnitude: Tensor, prefix: Tensor | None = None) -> Tensor:
        """Fast Griffin-Lim (torchaudio's algorithm, zero-phase start) on (freq, F) magnitudes -> (F - 1) * HOP
        samples. `prefix`: samples already known at the start of the signal, re-imposed after every inverse STFT
        (torchaudio's `griffinlim` cannot do that, which is why the loop is here)."""
        n_fft, settings, window = self.settings.n_fft, self.settings, self.window
        short = n_fft // (2 * HOP_LENGTH) + 2 - magnitude.shape[-1]
        if short > 0:  # a centered STFT pads n_fft // 2 by reflection, which needs more samples: add silent frames
            padded = self.griffin_lim(F.pad(magnitude, (0, short)), prefix)
            return padded[: (magnitude.shape[-1] - 1) * HOP_LENGTH]
        length = (magnitude.shape[-1] - 1) * HOP_LENGTH

        def inverse(spectrum: Tensor) -> Tensor:
            audio = torch.istft(spectrum, n_fft, HOP_LENGTH, window=window, length=length)
            if prefix is not None:
                audio[: len(prefix)] = prefix
            return audio

        angles = torch.ones_like(magnitude, dtype=torch.complex64)
        previous = torch.zeros_like(angles)
        for _ in range(settings.griffin_lim_iters):
            rebuilt = torch.stft(inverse(magnitude * angles), n_fft, HOP_LENGTH, window=window, return_complex=True)
            # unit phasors; torch.sgn is the 5x faster form of z / (|z| + eps) on complex tensors
            angles = torch.sgn(torch.sub(rebuilt, previous, alpha=settings.momentum / (1 + settings.momentum)))
            previous = rebuilt
        return inverse(magnitude * angles)
