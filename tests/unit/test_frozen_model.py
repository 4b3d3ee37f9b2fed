"""Frozen-LLM variant, model side: any HF causal LM as the frozen backbone (tiny Llama, Qwen2, Gemma 3), only the speech
modules train, the LLM's weights fingerprint stays the same, and the three input stages' losses fall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from speechgpt.model.frozen_checkpoint import load_speech_modules, read_speech_meta, save_speech_modules
from speechgpt.model.frozen_lm import (
    IGNORE,
    FrozenSpeechLM,
    assemble_inputs,
    build_frozen_speech_lm,
    chunk_end_positions,
    ctc_loss_parts,
    trainable_parameters,
    weights_fingerprint,
)
from speechgpt.model.speech_encoder import build_speech_encoder
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer

TEXT = ["what is two plus two", "four is the answer", "the cat sat on the mat"] * 20
FEATURE_DIM, FRAMES = 40, 96  # 96 fbank frames (0.96 s) -> 24 encoder frames = 6 chunks -> 12 LLM embeddings


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_tokenizer(TEXT, vocab_size=300)


def _model(tokenizer: Any, family: str = "llama", hidden: int = 48, ctc_vocab: int = 12) -> FrozenSpeechLM:
    lm = build_tiny_lm(family, tokenizer, hidden_size=hidden, num_layers=2, num_heads=4, tie_embeddings=False, seed=1)  # type: ignore[arg-type]
    with torch.no_grad():
        # A random 0.02-scale LM head caps every logit near 1, so no input could make the frozen LLM say a token;
        # a pretrained LLM's head is larger. This gives the tiny one a usable output range.
        lm.get_output_embeddings().weight.mul_(20)
    encoder = build_speech_encoder(
        input_dim=FEATURE_DIM, frame_rate=100, dim=32, num_layers=2, num_heads=4, left_chunks=2, dropout=0.0,
        ctc_vocab_size=ctc_vocab,
    )  # fmt: skip
    return build_frozen_speech_lm(lm, encoder, num_prompts=3, seed=2)


def _batch(vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Two clips (96 and 80 frames) with a prefix, a transcript/answer, CTC targets and per-chunk state labels."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(2, FRAMES, FEATURE_DIM, generator=g)
    feature_lengths = torch.tensor([FRAMES, 80])
    text_ids = torch.randint(3, vocab_size, (2, 6), generator=g)
    text_lengths = torch.tensor([6, 4])
    labels = text_ids.clone()
    labels[:, 0] = IGNORE  # a chat-turn opening, fed but not predicted
    labels[1, 4:] = IGNORE
    ctc_targets = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, IGNORE, IGNORE]])
    # 96 frames = 6 chunks, 80 frames = 20 encoder frames = 5 chunks
    state_labels = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 2, 2, IGNORE]])
    return {
        "features": features,
        "feature_lengths": feature_lengths,
        "prefix_ids": torch.tensor([[4, 5, 6], [7, 8, 0]]),
        "prefix_lengths": torch.tensor([3, 2]),
        "text_ids": text_ids,
        "text_lengths": text_lengths,
        "labels": labels,
        "ctc_targets": ctc_targets,
        "state_labels": state_labels,
    }


@pytest.mark.parametrize(("family", "hidden"), [("llama", 48), ("qwen2", 64), ("gemma3", 32)])
def test_backbone_swap_sizes_everything_from_the_llm(tokenizer: Any, family: str, hidden: int) -> None:
    model = _model(tokenizer, family, hidden).eval()
    batch = _batch(len(tokenizer))
    speech = model.speech_embeddings(batch["features"], batch["feature_lengths"])
    embeds, lengths, frame_lengths = speech.embeds, speech.lengths, speech.frame_lengths
    assert embeds.shape == (2, FRAMES // 8, hidden)  # 100 Hz -> 25 Hz encoder -> 12.5 Hz into the LLM
    assert lengths.tolist() == [12, 10] and frame_lengths.tolist() == [24, 20]
    assert model.prompt.weight.shape == (3, hidden) and model.state_head.in_features == hidden
    parts = model(batch, "qa")
    assert set(parts) == {"loss", "lm", "state"} and all(torch.isfinite(v) for v in parts.values())
    assert set(model(batch, "asr")) == {"loss", "lm"}
    assert set(model(batch, "ctc")) == {"loss", "ctc"}


def test_inputs_are_prefix_prompt_speech_text(tokenizer: Any) -> None:
    model = _model(tokenizer).eval()
    batch = _batch(len(tokenizer))
    assembled, _ = assemble_inputs(model, batch)
    with torch.no_grad():
        embeds = model.speech_embeddings(batch["features"], batch["feature_lengths"]).embeds
        table = model.lm.get_input_embeddings()
        # clip 1: 2 prefix tokens, 3 prompts, 10 speech embeddings, 4 text tokens, then padding
        row = assembled.inputs_embeds[1]
        assert torch.equal(row[:2], table(batch["prefix_ids"][1, :2]))
        assert torch.equal(row[2:5], model.prompt.weight)
        assert torch.allclose(row[5:15], embeds[1, :10])
        assert torch.equal(row[15:19], table(batch["text_ids"][1, :4]))
    assert assembled.attention_mask.sum(1).tolist() == [3 + 3 + 12 + 6, 2 + 3 + 10 + 4]
    assert assembled.speech_start.tolist() == [6, 5]
    assert assembled.labels[1, 15:19].tolist() == [IGNORE, *batch["text_ids"][1, 1:4].tolist()]
    assert (assembled.labels[1, :15] == IGNORE).all() and (assembled.labels[1, 19:] == IGNORE).all()
    # each chunk's decision is read at its last speech embedding: 4 encoder frames = 2 embeddings per chunk
    positions, exists = chunk_end_positions(model, assembled.speech_start, torch.tensor([24, 20]), 6)
    assert positions[0].tolist() == [7, 9, 11, 13, 15, 17] and exists[1].tolist() == [True] * 5 + [False]


def test_chunk_decisions_do_not_read_later_audio(tokenizer: Any) -> None:
    """What streaming relies on: the LLM's state at a chunk's end is the same whatever audio follows."""
    model = _model(tokenizer).eval()
    batch = _batch(len(tokenizer))
    changed = {**batch, "features": batch["features"].clone()}
    changed["features"][:, 48:] = torch.randn(2, FRAMES - 48, FEATURE_DIM)  # from chunk 3 on (16 frames a chunk)
    with torch.no_grad():
        hidden = []
        for b in (batch, changed):
            assembled, frame_lengths = assemble_inputs(model, b)
            states = model.hidden_states(assembled.inputs_embeds, assembled.attention_mask)
            positions, _ = chunk_end_positions(model, assembled.speech_start, frame_lengths, 6)
            hidden.append(states[0, positions[0]])
    assert torch.allclose(hidden[0][:3], hidden[1][:3], atol=1e-5)
    assert not torch.allclose(hidden[0][3:], hidden[1][3:], atol=1e-3)


def test_training_step_changes_speech_modules_and_never_the_llm(tokenizer: Any) -> None:
    model = _model(tokenizer).train()
    assert not model.lm.training and model.encoder.training  # train() leaves the LLM in eval mode
    fingerprint = weights_fingerprint(model.lm)
    lm_ids = {id(p) for p in model.lm.parameters()}
    params = trainable_parameters(model)
    assert params and not lm_ids & {id(p) for p in params}
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("lm.")}
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    batch = _batch(len(tokenizer))
    (model(batch, "qa")["loss"] + model(batch, "ctc")["loss"]).backward()
    optimizer.step()
    assert all(p.grad is None for p in model.lm.parameters())
    assert len(optimizer.state) == len(params)  # no optimizer state for the LLM
    changed = {k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])}
    for prefix in ("encoder.layers.", "encoder.subsample.", "encoder.ctc_head.", "adapter.", "prompt", "state_head."):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert weights_fingerprint(model.lm) == fingerprint
    with torch.no_grad():
        next(model.lm.parameters()).add_(1e-3)
    assert weights_fingerprint(model.lm) != fingerprint  # the fingerprint sees a change


@pytest.mark.parametrize("objective", ["ctc", "asr", "qa"])
def test_losses_fall_on_a_tiny_batch(tokenizer: Any, objective: str) -> None:
    torch.manual_seed(0)
    model = _model(tokenizer).train()
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=3e-3)
    batch = _batch(len(tokenizer))
    history = []
    for _ in range(30):
        parts = model(batch, objective)  # type: ignore[arg-type]
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in parts.items()})
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    for name in history[0]:
        assert history[-1][name] < 0.6 * history[0][name], (name, history[0][name], history[-1][name])


def test_ctc_trains_the_encoder_without_an_llm(tokenizer: Any) -> None:
    encoder = _model(tokenizer).encoder
    parts = ctc_loss_parts(encoder, _batch(len(tokenizer)))
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"]) and encoder.ctc_head is not None and encoder.ctc_head.weight.grad is not None


def test_state_labels_past_a_clip_are_an_error(tokenizer: Any) -> None:
    model = _model(tokenizer).eval()
    batch = _batch(len(tokenizer))
    batch["state_labels"] = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 0, 2, 2, 2]])  # clip 2 has 5 chunks
    with pytest.raises(ValueError, match="past the end"):
        model(batch, "qa")


def test_speech_modules_save_and_load_without_the_llm(tokenizer: Any, tmp_path: Path) -> None:
    model = _model(tokenizer).eval()
    model.encoder.set_cmvn(torch.randn(FEATURE_DIM), torch.rand(FEATURE_DIM) + 0.5)
    batch = _batch(len(tokenizer))
    out = save_speech_modules(model, tmp_path / "frozen", features="fbank")
    meta = read_speech_meta(out)
    assert meta["variant"] == "frozen" and meta["features"] == "fbank"
    assert (out / "speech_modules.safetensors").stat().st_size < 2_000_000  # the LLM is not in it
    loaded = load_speech_modules(model.lm, out).eval()
    with torch.no_grad():
        assert torch.equal(loaded(batch, "qa")["loss"], model(batch, "qa")["loss"])
    other = build_tiny_lm("llama", tokenizer, hidden_size=48, num_layers=2, num_heads=4, seed=7)
    with pytest.raises(ValueError, match="another LLM"):
        load_speech_modules(other, out)
