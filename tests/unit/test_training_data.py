"""Labels follow the loss spans; packing isolates examples; the batch plan is deterministic."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.training.data import (
    IGNORE,
    BatchPlan,
    Tokenized,
    collate_packed,
    collate_padded,
    shared_prefixes,
    tokenize_rows,
)
from speechgpt.training.packed_attention import PACKED_SDPA, prepare_attention, restore_attention, segment_bounds
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


def _with_plain_rows(examples: list[Tokenized]) -> list[Tokenized]:
    """`examples` and two rows that do not start with their system text (a replayed text line)."""
    bos = examples[0].input_ids[:1]
    return [
        *examples,
        *(Tokenized(f"plain-{n}", "text", [*bos, 5 + n, 6, 7], [IGNORE, IGNORE, 6, 7]) for n in range(2)),
    ]


def test_shared_prefix_rows_give_the_loss_and_gradients_of_whole_examples(lm, rows) -> None:
    model, tokenizer = lm
    examples = tokenize_rows(rows[:5], tokenizer, max_len=2048)[0]
    prefixes = shared_prefixes(_with_plain_rows(examples))
    prefix = prefixes[0]
    assert prefixes[:5] == [prefix] * 5 and prefixes[5:] == [0, 0]
    assert all(e.input_ids[:prefix] == examples[0].input_ids[:prefix] for e in examples)
    assert tokenizer.decode(examples[0].input_ids[:prefix], skip_special_tokens=True).startswith(rows[0]["text"][:20])
    shared = collate_packed(examples, [[0, 1, 2, 3, 4]], tokenizer.pad_token_id, prefixes)
    whole = collate_packed(examples, [[0, 1, 2, 3, 4]], tokenizer.pad_token_id)
    assert shared["input_ids"].shape[1] == whole["input_ids"].shape[1] - 4 * prefix
    assert segment_bounds(shared["position_ids"][0], shared["input_ids"].shape[1])[1][0] == len(examples[0].input_ids)
    results = []
    try:
        prepare_attention(model, packing=True, shared_prefix=True)
        assert model.config._attn_implementation == PACKED_SDPA
        for batch in (shared, whole):
            model.zero_grad()
            loss = model(**batch, use_cache=False).loss
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    finally:
        model.zero_grad()
        restore_attention(model)
    (shared_loss, shared_grads), (whole_loss, whole_grads) = results
    torch.testing.assert_close(shared_loss, whole_loss, atol=1e-5, rtol=1e-5)
    assert len(shared_grads) == len(whole_grads) > 0
    for a, b in zip(shared_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_shared_prefix_packing_keeps_the_rows_and_holds_the_prefix_once(lm, rows) -> None:
    _, tokenizer = lm
    examples = _with_plain_rows(tokenize_rows(rows, tokenizer, max_len=2048)[0])
    plan = BatchPlan(examples, seq_len=256, micro_batch=2, packing=True, seed=3, pad_id=0, shared_prefix=True)
    whole = BatchPlan(examples, seq_len=256, micro_batch=2, packing=True, seed=3, pad_id=0)
    assert plan.prefixes is not None and whole.prefixes is None
    assert plan.epoch(0) == whole.epoch(0) and plan.epoch(1) == whole.epoch(1)  # the same batches
    prefix = max(plan.prefixes)
    for batch in plan.epoch(0):
        shared = sum(prefix if any(plan.prefixes[i] for i in row) else 0 for row in batch)
        size = shared + sum(len(examples[i].input_ids) - plan.prefixes[i] for row in batch for i in row)
        assert plan.real_tokens(batch) == size < whole.real_tokens(batch)
        assert plan.collate(batch)["input_ids"].numel() <= whole.collate(batch)["input_ids"].numel()
    tokens = [sum(p.real_tokens(batch) for batch in p.epoch(0)) for p in (plan, whole)]
    assert tokens[0] < tokens[1] - 10 * prefix  # 18 examples with the prefix, in 3 rows or fewer
    assert shared_prefixes(examples[:1]) == [0]  # nothing to share


def test_a_row_mixes_prefixed_and_whole_examples(lm, rows) -> None:
    """Replayed text sits whole (positions from 0, its own segment) in a row whose other examples share a prefix."""
    model, tokenizer = lm
    examples = _with_plain_rows(tokenize_rows(rows[:3], tokenizer, max_len=2048)[0])
    prefixes = shared_prefixes(examples)
    order = [3, 0, 4, 1, 2]
    batch = collate_packed(examples, [order], tokenizer.pad_token_id, prefixes)
    bounds = segment_bounds(batch["position_ids"][0], batch["input_ids"].shape[1])
    assert [e - s for s, e in bounds] == [prefixes[0], 4, len(examples[0].input_ids) - prefixes[0], 4, *(
        len(examples[i].input_ids) - prefixes[0] for i in (1, 2))]  # fmt: skip
    try:
        prepare_attention(model, packing=True, shared_prefix=True)
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
            for i, (s, e) in zip(order, bounds[1:], strict=True):
                alone = model(input_ids=torch.tensor([examples[i].input_ids])).logits[0]
                torch.testing.assert_close(logits[s:e], alone[prefixes[i] :], atol=1e-5, rtol=1e-4)
    finally:
        restore_attention(model)
