"""Speech encoders that turn 16 kHz audio into frame features of one chosen layer (50 frames per second).

Backends: `hubert` / `wav2vec2` (transformers, a local folder or a hub id), `fairseq_hubert` (a fairseq HuBERT or
mHuBERT checkpoint converted on load), `whisper` (the encoder of a transformers Whisper model), and `mfcc` / `logmel`
(torchaudio, no weights). Transformer backends are built with only the layers up to the chosen one, so nothing above
it is loaded or computed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

log = logging.getLogger(__name__)

FRAME_RATE = 50
HOP = 320  # samples per frame at 16 kHz

EncoderKind = Literal["hubert", "fairseq_hubert", "wav2vec2", "whisper", "whisper_ct2", "mfcc", "logmel"]


@dataclass(kw_only=True)
class EncoderConfig:
    kind: EncoderKind = "mfcc"
    """Backend: hubert, fairseq_hubert, wav2vec2, whisper (weights from `path`), or mfcc / logmel (no weights)."""
    path: str | None = None
    """Local folder (HF layout), hub id, or fairseq .pt file for fairseq_hubert; unused by mfcc / logmel."""
    layer: int = 6
    """Transformer layer whose output is quantized (1 = first layer); SpeechGPT uses mHuBERT layer 11."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute precision of the transformer backends (bfloat16 autocast on CPUs with bf16 instructions)."""
    trust_checkpoint: bool = False
    """Allow unpickling a fairseq checkpoint (pickles can run code: only for files you trust)."""

    def __post_init__(self) -> None:
        if self.kind in ("hubert", "fairseq_hubert", "wav2vec2", "whisper", "whisper_ct2") and not self.path:
            raise ValueError(f"encoder kind {self.kind!r} needs `path` (a folder, hub id or checkpoint)")
        if self.layer < 1 and self.kind not in ("mfcc", "logmel"):
            raise ValueError("layer must be >= 1")

    @property
    def name(self) -> str:
        """Identifies the features: backend, weights and layer (part of every unit's provenance)."""
        if self.kind in ("mfcc", "logmel"):
            return f"{self.kind}@{FRAME_RATE}Hz"
        return f"{self.kind}:{self.path}@L{self.layer}"


