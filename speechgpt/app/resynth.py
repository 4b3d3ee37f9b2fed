"""`speechgpt eval resynth`: does the vocoder speak so that a listener understands? Clips -> their units -> vocoder
-> the Whisper judge, a MOS-style predictor and MCD, each set beside its original audio.

Two sets, each with sentences the vocoder never trained on (`vocoder.data.heldout_text` at the fraction the vocoder
held out, read from its vocoder.json):
- `answer_voice`: the answer voice's own held-out sentences (`voice_data`), resynthesized: what the vocoder loses;
- `heldout_voices`: clips of voices no model trained on (`data`, splits dev/test), rendered in the answer voice: what
  a spoken answer sounds like when the units come from elsewhere.
The original audio of each set is its reference row (the judge's own errors). Durations are the units' own (given)
and the vocoder's duration predictor's (predicted, what a language model's units get). `ratio_<set>` is the judge
WER of the set's resynthesis (`ratio_durations`) over that of its original audio. MCD compares each resynthesis with
its original: within a voice it measures the vocoder, across voices it also counts the change of voice.
"""

from __future__ import annotations

import json
import logging
import math
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
from speechgpt.eval.judge import DEFAULT_MODEL, Judge, character_error_rate, load_judge, word_error_rate
from speechgpt.eval.mcd import mel_cepstral_distortion

log = logging.getLogger(__name__)
SETS = ("answer_voice", "heldout_voices")


@dataclass(kw_only=True)
class Config:
    data: Path
    """Units dataset of the held-out voices (audio, text, units, durations, split): set `heldout_voices`."""
    vocoder: Path
    """Vocoder to evaluate (any folder or checkpoint `speechgpt vocoder synth` accepts)."""
    voice_data: Path | None = None
    """Units dataset of the answer voice (its corpus, units from the same k-means): set `answer_voice`; None: that
    set is skipped."""
    out: Path = Path("out/resynth")
    """Output folder: report.json, config.yaml and, with write_wavs, wavs/<set>/<mode>/<id>.wav."""
    splits: list[str] = field(default_factory=lambda: ["dev", "test"])
    """Splits of `data` to take clips from (dev/test hold the voices no training saw)."""
    voice_splits: list[str] = field(default_factory=lambda: ["train"])
    """Splits of `voice_data` to take the answer voice's held-out sentences from."""
    max_clips: int = 40
    """Clips per set, spread evenly over the chosen rows."""
    heldout_text_fraction: float | None = None
    """Keep only sentences `heldout_text` holds out at this fraction; None: the vocoder's own fraction (from its
    vocoder.json), so every sentence judged lies outside its training text; 0: no filter on `data`."""
    durations: list[Literal["given", "predicted"]] = field(default_factory=lambda: ["given", "predicted"])
    """given: the units' own durations; predicted: the vocoder's duration predictor."""
    ratio_durations: Literal["given", "predicted"] = "predicted"
    """Durations whose WER the ratios use (predicted: as spoken answers are made)."""
    speaker: str | None = None
    """Vocoder voice; None: its default (a single-voice vocoder has only its answer voice)."""
    judge_model: str = DEFAULT_MODEL
    """ASR judge: CTranslate2 Whisper folder or `package:<module>`."""
    mos: bool = True
    """Score every clip with DNSMOS (speechgpt.eval.mos): one 9 s window of the clip repeated (`hop_s=10`), ~0.5 s
    of CPU per clip."""
    write_wavs: bool = True
    """Keep the resynthesized audio."""
    num_threads: int = 1
    """torch threads."""

    def __post_init__(self) -> None:
        if self.max_clips < 1 or not self.durations:
            raise ValueError("max_clips must be >= 1 and durations must name at least one mode")
        if self.ratio_durations not in self.durations:
            raise ValueError(f"ratio_durations {self.ratio_durations!r} is not among durations {self.durations}")


