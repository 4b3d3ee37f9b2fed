"""The engine's loss on trained positions only: the same loss and gradients as transformers' loss over every
position, with the LM head run on the trained tokens alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.training.data import IGNORE, collate_packed, collate_padded, tokenize_rows
from speechgpt.training.losses import token_loss, under_autocast
from speechgpt.training.packed_attention import prepare_attention
from tests.lm_fixtures import UNITS, make_instruct_dataset, make_tiny_lm


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = make_instruct_dataset(tmp_path_factory.mktemp("data"), ["asr", "tts", "com_s2t", "com_t2s"], count=8)
    return load_instruct_dataset(folder)["train"].to_list()


def load(folder, packing: bool):
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    add_speech_tokens(model, tokenizer, UNITS)
    prepare_attention(model, packing=packing)
    return model, tokenizer


def head_rows(model, loss_fn, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Loss, gradients, and how many positions the LM head ran on."""
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(i[0].shape[:-1].numel()))
    model.zero_grad()
    loss = loss_fn(model, batch)["loss"]
    loss.backward()
    hook.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(seen)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("packing", [True, False])
def test_trained_positions_loss_equals_the_full_loss(tmp_path, rows, family: str, packing: bool) -> None:
    model, tokenizer = load(make_tiny_lm(tmp_path / family, family), packing)
    if family == "gemma3":
        model.config.final_logit_softcapping = 30.0  # the head's output is transformed: must happen on both paths
    examples = tokenize_rows(rows, tokenizer, 2048)[0]
    batch = (
        collate_packed(examples, [[0, 1, 2], [3, 4, 5]], tokenizer.pad_token_id)
        if packing
        else collate_padded(examples[:4], tokenizer.pad_token_id)
    )
    full, full_grads, full_rows = head_rows(model, token_loss(model, "all"), batch)
    trained, trained_grads, trained_rows = head_rows(model, token_loss(model, "trained"), batch)
    torch.testing.assert_close(trained, full, atol=1e-6, rtol=1e-6)
    assert full_grads.keys() == trained_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(trained_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    predicted = int((batch["labels"][:, 1:] != IGNORE).sum())
    assert full_rows == batch["input_ids"].numel() and trained_rows == predicted < full_rows / 2


def test_lora_model_and_models_without_logits_to_keep(tmp_path, rows) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load(make_tiny_lm(tmp_path / "lm"), packing=True)
    batch = collate_packed(tokenize_rows(rows, tokenizer, 2048)[0], [[0, 1]], tokenizer.pad_token_id)
    full = head_rows(model, token_loss(model, "all"), batch)[0]
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    loss, _, head = head_rows(lora, token_loss(lora, "trained"), batch)
    torch.testing.assert_close(loss, full, atol=1e-6, rtol=1e-6)
    assert head == int((batch["labels"][:, 1:] != IGNORE).sum())

    class OwnLoss(torch.nn.Module):  # e.g. a frozen LLM behind a speech adapter: its forward defines the loss
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, input_ids, labels, position_ids=None):
            return type("Out", (), {"loss": self.scale * input_ids.float().mean()})()

    own = OwnLoss()
    torch.testing.assert_close(token_loss(own, "trained")(own, batch)["loss"], 2 * batch["input_ids"].float().mean())


def test_bfloat16_autocast_runs_matmuls_in_bf16_and_keeps_float32_weights(tmp_path, rows) -> None:
    model, tokenizer = load(make_tiny_lm(tmp_path / "lm"), packing=True)
    batch = collate_packed(tokenize_rows(rows, tokenizer, 2048)[0], [[0, 1, 2]], tokenizer.pad_token_id)
    full, full_grads, _ = head_rows(model, token_loss(model, "trained"), batch)
    matmul_dtypes = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: matmul_dtypes.append(o.dtype))
    mixed, mixed_grads, _ = head_rows(model, under_autocast(token_loss(model, "trained")), batch)
    hook.remove()
    assert matmul_dtypes == [torch.bfloat16] and mixed.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(g.dtype == torch.float32 for g in mixed_grads.values()) and mixed_grads.keys() == full_grads.keys()
    torch.testing.assert_close(mixed, full, rtol=2e-2, atol=0)
    assert mixed != full  # bf16 rounding is visible: the casts did happen


def test_engine_trains_under_bfloat16_autocast(tmp_path, rows) -> None:
    from speechgpt.training.batches import TokenBatches
    from speechgpt.training.config import TrainConfig
    from speechgpt.training.engine import train

    model, tokenizer = load(make_tiny_lm(tmp_path / "lm"), packing=True)
    examples = tokenize_rows(rows, tokenizer, 2048)[0][:3]
    cfg = TrainConfig(
        max_steps=8, seq_len=2048, lr=3e-3, warmup_steps=0, dtype="bfloat16-autocast", eval_every=0, save_every=0
    )
    matmul_dtypes = set()
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: matmul_dtypes.add(o.dtype))
    result = train(cfg, model, TokenBatches.for_config(cfg, examples, tokenizer.pad_token_id), tmp_path / "run")
    assert matmul_dtypes == {torch.bfloat16}
    assert result.losses[-1] < result.losses[0] - 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())
