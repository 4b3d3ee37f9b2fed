"""`eval asr`: a model trained on ASR transcribes its training utterances; an untrained one does not."""

from __future__ import annotations

import json
from pathlib import Path

from speechgpt.eval import asr
from speechgpt.training.config import TrainConfig
from stages import stage2_cross_modal
from tests.lm_fixtures import K, make_instruct_dataset, make_tiny_lm


def test_trained_model_transcribes_and_untrained_does_not(tmp_path: Path) -> None:
    make_tiny_lm(tmp_path / "base")
    data = make_instruct_dataset(tmp_path / "asr", ["asr"], count=20)
    train = TrainConfig(max_steps=200, seq_len=512, lr=5e-3, warmup_steps=5, eval_every=0, save_every=0)
    trained = stage2_cross_modal.run(
        stage2_cross_modal.Config(model=str(tmp_path / "base"), data=data, out=tmp_path / "s2", units_k=K, train=train)
    )
    untrained = stage2_cross_modal.run(  # the base with unit tokens added, one step at a vanishing learning rate
        stage2_cross_modal.Config(
            model=str(tmp_path / "base"),
            data=data,
            out=tmp_path / "s2_untrained",
            units_k=K,
            train=TrainConfig(max_steps=1, seq_len=512, lr=1e-9, eval_every=0, save_every=0),
        )
    )
    reports = {}
    for name, model in (("trained", trained), ("untrained", untrained)):
        out = asr.run(asr.Config(model=model, data=data, splits=["train"], out=tmp_path / f"eval_{name}"))
        reports[name] = json.loads(out.read_text())["splits"]["train"]
    assert reports["trained"]["examples"] == reports["untrained"]["examples"] == 16
    assert reports["trained"]["wer"] < 0.2 < 0.8 < reports["untrained"]["wer"], reports
    assert reports["trained"]["examples_in_vocabulary"] == 16  # every training word is in the training vocabulary
    rows = [json.loads(line) for line in (tmp_path / "eval_trained" / "transcripts.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["ref"] and "<" not in r["hyp"] for r in rows)
