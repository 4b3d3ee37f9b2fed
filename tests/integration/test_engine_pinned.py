"""The engine's first losses on a fixed seed, pinned: refactoring the engine must not change a single batch.

The numbers were written by the engine before its batch-source seam was opened (commit 810d06a) and must stay
the same after: same batches, same losses, same evaluation, packed and padded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechgpt.training.config import TrainConfig
from stages import stage2_cross_modal
from tests.lm_fixtures import K, make_instruct_dataset, make_tiny_lm

PINNED = {
    True: (
        [6.113682746887207, 6.008214235305786, 5.74960732460022, 5.541163682937622, 5.40977931022644],
        {"eval/dev/asr/loss": 5.36833, "eval/dev/tts/loss": 5.3813},
    ),
    False: (
        [6.133450031280518, 6.019927740097046, 5.942117691040039, 5.68293309211731, 5.549945592880249],
        {"eval/dev/asr/loss": 5.47287, "eval/dev/tts/loss": 5.49962},
    ),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pinned")
    make_tiny_lm(root / "base")
    make_instruct_dataset(root / "d2", ["asr", "tts"], count=60)
    return root


@pytest.mark.parametrize("packing", [True, False])
def test_first_losses_and_eval_are_pinned(data: Path, tmp_path: Path, packing: bool) -> None:
    train = TrainConfig(
        max_steps=5,
        seq_len=512,
        lr=3e-3,
        warmup_steps=1,
        eval_every=5,
        save_every=0,
        micro_batch=2,
        grad_accum=2,
        packing=packing,
    )
    cfg = stage2_cross_modal.Config(
        model=str(data / "base"), data=data / "d2", out=tmp_path / "run", units_k=K, train=train
    )
    stage2_cross_modal.run(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = {k: v for r in records for k, v in r.items() if k.startswith("eval/") and k.endswith("/loss")}
    want_losses, want_evals = PINNED[packing]
    assert losses == pytest.approx(want_losses, rel=1e-5)
    assert evals == pytest.approx(want_evals, rel=1e-5)
