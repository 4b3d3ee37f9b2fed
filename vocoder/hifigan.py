"""The "hifigan" route: unit_hifigan's UnitVocoder (generator) and UnitDiscriminator with its losses, driven by our
training loop (unit_hifigan's own train.py is CUDA/NCCL only). The generator can warm up on the mel loss alone (no
discriminator: what is affordable on a CPU) before the adversarial losses join. Saved with `save_pretrained`, so
`unit_hifigan.UnitVocoder.from_pretrained(folder)` loads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchaudio.transforms import MelSpectrogram
from unit_hifigan import loss as hifigan_loss
from unit_hifigan.model import UnitDiscriminator, UnitVocoder

LossFn = Callable[[Any, Any], tuple[Tensor, dict[str, Tensor]]]


def build_generator(n_units: int, speakers: list[str], embedding_dim: int = 128) -> UnitVocoder:
    """A fresh UnitVocoder (the 16 kHz / 50 Hz generator of unit_hifigan) with one embedding row per speaker."""
    return UnitVocoder(n_units, speakers=speakers or None, embedding_dim=embedding_dim)


class HifiganLogMel(nn.Module):
    """The log-mel UnitDiscriminator compares (n_fft 1024, hop 256, slaney, reflect-padded), without building the
    discriminator's ~70M parameters when only the mel loss is trained."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = MelSpectrogram(
            sample_rate=16_000,
            n_fft=1_024,
            win_length=1_024,
            hop_length=256,
            f_min=0,
            f_max=8_000,
            n_mels=80,
            power=1,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, audio: Tensor) -> Tensor:
        padding = (1_024 - 256) // 2
        audio = F.pad(audio.unsqueeze(1), (padding, padding), "reflect").squeeze(1)
        return torch.clamp(self.mel(audio), min=1e-5).log()


def speaker_input(generator: UnitVocoder, speaker: Tensor) -> Tensor | None:
    """UnitVocoder takes speaker indices as (B, 1); None for a single-speaker generator."""
    return speaker[:, None] if generator.speaker_embedding is not None else None


def losses(compiled: bool) -> tuple[LossFn, LossFn]:
    """unit_hifigan's (generator, discriminator) losses; its functions are wrapped in torch.compile, which on a CPU
    means a long C++ build at the first step, so `compiled=False` takes the plain functions beneath."""
    if compiled:
        return hifigan_loss.generator_loss, hifigan_loss.discriminator_loss
    return (
        getattr(hifigan_loss.generator_loss, "__wrapped__", hifigan_loss.generator_loss),
        getattr(hifigan_loss.discriminator_loss, "__wrapped__", hifigan_loss.discriminator_loss),
    )


def mel_only_loss(log_mel: HifiganLogMel, fake: Tensor, real: Tensor) -> Tensor:
    """The generator's mel term alone (L1 on log-mel, weighted like in the adversarial loss)."""
    return hifigan_loss.LAMBDA_MEL * F.l1_loss(log_mel(fake.squeeze(1)), log_mel(real))


def build_discriminator() -> UnitDiscriminator:
    return UnitDiscriminator()


def context_frames(generator: UnitVocoder) -> int:
    """Unit frames on each side that an output sample depends on (upper bound from the layer shapes), so a stream
    that gives the generator this much context computes what whole-utterance synthesis computes."""
    net: Any = generator.generator
    reach = (net.conv_pre.kernel_size[0] - 1) / 2  # in input frames
    rate = 1
    for upsampler, mrf in zip(net.upsamplers, net.mrfs, strict=True):
        stride, kernel = int(upsampler.stride[0]), int(upsampler.kernel_size[0])
        reach += math.ceil(kernel / stride) / rate  # a transposed conv reads ceil(k / s) inputs per output
        rate *= stride
        reach += _mrf_reach(mrf) / rate
    reach += (net.conv_post.kernel_size[0] - 1) / 2 / rate
    return math.ceil(reach) + 1


def _mrf_reach(mrf: Any) -> int:
    """Largest one-sided reach in samples of a MultiReceptiveFieldFusion (its branches run in parallel)."""
    best = 0
    for block in mrf.residual_blocks:
        total = 0
        for layer in block:
            for conv in (layer.conv1, layer.conv2):
                total += conv.dilation[0] * (conv.kernel_size[0] - 1) // 2
        best = max(best, total)
    return best
