"""A frozen encoder's frames computed once per clip train exactly what the encoder computes at every step: the same
losses, for an adapter of frames and for one of words, whatever clips are batched together."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from speechgpt.model.frozen_lm import FrozenSpeechLM, asr_loss_parts, build_frozen_speech_lm
from speechgpt.model.speech_encoder import build_speech_encoder
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.training.encoded_examples import encoded_examples
from speechgpt.training.frozen_stage import set_trainable
from speechgpt.training.speech_batches import SpeechExample, collate_speech

FEATURE_DIM = 40


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_tokenizer(["what is two plus two", "four is the answer"] * 20, vocab_size=200)


def _model(tokenizer: Any, words: bool) -> FrozenSpeechLM:
    lm = build_tiny_lm("llama", tokenizer, hidden_size=32, num_layers=2, num_heads=4, tie_embeddings=False, seed=1)
    encoder = build_speech_encoder(
        input_dim=FEATURE_DIM, frame_rate=100, dim=32, num_layers=2, num_heads=4, left_chunks=2, dropout=0.3,
        ctc_vocab_size=6,
    )  # fmt: skip
    kernel = 1 if words else 3
    model = build_frozen_speech_lm(
        lm, encoder, adapter_kernel=kernel, adapter_stride=kernel, seed=2, word_space=1 if words else None
    )
    set_trainable(model, ["adapter"])
    return model.train()  # the frozen encoder stays in eval mode: its dropout is off


def _examples(count: int) -> list[SpeechExample]:
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(count):
        frames = int(torch.randint(30, 120, (1,), generator=g))
        text = torch.randint(3, 100, (4,), generator=g).tolist()
        features = torch.randn(frames, FEATURE_DIM, generator=g)
        examples.append(SpeechExample(f"clip{i}", "asr", features, {"text_ids": text, "labels": text}))
    return examples


@pytest.mark.parametrize("words", [False, True])
def test_cached_frames_train_what_the_encoder_computes(tokenizer: Any, words: bool) -> None:
    model = _model(tokenizer, words)
    examples = _examples(7)
    encoded = encoded_examples(model, {"train": examples}, batch_size=3, show_progress=False)["train"]
    assert [e.id for e in encoded] == [e.id for e in examples] and all(e.encoded for e in encoded)
    assert encoded[0].features.shape[1] == model.encoder.dim
    for chosen in ([0, 1, 2, 3], [4, 6], [5]):  # other clips beside each than when their frames were computed
        want = asr_loss_parts(model, collate_speech([examples[i] for i in chosen]))
        batch = collate_speech([encoded[i] for i in chosen])
        assert "frames" in batch and "features" not in batch
        got = asr_loss_parts(model, batch)
        torch.testing.assert_close(got["loss"], want["loss"], rtol=1e-5, atol=1e-5)
    assert model.training and not model.encoder.training


def test_frames_are_computed_once_only_for_a_frozen_encoder(tokenizer: Any) -> None:
    model = _model(tokenizer, words=False)
    set_trainable(model, ["encoder", "adapter"])
    with pytest.raises(ValueError, match="frozen"):
        encoded_examples(model, {"train": _examples(2)}, show_progress=False)


def test_a_batch_does_not_mix_features_and_frames(tokenizer: Any) -> None:
    model = _model(tokenizer, words=False)
    examples = _examples(2)
    encoded = encoded_examples(model, {"train": examples[:1]}, show_progress=False)["train"]
    with pytest.raises(ValueError, match="clip1"):
        collate_speech([encoded[0], examples[1]])
