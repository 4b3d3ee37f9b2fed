"""Whisper's encoder in PyTorch, with the weights of a CTranslate2 model.bin, stopped at any layer.

CTranslate2 returns only the last encoder layer, and for resynthesis that is the wrong one: k-means units of Whisper
tiny.en's last layer rendered back to speech are understood far less than those of its third layer, which keeps
nearly the same independence from the speaker (docs/units_quality.md, "Which layer"). This module runs the same
network in PyTorch so `whisper_ct2` can quantize any layer: the output of layer L, and for the last layer the final
layer norm after it (what CTranslate2 returns).

The network is OpenAI Whisper's: two GELU convolutions (the second with stride 2) over the 80- or 128-bin log-mel,
sinusoidal positions, pre-norm blocks of self-attention (fused q/k/v projection, as CTranslate2 stores it) and GELU
feed-forward.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from speechgpt.units.ct2_model_bin import whisper_variables

ENCODER_PREFIX = "encoder/"
BLOCK = re.compile(r"layer_(\d+)/")
# CTranslate2's DataType enum: the float types a converted Whisper model stores its encoder in
FLOAT_TYPES = {0: np.float32, 4: np.float16, 5: np.uint16}  # 5 = bfloat16, read as raw 16-bit words


def read_encoder_weights(model_bin: Path) -> tuple[dict[str, Tensor], int]:
    """float32 tensors of every `encoder/` variable of a CTranslate2 model.bin, keyed without the prefix, and the
    number of attention heads; the decoder's data blocks are skipped. A model quantized at conversion (int8 / int16
    weights) is refused."""
    weights: dict[str, Tensor] = {}
    heads = 0
    for variable in whisper_variables(model_bin, read=lambda name: name.startswith(ENCODER_PREFIX)):
        name, data = variable.name, variable.data
        if data is None:
            continue
        if name == "encoder/num_heads":
            heads = int(np.frombuffer(data, dtype=np.int16 if len(data) == 2 else np.int32)[0])
            continue
        if variable.dtype not in FLOAT_TYPES:
            raise ValueError(
                f"{model_bin}: {name} is stored quantized (type {variable.dtype}); convert the model with "
                "float16 or float32 weights to run its encoder in PyTorch"
            )
        array = np.frombuffer(data, dtype=FLOAT_TYPES[variable.dtype]).reshape(variable.dims)
        weights[name.removeprefix(ENCODER_PREFIX)] = (
            torch.from_numpy(array.astype(np.int32) << 16).view(torch.float32)
            if variable.dtype == 5
            else torch.from_numpy(array.astype(np.float32))
        )
    if not heads:
        raise ValueError(f"{model_bin}: no encoder/num_heads variable")
    return weights, heads


class WhisperEncoderLayers(nn.Module):
    """Whisper's encoder up to layer `layers` (1-based): log-mel (B, n_mels, 2T) -> features (B, T, d_model).
    `final_norm`: apply the encoder's closing layer norm (what Whisper's decoder reads, and CTranslate2 returns)."""

    def __init__(self, weights: dict[str, Tensor], *, layers: int, heads: int, final_norm: bool) -> None:
        super().__init__()
        blocks = {name: int(match[1]) for name in weights if (match := BLOCK.match(name))}
        available = len(set(blocks.values()))
        if not 1 <= layers <= available:
            raise ValueError(f"layer {layers} does not exist: the encoder has layers 1..{available}")
        kept = {name: value for name, value in weights.items() if blocks.get(name, -1) < layers}
        self.weights = nn.ParameterDict(
            {name.replace("/", "__"): nn.Parameter(value, requires_grad=False) for name, value in kept.items()}
        )
        self.layers, self.heads, self.final_norm = layers, heads, final_norm
        self.n_mels, self.dim = int(weights["conv1/weight"].shape[1]), int(weights["conv1/bias"].shape[0])

    def _w(self, name: str) -> Tensor:
        return self.weights[name.replace("/", "__")]

    def _norm(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self._w(f"{name}/gamma"), self._w(f"{name}/beta"), 1e-5)

    def _linear(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self._w(f"{name}/weight"), self._w(f"{name}/bias"))

    def forward(self, mel: Tensor) -> Tensor:
        x = F.gelu(F.conv1d(mel, self._w("conv1/weight"), self._w("conv1/bias"), padding=1))
        x = F.gelu(F.conv1d(x, self._w("conv2/weight"), self._w("conv2/bias"), stride=2, padding=1)).transpose(1, 2)
        x = x + self._w("position_encodings/encodings")[: x.shape[1]]
        batch, frames, dim = x.shape
        for index in range(self.layers):
            block = f"layer_{index}"
            h = self._norm(x, f"{block}/self_attention/layer_norm")
            q, k, v = (
                t.view(batch, frames, self.heads, -1).transpose(1, 2)
                for t in self._linear(h, f"{block}/self_attention/linear_0").chunk(3, dim=-1)
            )
            attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, frames, dim)
            x = x + self._linear(attended, f"{block}/self_attention/linear_1")
            h = self._norm(x, f"{block}/ffn/layer_norm")
            x = x + self._linear(F.gelu(self._linear(h, f"{block}/ffn/linear_0")), f"{block}/ffn/linear_1")
        return self._norm(x, "layer_norm") if self.final_norm else x


def load_encoder_layers(model_bin: Path, *, layer: int, final_norm: bool) -> WhisperEncoderLayers:
    """The encoder of a CTranslate2 Whisper model.bin up to `layer`, in float32, in eval mode."""
    weights, heads = read_encoder_weights(model_bin)
    return WhisperEncoderLayers(weights, layers=layer, heads=heads, final_norm=final_norm).eval()
