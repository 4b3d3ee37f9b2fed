"""benchmarks.answer_units: prompts cut at the answer's <sosp>, and its rates on a model that knows one answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.answer_units import answer_prompts, probe, units_in_place
from tests.chat_fixtures import make_chat_model
from tests.lm_fixtures import make_instruct_dataset


@pytest.fixture(scope="module")
def model_and_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("answer_units")
    model = make_chat_model(root / "model")
    data = make_instruct_dataset(root / "data", ["com_t2s", "com_s2t"], count=20)
    rows = [r for r in load_from_disk(str(data / "dataset"))["train"] if r["task"] == "com_t2s"]
    return model, rows


def test_prompts_end_at_the_answers_sosp_and_the_reference_is_its_units(model_and_rows: tuple[Path, list]) -> None:
    folder, rows = model_and_rows
    tokenizer = AutoTokenizer.from_pretrained(folder)
    (row_id, prefix, reference), *_ = answer_prompts(rows[:1], tokenizer)
    assert row_id == rows[0]["id"] and tokenizer.convert_ids_to_tokens(prefix[-1:]) == ["<sosp>"]
    through_eosp = rows[0]["text"][: rows[0]["text"].rindex("<eosp>") + len("<eosp>")]
    assert prefix + reference == tokenizer(through_eosp, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(reference[-1:]) == ["<eosp>"]
    assert all(t.startswith("<|u") for t in tokenizer.convert_ids_to_tokens(reference[:-1]))
    with pytest.raises(ValueError, match="no spoken answer"):
        answer_prompts([{"id": "x", "text": "[Human]: hi<eoh> [SpeechGPT]: [ta] hello<eoa>"}], tokenizer)


def test_a_model_that_learned_an_answer_writes_it_exactly(model_and_rows: tuple[Path, list]) -> None:
    folder, rows = model_and_rows
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    before = probe(model.eval(), tokenizer, rows[:1], beams=2)
    assert before["count"] == 1 and before["exact_greedy"] == 0.0
    _, prefix, reference = answer_prompts(rows[:1], tokenizer)[0]
    ids = torch.tensor([prefix + reference])
    labels = ids.clone()
    labels[0, : len(prefix)] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):  # overfit the one answer's units
        optimizer.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss
        if loss.item() < 0.01:
            break
        loss.backward()
        optimizer.step()
    after = probe(model.eval(), tokenizer, rows[:1], beams=2)
    assert after["exact_greedy"] == after["exact_beam"] == 1.0
    assert after["in_place_greedy"] == 1.0 and after["examples"][0]["units"] == len(reference) - 1


def test_units_in_place_counts_over_the_reference() -> None:
    assert units_in_place([1, 2, 9], [1, 2, 3, 4]) == 0.5
    assert units_in_place([1, 2, 3, 4, 5], [1, 2, 3, 4]) == 1.0
