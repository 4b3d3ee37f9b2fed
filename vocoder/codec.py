"""EnCodec 24 kHz as a speech tokenizer: waveform <-> residual-VQ codes, for the frozen-LLM (Freeze-Omni style) variant.

The causal 24 kHz model runs at 75 frames/s; each codebook holds 1024 entries (10 bits), so one codebook costs
0.75 kbps: 0.75 kbps -> 1 codebook, 1.5 -> 2, 3 -> 4, 6 -> 8, 12 -> 16, 24 -> 32. The released weights were trained
at 1.5-24 kbps; a single codebook (0.75 kbps, what a single-codebook speech decoder predicts) is the first residual
stage alone, a coarser code than any the released model was trained to decode (not measured here).

Weights: `weights=None` builds the architecture with seeded random weights and codebooks (no download; for tests
and offline runs of the pipeline, the codes carry no learned meaning); a path loads the released
`encodec_24khz-d7cc33bc.th` from disk (checksum checked when the file keeps its released name). Audio in and out is
mono float at any sample rate (16 kHz by default), resampled to and from the codec's 24 kHz.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF
from encodec.model import EncodecModel
from encodec.utils import _check_checksum
from torch import Tensor

logger = logging.getLogger(__name__)

CODEC_SAMPLE_RATE = 24_000
FRAME_RATE = 75
"""Code frames per second (24 kHz / hop 320)."""
CODEBOOK_SIZE = 1024
KBPS_PER_CODEBOOK = FRAME_RATE * math.log2(CODEBOOK_SIZE) / 1000
"""0.75 kbps."""
MAX_CODEBOOKS = 32


@dataclass(frozen=True, kw_only=True)
class CodecConfig:
    weights: str | None = None
    """Path to the released `encodec_24khz-*.th` state dict; None builds random weights (offline, no download)."""
    bandwidth: float = 1.5
    """Target kbps, a multiple of 0.75 from 0.75 (1 codebook) to 24 (32 codebooks)."""
    seed: int = 0
    """Seed of the random weights and codebooks when `weights` is None."""
    device: str = "cpu"
    """Torch device the codec runs on."""

    def __post_init__(self) -> None:
        n_q = self.bandwidth / KBPS_PER_CODEBOOK
        if not (1 <= round(n_q) <= MAX_CODEBOOKS and abs(n_q - round(n_q)) < 1e-6):
            raise ValueError(f"bandwidth {self.bandwidth} kbps is not a multiple of 0.75 between 0.75 and 24")

    @property
    def n_q(self) -> int:
        """Codebooks used at this bandwidth."""
        return round(self.bandwidth / KBPS_PER_CODEBOOK)


class EncodecCodec:
    """Mono waveform <-> codes (LongTensor (n_q, frames), 75 frames/s, ids in [0, 1024))."""

    sample_rate = CODEC_SAMPLE_RATE
    frame_rate = FRAME_RATE
    codebook_size = CODEBOOK_SIZE

    def __init__(self, model: EncodecModel, n_q: int) -> None:
        if not 1 <= n_q <= model.quantizer.n_q:
            raise ValueError(f"n_q must be in [1, {model.quantizer.n_q}], got {n_q}")
        self.model = model.eval()
        self.n_q = n_q

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def encode(self, wave: np.ndarray | Tensor, sample_rate: int = 16_000) -> Tensor:
        """Mono samples (1-D) at `sample_rate` -> codes (n_q, ceil(seconds * 75))."""
        audio = torch.as_tensor(np.asarray(wave, dtype=np.float32) if isinstance(wave, np.ndarray) else wave)
        if audio.dim() != 1:
            raise ValueError(f"expected mono 1-D audio, got shape {tuple(audio.shape)}")
        if audio.numel() == 0:
            return torch.zeros(self.n_q, 0, dtype=torch.long)
        audio = audio.float().to(self.device)
        if sample_rate != CODEC_SAMPLE_RATE:
            audio = AF.resample(audio, sample_rate, CODEC_SAMPLE_RATE)
        embeddings = self.model.encoder(audio.view(1, 1, -1))
        codes = self.model.quantizer.vq.encode(embeddings, n_q=self.n_q)  # (n_q, 1, frames)
        return codes[:, 0].long().cpu()

    @torch.inference_mode()
    def decode(self, codes: Tensor, sample_rate: int = 16_000) -> np.ndarray:
        """Codes (k, frames) with 1 <= k <= the model's codebooks -> float32 mono samples at `sample_rate`
        (frames / 75 seconds long)."""
        if codes.dim() != 2 or not 1 <= codes.shape[0] <= self.model.quantizer.n_q:
            raise ValueError(f"codes must have shape (n_q, frames), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= CODEBOOK_SIZE):
            raise ValueError(f"code ids must lie in [0, {CODEBOOK_SIZE})")
        frames = codes.shape[1]
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        embeddings = self.model.quantizer.decode(codes.long().to(self.device)[:, None])
        audio = self.model.decoder(embeddings).reshape(-1)
        if sample_rate != CODEC_SAMPLE_RATE:
            audio = AF.resample(audio, CODEC_SAMPLE_RATE, sample_rate)
        return audio[: round(frames * sample_rate / FRAME_RATE)].float().cpu().numpy()


def build_codec(cfg: CodecConfig) -> EncodecCodec:
    """The 24 kHz EnCodec at `cfg.bandwidth`: released weights read from `cfg.weights`, else seeded random ones."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # encodec 0.1.1 builds its convolutions with the deprecated torch.nn.utils.weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.* is deprecated", category=FutureWarning)
        torch.manual_seed(cfg.seed)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
        if cfg.weights is None:
            _init_random_codebooks(model)
    if cfg.weights is None:
        logger.info("EnCodec 24 kHz with random weights (seed %d), %d codebooks", cfg.seed, cfg.n_q)
    else:
        model.load_state_dict(load_encodec_state(cfg.weights))
        logger.info("EnCodec 24 kHz weights from %s, %d codebooks", cfg.weights, cfg.n_q)
    return EncodecCodec(model.to(cfg.device), cfg.n_q)


def load_encodec_state(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a released EnCodec checkpoint file (tensors only); a file named `<name>-<sha256 prefix>.th`
    has its checksum verified."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such EnCodec checkpoint")
    if match := re.fullmatch(r"[^-]+-([0-9a-f]{8,})\.th", path.name):
        _check_checksum(path, match.group(1))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold an EnCodec state dict")
    return state


def _init_random_codebooks(model: EncodecModel) -> None:
    """The package leaves k-means-initialized codebooks at zero until training sees data, which would map every
    frame to code 0. Random weights get codebooks drawn around what each residual stage sees when the random
    encoder hears seeded noise (per-dimension Gaussian), so codes vary with the input as they would after k-means."""
    noise = torch.randn(1, 1, 2 * CODEC_SAMPLE_RATE) * 0.1
    with torch.no_grad():
        residual = model.encoder(noise)[0].T  # (frames, dim)
        layers: list[Any] = list(model.quantizer.vq.layers)
        for layer in layers:
            codebook = layer._codebook
            mean, std = residual.mean(dim=0), residual.std(dim=0).clamp(min=1e-6)
            embed = mean + std * torch.randn_like(codebook.embed)
            codebook.embed.copy_(embed)
            codebook.embed_avg.copy_(embed)
            codebook.inited.fill_(1.0)
            residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
