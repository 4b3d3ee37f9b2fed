"""Speech-token rows as parameters of their own: the model computes the same, trains them at their own rate in the
engine's optimizer groups, and saves as a plain Hugging Face model again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from speechgpt.model.row_split import is_split, join_rows, speech_token_rows, split_rows
from speechgpt.training.engine import optimizer_groups
from tests.lm_fixtures import make_tiny_lm

FIRST = 300


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def lm_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("lm") / "m", tie=request.param)


def test_split_model_computes_the_same_and_saves_plain(lm_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    tied = model.config.tie_word_embeddings
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    before = model(ids).logits
    tails = split_rows(model, FIRST)
    rows = model.get_input_embeddings().weight.shape[0]
    assert [tuple(t.shape) for t in tails] == [(rows - FIRST, 64)] * (1 if tied else 2)
    assert torch.equal(model(ids).logits, before)
    model(ids).logits.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tails)
    with torch.no_grad():
        for t in tails:
            t.add_(0.5)  # as an optimizer step would
    trained = model(ids).logits
    assert not torch.equal(trained, before)
    join_rows(model)
    assert not is_split(model)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert torch.equal(reloaded(ids).logits, trained)


def test_split_rows_rejects_a_bad_row_and_a_second_split(lm_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ValueError, match=f"{rows} rows at row {rows}"):
        split_rows(model, rows)
    split_rows(model, FIRST)
    with pytest.raises(ValueError, match="already split"):
        split_rows(model, FIRST)


def test_a_frozen_embedding_has_no_speech_rows_to_train(lm_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    model.get_input_embeddings().weight.requires_grad_(False)
    with pytest.raises(ValueError, match="do not train here"):
        speech_token_rows(model, FIRST)


def test_optimizer_groups_give_named_parameters_their_rate() -> None:
    a, b, c = (torch.nn.Parameter(torch.zeros(n)) for n in (1, 2, 3))
    groups = optimizer_groups([a, b, c], 1e-4, [([c], 1e-2)])
    assert [(len(g["params"]), g["lr"]) for g in groups] == [(2, 1e-4), (1, 1e-2)]
    assert optimizer_groups([a], 1e-4, [([a], 1e-2)]) == [{"params": [a], "lr": 1e-2}]
    frozen = torch.nn.Parameter(torch.zeros(4), requires_grad=False)
    with pytest.raises(ValueError, match=r"shape \(4,\) has a learning rate but does not train"):
        optimizer_groups([a], 1e-4, [([frozen], 1e-2)])
    with pytest.raises(ValueError, match="must be > 0"):
        optimizer_groups([a], 1e-4, [([a], 0.0)])


def test_stage_config_names_what_speech_token_lr_cannot_do() -> None:
    from speechgpt.training.config import TrainConfig
    from stages.stage2_cross_modal import Config

    with pytest.raises(ValueError, match="zero_stage <= 2"):
        Config(model="m", data=Path("d"), out=Path("o"), speech_token_lr=1e-2, train=TrainConfig(zero_stage=3))
    with pytest.raises(ValueError, match="speech_token_lr must be > 0"):
        Config(model="m", data=Path("d"), out=Path("o"), speech_token_lr=0.0)
