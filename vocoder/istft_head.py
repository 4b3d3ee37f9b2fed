"""A Vocos-style waveform head: log-mel frames -> ConvNeXt blocks -> STFT magnitude and phase -> inverse STFT.

Vocos (Siuzdak, 2023) replaces a HiFi-GAN's upsampling stack with a frame-rate network whose last layer is an
inverse STFT; it trains with a discriminator. Here it trains without one, on a multi-resolution STFT loss (spectral
convergence + log magnitude, as Parallel WaveGAN) plus L1 on the log-mel, which is what a CPU can afford in
minutes. It runs at the frame rate (50 Hz, hop 320, FFT 1280), so it costs far less than 32 Griffin-Lim iterations.
Convolutions are shifted like MelNet's (`lookahead_frames`), so a stream can compute its frames exactly.
"""

from __future__ import annotations

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn
from torch.nn import functional as F

from vocoder.data import HOP_LENGTH
from vocoder.mel_vocoder import LogMel, split_lookahead

MAX_LOG_MAGNITUDE = 4.0
"""Cap on predicted log magnitudes (exp(4) = 55 >> a full-scale sine's STFT peak / window sum)."""


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (shifted to read `right` frames ahead) -> LayerNorm -> pointwise MLP, scaled residual."""

    def __init__(self, channels: int, kernel_size: int, right: int, expansion: int = 3) -> None:
        super().__init__()
        span = kernel_size - 1
        self.left, self.right = span - right, right
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.up = nn.Linear(channels, expansion * channels)
        self.down = nn.Linear(expansion * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 0.1))

    def forward(self, x: Tensor) -> Tensor:
        y = self.depthwise(F.pad(x, (self.left, self.right))).transpose(1, 2)
        y = self.down(F.gelu(self.up(self.norm(y))))
        return x + (self.scale * y).transpose(1, 2)


class IstftHead(nn.Module, PyTorchModelHubMixin):
    """Log-mel (B, n_mels, T) -> audio (B, T * HOP_LENGTH); frame t's window is centered on sample t * HOP_LENGTH."""

    def __init__(
        self,
        *,
        n_mels: int = 80,
        channels: int = 256,
        blocks: int = 6,
        kernel_size: int = 7,
        n_fft: int = 1280,
        lookahead_frames: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or n_fft % 2:
            raise ValueError("kernel_size must be odd and n_fft even")
        rights = split_lookahead([kernel_size - 1] * (blocks + 1), lookahead_frames)
        self.pre_left, self.pre_right = kernel_size - 1 - rights[0], rights[0]
        self.pre = nn.Conv1d(n_mels, channels, kernel_size)
        self.blocks = nn.ModuleList(ConvNeXtBlock(channels, kernel_size, right) for right in rights[1:])
        self.norm = nn.LayerNorm(channels)
        self.out = nn.Linear(channels, n_fft + 2)
        self.n_fft = n_fft
        self.window: Tensor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.right_context = sum(rights)
        """Future frames an output frame depends on (before the inverse STFT's overlap)."""
        self.left_context = (blocks + 1) * (kernel_size - 1) - self.right_context

    def spectrum(self, log_mel: Tensor) -> Tensor:
        """Complex STFT frames (B, n_fft // 2 + 1, T)."""
        x = self.pre(F.pad(log_mel, (self.pre_left, self.pre_right)))
        for block in self.blocks:
            x = block(x)
        log_magnitude, phase = self.out(self.norm(x.transpose(1, 2))).transpose(1, 2).float().chunk(2, dim=1)
        return torch.polar(torch.exp(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE)), phase)

    def forward(self, log_mel: Tensor) -> Tensor:
        frames = log_mel.shape[-1]
        spectrum = self.spectrum(log_mel)
        return torch.istft(spectrum, self.n_fft, HOP_LENGTH, window=self.window, length=frames * HOP_LENGTH)


RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
"""(FFT size, hop) of the multi-resolution STFT loss."""


def stft_loss(fake: Tensor, real: Tensor) -> Tensor:
    """Multi-resolution STFT loss: spectral convergence + L1 of log magnitudes, averaged over RESOLUTIONS."""
    total = fake.new_zeros(())
    for n_fft, hop in RESOLUTIONS:
        window = torch.hann_window(n_fft, device=fake.device)
        spectra = [torch.stft(x, n_fft, hop, window=window, return_complex=True).abs() for x in (fake, real)]
        fake_mag, real_mag = (s.clamp(min=1e-5) for s in spectra)
        convergence = torch.linalg.norm(real_mag - fake_mag) / torch.linalg.norm(real_mag).clamp(min=1e-5)
        total = total + convergence + F.l1_loss(fake_mag.log(), real_mag.log())
    return total / len(RESOLUTIONS)


def waveform_loss(fake: Tensor, real: Tensor, log_mel: LogMel, mel_weight: float = 1.0) -> tuple[Tensor, Tensor]:
    """(multi-resolution STFT loss, log-mel L1) between generated and real audio (B, N), in float32."""
    fake, real = fake.float(), real.float()
    return stft_loss(fake, real), mel_weight * F.l1_loss(log_mel(fake), log_mel(real))
