"""Streamed synthesis: merged units arrive in chunks, audio leaves as soon as it is final.

Three stages, each holding back only what its receptive field requires:
1. durations: the duration predictor is convolutional, so a unit's duration is final once `right` more units are
   known; it is recomputed over a window with `left` units of past context, which gives exactly the offline value,
   and the rounding error carries from one push to the next as it does from unit to unit offline.
2. frames -> renderer output (log-mel for the mel route, samples for hifigan): final `right_context` frames behind
   the newest frame, computed over a window with `left_context` frames of past; again exactly the offline values.
3. mel route only, log-mel -> audio by Griffin-Lim: each chunk's window starts `GL_LEFT` frames before the first
   unemitted frame and ends `GL_LOOKAHEAD` frames after the last emitted one; the already emitted samples are
   re-imposed at every iteration, so new audio continues the old (no crossfade needed). Phases differ from offline
   Griffin-Lim (a different local optimum); magnitudes agree: the log-mel of streamed and whole audio differ by a
   few percent (tests/unit/test_vocoder_streaming.py and benchmarks/bench_vocoder.py measure it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from vocoder.data import HOP_LENGTH
from vocoder.duration import frames_carried

if TYPE_CHECKING:
    from vocoder.mel_vocoder import MelInverter
    from vocoder.runtime import Vocoder

GL_LEFT = 4
"""Frames of emitted audio re-imposed at the start of each Griffin-Lim window (>= n_fft / 2 / hop)."""
GL_LOOKAHEAD = 3
"""Frames after the last emitted one that each Griffin-Lim window includes (not emitted until the next chunk)."""


class AudioTail(Protocol):
    def push(self, rendered: Tensor, final: bool) -> np.ndarray: ...


def conv_reach(module: nn.Module) -> tuple[int, int]:
    """(left, right) positions a stack of Conv1d layers reads beyond each output position, summed over layers."""
    left = right = 0
    for conv in module.modules():
        if isinstance(conv, nn.Conv1d):
            pad = int(conv.padding[0])
            span = conv.dilation[0] * (conv.kernel_size[0] - 1)
            left, right = left + pad, right + span - pad
    return left, right


class PassThrough:
    """The hifigan route: rendered output already is audio."""

    def push(self, rendered: Tensor, final: bool) -> np.ndarray:
        return rendered.reshape(-1).float().cpu().numpy()


class GriffinLimStream:
    """Log-mel frames in (final ones, in order), audio out; see the module docstring, stage 3."""

    def __init__(self, inverter: MelInverter, left: int = GL_LEFT, lookahead: int = GL_LOOKAHEAD) -> None:
        if lookahead < 1:
            raise ValueError("lookahead must be at least one frame")
        self.inverter, self.left, self.lookahead = inverter, left, lookahead
        self.mel: Tensor | None = None
        """Log-mel frames from `offset` on (older ones are out of every later window's reach)."""
        self.offset = 0
        self.emitted = 0
        """Frames whose audio is out."""
        self.tail = torch.zeros(0)
        """The last `left` frames of emitted audio."""

    @torch.inference_mode()
    def push(self, rendered: Tensor, final: bool) -> np.ndarray:
        self.mel = rendered if self.mel is None else torch.cat([self.mel, rendered], dim=1)
        total = self.offset + self.mel.shape[1]
        emit_to = total if final else total - self.lookahead
        if emit_to <= self.emitted:
            return np.zeros(0, dtype=np.float32)
        start = max(0, self.emitted - self.left)
        magnitude = self.inverter.magnitude(self.mel[:, start - self.offset :])
        if final:  # as offline synthesis: one extra frame so the last frame's samples are covered
            magnitude = torch.cat([magnitude, magnitude[:, -1:]], dim=1)
        known = (self.emitted - start) * HOP_LENGTH
        audio = self.inverter.griffin_lim(magnitude, prefix=self.tail[len(self.tail) - known :])
        out = audio[known : (emit_to - start) * HOP_LENGTH]
        self.tail = torch.cat([self.tail, out])[-self.left * HOP_LENGTH :]
        keep_from = max(0, emit_to - self.left)
        self.mel, self.offset = self.mel[:, keep_from - self.offset :], keep_from
        self.emitted = emit_to
        return out.numpy()


class VocoderStream:
    """One streamed utterance of a `Vocoder` (satisfies speechgpt.infer.vocoding.UnitAudioStream)."""

    def __init__(self, vocoder: Vocoder, speaker: str | None = None) -> None:
        self.vocoder = vocoder
        self.speaker = vocoder.speaker_index(speaker)
        renderer = vocoder.renderer
        self.left_context, self.right_context = renderer.left_context, renderer.right_context
        self.steps = renderer.steps_per_frame
        self.tail: AudioTail = renderer.audio_stream()
        self.units: list[int] = []
        self.durations: list[int] = []
        self.carry = 0.0
        """Rounding error of the predicted frames so far, carried to the next unit (`frames_carried`)."""
        self.given: list[int] | None = None
        """Durations pushed with the units (None: predicted)."""
        self.frames: list[int] = []
        self.rendered = 0
        """Frames whose renderer output has been handed to the tail."""
        self.reach = conv_reach(vocoder.duration) if vocoder.duration is not None else (0, 0)
        self.finished = False

    def push(self, units: Sequence[int], durations: Sequence[int] | None = None) -> np.ndarray:
        """Add units; `durations` (frames per unit) replaces the predictor, and then must come with every push."""
        if self.finished:
            raise RuntimeError("push after finish")
        if self.given is None and not self.units:
            self.given = [] if durations is not None else None
        if (durations is None) != (self.given is None) or (durations is not None and len(durations) != len(units)):
            raise ValueError("give durations with every push of a stream or with none, one per unit")
        self.units.extend(int(u) for u in units)
        if self.given is not None and durations is not None:
            self.given.extend(int(d) for d in durations)
        return self._advance(final=False)

    def finish(self) -> np.ndarray:
        if self.finished:
            raise RuntimeError("finish called twice")
        audio = self._advance(final=True)
        self.finished = True
        return audio

    def _advance(self, final: bool) -> np.ndarray:
        self._extend_frames(final)
        ready = len(self.frames) if final else len(self.frames) - self.right_context
        if ready <= self.rendered and not (final and self.frames):
            return np.zeros(0, dtype=np.float32)
        start = max(0, self.rendered - self.left_context)
        stop = len(self.frames) if final else min(len(self.frames), ready + self.right_context)
        window = torch.tensor(self.frames[start:stop], dtype=torch.long)
        output = self.vocoder.renderer.render(window, self.speaker)
        chunk = output[..., (self.rendered - start) * self.steps : (max(ready, self.rendered) - start) * self.steps]
        self.rendered = max(ready, self.rendered)
        return np.clip(self.tail.push(chunk, final), -1.0, 1.0).astype(np.float32)

    @torch.inference_mode()
    def _extend_frames(self, final: bool) -> None:
        known, done = len(self.units), len(self.durations)
        duration = self.vocoder.duration
        if self.given is not None:
            new = self.given[done:known]
        elif duration is None:
            new = [1] * (known - done)
        else:
            left, right = self.reach
            ready = known if final else known - right
            if ready <= done:
                return
            start = max(0, done - left)
            ids = torch.tensor(self.units[start:known], dtype=torch.long)
            log_durations = duration(self.vocoder.unit_embedding(ids)[None])[0]
            new, self.carry = frames_carried(log_durations[done - start : ready - start], self.carry)
        for unit, frames in zip(self.units[done : done + len(new)], new, strict=True):
            self.frames.extend([unit] * frames)
        self.durations.extend(new)
