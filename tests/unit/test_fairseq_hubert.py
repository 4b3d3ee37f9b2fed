"""fairseq HuBERT -> transformers HubertModel conversion, checked against a hand-written fairseq forward pass.

The fairseq parameters below are written out by name and shape the way fairseq's HubertModel defines them
(ConvFeatureExtractionModel, post_extract_proj, layer_norm, TransformerEncoder with a weight-normed pos_conv), not
derived from the module's mapping table, so a wrong mapping cannot agree with itself.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoFeatureExtractor, AutoModel, HubertModel

from speechgpt.units.fairseq_hubert import (
    convert_fairseq_state_dict,
    hubert_config_from_fairseq,
    load_fairseq_hubert,
    parse_conv_feature_layers,
    save_as_hf,
)

HIDDEN, HEADS, FFN, LAYERS, CONV_DIM = 32, 2, 64, 2, 16
CONV = [(CONV_DIM, 10, 5), (CONV_DIM, 3, 2), (CONV_DIM, 3, 2)]
POS_KERNEL, POS_GROUPS = 8, 4
TINY_SETTINGS: dict[str, Any] = {
    "encoder_layers": LAYERS,
    "encoder_embed_dim": HIDDEN,
    "encoder_ffn_embed_dim": FFN,
    "encoder_attention_heads": HEADS,
    "activation_fn": "gelu",
    "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 2",
    "extractor_mode": "default",
    "conv_bias": False,
    "conv_pos": POS_KERNEL,
    "conv_pos_groups": POS_GROUPS,
    "layer_norm_first": False,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
}
IGNORED_KEYS = {"label_embs_concat", "final_proj.weight", "final_proj.bias"}


def fairseq_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3, offset: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale + offset

    def norm(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": rand(dim, scale=0.1, offset=1.0), f"{prefix}.bias": rand(dim, scale=0.1)}

    def linear(prefix: str, out_dim: int, in_dim: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": rand(out_dim, in_dim, scale=in_dim**-0.5),
            f"{prefix}.bias": rand(out_dim, scale=0.1),
        }

    state = {
        # conv_layers.i = Sequential(Conv1d(bias=False), Dropout, [Fp32GroupNorm on layer 0 only], GELU)
        "feature_extractor.conv_layers.0.0.weight": rand(CONV_DIM, 1, 10),
        **norm("feature_extractor.conv_layers.0.2", CONV_DIM),
        "feature_extractor.conv_layers.1.0.weight": rand(CONV_DIM, CONV_DIM, 3, scale=0.15),
        "feature_extractor.conv_layers.2.0.weight": rand(CONV_DIM, CONV_DIM, 3, scale=0.15),
        **norm("layer_norm", CONV_DIM),
        **linear("post_extract_proj", HIDDEN, CONV_DIM),
        # pos_conv = Sequential(weight_norm(Conv1d, dim=2), SamePad, GELU): weight_g is (1, 1, kernel)
        "encoder.pos_conv.0.weight_g": rand(1, 1, POS_KERNEL, scale=0.1, offset=1.0),
        "encoder.pos_conv.0.weight_v": rand(HIDDEN, HIDDEN // POS_GROUPS, POS_KERNEL),
        "encoder.pos_conv.0.bias": rand(HIDDEN, scale=0.1),
        **norm("encoder.layer_norm", HIDDEN),
        "mask_emb": rand(HIDDEN),
        "label_embs_concat": rand(10, 8),
        **linear("final_proj", 8, HIDDEN),
    }
    for index in range(LAYERS):
        prefix = f"encoder.layers.{index}"
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            state |= linear(f"{prefix}.self_attn.{projection}", HIDDEN, HIDDEN)
        state |= norm(f"{prefix}.self_attn_layer_norm", HIDDEN) | norm(f"{prefix}.final_layer_norm", HIDDEN)
        state |= linear(f"{prefix}.fc1", FFN, HIDDEN) | linear(f"{prefix}.fc2", HIDDEN, FFN)
    return state


def reference_attention(x: torch.Tensor, state: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    batch, frames, _ = x.shape
    head_dim = HIDDEN // HEADS

    def heads(name: str, scale: float = 1.0) -> torch.Tensor:
        projected = F.linear(x, state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"]) * scale
        return projected.view(batch, frames, HEADS, head_dim).transpose(1, 2)

    weights = torch.softmax(heads("q_proj", head_dim**-0.5) @ heads("k_proj").transpose(-1, -2), dim=-1)
    mixed = (weights @ heads("v_proj")).transpose(1, 2).reshape(batch, frames, HIDDEN)
    return F.linear(mixed, state[f"{prefix}.out_proj.weight"], state[f"{prefix}.out_proj.bias"])


def fairseq_reference(state: dict[str, torch.Tensor], wav: torch.Tensor) -> list[torch.Tensor]:
    """fairseq HuBERT (layer_norm_first=False) features: index 0 is the encoder input, index L the output of layer L."""

    def layer_norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), state[f"{prefix}.weight"], state[f"{prefix}.bias"])

    x = wav[:, None]
    for index, (dim, _, stride) in enumerate(CONV):
        x = F.conv1d(x, state[f"feature_extractor.conv_layers.{index}.0.weight"], stride=stride)
        if index == 0:
            norm_prefix = "feature_extractor.conv_layers.0.2"
            x = F.group_norm(x, dim, state[f"{norm_prefix}.weight"], state[f"{norm_prefix}.bias"])
        x = F.gelu(x)
    x = layer_norm(x.transpose(1, 2), "layer_norm")
    x = F.linear(x, state["post_extract_proj.weight"], state["post_extract_proj.bias"])
    g, v = state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"]
    weight = g * v / v.norm(dim=(0, 1), keepdim=True)  # weight_norm(dim=2): one norm per kernel tap
    positions = F.conv1d(
        x.transpose(1, 2), weight, state["encoder.pos_conv.0.bias"], padding=POS_KERNEL // 2, groups=POS_GROUPS
    )
    if POS_KERNEL % 2 == 0:  # SamePad drops the extra frame of an even kernel
        positions = positions[:, :, :-1]
    x = layer_norm(x + F.gelu(positions).transpose(1, 2), "encoder.layer_norm")
    outputs = [x]
    for index in range(LAYERS):
        prefix = f"encoder.layers.{index}"
        x = layer_norm(x + reference_attention(x, state, f"{prefix}.self_attn"), f"{prefix}.self_attn_layer_norm")
        hidden = F.gelu(F.linear(x, state[f"{prefix}.fc1.weight"], state[f"{prefix}.fc1.bias"]))
        x = layer_norm(
            x + F.linear(hidden, state[f"{prefix}.fc2.weight"], state[f"{prefix}.fc2.bias"]),
            f"{prefix}.final_layer_norm",
        )
        outputs.append(x)
    return outputs


def write_checkpoint(path: Path, state: dict[str, torch.Tensor], *, form: str = "args") -> Path:
    if form == "args":
        checkpoint: dict[str, Any] = {"args": argparse.Namespace(**TINY_SETTINGS, normalize=False), "model": state}
    else:
        cfg = {
            "model": {"_name": "hubert", **TINY_SETTINGS},
            "task": {"_name": "hubert_pretraining", "normalize": False},
        }
        checkpoint = {"args": None, "cfg": cfg, "model": state}
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    return torch.randn(2, 400, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def args_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("fairseq") / "tiny_args.pt", fairseq_state())


@pytest.fixture(scope="module")
def full_model(args_checkpoint: Path) -> HubertModel:
    return load_fairseq_hubert(args_checkpoint, trust_checkpoint=True)


def test_conversion_uses_every_key_and_model_runs(wav: torch.Tensor) -> None:
    state = fairseq_state()
    config = hubert_config_from_fairseq(TINY_SETTINGS)
    converted = convert_fairseq_state_dict(state, config)
    assert len(converted) == len(state) - len(IGNORED_KEYS)
    model = HubertModel(config).eval()
    assert set(converted) == set(model.state_dict())
    model.load_state_dict(converted, strict=True)
    with torch.no_grad():
        assert model(wav).last_hidden_state.shape == (2, 19, HIDDEN)


def test_config_mapping() -> None:
    config = hubert_config_from_fairseq(TINY_SETTINGS | {"extractor_mode": "layer_norm", "layer_norm_first": True})
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (HIDDEN, LAYERS, HEADS)
    assert (config.intermediate_size, config.hidden_act, config.feat_proj_layer_norm) == (FFN, "gelu", True)
    assert list(config.conv_dim) == [16, 16, 16] and list(config.conv_kernel) == [10, 3, 3]
    assert list(config.conv_stride) == [5, 2, 2]
    assert (config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups) == (POS_KERNEL, POS_GROUPS)
    assert config.feat_extract_norm == "layer" and config.do_stable_layer_norm
    assert hubert_config_from_fairseq(argparse.Namespace(**TINY_SETTINGS)).feat_extract_norm == "group"


def test_layer_norm_extractor_keys_convert(wav: torch.Tensor) -> None:
    state = fairseq_state()
    norm_weight, norm_bias = (
        state.pop("feature_extractor.conv_layers.0.2.weight"),
        state.pop("feature_extractor.conv_layers.0.2.bias"),
    )
    for index in range(len(CONV)):  # extractor_mode "layer_norm": .2 = Sequential(TransposeLast, Fp32LayerNorm, ...)
        state[f"feature_extractor.conv_layers.{index}.2.1.weight"] = norm_weight.clone()
        state[f"feature_extractor.conv_layers.{index}.2.1.bias"] = norm_bias.clone()
    config = hubert_config_from_fairseq(TINY_SETTINGS | {"extractor_mode": "layer_norm", "layer_norm_first": True})
    model = HubertModel(config).eval()
    model.load_state_dict(convert_fairseq_state_dict(state, config), strict=True)
    with torch.no_grad():
        assert torch.isfinite(model(wav).last_hidden_state).all()


def test_matches_fairseq_reference_forward(tmp_path: Path, wav: torch.Tensor) -> None:
    state = fairseq_state()
    model = load_fairseq_hubert(write_checkpoint(tmp_path / "tiny_cfg.pt", state, form="cfg"))
    assert not model.training
    with torch.no_grad():
        hidden_states = model(wav, output_hidden_states=True).hidden_states
        expected = fairseq_reference(state, wav)
    assert len(hidden_states) == len(expected) == LAYERS + 1
    for layer, (actual, reference) in enumerate(zip(hidden_states, expected, strict=True)):
        torch.testing.assert_close(actual, reference, atol=1e-4, rtol=0, msg=f"layer {layer}")


@pytest.mark.parametrize(
    ("edit", "expected_parts"),
    [
        (lambda s: s.update({"encoder.layers.0.self_attn.extra_proj.weight": torch.zeros(2)}), ["extra_proj"]),
        (lambda s: s.update({"encoder.layers.2.fc1.weight": torch.zeros(FFN, HIDDEN)}), ["encoder.layers.2.fc1"]),
        (
            lambda s: s.update({"encoder.layers.1.fc1.weight": torch.zeros(FFN - 1, HIDDEN)}),
            ["encoder.layers.1.fc1.weight", "(63, 32)", "(64, 32)"],
        ),
        (lambda s: s.pop("encoder.layer_norm.bias"), ["does not fill", "encoder.layer_norm.bias"]),
        (lambda s: s.pop("encoder.pos_conv.0.weight_g"), ["parametrizations.weight.original0"]),
    ],
    ids=["unknown-key", "extra-layer", "wrong-shape", "missing-key", "missing-weight-g"],
)
def test_mismatches_raise(edit: Any, expected_parts: list[str]) -> None:
    state = fairseq_state()
    edit(state)
    with pytest.raises(ValueError) as raised:
        convert_fairseq_state_dict(state, hubert_config_from_fairseq(TINY_SETTINGS))
    for part in expected_parts:
        assert part in str(raised.value)


def test_truncated_model_matches_full_and_checks_dropped_layers(
    tmp_path: Path, args_checkpoint: Path, full_model: HubertModel, wav: torch.Tensor
) -> None:
    truncated = load_fairseq_hubert(args_checkpoint, trust_checkpoint=True, num_layers=1)
    assert truncated.config.num_hidden_layers == 1 and len(truncated.encoder.layers) == 1
    with torch.no_grad():
        full_hidden = full_model(wav, output_hidden_states=True).hidden_states[1]
        torch.testing.assert_close(truncated(wav).last_hidden_state, full_hidden, atol=1e-5, rtol=0)

    broken = fairseq_state()
    broken["encoder.layers.1.fc2.weight"] = torch.zeros(HIDDEN, FFN + 1)
    with pytest.raises(ValueError, match=r"encoder\.layers\.1\.fc2\.weight"):
        load_fairseq_hubert(write_checkpoint(tmp_path / "broken.pt", broken), trust_checkpoint=True, num_layers=1)
    with pytest.raises(ValueError, match="num_layers"):
        load_fairseq_hubert(args_checkpoint, trust_checkpoint=True, num_layers=LAYERS + 1)


def test_pickled_namespace_needs_trust(args_checkpoint: Path, full_model: HubertModel) -> None:
    with pytest.raises(ValueError, match=r"trust_checkpoint=True") as raised:
        load_fairseq_hubert(args_checkpoint)
    assert "arbitrary code" in str(raised.value) and "argparse.Namespace" in str(raised.value)
    assert isinstance(full_model, HubertModel) and not full_model.training


def _fake_module(monkeypatch: pytest.MonkeyPatch, module_name: str) -> types.ModuleType:
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):
        package = ".".join(parts[:depth])
        if package not in sys.modules:
            monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    return sys.modules[module_name]


def _fake_class(monkeypatch: pytest.MonkeyPatch, dotted: str) -> type:
    """A class that pickles as `dotted` (e.g. omegaconf.dictconfig.DictConfig) while it is registered."""
    module_name, name = dotted.rsplit(".", 1)
    cls = type(name, (), {"__module__": module_name, "__init__": lambda self, **kw: self.__dict__.update(kw)})
    setattr(_fake_module(monkeypatch, module_name), name, cls)
    return cls


def test_omegaconf_dictconfig_checkpoint_loads_without_omegaconf(tmp_path: Path, wav: torch.Tensor) -> None:
    state = fairseq_state()
    with pytest.MonkeyPatch.context() as patch:
        dict_config = _fake_class(patch, "omegaconf.dictconfig.DictConfig")
        any_node = _fake_class(patch, "omegaconf.nodes.AnyNode")
        container_metadata = _fake_class(patch, "omegaconf.base.ContainerMetadata")
        metadata = _fake_class(patch, "omegaconf.base.Metadata")
        model_dataclass = _fake_class(patch, "fairseq.models.hubert.hubert.HubertConfig")
        mode_enum = enum.Enum("ExtractorMode", {"DEFAULT": "default"}, module="fairseq.dataclass.constants")
        _fake_module(patch, "fairseq.dataclass.constants").ExtractorMode = mode_enum

        def wrap(value: Any, parent: Any = None) -> Any:
            if not isinstance(value, dict):
                return any_node(_val=value, _metadata=metadata(ref_type=typing.Any), _parent=parent)
            node = dict_config(_metadata=container_metadata(object_type=model_dataclass), _parent=parent)
            node._content = {key: wrap(item, node) for key, item in value.items()}
            return node

        settings = TINY_SETTINGS | {"extractor_mode": mode_enum.DEFAULT}
        cfg = wrap({"model": settings, "task": {"normalize": True}})
        torch.save({"args": None, "cfg": cfg, "model": state}, tmp_path / "dictconfig.pt")
    assert "omegaconf" not in sys.modules
    with pytest.raises(ValueError, match="trust_checkpoint"):
        load_fairseq_hubert(tmp_path / "dictconfig.pt")
    model = load_fairseq_hubert(tmp_path / "dictconfig.pt", trust_checkpoint=True)
    assert model.config.fairseq_normalize is True and model.config.num_hidden_layers == LAYERS
    with torch.no_grad():
        torch.testing.assert_close(model(wav).last_hidden_state, fairseq_reference(state, wav)[-1], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "spec",
    [
        "__import__('os')",
        "[(512, 10, 5)] + __import__('os').system('true')",
        "[(1, 2, 3)] * 10**9",
        "[(1, 2, 3)] * 100000",
        "[(1, 2, 3)] * -1",
        "[(512, 10, 5)] + 'x'",
        "[(512, 10)]",
        "[(True, 2, 3)]",
        "[(512, 10, 5.0)]",
        "(lambda: 1)()",
        "[]",
        "[(1,2,3)",
    ],
)
def test_conv_spec_parser_rejects_non_literals(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_conv_feature_layers(spec)


def test_conv_spec_parser_reads_mhubert_spec() -> None:
    layers = parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
    assert layers == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


def test_save_as_hf_round_trip(tmp_path: Path, full_model: HubertModel, wav: torch.Tensor) -> None:
    folder = save_as_hf(full_model, tmp_path / "hf")
    reloaded = AutoModel.from_pretrained(folder).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert type(reloaded) is HubertModel
    assert feature_extractor.do_normalize is False and feature_extractor.sampling_rate == 16_000
    with torch.no_grad():
        expected = full_model(wav, output_hidden_states=True).hidden_states
        actual = reloaded(wav, output_hidden_states=True).hidden_states
    for layer_expected, layer_actual in zip(expected, actual, strict=True):
        torch.testing.assert_close(layer_actual, layer_expected, atol=0, rtol=0)
