"""Save and load the frozen-LLM variant's trainable modules. The LLM itself is never written: a folder holds
`speech_modules.safetensors` (encoder with its CMVN, adapter, prompt embeddings, state head) and
`speech_modules.json` (the builders' arguments, the variant, and the LLM's weights fingerprint, checked on load).
Input stage 1 trains the encoder alone: its folder has the same two files with the encoder only (no LLM, so no
fingerprint), which `load_speech_encoder` reads, as it reads the encoder of any later folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechgpt.model.frozen_lm import (
    FrozenSpeechLM,
    build_frozen_speech_lm,
    speech_modules_state_dict,
    weights_fingerprint,
)
from speechgpt.model.meta_paths import portable_meta, resolved_meta
from speechgpt.model.speech_encoder import SpeechEncoder, build_speech_encoder

VARIANT = "frozen"
WEIGHTS, META = "speech_modules.safetensors", "speech_modules.json"


def save_speech_modules(model: FrozenSpeechLM, out: str | Path, **extra: Any) -> Path:
    """Write the trainable modules and how to rebuild them into `out`; `extra` (JSON values) is stored alongside,
    e.g. the feature kind and the CTC vocabulary."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in speech_modules_state_dict(model).items()}
    save_file(state, str(out / WEIGHTS))
    meta = {
        "variant": VARIANT,
        "encoder": model.encoder.spec,
        "adapter": {
            **{k: model.adapter.spec[k] for k in ("kernel_size", "stride")},
            "word_space": model.word_space,
            "word_pause": model.word_pause,
        },
        "num_prompts": int(model.prompt.num_embeddings),
        "lm_fingerprint": weights_fingerprint(model.lm),
        **extra,
    }
    (out / META).write_text(json.dumps(portable_meta(meta, out), indent=2) + "\n")
    return out


def read_speech_meta(folder: str | Path) -> dict[str, Any]:
    """The meta of a speech-modules folder, the paths it names absolute (speechgpt/model/meta_paths.py)."""
    return resolved_meta(dict(json.loads((Path(folder) / META).read_text())), folder)


def load_speech_modules(lm: Any, folder: str | Path, check_fingerprint: bool = True) -> FrozenSpeechLM:
    """Rebuild a FrozenSpeechLM around `lm` from `folder`; the LLM must be the one the modules were trained with
    (its fingerprint is compared unless `check_fingerprint` is False)."""
    from safetensors.torch import load_file

    meta = read_speech_meta(folder)
    if check_fingerprint and weights_fingerprint(lm) != meta["lm_fingerprint"]:
        raise ValueError(f"{folder}: these speech modules were trained on another LLM (weights fingerprint differs)")
    encoder = build_speech_encoder(**meta["encoder"])
    model = build_frozen_speech_lm(
        lm,
        encoder,
        adapter_kernel=meta["adapter"]["kernel_size"],
        adapter_stride=meta["adapter"]["stride"],
        num_prompts=meta["num_prompts"],
        word_space=meta["adapter"].get("word_space"),
        word_pause=meta["adapter"].get("word_pause", 4),
    )
    missing, unexpected = model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)), strict=False)
    missing = [k for k in missing if not k.startswith("lm.")]
    if missing or unexpected:
        raise ValueError(f"{folder}: speech modules do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model


def save_speech_encoder(encoder: SpeechEncoder, out: str | Path, **extra: Any) -> Path:
    """Write an encoder trained without an LLM (input stage 1) in the layout above: weights under `encoder.`, meta
    with the variant and its builder's arguments, plus `extra`."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    meta = {"variant": VARIANT, "encoder": encoder.spec, **extra}
    (out / META).write_text(json.dumps(portable_meta(meta, out), indent=2) + "\n")
    return out


def load_speech_encoder(folder: str | Path) -> SpeechEncoder:
    """The encoder (with its CMVN and CTC head) of any speech-modules folder, rebuilt from its meta."""
    from safetensors.torch import load_file

    encoder = build_speech_encoder(**read_speech_meta(folder)["encoder"])
    weights = load_file(str(Path(folder) / WEIGHTS))
    state = {k.removeprefix("encoder."): v for k, v in weights.items() if k.startswith("encoder.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}: encoder weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return encoder
