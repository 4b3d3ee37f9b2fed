"""A run's signature: the settings that define it (run-control fields left out, at any depth), digests of its data
and starting weights that change with their content, and checkpoints that predate signatures."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from speechgpt.training.batches import TokenBatches
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import Tokenized
from speechgpt.training.run_signature import (
    SIGNATURE,
    ContentDigest,
    RunSignature,
    prepare_checkpoints,
    settings_dict,
    weights_digest,
)
from speechgpt.training.speech_batches import SpeechBatches, SpeechExample


@dataclass
class Stage:
    data: Path = Path("data")
    out: Path = Path("out/a")
    train: TrainConfig = field(default_factory=TrainConfig)


def test_settings_leave_out_run_control_at_any_depth_and_folder_paths() -> None:
    one = settings_dict(
        Stage(data=Path("moved/data"), train=TrainConfig(lr=1e-3, num_threads=2, eval_every=7, max_steps=5))
    )
    two = settings_dict(Stage(out=Path("elsewhere"), train=TrainConfig(lr=1e-3, num_threads=1, save_every=3)))
    assert one == two and "data" not in one and "out" not in one and "num_threads" not in one["train"]
    other = RunSignature.of(Stage(train=TrainConfig(lr=2e-3)), data="d", model=torch.nn.Linear(2, 2))
    assert other.differences(RunSignature(one, "d", other.weights)) == ["train.lr: 0.001 -> 0.002"]


def test_digests_follow_content_and_sample_large_arrays() -> None:
    def digest(*arrays) -> str:
        d = ContentDigest()
        d.add("x", *arrays)
        return d.hexdigest()

    big = np.zeros(100_000, dtype=np.float32)
    changed = big.copy()
    changed[-1] = 1.0  # the last value is always sampled
    assert digest(big) != digest(changed) and digest(big) == digest(big.copy())
    assert digest([1, 2, 3]) != digest([1, 2, 4]) and digest([1, 2]) != digest([[1, 2]])
    between = big.copy()
    between[1] = 1.0  # between two sampled values: only a whole digest sees it (a vocoder's clips' audio)
    assert digest(big) == digest(between)
    whole = ContentDigest(), ContentDigest()
    for d, array in zip(whole, (big, between), strict=True):
        d.add("x", array, whole=True)
    assert whole[0].hexdigest() != whole[1].hexdigest()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    before = weights_digest(model)
    with torch.no_grad():
        model.bias[0] += 1
    assert weights_digest(model) != before


def test_batch_sources_fingerprint_their_training_examples() -> None:
    def tokens(labels: list[int]) -> str:
        examples = [Tokenized("a", "asr", [1, 2, 3], labels), Tokenized("b", "tts", [4, 5], [-100, 5])]
        return TokenBatches(examples, seq_len=8, micro_batch=1, packing=True, seed=0, pad_id=0).fingerprint()

    assert tokens([-100, 2, 3]) == tokens([-100, 2, 3]) != tokens([-100, -100, 3])

    def speech(scale: float) -> str:
        example = SpeechExample("c", "asr", torch.ones(50, 4) * scale, {"ctc_targets": [3, 4]})
        return SpeechBatches([example], micro_batch=2, seed=0).fingerprint()

    assert speech(1.0) == speech(1.0) != speech(2.0)


def test_checkpoints_older_than_signatures_resume_and_take_one(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "latest").write_text("step0000004\n")
    signature = RunSignature({"lr": 1}, "data", "weights")
    with caplog.at_level(logging.WARNING):
        prepare_checkpoints(folder, signature, resume=True, changed_run="error", max_steps=8, is_main=True)
    assert "older than signatures" in caplog.text and RunSignature.read(folder) == signature
    assert (folder / "latest").is_file() and (folder / SIGNATURE).is_file()
    with pytest.raises(RuntimeError, match="lr: 1 -> 2"):
        prepare_checkpoints(
            folder,
            RunSignature({"lr": 2}, "data", "weights"),
            resume=True,
            changed_run="error",
            max_steps=8,
            is_main=True,
        )
