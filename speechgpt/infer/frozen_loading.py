"""Load the frozen-LLM variant for listening, from its model folder alone: the folder holds the speech modules
(`speech_modules.safetensors` + `speech_modules.json`) and names the frozen backbone (an HF folder or hub id with its
tokenizer); the backbone's weights fingerprint is checked against the one the modules were trained with.

    frozen = load_frozen_model("out/demo/frozen_qa/final")
    variant = model_variant("out/demo/stage3/final")      # "unified": no speech modules there

Every key read from `speech_modules.json` is named in `META` below, so a stage that writes other names needs a
one-line change here and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from speechgpt.model.frozen_checkpoint import META as META_FILE
from speechgpt.model.frozen_checkpoint import VARIANT as FROZEN
from speechgpt.model.frozen_checkpoint import load_speech_modules, read_speech_meta
from speechgpt.model.frozen_lm import weights_fingerprint
from speechgpt.model.load import DType, load_lm
from speechgpt.model.speech_features import FeatureExtractor, build_feature_extractor
from speechgpt.model.state_labels import STATE_NAMES

if TYPE_CHECKING:
    from speechgpt.training.frozen_stage import SpeechTemplate

log = logging.getLogger(__name__)
Variant = Literal["unified", "frozen"]
VariantChoice = Literal["auto", "unified", "frozen"]

META = {
    "variant": "variant",
    "backbone": "backbone",
    "features": "features",
    "stage": "stage",
    "template": "template",
    "states": "states",
    "trailing_silence_s": "trailing_silence_s",
    "lm_fingerprint": "lm_fingerprint",
}
"""Our name -> the key in speech_modules.json. `variant` ("frozen"), `backbone` (the frozen LLM's folder or hub id),
`features` ({"kind": "fbank", "num_mel_bins": 80} or {"kind": "unit_encoder", "encoder_kind", "encoder_path",
"encoder_layer"}), and the optional `stage` (which stage wrote it), `template` ({"text": "...{speech}...{target}"}:
the text around the speech as the stage fed it; absent: "{speech}{target}"), `states` (the state head's classes, in
order; checked against speechgpt.model.state_labels) and `trailing_silence_s` (the silence appended to each training
clip, which listening to a whole clip appends too); `lm_fingerprint` is save_speech_modules' own."""
FEATURE_ARGS = ("num_mel_bins", "encoder_kind", "encoder_path", "encoder_layer", "window_s", "context_s", "pad_context")
SPEECH, TARGET = "{speech}", "{target}"


@dataclass
class FrozenModel:
    """What listening needs: the frozen LLM with its speech modules, its tokenizer and the frame features."""

    model: Any
    """speechgpt.model.frozen_lm.FrozenSpeechLM in eval mode."""
    tokenizer: Any
    """The backbone's tokenizer."""
    features: FeatureExtractor
    """Frame features the encoder was trained on (fbank streams exactly)."""
    prefix_ids: list[int]
    """Token ids before the prompt embeddings."""
    answer_prefix_ids: list[int]
    """Token ids fed after the speech embeddings, before the answer."""
    answer_end: str
    """Text that ends an answer (the template's after {target}, e.g. "."; "": EOS or the length limit only)."""
    trailing_silence_s: float | None
    """Silence appended to each clip in training (None: not recorded)."""
    source: str
    """The model folder."""
    meta: dict[str, Any] = field(default_factory=dict)
    """speech_modules.json as read."""

    @property
    def stage(self) -> str | None:
        value = self.meta.get(META["stage"])
        return None if value is None else str(value)


def model_variant(folder: str | Path) -> Variant:
    """'frozen' when the folder holds frozen-variant speech modules, else 'unified'."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return "unified"
    return "frozen" if read_speech_meta(folder).get(META["variant"]) == FROZEN else "unified"


def resolve_variant(folder: str | Path, choice: VariantChoice) -> Variant:
    """The variant to load `folder` as: `choice`, or the folder's own with 'auto'; a contradiction is an error."""
    found = model_variant(folder)
    if choice == "auto" or choice == found:
        return found
    if choice == "frozen":
        raise ValueError(f"{folder}: variant=frozen, but the folder has no frozen-variant {META_FILE}")
    raise ValueError(f"{folder}: variant=unified, but the folder holds frozen-variant speech modules (variant=frozen)")


def load_frozen_model(
    folder: str | Path, *, backbone: str | Path | None = None, dtype: DType = "float32", device: str | None = None
) -> FrozenModel:
    """Rebuild the frozen variant from `folder`: its meta names the backbone, which is loaded and checked against
    the modules' fingerprint, then the speech modules are put around it, the LLM in `dtype`. `backbone` replaces the
    meta's (the same LLM elsewhere, e.g. after a copy to another machine; the fingerprint check still applies)."""
    import torch

    folder = Path(folder)
    if model_variant(folder) != "frozen":
        raise ValueError(f"{folder}: not a frozen-variant model folder (no {META_FILE} with variant {FROZEN!r})")
    meta = read_speech_meta(folder)
    if META["lm_fingerprint"] not in meta:
        raise ValueError(
            f"{folder}: holds a speech encoder alone (stage {meta.get(META['stage'], '?')}); listening needs the "
            "export of a stage that trained through the LLM (frozen-asr, frozen-qa)"
        )
    backbone = backbone or meta.get(META["backbone"])
    if not backbone:
        raise ValueError(f"{folder / META_FILE}: names no backbone (key {META['backbone']!r})")
    lm, tokenizer = load_checked_lm(backbone, meta[META["lm_fingerprint"]], dtype, folder)
    model = load_speech_modules(lm, folder, check_fingerprint=False)  # checked above
    model.lm.to(getattr(torch, dtype))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    features = _features(meta.get(META["features"]), folder)
    if features.dim != model.encoder.input_dim:
        raise ValueError(
            f"{folder}: {features.name} gives {features.dim}-d frames, the encoder reads {model.encoder.input_dim}"
        )
    prefix, answer_prefix, answer_end = template_ids(tokenizer, meta.get(META["template"]))
    states = meta.get(META["states"])
    if states is not None and tuple(states) != STATE_NAMES:
        raise ValueError(f"{folder}: its state head's classes {states} are not {list(STATE_NAMES)}")
    silence = meta.get(META["trailing_silence_s"])
    log.info("loaded frozen variant %s (backbone %s, %s) on %s", folder, backbone, features.name, device)
    silence_s = None if silence is None else float(silence)
    return FrozenModel(model, tokenizer, features, prefix, answer_prefix, answer_end, silence_s, str(folder), meta)


def load_checked_lm(backbone: str | Path, fingerprint: str, dtype: DType, folder: Path) -> tuple[Any, Any]:
    """The backbone as the stages held it: its weights fingerprint covers the dtype it trained in (bfloat16 on
    GPUs, float32 on CPU), so it is loaded in `dtype` first and, failing the check, in the other one (the caller
    casts it to `dtype` afterwards)."""
    for held in dict.fromkeys([dtype, "bfloat16", "float32"]):
        lm, tokenizer = load_lm(backbone, held)
        if weights_fingerprint(lm) == fingerprint:
            if held != dtype:
                log.info("the speech modules trained on the %s LLM: loaded so, then cast to %s", held, dtype)
            return lm, tokenizer
        del lm
    raise ValueError(f"{folder}: these speech modules were trained on another LLM (weights fingerprint differs)")


def _features(spec: Any, folder: Path) -> FeatureExtractor:
    if isinstance(spec, str):  # a bare kind
        spec = {"kind": spec}
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"{folder / META_FILE}: key {META['features']!r} must be a mapping with a 'kind'")
    return build_feature_extractor(spec["kind"], **{k: spec[k] for k in FEATURE_ARGS if k in spec})


def speech_template(template: Any) -> SpeechTemplate:
    """The `SpeechTemplate` the frozen stages trained with, from a model's meta ({"text": ..., "eos": ...}; absent:
    the speech, then the target)."""
    from speechgpt.training.frozen_stage import SpeechTemplate

    spec = template if isinstance(template, dict) else {}
    return SpeechTemplate(spec.get("text", SPEECH + TARGET), bool(spec.get("eos", False)))


def template_ids(tokenizer: Any, template: Any) -> tuple[list[int], list[int], str]:
    """(ids before the prompt embeddings, ids between the speech and the answer, the text that ends an answer) of
    the model's template (`speech_template`), fed exactly as the frozen stages fed them in training; the text after
    {target}, stripped, ends an answer."""
    speech = speech_template(template)
    return speech.prefix_ids(tokenizer), speech.answer_prefix_ids(tokenizer), speech.parts[2].strip()
