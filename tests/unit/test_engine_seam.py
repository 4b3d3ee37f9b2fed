"""The engine trains any model through the batch-source seam: a non-token source (feature frames), a loss of
named parts that all reach metrics.jsonl and the plot, per-group evaluation, and exact resume; and its resume
files load with weights_only=True."""

from __future__ import annotations

import json
import pickle
import random
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from speechgpt.training.batches import EvalBatch, MicroBatch
from speechgpt.training.checkpoint import load_rank_state, rng_state, safe_load, save_rank_state, set_rng_state
from speechgpt.training.config import TrainConfig
from speechgpt.training.engine import train
from speechgpt.training.losses import LossParts


class FrameBatches:
    """Random 'feature frames' with a regression target and a class label, a pure function of the index."""

    count_name = "frames"
    perplexity = False

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift
        """Added to every frame: other training data."""

    def fingerprint(self) -> str:
        return f"frames+{self.shift}"

    def micro_batch(self, index: int) -> MicroBatch:
        gen = torch.Generator().manual_seed(index)
        frames = torch.randn(3, 5, 4, generator=gen) + self.shift
        return MicroBatch(self._tensors(frames), index // 10, [f"clip{index}"], frames.shape[0] * frames.shape[1])

    def eval_batches(self, rank: int, world: int) -> dict[str, Iterator[EvalBatch]]:
        gen = torch.Generator().manual_seed(10_000)
        batches = [
            EvalBatch(f"group{i % 2}", self._tensors(torch.randn(2, 5, 4, generator=gen)), 10.0) for i in range(4)
        ]
        return {"dev": iter(batches[rank::world])}

    @staticmethod
    def _tensors(frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"frames": frames, "target": frames.sum(-1), "label": (frames[..., 0] > 0).long()}


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.regress = nn.Linear(4, 1)
        self.classify = nn.Linear(4, 2)


def two_part_loss(engine, batch: dict[str, torch.Tensor]) -> LossParts:
    model = engine.module
    mse = nn.functional.mse_loss(model.regress(batch["frames"]).squeeze(-1), batch["target"])
    ce = nn.functional.cross_entropy(model.classify(batch["frames"]).flatten(0, 1), batch["label"].flatten())
    return {"loss": mse + 0.5 * ce, "mse": mse, "ce": ce}


def cfg(**kw) -> TrainConfig:
    base = dict(max_steps=8, lr=0.2, warmup_steps=0, schedule="constant", eval_every=4, save_every=4, grad_accum=2)
    return TrainConfig(**{**base, **kw})


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_named_parts_reach_metrics_eval_and_plot(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = train(cfg(), TwoHeads(), FrameBatches(), tmp_path, loss=two_part_loss)
    steps = [r for r in records(tmp_path) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    for r in steps:
        assert r["loss"] == pytest.approx(r["loss/mse"] + 0.5 * r["loss/ce"], rel=1e-6)
        assert r["frames"] == 2 * 15 and r["frames_per_s"] > 0 and "tokens" not in r
    assert steps[-1]["loss/mse"] < 0.5 * steps[0]["loss/mse"]  # it learns
    evals = [r for r in records(tmp_path) if "eval/dev/group0/mse" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert {k for k in evals[0] if k.startswith("eval/")} == {
        f"eval/dev/group{g}/{part}" for g in (0, 1) for part in ("loss", "mse", "ce")
    }  # no perplexity: this source's loss is not a token cross-entropy
    assert result.losses == [r["loss"] for r in steps]
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000


def test_a_micro_batch_that_reaches_no_trained_weight_gives_a_zero_gradient(tmp_path: Path) -> None:
    """Some batches use none of the trained weights (a word adapter given clips with no word): the step goes on."""

    constant = []

    def sometimes_constant(engine, batch: dict[str, torch.Tensor]) -> LossParts:
        if engine.training and int(batch["frames"][0, 0, 0] > 0):
            constant.append(True)
            return {"loss": batch["target"].mean() * 0.0 + 1.0}  # reaches no weight: no grad_fn
        return two_part_loss(engine, batch)

    torch.manual_seed(0)
    train(cfg(), TwoHeads(), FrameBatches(), tmp_path, loss=sometimes_constant)
    assert len([r for r in records(tmp_path) if "loss" in r]) == 8 and 0 < len(constant) < 16


@pytest.mark.parametrize("zero", [0, 2])
def test_resume_continues_exactly(tmp_path: Path, zero: int) -> None:
    torch.manual_seed(0)
    straight = train(cfg(zero_stage=zero), TwoHeads(), FrameBatches(), tmp_path / "straight", loss=two_part_loss)
    torch.manual_seed(0)
    train(cfg(zero_stage=zero, max_steps=4), TwoHeads(), FrameBatches(), tmp_path / "resumed", loss=two_part_loss)
    torch.manual_seed(0)
    resumed = train(cfg(zero_stage=zero), TwoHeads(), FrameBatches(), tmp_path / "resumed", loss=two_part_loss)
    assert resumed.losses == pytest.approx(straight.losses[4:], abs=1e-6)
    shards = sorted((tmp_path / "resumed" / "checkpoints" / "step0000008").glob("*_states.pt"))
    assert shards and all(p.stat().st_size > 0 for p in shards)
    if zero:  # DeepSpeed's shards are loaded with weights_only=True too: a crafted one is refused
        shard = shards[-1]
        shard.write_bytes(pickle.dumps({"x": Payload(tmp_path / "pwned")}, protocol=2))
        (tmp_path / "resumed" / "checkpoints" / "latest").write_text("step0000008\n")
        with pytest.raises(pickle.UnpicklingError):
            train(
                cfg(zero_stage=zero, max_steps=9), TwoHeads(), FrameBatches(), tmp_path / "resumed", loss=two_part_loss
            )
        assert not (tmp_path / "pwned").exists()


def test_a_changed_run_does_not_resume_the_old_one(tmp_path: Path) -> None:
    """Checkpoints of a run with other settings, data or starting weights, or past the last step, are refused with
    what changed; changed_run=restart trains from step 0 (as a fresh run), and resume=false starts over too."""
    out = tmp_path / "run"

    def run(model_seed: int = 0, batches: FrameBatches | None = None, **kw):
        torch.manual_seed(model_seed)
        return train(cfg(**kw), TwoHeads(), batches or FrameBatches(), out, loss=two_part_loss)

    run(max_steps=4)
    for changed, what in [
        (dict(lr=0.1), "lr: 0.2 -> 0.1"),
        (dict(batches=FrameBatches(shift=1.0)), "the training data"),
        (dict(model_seed=1), "the starting weights"),
        (dict(max_steps=2), "past max_steps 2"),
    ]:
        with pytest.raises(RuntimeError, match=re.escape(what)):
            run(**changed)
    assert run(eval_every=2, save_every=1).losses  # run-control settings and a longer run do resume
    torch.manual_seed(0)
    fresh = train(cfg(lr=0.1), TwoHeads(), FrameBatches(), tmp_path / "fresh", loss=two_part_loss)
    restarted = run(lr=0.1, changed_run="restart")
    assert restarted.losses == pytest.approx(fresh.losses, abs=1e-6) and len(restarted.losses) == 8
    again = run(lr=0.1, max_steps=3, resume=False)
    assert len(again.losses) == 3 and sorted(p.name for p in (out / "checkpoints").glob("step*")) == ["step0000003"]


def test_rng_state_round_trips_without_pickle(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_rank_state(tmp_path, rank=0, extra={"position": torch.tensor([7, 9])})
    want = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    extra = load_rank_state(tmp_path, rank=0)  # loads with weights_only=True
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == want
    assert extra["position"].tolist() == [7, 9]
    set_rng_state(rng_state())  # the state object itself round-trips too


class Payload:
    """Unpickling it creates a file: what a crafted checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_crafted_resume_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rng_rank0.pt"
    path.write_bytes(pickle.dumps({"rng": Payload(tmp_path / "pwned")}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        safe_load(path)
    assert not (tmp_path / "pwned").exists()
