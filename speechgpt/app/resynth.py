"""`speechgpt eval resynth`: how intelligible is the vocoder? Held-out clips -> their units -> vocoder -> ASR judge.

The same judge transcribes the original audio of the same clips, so the report separates what the vocoder loses
from what the judge gets wrong anyway. Durations are taken from the units (ground truth) and from the vocoder's
duration predictor; mel-cepstral distortion (DTW-aligned, dB) compares each resynthesis with its original.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.config import save_config
from speechgpt.data.audio import read_audio, write_audio
from speechgpt.data.io import atomic_write_text
from speechgpt.eval.judge import DEFAULT_MODEL, character_error_rate, load_judge, word_error_rate
from speechgpt.eval.mcd import mel_cepstral_distortion

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    data: Path
    """Units dataset (audio, text, units, durations, split)."""
    vocoder: Path
    """Vocoder to evaluate (any folder or checkpoint `speechgpt vocoder synth` accepts)."""
    out: Path = Path("out/resynth")
    """Output folder: report.json, config.yaml and, with write_wavs, wavs/<mode>/<id>.wav."""
    splits: list[str] = field(default_factory=lambda: ["dev", "test"])
    """Splits to take clips from (dev/test hold the voices no training saw)."""
    max_clips: int = 40
    """Clips evaluated, spread evenly over the chosen splits' rows."""
    durations: list[Literal["given", "predicted"]] = field(default_factory=lambda: ["given", "predicted"])
    """given: the units' own durations; predicted: the vocoder's duration predictor."""
    speaker: str | None = None
    """Vocoder voice; None: its default speaker (held-out voices are not among its speakers)."""
    judge_model: str = DEFAULT_MODEL
    """ASR judge: CTranslate2 Whisper folder or `package:<module>`."""
    write_wavs: bool = True
    """Keep the resynthesized audio."""
    num_threads: int = 1
    """torch threads."""

    def __post_init__(self) -> None:
        if self.max_clips < 1 or not self.durations:
            raise ValueError("max_clips must be >= 1 and durations must name at least one mode")


def select_rows(dataset: Any, splits: list[str], max_clips: int) -> list[dict[str, Any]]:
    """Up to `max_clips` rows of `splits`, evenly spaced, so every held-out voice of a sorted dataset is present."""
    indices = [i for i, split in enumerate(dataset["split"]) if split in splits]
    if not indices:
        raise ValueError(f"no rows in splits {splits}")
    step = max(1, len(indices) // max_clips)
    return [dataset[i] for i in indices[::step][:max_clips]]


def run(cfg: Config) -> Path:
    from speechgpt.data.units import load_units_dataset
    from vocoder.load import load_vocoder

    torch.set_num_threads(cfg.num_threads)
    save_config(cfg, cfg.out)
    rows = select_rows(load_units_dataset(cfg.data), cfg.splits, cfg.max_clips)
    references = [row["text"] for row in rows]
    originals = [read_audio(row["audio"]).samples for row in rows]
    judge = load_judge(cfg.judge_model)
    heard = judge.transcribe(originals)
    report: dict[str, Any] = {
        "clips": len(rows),
        "splits": cfg.splits,
        "speakers": sorted({row["speaker"] for row in rows}),
        "audio_s": round(sum(len(a) for a in originals) / 16_000, 2),
        "original": {"wer": word_error_rate(references, heard), "cer": character_error_rate(references, heard)},
    }
    vocoder = load_vocoder(cfg.vocoder)
    per_clip: list[dict[str, Any]] = [
        {"id": row["id"], "text": row["text"], "original": text} for row, text in zip(rows, heard, strict=True)
    ]
    for mode in cfg.durations:
        waves, seconds = [], 0.0
        for row in tqdm(rows, desc=f"resynth ({mode} durations)", unit="clip"):
            started = time.perf_counter()
            waves.append(vocoder(row["units"], row["durations"] if mode == "given" else None, cfg.speaker))
            seconds += time.perf_counter() - started
            if cfg.write_wavs:
                write_audio(cfg.out / "wavs" / mode / f"{row['id']}.wav", waves[-1], vocoder.sample_rate)
        hypotheses = judge.transcribe(waves)
        mcd = [mel_cepstral_distortion(o, w) for o, w in zip(originals, waves, strict=True)]
        report[mode] = {
            "wer": word_error_rate(references, hypotheses),
            "cer": character_error_rate(references, hypotheses),
            "mcd_db": float(np.mean(mcd)),
            "vocoder_rtf": seconds / max(1e-9, sum(len(w) for w in waves) / vocoder.sample_rate),
        }
        for clip, text, value in zip(per_clip, hypotheses, mcd, strict=True):
            clip[mode] = text
            clip[f"mcd_{mode}"] = round(value, 3)
        log.info("resynth %s durations: %s (original WER %.4f)", mode, report[mode], report["original"]["wer"])
    report["per_clip"] = per_clip
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    return cfg.out / "report.json"