def select_rows(
    dataset: Any,
    splits: list[str],
    max_clips: int,
    *,
    heldout_fraction: float = 0.0,
    speaker: str | None = None,
) -> list[dict[str, Any]]:
    """Up to `max_clips` rows of `splits` (of `speaker` when given, of held-out sentences when `heldout_fraction`
    > 0), evenly spaced, so every held-out voice of a sorted dataset is present."""
    from vocoder.data import heldout_text

    speakers, texts = dataset["speaker"], dataset["text"]
    indices = [
        i
        for i, split in enumerate(dataset["split"])
        if split in splits
        and (speaker is None or speakers[i] == speaker)
        and heldout_text(texts[i], heldout_fraction) == (heldout_fraction > 0)
    ]
    if not indices:
        raise ValueError(f"no rows in splits {splits}" + (" of held-out sentences" if heldout_fraction > 0 else ""))
    step = max(1, len(indices) // max_clips)
    return [dataset[i] for i in indices[::step][:max_clips]]


def vocoder_meta(path: Path) -> dict[str, Any]:
    """The vocoder's vocoder.json (empty for a legacy or plain unit_hifigan checkpoint)."""
    for folder in (path, path / "vocoder"):
        if (folder / "vocoder.json").is_file():
            return dict(json.loads((folder / "vocoder.json").read_text(encoding="utf-8")))
    return {}


def score_audio(
    judge: Judge, references: list[str], waves: list[np.ndarray], mos: bool, threads: int
) -> tuple[dict[str, float], list[str], list[float]]:
    """Judge WER/CER (and DNSMOS means) of waveforms; also the transcripts and per-clip DNSMOS OVRL."""
    heard = judge.transcribe(waves)
    row: dict[str, float] = {"wer": word_error_rate(references, heard), "cer": character_error_rate(references, heard)}
    ovrl: list[float] = []
    if mos:
        from speechgpt.eval.mos import load_dnsmos

        scores = [load_dnsmos(threads).score(w, hop_s=10) for w in waves]
        ovrl = [s.ovrl for s in scores]
        for name in ("ovrl", "sig", "bak", "p808"):
            row[f"mos_{name}"] = float(np.mean([getattr(s, name) for s in scores]))
    return row, heard, ovrl


def evaluate_set(name: str, rows: list[dict[str, Any]], vocoder: Any, judge: Judge, cfg: Config) -> dict[str, Any]:
    """One set: its original audio, then its resynthesis in each duration mode."""
    references = [row["text"] for row in rows]
    originals = [read_audio(row["audio"]).samples for row in rows]
    original, heard, ovrl = score_audio(judge, references, originals, cfg.mos, cfg.num_threads)
    report: dict[str, Any] = {
        "clips": len(rows),
        "speakers": sorted({row["speaker"] for row in rows}),
        "audio_s": round(sum(len(a) for a in originals) / 16_000, 2),
        "original": original,
    }
    per_clip: list[dict[str, Any]] = [
        {"id": row["id"], "text": row["text"], "original": text} | ({"mos_original": round(v, 3)} if cfg.mos else {})
        for row, text, v in zip(rows, heard, ovrl or [math.nan] * len(rows), strict=True)
    ]
    for mode in cfg.durations:
        waves, seconds = [], 0.0
        for row in tqdm(rows, desc=f"{name} ({mode} durations)", unit="clip"):
            started = time.perf_counter()
            waves.append(vocoder(row["units"], row["durations"] if mode == "given" else None, cfg.speaker))
            seconds += time.perf_counter() - started
            if cfg.write_wavs:
                write_audio(cfg.out / "wavs" / name / mode / f"{row['id']}.wav", waves[-1], vocoder.sample_rate)
        scores, heard, ovrl = score_audio(judge, references, waves, cfg.mos, cfg.num_threads)
        mcd = [mel_cepstral_distortion(o, w) for o, w in zip(originals, waves, strict=True)]
        audio_s = sum(len(w) for w in waves) / vocoder.sample_rate
        report[mode] = scores | {"mcd_db": float(np.mean(mcd)), "vocoder_rtf": seconds / max(audio_s, 1e-9)}
        for clip, text, value, quality in zip(per_clip, heard, mcd, ovrl or [math.nan] * len(rows), strict=True):
            clip |= {mode: text, f"mcd_{mode}": round(value, 3)} | (
                {f"mos_{mode}": round(quality, 3)} if cfg.mos else {}
            )
        log.info("%s, %s durations: %s (original %s)", name, mode, report[mode], original)
    report["per_clip"] = per_clip
    return report


def wer_ratio(report: dict[str, Any], mode: str) -> float:
    """Resynthesized WER over original WER (inf when the original is perfect and the resynthesis is not)."""
    resynth, original = report[mode]["wer"], report["original"]["wer"]
    if original == 0:
        return 1.0 if resynth == 0 else math.inf
    return float(resynth / original)


def run(cfg: Config) -> Path:
    from speechgpt.data.units import load_units_dataset
    from vocoder.data import speaker_label
    from vocoder.load import load_vocoder

    torch.set_num_threads(cfg.num_threads)
    save_config(cfg, cfg.out)
    meta = vocoder_meta(cfg.vocoder)
    fraction = cfg.heldout_text_fraction
    fraction = float(meta.get("heldout_text_fraction") or 0.0) if fraction is None else fraction
    chosen: dict[str, list[dict[str, Any]]] = {}
    if cfg.voice_data is not None:
        if fraction <= 0:
            raise ValueError("the answer voice's set needs held-out sentences: the vocoder held out none")
        voice_set = load_units_dataset(cfg.voice_data)
        voice = meta.get("answer_voice")
        label = speaker_label(voice, list(voice_set["speaker"])) if voice else None
        chosen["answer_voice"] = select_rows(
            voice_set, cfg.voice_splits, cfg.max_clips, heldout_fraction=fraction, speaker=label
        )
    chosen["heldout_voices"] = select_rows(
        load_units_dataset(cfg.data), cfg.splits, cfg.max_clips, heldout_fraction=fraction
    )
    judge = load_judge(cfg.judge_model)
    vocoder = load_vocoder(cfg.vocoder)
    report: dict[str, Any] = {
        "vocoder": str(cfg.vocoder),
        "answer_voice": meta.get("answer_voice"),
        "heldout_text_fraction": fraction,
        "ratio_durations": cfg.ratio_durations,
        "sets": {name: evaluate_set(name, rows, vocoder, judge, cfg) for name, rows in chosen.items()},
    }
    for name, result in report["sets"].items():
        report[f"ratio_{name}"] = wer_ratio(result, cfg.ratio_durations)
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    log.info("resynth: %s", {k: v for k, v in report.items() if k.startswith("ratio_")})
    return cfg.out / "report.json"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A table of the report, one row per set and audio, then `ratio_<set> X` lines (what `make eval-vocoder`
    prints)."""
    lines = [f"{'set':<16}{'audio':<11}{'clips':>6}{'WER':>8}{'CER':>8}{'MOS':>7}{'MCD':>7}"]
    for name, result in report["sets"].items():
        for mode in ("original", "given", "predicted"):
            if mode in result:
                row = result[mode]
                mos = f"{row['mos_ovrl']:7.2f}" if "mos_ovrl" in row else f"{'-':>7}"
                mcd = f"{row['mcd_db']:7.2f}" if "mcd_db" in row else f"{'-':>7}"
                rates = f"{100 * row['wer']:7.1f}%{100 * row['cer']:7.1f}%"
                lines.append(f"{name:<16}{mode:<11}{result['clips']:>6}{rates}{mos}{mcd}")
    lines += [f"{key} {report[key]:.3f}" for key in (f"ratio_{name}" for name in SETS) if key in report]
    return lines
