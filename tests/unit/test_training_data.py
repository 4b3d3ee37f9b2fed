"""Labels follow the loss spans; packing isolates examples; the batch plan is deterministic."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.training.data import IGNORE, BatchPlan, collate_packed, collate_padded, tokenize_rows
from speechgpt.training.packed_attention import PACKED_SDPA, prepare_attention, restore_attention
from tests.lm_fixtures import UNITS, make_instruct_dataset, make_tiny_lm


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory):
    folder = make_tiny_lm(tmp_path_factory.mktemp("lm"))
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    add_speech_tokens(model, tokenizer, UNITS)
    return model, tokenizer


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = make_instruct_dataset(tmp_path_factory.mktemp("data"), ["asr", "tts", "com_s2s", "com_t2t"], count=20)
    return load_instruct_dataset(folder)["train"].to_list()


def test_labels_are_exactly_the_answer_tokens(lm, rows) -> None:
    _, tokenizer = lm
    examples, skipped = tokenize_rows(rows, tokenizer, max_len=2048)
    assert not skipped and len(examples) == len(rows)
    for row, example in zip(rows, examples, strict=True):
        trained = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
        answers = "".join(row["text"][a:b] for a, b in row["loss_spans"])
        assert tokenizer.decode(trained) == answers
        assert example.labels[0] == IGNORE


def test_too_long_rows_are_skipped_and_counted(lm, rows) -> None:
    _, tokenizer = lm
    examples, skipped = tokenize_rows(rows, tokenizer, max_len=30)
    assert len(examples) + sum(skipped.values()) == len(rows)
    assert skipped["longer than seq_len=30"] > 0


def test_tokens_outside_answers_get_no_gradient(lm, rows) -> None:
    model, tokenizer = lm
    example = tokenize_rows(rows[:1], tokenizer, max_len=2048)[0][0]
    ids = torch.tensor([example.input_ids])
    labels = torch.tensor([example.labels])
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds).logits
    logits.retain_grad()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=IGNORE)
    loss.backward()
    per_position = logits.grad[0, :-1].abs().sum(-1)
    predicted = labels[0, 1:] != IGNORE
    assert torch.all(per_position[~predicted] == 0)
    assert torch.all(per_position[predicted] > 0)
    hf_loss = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(hf_loss, loss)


def test_packed_rows_match_separate_examples(lm, rows) -> None:
    model, tokenizer = lm
    examples = tokenize_rows(rows[:3], tokenizer, max_len=2048)[0]
    batch = collate_packed(examples, [[0, 1, 2]], tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for example in examples:
            alone = model(input_ids=torch.tensor([example.input_ids])).logits[0]
            torch.testing.assert_close(packed[start : start + len(example.input_ids)], alone, atol=1e-5, rtol=1e-4)
            start += len(example.input_ids)


def test_batch_plan_is_deterministic_and_covers_every_example(lm, rows) -> None:
    _, tokenizer = lm
    examples = tokenize_rows(rows, tokenizer, max_len=2048)[0]
    plan = BatchPlan(examples, seq_len=512, micro_batch=1, packing=True, seed=3, pad_id=0)
    again = BatchPlan(examples, seq_len=512, micro_batch=1, packing=True, seed=3, pad_id=0)
    assert plan.epoch(0) == again.epoch(0) and plan.epoch(1) == again.epoch(1)
    assert plan.epoch(0) != plan.epoch(1)
    seen = sorted(i for batch in plan.epoch(0) for row in batch for i in row)
    assert seen == list(range(len(examples)))
    for batch in plan.epoch(0):
        assert all(sum(len(examples[i].input_ids) for i in row) <= 512 for row in batch)
    padded = BatchPlan(examples, seq_len=512, micro_batch=4, packing=False, seed=3, pad_id=0)
    assert sum(len(b) for b in padded.epoch(0)) == len(examples)
    assert plan.real_tokens(plan.epoch(0)[0]) == sum(len(examples[i].input_ids) for i in plan.epoch(0)[0][0])


def test_padded_batches_match_separate_examples_under_either_attention(lm, rows) -> None:
    model, tokenizer = lm
    examples = tokenize_rows(rows[:3], tokenizer, max_len=2048)[0]
    batch = collate_padded(examples, tokenizer.pad_token_id)
    try:
        for packing, implementation in ((False, "sdpa"), (True, PACKED_SDPA)):
            prepare_attention(model, packing=packing)  # padded mode: transformers' SDPA reading the padding mask
            assert model.config._attn_implementation == implementation
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                for row, example in enumerate(examples):
                    alone = model(input_ids=torch.tensor([example.input_ids])).logits[0]
                    torch.testing.assert_close(logits[row, : len(example.input_ids)], alone, atol=1e-5, rtol=1e-4)
    finally:
        restore_attention(model)
