"""Loading chat models: HF folders, our stage-3 adapter folders, SpeechGPT's released layout (legacy units, adapter
without a tokenizer over a separate base); the unit format is read from the vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechgpt.infer import detect_unit_format, load_chat_model
from speechgpt.model.load import load_lm
from speechgpt.text.units import UnitFormat
from tests.lm_fixtures import UNITS, make_tiny_lm
from tests.unit.test_infer_fixtures import make_speech_lm


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loading")
    make_speech_lm(root / "ours")
    make_speech_lm(root / "legacy", UnitFormat("legacy", 12))
    return root


def _save_adapter(base: Path, out: Path, with_tokenizer: bool, recorded_base: str | None = None) -> torch.Tensor:
    """A random (non-identity) LoRA on q/v saved like stage 3 or like SpeechGPT; returns its logits on a probe."""
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_lm(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapted = get_peft_model(model, config)
    adapted.save_pretrained(out)
    if with_tokenizer:
        tokenizer.save_pretrained(out)
    if recorded_base is not None:
        settings = json.loads((out / "adapter_config.json").read_text())
        (out / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": recorded_base}))
    with torch.no_grad():
        return adapted(torch.tensor([[5, 6, 7, 8]])).logits


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([[5, 6, 7, 8]])).logits


def test_unit_format_comes_from_the_vocabulary(root: Path) -> None:
    assert detect_unit_format(load_lm(root / "ours")[1]) == UNITS
    assert detect_unit_format(load_lm(root / "legacy")[1]) == UnitFormat("legacy", 12)
    with pytest.raises(ValueError, match="no unit tokens"):
        detect_unit_format(load_lm(make_tiny_lm(root / "plain"))[1])
    with pytest.raises(ValueError, match="no unit tokens"):
        load_chat_model(root / "plain", device="cpu")


def test_hf_folder(root: Path) -> None:
    loaded = load_chat_model(root / "ours", device="cpu")
    assert loaded.layout == "model" and loaded.units == UNITS and not loaded.model.training
    with pytest.raises(ValueError, match="not an adapter folder"):
        load_chat_model(root / "ours", base=root / "ours", device="cpu")


def test_stage3_adapter_folder_finds_its_base(root: Path) -> None:
    base = root / "ours"
    expected = _save_adapter(base, root / "ours-adapter", with_tokenizer=True, recorded_base=str(base))
    loaded = load_chat_model(root / "ours-adapter", device="cpu")
    assert loaded.layout == "adapter" and loaded.units == UNITS
    assert torch.allclose(_logits(loaded.model), expected, atol=1e-4)
    assert not torch.allclose(_logits(load_lm(root / "ours")[0]), expected, atol=1e-3)  # the adapter does something
    unmerged = load_chat_model(root / "ours-adapter", device="cpu", merge=False)
    assert torch.allclose(_logits(unmerged.model), expected, atol=1e-4)


def test_speechgpt_released_layout(root: Path) -> None:
    """SpeechGPT-7B-com: an adapter folder without a tokenizer whose config names a base that is not here."""
    adapter = root / "com-adapter"
    expected = _save_adapter(root / "legacy", adapter, with_tokenizer=False, recorded_base="/nonexistent/llama-7b")
    with pytest.raises(ValueError, match="cannot load a causal LM"):
        load_chat_model(adapter, device="cpu")
    loaded = load_chat_model(adapter, base=root / "legacy", device="cpu")
    assert loaded.layout == "adapter" and loaded.units == UnitFormat("legacy", 12)
    assert torch.allclose(_logits(loaded.model), expected, atol=1e-4)
