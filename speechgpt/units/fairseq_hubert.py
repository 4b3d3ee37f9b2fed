"""Load fairseq HuBERT / mHuBERT checkpoints into transformers' `HubertModel` without importing fairseq.

SpeechGPT's units come from mHuBERT base (`mhubert_base_vp_en_es_fr_it3.pt`, layer 11), a fairseq checkpoint: a pickle
holding the model settings (`args`, an argparse Namespace, in older files; `cfg`, an omegaconf DictConfig or plain
dict, in newer ones) and the parameters under `model`. This module reads such a file (through
`fairseq_checkpoint`, which unpickles only what the caller trusts and needs neither fairseq nor omegaconf), builds the
matching
`HubertConfig`, renames every parameter to the transformers layout with strict checks, and can save the result as a
folder that `transformers.AutoModel.from_pretrained` loads.
"""

from __future__ import annotations

import argparse
import ast
import copy
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from speechgpt.units.fairseq_checkpoint import read_fairseq_checkpoint

logger = logging.getLogger(__name__)

IGNORED_SOURCE_PREFIXES: tuple[str, ...] = ("label_embs_concat", "final_proj.", "target_glu.")
"""Pretraining-only fairseq parameters (the unit prediction heads) that the transformers encoder has no place for."""


DEFAULT_CONV_FEATURE_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
SAMPLE_RATE = 16_000
MAX_SPEC_ITEMS = 1024
"""Longest list/tuple the conv spec parser builds (real specs have 7 layers); guards against `[(1,1,1)] * 10**9`."""

_EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}
_ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new", "relu": "relu", "tanh": "tanh"}
_POS_CONV = "encoder.pos_conv_embed.conv"
_LAYER_INDEX = re.compile(r"encoder\.layers\.(\d+)\.")

