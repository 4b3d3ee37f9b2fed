"""`speechgpt vocoder synth`: merged units -> WAV files with a trained (or legacy) vocoder.

Units come from rows of a units dataset (by id, with their own durations or predicted ones), from a text file (one
utterance per line) or from one inline string. A line is read as unit tokens of our format (`<|u12|>`), of legacy
SpeechGPT (`<12>`), or plain integers separated by spaces or commas.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from speechgpt.config import save_config
from speechgpt.data.audio import write_audio
from speechgpt.data.io import atomic_write_text
from speechgpt.data.units import load_units_dataset
from vocoder.load import load_vocoder
from vocoder.runtime import Vocoder

log = logging.getLogger(__name__)
_TOKEN_PATTERNS = (re.compile(r"<\|u(\d+)\|>"), re.compile(r"<(\d+)>"), re.compile(r"\d+"))


@dataclass(kw_only=True)
class Config:
    vocoder: Path
    """Vocoder folder (`speechgpt vocoder train` output), unit_hifigan folder or legacy CodeHiFiGAN checkpoint."""
    out: Path = Path("out/vocoder_synth")
    """Output folder: one <name>.wav per utterance and synth.json."""
    data: Path | None = None
    """Units dataset to take rows from (with `ids`)."""
    ids: list[str] = field(default_factory=list)
    """Row ids of `data` to synthesize."""
    durations: Literal["given", "predicted"] = "given"
    """For dataset rows: their own durations, or the vocoder's predicted ones (files and strings: predicted)."""
    units_file: Path | None = None
    """Text file, one utterance of units per line (written as line-0001.wav, ...)."""
    units: str | None = None
    """One utterance of units inline (written as units.wav)."""
    speaker: str | None = None
    """Voice of the vocoder to use; None: its default speaker."""
    stream: bool = False
    """Synthesize through the streaming path (chunks of `chunk_units`) instead of whole utterances."""
    chunk_units: int = 10
    """Units per pushed chunk when streaming."""
    num_threads: int = 1
    """torch threads."""

    def __post_init__(self) -> None:
        if self.data is None and self.ids:
            raise ValueError("ids need data (a units dataset)")
        if self.chunk_units < 1:
            raise ValueError("chunk_units must be >= 1")


def parse_units(text: str) -> list[int]:
    """Unit ids of one line: `<|u12|>` tokens, legacy `<12>` tokens, or bare integers (first kind found wins)."""
    for pattern in _TOKEN_PATTERNS:
        found = pattern.findall(text)
        if found:
            return [int(x) for x in found]
    return []


def requests(cfg: Config) -> list[tuple[str, list[int], list[int] | None]]:
    """(name, units, durations or None) for every utterance the config asks for."""
    items: list[tuple[str, list[int], list[int] | None]] = []
    if cfg.data is not None and cfg.ids:
        dataset = load_units_dataset(cfg.data)
        where = {row_id: i for i, row_id in enumerate(dataset["id"])}
        missing = [i for i in cfg.ids if i not in where]
        if missing:
            raise ValueError(f"ids not in {cfg.data}: {missing[:5]}")
        for row_id in cfg.ids:
            row = dataset[where[row_id]]
            items.append((row_id, row["units"], row["durations"] if cfg.durations == "given" else None))
    if cfg.units_file is not None:
        lines = cfg.units_file.read_text(encoding="utf-8").splitlines()
        items += [(f"line-{n:04d}", parse_units(line), None) for n, line in enumerate(lines, 1) if line.strip()]
    if cfg.units is not None:
        items.append(("units", parse_units(cfg.units), None))
    if not items:
        raise ValueError("nothing to synthesize: give data + ids, units_file or units")
    for name, units, _ in items:
        if not units:
            raise ValueError(f"{name}: no units found")
    return items


def synthesize_stream(
    vocoder: Vocoder, units: list[int], durations: list[int] | None, chunk: int, speaker: str | None
) -> np.ndarray:
    """Push `chunk` units at a time (with their durations when given) and join the audio."""
    stream = vocoder.stream(speaker)
    parts = [
        stream.push(units[i : i + chunk], None if durations is None else durations[i : i + chunk])
        for i in range(0, len(units), chunk)
    ]
    return np.concatenate([*parts, stream.finish()])


def run(cfg: Config) -> Path:
    torch.set_num_threads(cfg.num_threads)
    save_config(cfg, cfg.out)
    vocoder = load_vocoder(cfg.vocoder)
    report = []
    for name, units, durations in requests(cfg):
        started = time.perf_counter()
        if cfg.stream:
            audio = synthesize_stream(vocoder, units, durations, cfg.chunk_units, cfg.speaker)
        else:
            audio = vocoder(units, durations, cfg.speaker)
        seconds = time.perf_counter() - started
        path = cfg.out / f"{name}.wav"
        write_audio(path, audio, vocoder.sample_rate)
        audio_s = len(audio) / vocoder.sample_rate
        report.append(
            {"name": name, "wav": str(path), "audio_s": round(audio_s, 3), "rtf": seconds / max(audio_s, 1e-9)}
        )
        log.info("%s: %.2f s of audio", path, audio_s)
    atomic_write_text(cfg.out / "synth.json", json.dumps(report, indent=2) + "\n")
    return cfg.out
