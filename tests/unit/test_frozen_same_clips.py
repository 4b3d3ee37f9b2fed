"""The frozen stages can train on exactly the clips the unified stage-2 data trains ASR on."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechgpt.training.frozen_stage import instruct_asr_clip_ids, only_clips
from tests.lm_fixtures import make_instruct_dataset


def test_only_the_instruct_train_asr_clips_are_kept(tmp_path: Path) -> None:
    data = make_instruct_dataset(tmp_path / "d2", ["asr", "tts"], count=20)  # source id of example i: str(i)
    ids = instruct_asr_clip_ids(data)
    assert ids == {str(i) for i in range(16) if i % 2 == 0}  # train: the first 80%, asr: every other example
    rows = [{"id": str(i)} for i in range(20)]
    assert [r["id"] for r in only_clips(rows, data)] == sorted(ids, key=int)
    assert only_clips(rows, None) == rows


def test_a_dataset_without_asr_is_refused(tmp_path: Path) -> None:
    data = make_instruct_dataset(tmp_path / "d", ["tts"], count=10)
    with pytest.raises(ValueError, match="no ASR example"):
        instruct_asr_clip_ids(data)
