"""Legacy fairseq / speech-resynthesis CodeHiFiGAN vocoders (SpeechGPT's mHuBERT-L11-km1000 LJSpeech one among them).

Such a vocoder is a torch file `{"generator": state_dict}` (`g_00500000`, saved as `vocoder.pt` by SpeechGPT or
`model.pt` in fairseq's hub archives) with `dict.weight` (unit embedding), `conv_pre.*`, `ups.*`, `resblocks.*`,
`conv_post.*` (weight-norm `weight_g` / `weight_v`), `spkr.weight` for multi-speaker models and `dur_predictor.*`
when it predicts durations, plus an optional `config.json` beside it (`num_embeddings`, `upsample_rates`,
`dur_predictor_params`, ...). The generator loads into `unit_hifigan.UnitVocoder` through unit-hifigan's own key
conversion, the duration predictor into `vocoder.duration.DurationPredictor`; synthesis follows fairseq's
CodeGenerator: merged units -> predicted (or given) durations -> repeated units -> generator, no loudness change.
`legacy_state_dict` goes the other way, so a vocoder trained here can be handed to fairseq-based code.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from unit_hifigan.compatibility import convert_vocoder_state_dict, legacy_metadata
from unit_hifigan.model import Generator, UnitVocoder

from speechgpt.units.fairseq_checkpoint import _load_raw_checkpoint
from vocoder.duration import DurationPredictor, durations_from_log, expand_units, unit_ids_tensor

logger = logging.getLogger(__name__)

DURATION_PREFIX = "dur_predictor."
CHECKPOINT_NAMES = ("vocoder.pt", "model.pt")
"""File names tried, in order, when a folder is given (then the newest `g_<step>` file)."""
DEFAULT_GENERATOR = {
    "upsample_rates": [5, 4, 4, 2, 2],
    "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "upsample_initial_channel": 512,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}
"""The generator shape of every released 16 kHz / 50 Hz CodeHiFiGAN, used when no config.json is given."""


class LegacyCodeHiFiGAN:
    """A loaded legacy vocoder: merged units (+ optional durations, speaker) -> float32 mono audio.

    Satisfies `speechgpt.infer.vocoding.UnitsToAudio`. Without a duration predictor and without given durations
    every unit lasts one frame (what fairseq does with `dur_prediction=False`).
    """

    def __init__(
        self,
        generator: UnitVocoder,
        duration: DurationPredictor | None = None,
        speakers: Sequence[str] | None = None,
        sample_rate: int = 16_000,
    ) -> None:
        self.generator = generator.eval()
        self.duration = duration.eval() if duration is not None else None
        if speakers is not None:
            generator.speakers = list(speakers)  # the setter checks the count against the embedding
        self.sample_rate = sample_rate
        strides: list[int] = [int(up.stride[0]) for up in generator.generator.upsamplers]  # type: ignore[index]
        self.hop_length: int = math.prod(strides)
        """Samples per unit frame (320 at 16 kHz: 50 frames/s)."""

    @property
    def speakers(self) -> list[str]:
        """Speaker names (empty for a single-speaker vocoder); the first is used when none is asked for."""
        return list(self.generator.speakers)

    @property
    def n_units(self) -> int:
        return self.generator.n_units

    def _unit_tensor(self, units: Sequence[int] | Tensor) -> Tensor:
        return unit_ids_tensor(units, self.n_units, self.generator.unit_embedding.weight.device)

    @torch.inference_mode()
    def predict_durations(self, units: Sequence[int] | Tensor) -> list[int]:
        """Frames per merged unit from the duration predictor, fed the generator's unit embeddings as in fairseq;
        all ones when the vocoder has no predictor."""
        tensor = self._unit_tensor(units)
        if self.duration is None or tensor.numel() == 0:
            return [1] * tensor.numel()
        log_durations = self.duration(self.generator.unit_embedding(tensor)[None])
        return durations_from_log(log_durations)[0].tolist()

    def frame_units(self, units: Sequence[int] | Tensor, durations: Sequence[int] | None = None) -> Tensor:
        """Merged units expanded to 50 Hz frame units with the given durations, else the predicted ones."""
        tensor = self._unit_tensor(units)
        chosen = self.predict_durations(tensor) if durations is None else list(durations)
        return expand_units(tensor, torch.as_tensor(chosen, dtype=torch.long, device=tensor.device))

    @torch.inference_mode()
    def synthesize_frames(self, frames: Sequence[int] | Tensor, speaker: str | None = None) -> np.ndarray:
        """Frame-level units (already expanded) -> audio, `hop_length` samples per frame."""
        tensor = self._unit_tensor(frames)
        if tensor.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        speaker_index = None
        if self.generator.speaker_embedding is not None:
            names = self.speakers
            name = names[0] if speaker is None else speaker
            if name not in names:
                raise ValueError(f"unknown speaker {name!r}; this vocoder has {names[:5]}... ({len(names)})")
            speaker_index = torch.tensor([[names.index(name)]], device=tensor.device)
        audio = self.generator(tensor[None], speaker=speaker_index)
        return audio.reshape(-1).float().cpu().numpy()

    def __call__(
        self, units: Sequence[int], durations: Sequence[int] | None = None, speaker: str | None = None
    ) -> np.ndarray:
        return self.synthesize_frames(self.frame_units(units, durations), speaker)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file itself, or inside a folder: vocoder.pt, model.pt, else the newest g_<step>."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such vocoder checkpoint or folder")
    for name in CHECKPOINT_NAMES:
        if (path / name).is_file():
            return path / name
    steps = sorted(
        (int(match.group(1)), child)
        for child in path.iterdir()
        if (match := re.fullmatch(r"g_(\d+)", child.name)) and child.is_file()
    )
    if not steps:
        raise FileNotFoundError(f"{path}: none of {', '.join(CHECKPOINT_NAMES)} or g_<step> found")
    return steps[-1][1]


def read_generator_state(path: str | Path, *, trust_checkpoint: bool = False) -> dict[str, Tensor]:
    """The legacy generator state dict of a checkpoint (`{"generator": ...}` or the bare state dict).

    Tensors-only files load with `weights_only=True`; anything else needs `trust_checkpoint=True`."""
    raw = _load_raw_checkpoint(Path(path), trust_checkpoint)
    state = raw.get("generator", raw) if isinstance(raw, Mapping) else None
    if not isinstance(state, Mapping) or "dict.weight" not in state:
        raise ValueError(f"{path} is not a CodeHiFiGAN checkpoint: no generator with a 'dict.weight' unit embedding")
    return {key: value for key, value in state.items() if isinstance(value, Tensor)}


def build_legacy_vocoder(
    state: Mapping[str, Tensor], config: Mapping[str, Any] | None = None, speakers: Sequence[str] | None = None
) -> LegacyCodeHiFiGAN:
    """A `LegacyCodeHiFiGAN` from a legacy generator state dict and its config.json contents (optional)."""
    config = dict(config or {})
    generator_state = {k: v for k, v in state.items() if not k.startswith(DURATION_PREFIX)}
    duration_state = {k.removeprefix(DURATION_PREFIX): v for k, v in state.items() if k.startswith(DURATION_PREFIX)}
    for unsupported in ("f0_dict.weight", "style.weight", "f0_quant_embed.weight"):
        if unsupported in generator_state:
            raise ValueError(f"{unsupported}: F0- or style-conditioned CodeHiFiGANs are not supported")
    if config.get("f0") or config.get("embedder_params"):
        raise ValueError("F0-conditioned or speaker-embedder CodeHiFiGANs are not supported")
    n_units, speaker_names, _, _ = legacy_metadata(dict(generator_state))
    embedding_dim = generator_state["dict.weight"].shape[1]
    _check_config(
        config, n_units, embedding_dim, has_speakers=speaker_names is not None, has_duration=bool(duration_state)
    )
    vocoder = UnitVocoder(n_units, speakers=speaker_names, embedding_dim=embedding_dim)
    vocoder.generator = _build_generator(vocoder.generator.conv_pre.in_channels, config)
    vocoder.load_state_dict(convert_vocoder_state_dict(generator_state))
    duration = None
    if duration_state:
        duration = _build_duration(duration_state, config.get("dur_predictor_params") or {})
    return LegacyCodeHiFiGAN(vocoder, duration, speakers, sample_rate=int(config.get("sampling_rate", 16_000)))


def load_legacy_vocoder(
    path: str | Path,
    *,
    config: str | Path | None = None,
    trust_checkpoint: bool = False,
    speakers: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> LegacyCodeHiFiGAN:
    """Load a legacy CodeHiFiGAN from a checkpoint file or its folder; `config` defaults to the config.json next
    to the checkpoint when there is one (else the generator shape of the released 16 kHz vocoders is assumed).
    `speakers` names the speaker embedding rows of a multi-speaker vocoder (default `spkr0`, `spkr1`, ...)."""
    checkpoint = find_checkpoint(path)
    config_path = Path(config) if config is not None else checkpoint.parent / "config.json"
    settings: dict[str, Any] = {}
    if config_path.is_file():
        settings = json.loads(config_path.read_text(encoding="utf-8"))
    elif config is not None:
        raise FileNotFoundError(f"{config_path}: no such vocoder config")
    state = read_generator_state(checkpoint, trust_checkpoint=trust_checkpoint)
    loaded = build_legacy_vocoder(state, settings, speakers)
    loaded.generator.to(device)
    if loaded.duration is not None:
        loaded.duration.to(device)
    logger.info(
        "Loaded legacy CodeHiFiGAN %s: %d units, %d speakers, duration predictor: %s",
        checkpoint,
        loaded.n_units,
        len(loaded.speakers),
        loaded.duration is not None,
    )
    return loaded


def _check_config(
    config: Mapping[str, Any], n_units: int, embedding_dim: int, *, has_speakers: bool, has_duration: bool
) -> None:
    expected = {"num_embeddings": n_units, "embedding_dim": embedding_dim}
    expected["model_in_dim"] = embedding_dim * (1 + has_speakers)
    for key, value in expected.items():
        if key in config and int(config[key]) != value:
            raise ValueError(f"config {key}={config[key]} but the checkpoint implies {value}")
    if config.get("dur_predictor_params") and not has_duration:
        raise ValueError("config has dur_predictor_params but the checkpoint has no dur_predictor.* weights")
    if bool(config.get("multispkr")) != has_speakers and "multispkr" in config:
        raise ValueError(f"config multispkr={config['multispkr']} disagrees with the checkpoint's spkr.weight")


def _build_generator(input_dim: int, config: Mapping[str, Any]) -> Generator:
    settings = {key: config.get(key, default) for key, default in DEFAULT_GENERATOR.items()}
    dilations = [list(d) for d in settings["resblock_dilation_sizes"]]
    if len(settings["resblock_kernel_sizes"]) != 3 or any(d != dilations[0] for d in dilations):
        # unit-hifigan's key conversion groups resblocks by three and its blocks share one dilation list
        raise ValueError("only generators with 3 resblock kernels sharing one dilation list are supported")
    return Generator(
        input_dim,
        upsample_input_channels=int(settings["upsample_initial_channel"]),
        upsample_strides=tuple(settings["upsample_rates"]),
        upsample_kernel_sizes=tuple(settings["upsample_kernel_sizes"]),
        mrf_kernel_sizes=tuple(settings["resblock_kernel_sizes"]),
        mrf_dilations=tuple(dilations[0]),
    )


def _build_duration(state: Mapping[str, Tensor], params: Mapping[str, Any]) -> DurationPredictor:
    hidden_dim, embedding_dim, kernel_size = state["conv1.0.weight"].shape
    for key, actual in (
        ("encoder_embed_dim", embedding_dim),
        ("var_pred_hidden_dim", hidden_dim),
        ("var_pred_kernel_size", kernel_size),
    ):
        if key in params and int(params[key]) != actual:
            raise ValueError(f"dur_predictor_params {key}={params[key]} but the checkpoint has {actual}")
    model = DurationPredictor(embedding_dim, hidden_dim, kernel_size, float(params.get("var_pred_dropout", 0.5)))
    model.load_state_dict(state)
    return model


_RESBLOCK = re.compile(r"generator\.mrfs\.(\d+)\.residual_blocks\.(\d+)\.(\d+)\.conv([12])\.(.+)")


def legacy_state_dict(vocoder: UnitVocoder, duration: DurationPredictor | None = None) -> dict[str, Tensor]:
    """The fairseq-layout generator state dict of a `UnitVocoder` (+ duration predictor): the inverse of
    unit-hifigan's `convert_vocoder_state_dict`; save it as `{"generator": ...}` for fairseq's CodeHiFiGANVocoder."""
    if vocoder.style_embedding is not None or vocoder.f0_embedding is not None:
        raise ValueError("style- or F0-conditioned vocoders have no legacy CodeHiFiGAN layout here")
    kernels = len(vocoder.generator.mrfs[0].residual_blocks)  # type: ignore[arg-type]
    renamed = {"unit_embedding.weight": "dict.weight", "speaker_embedding.weight": "spkr.weight"}
    legacy: dict[str, Tensor] = {}
    for key, tensor in vocoder.state_dict().items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        if key in renamed:
            key = renamed[key]
        elif match := _RESBLOCK.fullmatch(key):
            layer, block, sub_layer, conv, weight = match.groups()
            key = f"resblocks.{int(layer) * kernels + int(block)}.convs{conv}.{sub_layer}.{weight}"
        elif key.startswith("generator.upsamplers."):
            key = key.replace("generator.upsamplers.", "ups.")
        else:
            key = key.removeprefix("generator.")
        legacy[key] = tensor
    if duration is not None:
        legacy |= {DURATION_PREFIX + key: tensor for key, tensor in duration.state_dict().items()}
    return legacy