_KEY_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
        # extractor_mode "default": GroupNorm at .2 of layer 0; "layer_norm": .2 = Sequential(Transpose, LayerNorm, ...)
        (
            r"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)",
            r"feature_extractor.conv_layers.\1.layer_norm.\2",
        ),
        (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
        (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
        (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)", rf"{_POS_CONV}.weight_g"),
        (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)", rf"{_POS_CONV}.weight_v"),
        (r"encoder\.pos_conv\.0\.bias", rf"{_POS_CONV}.bias"),
        (
            r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
            r"encoder.layers.\1.attention.\2_proj.\3",
        ),
        (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
        (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
        (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
        (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
        (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
        (r"mask_emb", "masked_spec_embed"),
    )
)
# transformers uses torch's parametrized weight norm when torch has it (torch 2.x), else the legacy weight_g/weight_v.
_PARAMETRIZED_WEIGHT_NORM = {
    f"{_POS_CONV}.weight_g": f"{_POS_CONV}.parametrizations.weight.original0",
    f"{_POS_CONV}.weight_v": f"{_POS_CONV}.parametrizations.weight.original1",
}

type _SpecValue = int | list[_SpecValue] | tuple[_SpecValue, ...]


# ---------------------------------------------------------------- conv spec


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's `conv_feature_layers` string (e.g. "[(512,10,5)] + [(512,3,2)] * 4") without `eval`.

    Only int / list / tuple literals joined by `+` and `*` are accepted; anything else raises ValueError.
    Returns one (channels, kernel, stride) triple per conv layer.
    """
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as error:
        raise ValueError(f"conv_feature_layers is not a Python literal: {spec!r}") from error
    value = _literal_value(tree.body, spec)
    if not isinstance(value, list) or not value:
        raise ValueError(f"conv_feature_layers must be a non-empty list of (dim, kernel, stride): {spec!r}")
    layers: list[tuple[int, int, int]] = []
    for item in value:
        match item:
            case (int() as dim, int() as kernel, int() as stride) if min(dim, kernel, stride) > 0:
                layers.append((dim, kernel, stride))
            case _:
                raise ValueError(f"conv_feature_layers entry {item!r} is not a (dim, kernel, stride) of positive ints")
    return layers


def _literal_value(node: ast.expr, spec: str) -> _SpecValue:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal_value(element, spec) for element in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left, right = _literal_value(node.left, spec), _literal_value(node.right, spec)
        return _combine(left, right, isinstance(node.op, ast.Add), spec)
    raise ValueError(
        f"conv_feature_layers may only hold int/list/tuple literals joined by + and *; "
        f"{ast.unparse(node)!r} is not allowed in {spec!r}"
    )


def _combine(left: _SpecValue, right: _SpecValue, is_add: bool, spec: str) -> _SpecValue:
    if isinstance(left, int) and isinstance(right, int):
        return left + right if is_add else left * right
    result: list[_SpecValue] | tuple[_SpecValue, ...]
    if is_add and isinstance(left, list) and isinstance(right, list):  # noqa: SIM114 (separate for type narrowing)
        result = left + right
    elif is_add and isinstance(left, tuple) and isinstance(right, tuple):
        result = left + right
    elif not is_add and isinstance(left, int) != isinstance(right, int):
        sequence, count = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(sequence, int) or not isinstance(count, int) or not 0 <= count * len(sequence) <= MAX_SPEC_ITEMS:
            raise ValueError(f"conv_feature_layers repeats too much (or negatively) in {spec!r}")
        result = sequence * count
    else:
        raise ValueError(f"conv_feature_layers combines {type(left).__name__} and {type(right).__name__} in {spec!r}")
    if len(result) > MAX_SPEC_ITEMS:
        raise ValueError(f"conv_feature_layers builds more than {MAX_SPEC_ITEMS} items in {spec!r}")
    return result


# ---------------------------------------------------------------- config


def hubert_config_from_fairseq(model_cfg: Mapping[str, Any] | argparse.Namespace) -> HubertConfig:
    """The `HubertConfig` of a fairseq HuBERT from its model settings (`cfg["model"]` or the `args` Namespace)."""
    settings: Mapping[str, Any] = vars(model_cfg) if isinstance(model_cfg, argparse.Namespace) else model_cfg

    def setting(name: str, default: Any) -> Any:
        value = settings.get(name)
        return default if value is None else value

    if setting("layer_type", "transformer") != "transformer" or int(setting("pos_conv_depth", 1)) != 1:
        raise ValueError("only fairseq's plain transformer encoder with one positional conv maps onto HubertModel")
    if setting("conv_pos_batch_norm", False):
        raise ValueError("conv_pos_batch_norm checkpoints are not supported")
    extractor_mode = str(setting("extractor_mode", "default"))
    activation = str(setting("activation_fn", "gelu"))
    if extractor_mode not in _EXTRACTOR_MODES or activation not in _ACTIVATIONS:
        raise ValueError(f"unsupported extractor_mode {extractor_mode!r} or activation_fn {activation!r}")
    conv_layers = parse_conv_feature_layers(str(setting("conv_feature_layers", DEFAULT_CONV_FEATURE_LAYERS)))
    return HubertConfig(
        hidden_size=int(setting("encoder_embed_dim", 768)),
        num_hidden_layers=int(setting("encoder_layers", 12)),
        num_attention_heads=int(setting("encoder_attention_heads", 12)),
        intermediate_size=int(setting("encoder_ffn_embed_dim", 3072)),
        hidden_act=_ACTIVATIONS[activation],
        hidden_dropout=float(setting("dropout", 0.1)),
        attention_dropout=float(setting("attention_dropout", 0.1)),
        activation_dropout=float(setting("activation_dropout", 0.0)),
        feat_proj_dropout=float(setting("dropout_input", 0.0)),
        layerdrop=float(setting("encoder_layerdrop", 0.0)),
        feat_extract_norm=_EXTRACTOR_MODES[extractor_mode],
        feat_extract_activation="gelu",
        feat_proj_layer_norm=True,  # fairseq HuBERT applies `layer_norm` to conv features before post_extract_proj
        conv_dim=[dim for dim, _, _ in conv_layers],
        conv_kernel=[kernel for _, kernel, _ in conv_layers],
        conv_stride=[stride for _, _, stride in conv_layers],
        conv_bias=bool(setting("conv_bias", False)),
        num_conv_pos_embeddings=int(setting("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(setting("conv_pos_groups", 16)),
        do_stable_layer_norm=bool(setting("layer_norm_first", False)),
    )


# ---------------------------------------------------------------- state dict conversion


def _expected_shapes(config: HubertConfig, num_layers: int) -> dict[str, tuple[int, ...]]:
    """transformers parameter names and shapes for `config` with `num_layers` layers (built on the meta device)."""
    full_config = copy.deepcopy(config)
    full_config.num_hidden_layers = num_layers
    with torch.device("meta"):
        model = HubertModel(full_config)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _target_key(source_key: str, expected: Mapping[str, tuple[int, ...]]) -> str | None:
    for pattern, replacement in _KEY_RULES:
        if pattern.fullmatch(source_key):
            target = pattern.sub(replacement, source_key)
            parametrized = _PARAMETRIZED_WEIGHT_NORM.get(target)
            if parametrized is not None and parametrized in expected:
                target = parametrized
            return target if target in expected else None
    return None


def _layer_index(hf_key: str) -> int:
    match = _LAYER_INDEX.match(hf_key)
    return int(match.group(1)) if match else -1


def convert_fairseq_state_dict(
    state: Mapping[str, torch.Tensor], config: HubertConfig, *, source_num_layers: int | None = None
) -> dict[str, torch.Tensor]:
    """Rename fairseq HuBERT parameters to `HubertModel`'s names, checking that every key and shape lines up.

    `source_num_layers` (default: `config.num_hidden_layers`) is the checkpoint's layer count; layers at or above
    `config.num_hidden_layers` are validated like the others, then left out of the result. Keys starting with
    `IGNORED_SOURCE_PREFIXES` are skipped; any other unmapped source key, missing target key or shape mismatch raises
    ValueError.
    """
    source_layers = config.num_hidden_layers if source_num_layers is None else source_num_layers
    if source_layers < config.num_hidden_layers:
        raise ValueError(f"checkpoint has {source_layers} layers, fewer than the {config.num_hidden_layers} asked for")
    expected = _expected_shapes(config, source_layers)
    converted: dict[str, torch.Tensor] = {}
    filled: set[str] = set()
    unmapped: list[str] = []
    problems: list[str] = []
    for source_key, tensor in state.items():
        if source_key.startswith(IGNORED_SOURCE_PREFIXES):
            continue
        target_key = _target_key(source_key, expected)
        if target_key is None:
            unmapped.append(source_key)
        elif target_key in filled:
            problems.append(f"{source_key} maps onto {target_key}, which another key already filled")
        else:
            filled.add(target_key)
            if tuple(tensor.shape) == expected[target_key]:
                converted[target_key] = tensor
            else:
                problems.append(
                    f"{source_key} -> {target_key}: checkpoint shape {tuple(tensor.shape)} != model shape "
                    f"{expected[target_key]}"
                )
    if unmapped:
        problems.append(f"unmapped checkpoint keys: {sorted(unmapped)}")
    missing = sorted(set(expected) - filled)
    if missing:
        problems.append(f"model keys the checkpoint does not fill: {missing}")
    if problems:
        raise ValueError("fairseq HuBERT checkpoint does not match the model:\n  " + "\n  ".join(problems))
    return {key: tensor for key, tensor in converted.items() if _layer_index(key) < config.num_hidden_layers}


# ---------------------------------------------------------------- public loaders


def load_fairseq_hubert(
    path: str | Path, *, trust_checkpoint: bool = False, num_layers: int | None = None
) -> HubertModel:
    """A fairseq HuBERT / mHuBERT checkpoint as a transformers `HubertModel` in eval mode.

    `num_layers` keeps only the first N transformer layers (features above layer N are never computed); the dropped
    layers' parameters are still checked. `trust_checkpoint` allows full unpickling, which fairseq files need.
    The task's `normalize` flag is kept as `model.config.fairseq_normalize` for `save_as_hf`.
    """
    checkpoint = read_fairseq_checkpoint(path, trust_checkpoint=trust_checkpoint)
    config = hubert_config_from_fairseq(checkpoint.model_settings)
    source_layers = config.num_hidden_layers
    if num_layers is not None:
        if not 1 <= num_layers <= source_layers:
            raise ValueError(f"num_layers must be between 1 and {source_layers}, got {num_layers}")
        config.num_hidden_layers = num_layers
    config.fairseq_normalize = bool(checkpoint.task_settings.get("normalize", False))
    hf_state = convert_fairseq_state_dict(checkpoint.state, config, source_num_layers=source_layers)
    model = HubertModel(config)
    model.load_state_dict(hf_state, strict=True)
    logger.info("Loaded fairseq HuBERT %s: %d of %d layers", path, config.num_hidden_layers, source_layers)
    return model.eval()


def save_as_hf(model: HubertModel, folder: str | Path, *, do_normalize: bool | None = None) -> Path:
    """Save `model` plus a Wav2Vec2FeatureExtractor config so `AutoModel.from_pretrained(folder)` loads it.

    `do_normalize` defaults to the checkpoint's fairseq `normalize` task flag (False for base HuBERT / mHuBERT).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    normalize = bool(getattr(model.config, "fairseq_normalize", False)) if do_normalize is None else do_normalize
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=normalize,
        return_attention_mask=model.config.feat_extract_norm == "layer",
    )
    feature_extractor.save_pretrained(folder)
    return folder
