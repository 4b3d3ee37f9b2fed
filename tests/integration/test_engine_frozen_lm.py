"""The engine trains a model whose LLM is frozen and whose speech arrives as input embeddings from an adapter
(the Freeze-Omni-style variant): only the adapter learns, the LLM stays bit-identical, resume is exact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.training.batches import TokenBatches
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import collate_packed, tokenize_rows
from speechgpt.training.engine import train
from speechgpt.training.packed_attention import prepare_attention
from tests.lm_fixtures import UNITS, make_instruct_dataset, make_tiny_lm


class AdapterIntoFrozenLM(torch.nn.Module):
    """Unit tokens -> own embedding -> MLP adapter -> the frozen LLM's input embeddings; text tokens use the LLM's
    own (frozen) embedding table. The forward takes the engine's batches and returns the LLM's output (`.loss`)."""

    def __init__(self, lm: torch.nn.Module, unit_ids: list[int]) -> None:
        super().__init__()
        self.lm = lm.requires_grad_(False)
        hidden = lm.config.hidden_size
        self.units = torch.nn.Embedding(len(unit_ids), hidden)
        self.adapter = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden)
        )
        index = torch.full((lm.get_input_embeddings().num_embeddings,), -1)
        index[torch.tensor(unit_ids)] = torch.arange(len(unit_ids))
        self.register_buffer("unit_index", index, persistent=False)

    def forward(self, input_ids, labels, position_ids=None, attention_mask=None):
        unit = self.unit_index[input_ids]
        speech = self.adapter(self.units(unit.clamp(min=0)))
        embeds = torch.where((unit >= 0)[..., None], speech, self.lm.get_input_embeddings()(input_ids))
        return self.lm(inputs_embeds=embeds, labels=labels, position_ids=position_ids, attention_mask=attention_mask)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("frozen")
    lm_dir = make_tiny_lm(root / "lm")
    data = load_instruct_dataset(make_instruct_dataset(root / "asr", ["asr"], count=60))["train"]
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    probe = AutoModelForCausalLM.from_pretrained(lm_dir)
    add_speech_tokens(probe, tokenizer, UNITS)
    examples = tokenize_rows(data, tokenizer, 512)[0]
    return root, lm_dir, examples, tokenizer


def build(lm_dir: Path, tokenizer) -> AdapterIntoFrozenLM:
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir)
    vocab = add_speech_tokens(lm, tokenizer, UNITS)
    prepare_attention(lm, packing=True)
    return AdapterIntoFrozenLM(lm, vocab.unit_ids)


def cfg(**kw) -> TrainConfig:
    base = {"max_steps": 12, "seq_len": 512, "lr": 3e-3, "warmup_steps": 1, "eval_every": 0, "save_every": 4}
    return TrainConfig(**{**base, "zero_stage": 2, **kw})


def test_only_the_adapter_learns_and_resume_is_exact(setup) -> None:
    root, lm_dir, examples, tokenizer = setup
    model = build(lm_dir, tokenizer)
    frozen_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    adapter_before = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    fixed = collate_packed(examples, [list(range(16))], tokenizer.pad_token_id)
    with torch.no_grad():
        loss_before = float(model(**fixed).loss)
    straight = train(cfg(), model, TokenBatches.for_config(cfg(), examples, tokenizer.pad_token_id), root / "straight")
    assert all(torch.equal(v, frozen_before[k]) for k, v in model.lm.state_dict().items())
    assert not all(torch.equal(v, adapter_before[k]) for k, v in model.adapter.state_dict().items())
    with torch.no_grad():  # the frozen LLM is random, so the adapter can only move its loss a little
        assert float(model(**fixed).loss) < loss_before - 0.03

    resumed = root / "resumed" / "checkpoints"  # as if the run had been killed after its step-8 checkpoint
    shutil.copytree(root / "straight" / "checkpoints" / "step0000008", resumed / "step0000008")
    (resumed / "latest").write_text("step0000008")
    second = train(
        cfg(),
        build(lm_dir, tokenizer),
        TokenBatches.for_config(cfg(), examples, tokenizer.pad_token_id),
        root / "resumed",
    )
    assert len(second.losses) == 4
    for got, want in zip(second.losses, straight.losses[8:], strict=True):
        assert abs(got - want) < 1e-5, (second.losses, straight.losses)
