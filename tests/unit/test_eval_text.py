"""`speechgpt eval text`: a backbone that learned its QA lines answers them back in stage 0's format, the held-out
text loss is the token-weighted cross-entropy of BOS + sentence + EOS, a frozen-variant folder is asked through its
backbone, and a bad QA split or model folder is a clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from speechgpt import cli
from speechgpt.data.corpus import write_corpus_dataset
from speechgpt.eval import text_qa
from speechgpt.model.frozen_lm import weights_fingerprint
from speechgpt.model.load import load_lm
from speechgpt.model.tiny import SPECIAL, build_tiny_lm, train_tokenizer
from speechgpt.text.backbone_text import corpus_sentences, qa_line, qa_prompt, qa_text

LEARNED = [
    {"id": "add-1", "family": "add", "instruction": "what is two plus three", "input": "", "output": "five"},
    {"id": "add-2", "family": "add", "instruction": "what is four plus four", "input": "", "output": "eight"},
    {"id": "add-3", "family": "add", "instruction": "what is one plus one", "input": "", "output": "two"},
    {"id": "def-1", "family": "define", "instruction": "what does cat", "input": "mean", "output": "a small pet"},
]
"""The lines the tiny backbone memorizes, stage 0's way."""
ASKED = [*LEARNED[:2], {**LEARNED[2], "output": "three"}, LEARNED[3]]
"""The test split: the model's `two` to `what is one plus one` is marked wrong against `three`."""
CORPUS = {"train": ["the cat sat", "a dog ran"], "dev": ["the cat sat", "birds fly high"], "test": ["fish swim"]}
"""Held out: `birds fly high` and `fish swim` (the dev `the cat sat` is a train sentence)."""


