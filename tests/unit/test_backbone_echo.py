"""Stage 0's echo lines: each trained corpus sentence said twice, the copying a frozen LLM's adapter reads through."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from data_builders import qa_tasks
from speechgpt.text.backbone_text import corpus_sentences
from stages import stage0_text_backbone


def test_echo_lines_say_each_trained_sentence_twice(tiny_corpus: Path, tmp_path: Path) -> None:
    qa = qa_tasks.run(qa_tasks.Config(out=tmp_path / "qa", counts={"add": 6}))
    cfg = stage0_text_backbone.Config(qa=qa, corpus=tiny_corpus, echo_lines=True)
    rows, heldout = stage0_text_backbone.text_rows(cfg, "</s>")
    echoes = [row for row in rows if row["id"].startswith("echo-")]
    sentences = corpus_sentences(tiny_corpus, trained=True)
    assert sentences and [row["text"] for row in echoes] == [f"{s} -> {s}</s>" for s in sentences]
    assert all(row["loss_spans"] == [[0, len(row["text"])]] for row in echoes)
    plain, plain_heldout = stage0_text_backbone.text_rows(dataclasses.replace(cfg, echo_lines=False), "</s>")
    assert [row for row in rows if not row["id"].startswith("echo-")] == plain and heldout == plain_heldout
