"""The adapter between the speech encoder and a frozen LLM (Freeze-Omni's shape): a causal convolution with stride 2
(25 Hz encoder frames -> 12.5 Hz), a norm and a nonlinearity, then a linear layer to the LLM's hidden size. Its
output is fed to the LLM as `inputs_embeds`. It streams with its left-context cache like the encoder's convolutions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from speechgpt.model.chunked_attention import causal_strided_conv


class SpeechAdapter(nn.Module):
    def __init__(self, encoder_dim: int, hidden_size: int, kernel_size: int, stride: int, conv_dim: int) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"adapter kernel {kernel_size} is smaller than its stride {stride}")
        self.kernel_size, self.stride, self.hidden_size = kernel_size, stride, hidden_size
        self.conv = nn.Conv1d(encoder_dim, conv_dim, kernel_size, stride)
        self.norm = nn.LayerNorm(conv_dim)
        self.project = nn.Linear(conv_dim, hidden_size)
        self.spec: dict[str, Any] = {}
        """The builder's arguments (set by `build_speech_adapter`)."""

    def output_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(frame_lengths, self.stride, rounding_mode="floor")

    def forward(self, frames: torch.Tensor, history: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, encoder_dim) -> ((B, T // stride, hidden_size), history). Pass the returned history with the next
        frames of a stream (None: its start); frame j reads encoder frames up to stride * j + stride - 1 only."""
        out, history = causal_strided_conv(self.conv, frames.transpose(1, 2), history, self.kernel_size, self.stride)
        if out is None:
            return frames.new_zeros(frames.shape[0], 0, self.hidden_size), history
        return self.project(torch.nn.functional.gelu(self.norm(out.transpose(1, 2)))), history


def build_speech_adapter(
    *, encoder_dim: int, hidden_size: int, kernel_size: int = 3, stride: int = 2, conv_dim: int | None = None
) -> SpeechAdapter:
    """Adapter from `encoder_dim` encoder frames to `hidden_size` LLM embeddings at 1/`stride` the frame rate
    (`conv_dim`: the convolution's output width, 2 * encoder_dim as in Freeze-Omni by default)."""
    spec = {k: v for k, v in locals().items()}
    adapter = SpeechAdapter(encoder_dim, hidden_size, kernel_size, stride, conv_dim or 2 * encoder_dim)
    adapter.spec = spec
    return adapter
