"""The vocoder object inference uses: merged units (+ durations or predicted ones, speaker) -> 16 kHz audio, whole or
streamed, whichever route made the frames into sound. Satisfies speechgpt.infer.vocoding.StreamingVocoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn
from unit_hifigan.model import UnitVocoder

from vocoder.data import HOP_LENGTH
from vocoder.duration import DurationPredictor, expand_units, frames_carried, unit_ids_tensor
from vocoder.hifigan import context_frames
from vocoder.mel_vocoder import MelInverter, MelNet, MelSettings
from vocoder.streaming import AudioTail, GriffinLimStream, PassThrough, VocoderStream


class FrameRenderer(Protocol):
    """A route's frame-level model: frame units -> output with `steps_per_frame` time steps per frame."""

    left_context: int
    """Past frames an output frame depends on."""
    right_context: int
    """Future frames an output frame depends on (what a stream waits for)."""
    steps_per_frame: int
    unit_embedding: nn.Embedding

    def render(self, frames: Tensor, speaker: int | None) -> Tensor: ...

    def to_audio(self, rendered: Tensor) -> np.ndarray: ...

    def audio_stream(self) -> AudioTail: ...


class MelRenderer:
    """Mel route: MelNet -> log-mel (n_mels, T); Griffin-Lim makes it audio."""

    steps_per_frame = 1

    def __init__(self, net: MelNet, settings: MelSettings) -> None:
        self.net = net.eval()
        self.inverter = MelInverter(settings).to(next(net.parameters()).device)
        self.left_context, self.right_context = net.left_context, net.right_context
        self.unit_embedding = net.unit_embedding

    @torch.inference_mode()
    def render(self, frames: Tensor, speaker: int | None) -> Tensor:
        device = self.unit_embedding.weight.device
        speakers = None if speaker is None else torch.tensor([speaker], device=device)
        return self.net(frames.to(device)[None], speakers)[0].float().cpu()

    @torch.inference_mode()
    def to_audio(self, rendered: Tensor) -> np.ndarray:
        return self.inverter.to("cpu")(rendered).numpy()

    def audio_stream(self) -> AudioTail:
        return GriffinLimStream(self.inverter.to("cpu"))


class HifiganRenderer:
    """HiFi-GAN route: UnitVocoder's generator -> samples (T * 320,)."""

    steps_per_frame = HOP_LENGTH

    def __init__(self, generator: UnitVocoder) -> None:
        self.generator = generator.eval()
        self.left_context = self.right_context = context_frames(generator)
        self.unit_embedding = generator.unit_embedding

    @torch.inference_mode()
    def render(self, frames: Tensor, speaker: int | None) -> Tensor:
        device = self.unit_embedding.weight.device
        speakers = None if speaker is None else torch.tensor([[speaker]], device=device)
        return self.generator(frames.to(device)[None], speaker=speakers).reshape(-1).float().cpu()

    def to_audio(self, rendered: Tensor) -> np.ndarray:
        return rendered.numpy()

    def audio_stream(self) -> AudioTail:
        return PassThrough()


class Vocoder:
    """Merged units -> float32 mono audio at 16 kHz. Without given durations the duration predictor sets them (fed
    the route's unit embedding, as in fairseq's CodeHiFiGAN, rounded by `frames_carried` so that they add up to the
    predicted length); without a predictor every unit lasts one frame.
    `speaker=None` picks `default_speaker` (held-out voices, or a single-speaker model)."""

    sample_rate = 16_000

    def __init__(
        self,
        renderer: FrameRenderer,
        duration: DurationPredictor | None,
        speakers: Sequence[str] = (),
        default_speaker: str | None = None,
        route: str = "",
    ) -> None:
        self.renderer = renderer
        self.duration = duration.eval() if duration is not None else None
        self.speakers = list(speakers)
        if default_speaker is not None and default_speaker not in self.speakers:
            raise ValueError(f"default speaker {default_speaker!r} is not one of {self.speakers}")
        self.default_speaker = default_speaker or (self.speakers[0] if self.speakers else None)
        self.route = route

    @property
    def unit_embedding(self) -> nn.Embedding:
        return self.renderer.unit_embedding

    @property
    def n_units(self) -> int:
        return self.unit_embedding.num_embeddings

    def speaker_index(self, speaker: str | None) -> int | None:
        if not self.speakers:
            return None
        name = self.default_speaker if speaker is None else speaker
        if name not in self.speakers:
            raise ValueError(f"unknown speaker {name!r}; this vocoder knows {self.speakers}")
        return self.speakers.index(name)

    def unit_tensor(self, units: Sequence[int] | Tensor) -> Tensor:
        return unit_ids_tensor(units, self.n_units, self.unit_embedding.weight.device)

    @torch.inference_mode()
    def predict_durations(self, units: Sequence[int] | Tensor) -> list[int]:
        tensor = self.unit_tensor(units)
        if self.duration is None or tensor.numel() == 0:
            return [1] * tensor.numel()
        return frames_carried(self.duration(self.unit_embedding(tensor)[None])[0])[0]

    def frame_units(self, units: Sequence[int] | Tensor, durations: Sequence[int] | None = None) -> Tensor:
        """Merged units expanded to 50 Hz frame units with the given durations, else the predicted ones."""
        tensor = self.unit_tensor(units)
        chosen = self.predict_durations(tensor) if durations is None else list(durations)
        return expand_units(tensor.cpu(), torch.as_tensor(chosen, dtype=torch.long))

    def synthesize_frames(self, frames: Tensor, speaker: str | None = None) -> np.ndarray:
        if frames.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        rendered = self.renderer.render(frames, self.speaker_index(speaker))
        return np.clip(self.renderer.to_audio(rendered), -1.0, 1.0).astype(np.float32)

    def __call__(
        self, units: Sequence[int], durations: Sequence[int] | None = None, speaker: str | None = None
    ) -> np.ndarray:
        return self.synthesize_frames(self.frame_units(units, durations), speaker)

    def stream(self, speaker: str | None = None) -> VocoderStream:
        return VocoderStream(self, speaker)
