"""Saved vocoder folders, either route, and `load_vocoder` for them and for legacy CodeHiFiGAN checkpoints.

A folder written by `save_vocoder` holds the route's model as `save_pretrained` writes it (config.json +
model.safetensors: `unit_hifigan.UnitVocoder.from_pretrained(folder)` loads a hifigan one, `MelNet.from_pretrained`
a mel one), `duration.safetensors` (the duration predictor, when trained) and `vocoder.json` (route, speakers,
mel settings, predictor shape).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from unit_hifigan.model import UnitVocoder

from speechgpt.data.io import atomic_write_text
from vocoder.duration import DurationPredictor
from vocoder.mel_vocoder import MelNet, MelSettings
from vocoder.runtime import HifiganRenderer, MelRenderer, Vocoder

log = logging.getLogger(__name__)
META_FILE = "vocoder.json"
DURATION_FILE = "duration.safetensors"
FORMAT = "speechgpt-unit-vocoder/1"


def duration_shape(predictor: DurationPredictor) -> dict[str, int]:
    """Constructor arguments that rebuild `predictor` (dropout is a training-only setting)."""
    conv: Any = predictor.conv1[0]
    return {
        "embedding_dim": conv.in_channels,
        "hidden_dim": conv.out_channels,
        "kernel_size": int(conv.kernel_size[0]),
    }


def save_vocoder(
    folder: Path,
    model: nn.Module,
    *,
    route: str,
    speakers: list[str],
    default_speaker: str | None,
    duration: DurationPredictor | None,
    mel: MelSettings | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a loadable vocoder folder (see the module docstring); `extra` goes into vocoder.json as is."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # type: ignore[operator]
    meta: dict[str, Any] = {
        "format": FORMAT,
        "route": route,
        "speakers": speakers,
        "default_speaker": default_speaker,
        "duration": duration_shape(duration) if duration is not None else None,
        "mel": mel.to_dict() if mel is not None else None,
        **(extra or {}),
    }
    if duration is not None:
        save_file({k: v.contiguous() for k, v in duration.state_dict().items()}, str(folder / DURATION_FILE))
    else:  # a folder reused for a model without a predictor must not keep an old one
        (folder / DURATION_FILE).unlink(missing_ok=True)
    atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2) + "\n")
    return folder


def load_vocoder(path: str | Path, *, device: str | torch.device = "cpu", trust_checkpoint: bool = False) -> Vocoder:
    """A `Vocoder` (speechgpt.infer.vocoding.StreamingVocoder) from a folder `save_vocoder` wrote (or the output
    folder of `speechgpt vocoder train`, which holds it as vocoder/), a plain
    unit_hifigan `save_pretrained` folder, or a legacy fairseq CodeHiFiGAN checkpoint (file or folder;
    `trust_checkpoint` allows unpickling one that holds more than tensors)."""
    path = Path(path).expanduser()
    if (path / "vocoder" / META_FILE).is_file():  # the output folder of `speechgpt vocoder train`
        path = path / "vocoder"
    if (path / META_FILE).is_file():
        return _load_ours(path, torch.device(device))
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        if "n_units" in config:  # unit_hifigan's own save_pretrained layout, no duration predictor
            generator = UnitVocoder.from_pretrained(path).to(device)
            return Vocoder(HifiganRenderer(generator), None, generator.speakers, route="hifigan")
    from vocoder.legacy import load_legacy_vocoder

    legacy = load_legacy_vocoder(path, trust_checkpoint=trust_checkpoint, device=device)
    return Vocoder(HifiganRenderer(legacy.generator), legacy.duration, legacy.speakers, route="legacy")


def _load_ours(folder: Path, device: torch.device) -> Vocoder:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder / META_FILE}: unknown format {meta.get('format')!r} (expected {FORMAT})")
    duration = None
    if meta["duration"] is not None:
        duration = DurationPredictor(**meta["duration"])
        duration.load_state_dict(load_file(str(folder / DURATION_FILE)))
        duration.to(device)
    renderer: HifiganRenderer | MelRenderer
    if meta["route"] == "mel":
        renderer = MelRenderer(MelNet.from_pretrained(folder).to(device), MelSettings(**meta["mel"]))
    elif meta["route"] == "hifigan":
        renderer = HifiganRenderer(UnitVocoder.from_pretrained(folder).to(device))
    else:
        raise ValueError(f"{folder / META_FILE}: unknown route {meta['route']!r}")
    log.info("loaded %s vocoder %s (%d speakers)", meta["route"], folder, len(meta["speakers"]))
    return Vocoder(renderer, duration, meta["speakers"], meta["default_speaker"], route=meta["route"])


def load_answer_vocoder(path: str | Path, *, device: str | torch.device = "cpu") -> Any:
    """What voices a chat's answers: a codec-units vocoder folder (codec.json: EnCodec codes, the frozen variant's
    codec option), else any vocoder `load_vocoder` reads."""
    from vocoder.codec_units import CODEC_FILE, load_codec_vocoder

    path = Path(path).expanduser()
    if (path / CODEC_FILE).is_file() or (path / "vocoder" / CODEC_FILE).is_file():
        return load_codec_vocoder(path)
    return load_vocoder(path, device=device)
