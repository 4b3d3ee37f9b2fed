"""The frozen-LLM variant's speech encoder (Freeze-Omni's shape): frame features -> global CMVN -> 4x conv
subsampling (two stride-2 convolutions over time and frequency) -> transformer with chunked attention (160 ms
chunks, a limited number of left chunks) -> encoder frames, plus an optional CTC head for input stage 1.

The same weights run two ways that give equal outputs: `forward` on padded clips under the chunk mask (training),
and `stream_step` on audio that arrives piece by piece, with the convolutions' left context and each layer's
keys/values of the last `left_chunks` chunks cached (listening). A chunk is only encoded once it is complete, so a
stream returns frames a whole chunk at a time (or what is left on `final=True`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from speechgpt.model.chunked_attention import (
    EncoderLayer,
    KeyValue,
    Rotary,
    causal_strided_conv,
    chunk_attention_mask,
)

KERNEL, STRIDE = 3, 2


class ConvSubsampling(nn.Module):
    """Stride-2 convolutions over (time, frequency), causal in time, then a linear layer to the encoder width."""

    def __init__(self, input_dim: int, dim: int, channels: int, num_convs: int) -> None:
        super().__init__()
        convs, in_channels, freq = [], 1, input_dim
        for _ in range(num_convs):
            convs.append(nn.Conv2d(in_channels, channels, KERNEL, STRIDE))
            in_channels, freq = channels, (freq - KERNEL) // STRIDE + 1
        if freq < 1:
            raise ValueError(f"{input_dim}-d features are too narrow for {num_convs} stride-2 convolutions")
        self.convs = nn.ModuleList(convs)
        self.project = nn.Linear(channels * freq, dim)

    def forward(
        self, feats: torch.Tensor, history: list[torch.Tensor | None] | None = None
    ) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
        """feats (B, T, input_dim) -> (B, T // 2**num_convs, dim), or None when no frame completed. `history`:
        each convolution's left context and unconsumed input (None: clip start); the updated one is returned."""
        history = list(history) if history is not None else [None] * len(self.convs)
        x: torch.Tensor | None = feats[:, None]  # (B, 1, T, F)
        for i, conv in enumerate(self.convs):
            if x is None:
                break
            x, history[i] = causal_strided_conv(conv, x, history[i], KERNEL, STRIDE)
            x = None if x is None else torch.relu(x)
        if x is None:
            return None, history
        b, c, t, f = x.shape
        return self.project(x.transpose(1, 2).reshape(b, t, c * f)), history


@dataclass
class EncoderStream:
    """What a stream carries between pieces of audio (one per batch of synchronous streams)."""

    conv_history: list[torch.Tensor | None] | None = None
    pending: torch.Tensor | None = None
    """Subsampled frames of a chunk not yet complete (B, n < chunk, dim)."""
    cache: list[KeyValue | None] = field(default_factory=list)
    """Per layer: rotated keys and values of the last `left_chunks` chunks."""
    position: int = 0
    """Encoder frames already returned (the next chunk's first position)."""


class SpeechEncoder(nn.Module):
    cmvn_mean: torch.Tensor
    cmvn_std: torch.Tensor

    def __init__(
        self,
        *,
        input_dim: int,
        frame_rate: float,
        dim: int,
        num_layers: int,
        num_heads: int,
        ffn_dim: int,
        subsampling: int,
        conv_channels: int,
        chunk_ms: float,
        left_chunks: int,
        dropout: float,
        ctc_vocab_size: int,
        rope_base: float,
    ) -> None:
        super().__init__()
        num_convs = int(math.log2(subsampling))
        if subsampling < 2 or 2**num_convs != subsampling:
            raise ValueError(f"subsampling must be a power of two >= 2, got {subsampling}")
        chunk = chunk_ms / 1000 * frame_rate / subsampling
        if chunk < 1 or abs(chunk - round(chunk)) > 1e-6:
            raise ValueError(
                f"{chunk_ms} ms chunks are {chunk:g} encoder frames at {frame_rate} Hz / {subsampling}: "
                "need a whole number >= 1"
            )
        self.input_dim, self.dim, self.subsampling = input_dim, dim, subsampling
        self.frame_rate = frame_rate / subsampling
        self.chunk, self.left_chunks = round(chunk), left_chunks
        self.register_buffer("cmvn_mean", torch.zeros(input_dim))
        self.register_buffer("cmvn_std", torch.ones(input_dim))
        self.subsample = ConvSubsampling(input_dim, dim, conv_channels, num_convs)
        self.dropout = nn.Dropout(dropout)
        rotary = Rotary(dim // num_heads, rope_base)
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, ffn_dim, dropout, rotary) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.ctc_head = nn.Linear(dim, ctc_vocab_size) if ctc_vocab_size > 0 else None
        self.spec: dict[str, Any] = {}
        """The builder's arguments (set by `build_speech_encoder`), so a saved encoder can be rebuilt."""

    def set_cmvn(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Global feature normalization (see speech_features.fit_cmvn); saved with the encoder's weights."""
        self.cmvn_mean.copy_(mean)
        self.cmvn_std.copy_(std.clamp(min=1e-5))

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(feature_lengths, self.subsampling, rounding_mode="floor")

    def num_chunks(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        """Chunks per clip: the state head's decisions per clip, one at each chunk's end."""
        return torch.div(self.output_lengths(feature_lengths) + self.chunk - 1, self.chunk, rounding_mode="floor")

    def forward(self, feats: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, input_dim) padded features -> ((B, T', dim) encoder frames, (B,) lengths T' = T // subsampling)."""
        x, _ = self.subsample(self._normalize(feats))
        lengths = self.output_lengths(feature_lengths)
        if x is None:
            return feats.new_zeros(feats.shape[0], 0, self.dim), lengths
        mask = chunk_attention_mask(lengths, x.shape[1], self.chunk, self.left_chunks)
        x = self.dropout(x)
        for layer in self.layers:
            x, _ = layer(x, 0, mask)
        return self.norm(x), lengths

    def ctc_logits(self, frames: torch.Tensor) -> torch.Tensor:
        if self.ctc_head is None:
            raise ValueError("this encoder was built without a CTC head (ctc_vocab_size=0)")
        return self.ctc_head(frames)

    def stream_step(
        self, feats: torch.Tensor, state: EncoderStream | None = None, final: bool = False
    ) -> tuple[torch.Tensor, EncoderStream]:
        """Encode the next piece of features (B, t, input_dim) of a stream (`state` None: its start). Returns the
        frames of every chunk this piece completed (B, k * chunk, dim), and on `final` also the last partial chunk.
        Equal to `forward` on the whole clip, frame for frame."""
        state = state if state is not None else EncoderStream(cache=[None] * len(self.layers))
        x, state.conv_history = self.subsample(self._normalize(feats), state.conv_history)
        pieces = [p for p in (state.pending, x) if p is not None]
        pending = torch.cat(pieces, 1) if pieces else feats.new_zeros(feats.shape[0], 0, self.dim)
        ready = pending.shape[1] if final else pending.shape[1] // self.chunk * self.chunk
        state.pending = pending[:, ready:]
        outputs = [self._encode_chunk(pending[:, i : i + self.chunk], state) for i in range(0, ready, self.chunk)]
        return (torch.cat(outputs, 1) if outputs else pending[:, :0]), state

    def _encode_chunk(self, x: torch.Tensor, state: EncoderStream) -> torch.Tensor:
        keep = None if self.left_chunks < 0 else self.left_chunks * self.chunk
        x = self.dropout(x)
        for i, layer in enumerate(self.layers):
            past = state.cache[i]
            x, (k, v) = layer(x, state.position, None, past)
            if past is not None:
                k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
            state.cache[i] = None if keep == 0 else (k, v) if keep is None else (k[:, :, -keep:], v[:, :, -keep:])
        state.position += x.shape[1]
        return self.norm(x)

    def _normalize(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats - self.cmvn_mean) / self.cmvn_std


def build_speech_encoder(
    *,
    input_dim: int,
    frame_rate: float,
    dim: int = 256,
    num_layers: int = 6,
    num_heads: int = 4,
    ffn_dim: int | None = None,
    subsampling: int = 4,
    conv_channels: int | None = None,
    chunk_ms: float = 160.0,
    left_chunks: int = 8,
    dropout: float = 0.1,
    ctc_vocab_size: int = 0,
    rope_base: float = 10_000.0,
) -> SpeechEncoder:
    """A chunked streaming encoder for `input_dim`-d features at `frame_rate` Hz. Chunks of `chunk_ms` must be a
    whole number of encoder frames (100 Hz fbank / 4 -> 4 frames; 50 Hz unit-encoder frames / 2 -> 4, / 4 -> 2);
    `left_chunks` < 0 reads all earlier chunks. `ctc_vocab_size` > 0 adds a CTC head (index 0 = blank)."""
    spec = {k: v for k, v in locals().items()}
    encoder = SpeechEncoder(
        input_dim=input_dim,
        frame_rate=frame_rate,
        dim=dim,
        num_layers=num_layers,
        num_heads=num_heads,
        ffn_dim=ffn_dim or 4 * dim,
        subsampling=subsampling,
        conv_channels=conv_channels or dim,
        chunk_ms=chunk_ms,
        left_chunks=left_chunks,
        dropout=dropout,
        ctc_vocab_size=ctc_vocab_size,
        rope_base=rope_base,
    )
    encoder.spec = spec
    return encoder