def write_qa(folder: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def write_corpus(folder: Path) -> Path:
    rows = [
        {
            "id": f"{split}-{i}",
            "audio": f"/nowhere/{split}-{i}.flac",
            "text": text,
            "speaker": "v1",
            "duration_s": 1.0,
            "source": "test",
            "split": split,
            "orig_sample_rate": 16_000,
            "orig_channels": 1,
        }
        for split, texts in CORPUS.items()
        for i, text in enumerate(texts)
    ]
    write_corpus_dataset(rows, folder / "dataset")
    return folder


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama that memorized the LEARNED lines as stage 0 feeds them (BOS, line, EOS), in ~2 s."""
    lines = [qa_line(r) + SPECIAL["eos_token"] for r in LEARNED]
    tokenizer = train_tokenizer([*lines, *(s for texts in CORPUS.values() for s in texts)], 300)
    model = build_tiny_lm("llama", tokenizer, hidden_size=64, num_layers=2, num_heads=4, seed=0)
    rows = [[tokenizer.bos_token_id, *tokenizer(line, add_special_tokens=False)["input_ids"]] for line in lines]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Which question comes is not predictable (about 1.4 nats a line), its answer is.
    assert loss.item() < 0.3, f"the tiny backbone did not learn its lines (loss {loss.item():.3f})"
    out = tmp_path_factory.mktemp("backbone") / "final"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_qa(tmp_path_factory.mktemp("qa"), {"train": LEARNED, "test": ASKED, "dev": []})


def test_the_prompt_is_the_stage0_line_up_to_its_answer() -> None:
    record = LEARNED[3]
    assert qa_text(record) == ("what does cat mean", "a small pet")
    assert qa_line(record) == "what does cat mean? a small pet."
    assert qa_line(record).startswith(qa_prompt(qa_text(record)[0]) + " ")


def test_a_backbone_answers_its_lines_and_is_scored_per_family(backbone: Path, qa: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "text", f"model={backbone}", f"qa={qa}", f"out={out}", "batch_size=3"]
    assert cli.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["variant"] == "unified" and report["backbone"] == str(backbone) and report["split"] == "test"
    assert report["questions"] == 4 and report["text_accuracy"] == 0.75
    assert report["by_family"] == {
        "add": {"questions": 3, "accuracy": 0.6667},
        "define": {"questions": 1, "accuracy": 1.0},
    }
    assert report["heldout_text_loss"] is None and report["heldout_sentences"] == 0
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["answer"] for a in answers] == ["five", "eight", "two", "a small pet"]
    assert [a["correct"] for a in answers] == [True, True, False, True]
    assert answers[3] == {
        "id": "def-1",
        "family": "define",
        "question": "what does cat mean",
        "expected": "a small pet",
        "answer": "a small pet",
        "correct": True,
    }
    assert (out / "config.yaml").is_file()


def test_a_gguf_file_is_asked_as_the_model_it_holds(backbone: Path, qa: Path, tmp_path: Path) -> None:
    from tests.gguf_fixtures import write_llama_gguf

    gguf = write_llama_gguf(*load_lm(backbone), tmp_path / "backbone.gguf")
    for model, out in ((backbone, tmp_path / "folder"), (gguf, tmp_path / "file")):
        assert cli.main(["eval", "text", f"model={model}", f"qa={qa}", f"out={out}", "batch_size=3"]) == 0
    answers = [(tmp_path / name / "answers.jsonl").read_text() for name in ("folder", "file")]
    assert answers[0] == answers[1]
    assert json.loads((tmp_path / "file" / "report.json").read_text())["text_accuracy"] == 0.75


def test_left_padded_batches_answer_as_one_question_at_a_time(backbone: Path) -> None:
    model, tokenizer = load_lm(backbone)
    questions = [qa_text(r)[0] for r in LEARNED]
    one_by_one = text_qa.answer_questions(model.eval(), tokenizer, questions, batch_size=1, max_new_tokens=8)
    prompts: list[list[int]] = []
    generate = model.generate

    def spy(**kwargs: Any) -> Any:
        for ids, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist(), strict=True):
            assert mask == sorted(mask), "padding must be on the left"
            prompts.append([i for i, m in zip(ids, mask, strict=True) if m])
        return generate(**kwargs)

    model.generate = spy
    assert one_by_one == text_qa.answer_questions(model, tokenizer, questions, batch_size=4, max_new_tokens=8)
    assert one_by_one == ["five", "eight", "two", "a small pet"]
    asked = [[tokenizer.bos_token_id, *tokenizer(f"{q}?", add_special_tokens=False)["input_ids"]] for q in questions]
    assert prompts == asked  # BOS, then the line up to its answer: as stage 0 fed it


def hand_loss(model: Any, tokenizer: Any, sentences: list[str]) -> tuple[float, int]:
    """Sum of -log p over every token after BOS of `<s>sentence</s>`, one sentence at a time, over their count."""
    total, count = 0.0, 0
    for sentence in sentences:
        ids = [tokenizer.bos_token_id, *tokenizer(sentence, add_special_tokens=False)["input_ids"]]
        ids.append(tokenizer.eos_token_id)
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
        total -= sum(logprobs[i, ids[i + 1]].item() for i in range(len(ids) - 1))
        count += len(ids) - 1
    return total / count, count


def test_the_heldout_loss_is_the_token_weighted_cross_entropy(backbone: Path, qa: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    assert corpus_sentences(corpus, trained=False) == ["birds fly high", "fish swim"]
    assert corpus_sentences(corpus, trained=True) == ["a dog ran", "the cat sat"]
    model, tokenizer = load_lm(backbone)
    model.eval()
    sentences = ["birds fly high", "fish swim", "the cat sat on a dog"]  # different lengths: padding is exercised
    want, tokens = hand_loss(model, tokenizer, sentences)
    got = text_qa.heldout_loss(model, tokenizer, sentences, batch_size=2)
    assert got.sentences == 3 and got.tokens == tokens
    assert got.loss == pytest.approx(want, abs=1e-5)

    source = tmp_path / "sentences.txt"  # the corpus' own sentences are never held out
    source.write_text("birds fly high\nthe cat sat\nfish swim well\na dog ran\nowls hoot at night\n")
    cfg = text_qa.Config(model=backbone, qa=qa, heldout_text=str(source), corpus=corpus, out=tmp_path / "eval")
    report = json.loads(text_qa.run(cfg).read_text())
    assert report["heldout_sentences"] == 2
    assert report["heldout_text_loss"] == round(
        hand_loss(model, tokenizer, ["fish swim well", "owls hoot at night"])[0], 4
    )


def test_a_frozen_variant_folder_is_asked_through_its_backbone(backbone: Path, qa: Path, tmp_path: Path) -> None:
    frozen = tmp_path / "frozen_qa" / "final"
    frozen.mkdir(parents=True)
    meta = {"variant": "frozen", "backbone": str(backbone), "lm_fingerprint": weights_fingerprint(load_lm(backbone)[0])}
    (frozen / "speech_modules.json").write_text(json.dumps(meta))
    report = json.loads(text_qa.run(text_qa.Config(model=frozen, qa=qa, out=tmp_path / "eval")).read_text())
    assert report["model"] == str(frozen) and report["variant"] == "frozen" and report["backbone"] == str(backbone)
    assert report["text_accuracy"] == 0.75

    (frozen / "speech_modules.json").write_text(json.dumps({**meta, "lm_fingerprint": "0" * 64}))
    with pytest.raises(ValueError, match="trained on another LLM"):
        text_qa.run(text_qa.Config(model=frozen, qa=qa, out=tmp_path / "eval"))
    (frozen / "speech_modules.json").write_text(json.dumps({"variant": "frozen"}))
    with pytest.raises(ValueError, match="names no backbone"):
        text_qa.run(text_qa.Config(model=frozen, qa=qa, out=tmp_path / "eval"))


def test_a_missing_or_empty_split_and_a_model_without_config_are_errors(
    backbone: Path, qa: Path, tmp_path: Path
) -> None:
    missing = re.escape(str(qa / "validation.jsonl"))
    with pytest.raises(FileNotFoundError, match=rf"{missing} not found: run `speechgpt build qa` first"):
        text_qa.run(text_qa.Config(model=backbone, qa=qa, split="validation", out=tmp_path / "a"))
    assert cli.main(["eval", "text", f"model={backbone}", f"qa={qa}", "split=validation", f"out={tmp_path}/b"]) == 1
    with pytest.raises(ValueError, match=rf"{re.escape(str(qa / 'dev.jsonl'))}: no questions"):
        text_qa.run(text_qa.Config(model=backbone, qa=qa, split="dev", out=tmp_path / "c"))
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'empty_model'))}: no config.json"):
        text_qa.run(text_qa.Config(model=tmp_path / "empty_model", qa=qa, out=tmp_path / "d"))
    bad = write_qa(tmp_path / "bad_qa", {"test": [{"id": "x", "instruction": "what is one", "output": "one"}]})
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad / 'test.jsonl'))}:1: a QA record needs family"):
        text_qa.run(text_qa.Config(model=backbone, qa=bad, out=tmp_path / "e"))