class FeatureEncoder(Protocol):
    name: str
    dim: int

    def encode(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Features (frames, dim) in float32 for each 1-D 16 kHz waveform."""
        ...


def build_encoder(cfg: EncoderConfig) -> FeatureEncoder:
    if cfg.kind in ("mfcc", "logmel"):
        return SpectralEncoder(cfg.kind)
    if cfg.kind == "whisper":
        return WhisperLayerEncoder(cfg)
    if cfg.kind == "whisper_ct2":
        from speechgpt.units.ct2_whisper import build_ct2_whisper_encoder

        return build_ct2_whisper_encoder(cfg)
    return SslLayerEncoder(cfg, _load_ssl_model(cfg), normalize=_normalizes_input(cfg))


class SpectralEncoder:
    """MFCC (13 + deltas + delta-deltas = 39-d) or 80-d log-mel at 50 Hz, normalized per clip."""

    def __init__(self, kind: Literal["mfcc", "logmel"]) -> None:
        import torchaudio.transforms as T

        mel = {"n_fft": 512, "win_length": 400, "hop_length": HOP, "n_mels": 80 if kind == "logmel" else 40}
        self.kind = kind
        self.name = f"{kind}@{FRAME_RATE}Hz"
        self.dim = 39 if kind == "mfcc" else 80
        self._transform = T.MFCC(sample_rate=16_000, n_mfcc=13, melkwargs=mel) if kind == "mfcc" else None
        self._mel = T.MelSpectrogram(sample_rate=16_000, **mel) if kind == "logmel" else None
        self._deltas = T.ComputeDeltas()

    @torch.inference_mode()
    def encode(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for wave in waves:
            if self._transform is not None:
                base = self._transform(wave)  # (13, frames)
                first = self._deltas(base)
                feats = torch.cat([base, first, self._deltas(first)], dim=0)
            else:
                assert self._mel is not None
                feats = torch.log(self._mel(wave) + 1e-6)
            feats = (feats - feats.mean(dim=1, keepdim=True)) / (feats.std(dim=1, keepdim=True) + 1e-5)
            out.append(feats.T.contiguous())
        return out


def _load_ssl_model(cfg: EncoderConfig) -> nn.Module:
    assert cfg.path is not None  # checked in EncoderConfig.__post_init__
    if cfg.kind == "fairseq_hubert":
        from speechgpt.units.fairseq_hubert import load_fairseq_hubert

        return load_fairseq_hubert(cfg.path, trust_checkpoint=cfg.trust_checkpoint, num_layers=cfg.layer)
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(cfg.path)
    if cfg.layer > config.num_hidden_layers:
        raise ValueError(f"{cfg.path} has {config.num_hidden_layers} layers; layer {cfg.layer} does not exist")
    # Build only the layers up to L: the weights above are never loaded, nor computed.
    config.num_hidden_layers = cfg.layer
    return load_truncated(AutoModel, cfg.path, config, kept_layers=cfg.layer)


def load_truncated(auto_cls: Any, path: str | None, config: Any, kept_layers: int) -> Any:
    """`from_pretrained` of a model built with fewer layers than its checkpoint. The weights of the dropped layers
    are the only keys allowed to go unused; a missing weight is an error (transformers would initialize it)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would list every skipped upper-layer weight
    try:
        model, info = auto_cls.from_pretrained(path, config=config, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(level)
    if info["missing_keys"]:
        raise ValueError(f"{path}: weights missing from the checkpoint: {sorted(info['missing_keys'])[:5]}")
    layer_index = re.compile(r"\blayers\.(\d+)\.")
    unused = [k for k in info["unexpected_keys"] if not (m := layer_index.search(k)) or int(m[1]) < kept_layers]
    if unused:
        raise ValueError(f"{path}: checkpoint weights that fit no module: {sorted(unused)[:5]}")
    log.info(
        "loaded %s with layers 1-%d (%d upper-layer weights skipped)", path, kept_layers, len(info["unexpected_keys"])
    )
    return model


def _normalizes_input(cfg: EncoderConfig) -> bool | None:
    """Whether the model was trained on mean/variance-normalized waveforms, from its feature-extractor config."""
    if cfg.kind == "fairseq_hubert":
        return None  # the checkpoint's task settings decide (config.fairseq_normalize)
    from transformers import AutoFeatureExtractor

    try:
        return bool(AutoFeatureExtractor.from_pretrained(cfg.path).do_normalize)
    except (OSError, ValueError, AttributeError):
        return None


class SslLayerEncoder:
    """HuBERT / wav2vec2: per-clip conv features, then the transformer batched with a padding mask.

    The conv stack of base models normalizes over time (group norm), so padding would change its output; running it
    per clip and masking the transformer keeps features identical to unpadded, one-clip-at-a-time extraction.
    """

    def __init__(self, cfg: EncoderConfig, model: Any, normalize: bool | None = None) -> None:
        self.model = model.eval()
        config = self.model.config
        self.name = cfg.name
        self.dim = int(config.hidden_size)
        self.dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        fairseq_flag = getattr(config, "fairseq_normalize", None)
        default = fairseq_flag if fairseq_flag is not None else config.feat_extract_norm == "layer"
        self.normalize = bool(default if normalize is None else normalize)
        _bake_weight_norm(model)
        if hasattr(self.model.encoder, "pos_conv_embed"):
            self.model.encoder.pos_conv_embed = Float32(self.model.encoder.pos_conv_embed)
        if getattr(config, "do_stable_layer_norm", False):
            # Pre-LN encoders apply their final norm after the last layer only; layer L's output comes without it.
            self.model.encoder.layer_norm = nn.Identity()

    @torch.inference_mode()
    def encode(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
            conv = [self._conv_features(w) for w in waves]
            lengths = [c.shape[0] for c in conv]
            batch = nn.utils.rnn.pad_sequence(conv, batch_first=True)
            mask = torch.arange(batch.shape[1])[None, :] < torch.tensor(lengths)[:, None]
            projected = self.model.feature_projection(batch)
            hidden = projected[0] if isinstance(projected, tuple) else projected
            out = self.model.encoder(hidden, attention_mask=mask).last_hidden_state
        return [out[i, :n].float() for i, n in enumerate(lengths)]

    def _conv_features(self, wave: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            wave = (wave - wave.mean()) / (wave.std() + 1e-7)
        return self.model.feature_extractor(wave[None]).transpose(1, 2)[0]


class Float32(nn.Module):
    """Runs a module in float32 under CPU bfloat16 autocast. HuBERT's positional convolution (grouped, even
    kernel) comes out of oneDNN's bfloat16 kernel as noise on CPUs with AMX (cosine 0.01 to float32, PyTorch 2.11);
    it is a few percent of the encoder's work."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return self.inner(hidden.float())


def _bake_weight_norm(model: nn.Module) -> None:
    """Fold weight-norm parametrizations into plain weights: inference never updates them, so recomputing the
    weight on every forward is wasted work."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


class WhisperLayerEncoder:
    """Encoder of a Whisper model, layer L. Whisper always reads 30 s windows; outputs are cut to the clip."""

    def __init__(self, cfg: EncoderConfig) -> None:
        from transformers import AutoConfig, AutoFeatureExtractor, WhisperModel

        assert cfg.path is not None  # checked in EncoderConfig.__post_init__
        config = AutoConfig.from_pretrained(cfg.path)
        if cfg.layer > config.encoder_layers:
            raise ValueError(f"{cfg.path} has {config.encoder_layers} encoder layers; layer {cfg.layer} does not exist")
        truncated = cfg.layer < config.encoder_layers
        config.encoder_layers = cfg.layer
        config.decoder_layers = 1  # the decoder is never run; keep its footprint small
        model: Any = load_truncated(WhisperModel, cfg.path, config, kept_layers=cfg.layer)
        self.encoder = model.get_encoder().eval()
        if truncated:  # the final norm follows the last layer only; layer L's output comes without it
            self.encoder.layer_norm = nn.Identity()
        self.features = AutoFeatureExtractor.from_pretrained(cfg.path)
        self.name = cfg.name
        self.dim = int(config.d_model)
        self.dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32

    @torch.inference_mode()
    def encode(self, waves: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        arrays = [w.numpy() for w in waves]
        inputs = self.features(arrays, sampling_rate=16_000, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16):
            out = self.encoder(inputs.input_features).last_hidden_state
        return [out[i, : max(1, len(w) // HOP)].float() for i, w in enumerate(waves)]
