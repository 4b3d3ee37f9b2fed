"""Stage 1, modality adaptation: next-token prediction on unit sequences, every token trained (SpeechGPT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechgpt.training.export import FINAL
from speechgpt.training.lm_stage import LMStageConfig, run_lm_stage


@dataclass(kw_only=True)
class Config(LMStageConfig):
    """A base causal LM and the stage-1 dataset (`speechgpt build stage1`)."""


def run(cfg: Config) -> Path:
    return run_lm_stage(cfg, expected_tasks=["unit_lm"]).out / FINAL
