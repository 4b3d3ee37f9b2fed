"""Stage 2, cross-modal instruction fine-tuning: ASR and TTS instructions, the whole model trained (SpeechGPT),
loss on the answers only (SpeechGPT trained everything after the system prompt: `loss_on` in the builder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from speechgpt.training.export import FINAL
from speechgpt.training.lm_stage import LMStageConfig, run_lm_stage


@dataclass(kw_only=True)
class Config(LMStageConfig):
    """The stage-1 model (<stage1 out>/final) and the stage-2 dataset (`speechgpt build stage2`)."""


def run(cfg: Config) -> Path:
    return run_lm_stage(cfg, expected_tasks=["asr", "tts"]).out / FINAL
