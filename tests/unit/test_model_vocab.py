"""Speech vocabulary on Llama, Qwen2 and Gemma 3 (tied and untied): ids, initialisation, save and load."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechgpt.model.load import load_lm, save_lm
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.model.vocab import add_speech_tokens, speech_vocab
from speechgpt.text.template import marker_tokens
from speechgpt.text.units import UnitFormat
from speechgpt.training.schedule import lr_lambda

UNITS = UnitFormat("default", 30)
TEXT = ["what is two plus two", "four is the answer", "the cat sat on the mat"] * 20


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("tie", [True, False])
def test_speech_tokens_added_and_initialised_from_existing_rows(family: str, tie: bool, tmp_path: Path) -> None:
    tokenizer = train_tokenizer(TEXT, vocab_size=300)
    model = build_tiny_lm(family, tokenizer, hidden_size=32, num_layers=1, num_heads=2, tie_embeddings=tie)  # type: ignore[arg-type]
    old = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    vocab = add_speech_tokens(model, tokenizer, UNITS)
    assert len(vocab.unit_ids) == 30 and set(vocab.marker_ids) == set(marker_tokens())
    embeddings = model.get_input_embeddings().weight.detach()
    new = embeddings[vocab.new_ids]
    # mean resizing: new rows sit at the mean of the old ones (a default init would be N(0, 0.02) per row)
    torch.testing.assert_close(new.mean(0), old.mean(0), atol=5e-3, rtol=0)
    assert (new - old.mean(0)).norm(dim=1).max() < 0.25 * old.norm(dim=1).mean()
    assert torch.equal(embeddings[: old.shape[0]], old)
    output = model.get_output_embeddings().weight.detach()
    assert (output.data_ptr() == embeddings.data_ptr()) == tie
    assert torch.equal(output[: old_out.shape[0]], old_out)
    text = UNITS.span([3, 4]) + "<eoa>"
    assert tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False).input_ids) == [
        "<sosp>",
        "<|u3|>",
        "<|u4|>",
        "<eosp>",
        "<eoa>",
    ]
    save_lm(model, tokenizer, tmp_path)
    loaded, loaded_tokenizer = load_lm(tmp_path)
    assert speech_vocab(loaded_tokenizer, UNITS) == vocab
    assert add_speech_tokens(loaded, loaded_tokenizer, UNITS) == vocab  # idempotent on a stage-1 checkpoint
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path).get_input_embeddings().weight, embeddings)
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == len(tokenizer)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load a causal LM"):
        load_lm(tmp_path / "nothing")


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    cosine = lr_lambda(total=100, warmup=10, min_ratio=0.1)
    values = [cosine(s) for s in range(101)]
    assert values[0] < values[5] < values[9] <= 1.0
    assert values[10] == pytest.approx(1.0) and values[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    linear = lr_lambda(total=100, warmup=0, shape="linear", min_ratio=0.0)
    assert linear(50) == pytest.approx(0.5)
