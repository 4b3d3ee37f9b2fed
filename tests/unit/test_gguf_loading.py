"""A causal LM from a GGUF file (llama.cpp's format): the same model as the one written, trainable and saved as a
plain HF folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from speechgpt.model.load import load_lm, save_lm
from tests.gguf_fixtures import write_llama_gguf
from tests.lm_fixtures import make_tiny_lm

TEXT = "what is three plus five"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = make_tiny_lm(tmp_path_factory.mktemp("lm") / "llama")
    model, tokenizer = load_lm(folder)
    return folder, write_llama_gguf(model, tokenizer, folder.parent / "tiny-llama-f32.gguf")


def logits(model, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(TEXT, return_tensors="pt")).logits


def test_a_gguf_file_loads_as_the_model_it_was_written_from(written: tuple[Path, Path]) -> None:
    folder, gguf = written
    original, original_tokenizer = load_lm(folder)
    model, tokenizer = load_lm(gguf)
    assert tokenizer(TEXT)["input_ids"] == original_tokenizer(TEXT)["input_ids"]
    assert tokenizer.eos_token == original_tokenizer.eos_token and tokenizer.pad_token == original_tokenizer.pad_token
    torch.testing.assert_close(logits(model, tokenizer), logits(original, original_tokenizer), atol=1e-4, rtol=1e-4)


def test_a_loaded_gguf_model_saves_as_a_plain_folder_and_trains(written: tuple[Path, Path], tmp_path: Path) -> None:
    model, tokenizer = load_lm(written[1])
    saved = save_lm(model, tokenizer, tmp_path / "saved")
    again, again_tokenizer = load_lm(saved)
    assert "quantization_config" not in (saved / "config.json").read_text()
    torch.testing.assert_close(logits(again, again_tokenizer), logits(model, tokenizer))
    batch = tokenizer(TEXT, return_tensors="pt")
    again(**batch, labels=batch["input_ids"]).loss.backward()
    assert all(p.grad is not None for p in again.parameters() if p.requires_grad)


def test_a_missing_or_broken_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such GGUF file"):
        load_lm(tmp_path / "absent.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(12))
    with pytest.raises(ValueError, match=r"broken\.gguf"):
        load_lm(broken)
