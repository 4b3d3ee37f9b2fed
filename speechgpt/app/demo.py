"""`speechgpt demo`: the pipeline on the embedded offline default, one step after another.

Steps so far: a multi-speaker corpus spoken by the machine's TTS voices (with its statistics), then speech units
(k-means fitted on the training voices, units extracted for every clip). Each step resumes when run again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from data_builders import corpus_stats, synth_corpus
from speechgpt.config import save_config
from speechgpt.data.io import atomic_write_text
from speechgpt.units import extract, fit
from speechgpt.units.encoders import EncoderConfig

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    out: Path = Path("out/demo")
    """Folder for every artifact of the demo and summary.json."""
    corpus: synth_corpus.Config = field(default_factory=synth_corpus.Config)
    """The TTS corpus (see `speechgpt corpus synth --help`); its `out` is ignored: it goes to <out>/corpus."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Speech encoder for units (see `speechgpt units fit --help`)."""
    k: int = 100
    """k-means clusters."""


def run(cfg: Config) -> Path:
    save_config(cfg, cfg.out)
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {}

    def step(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - start, 1)
        return result

    corpus_dir = step("corpus", synth_corpus.run, replace(cfg.corpus, out=cfg.out / "corpus"))
    stats_dir = step("corpus_stats", corpus_stats.run, corpus_stats.Config(corpus=corpus_dir))
    stats = json.loads((stats_dir / "stats.json").read_text())
    summary["corpus"] = {
        "path": str(corpus_dir),
        "stats": stats,
        "histogram": str(stats_dir / "duration_histogram.png"),
    }

    kmeans_dir = step(
        "units_fit", fit.run, fit.Config(corpus=corpus_dir, out=cfg.out / "kmeans", encoder=cfg.encoder, k=cfg.k)
    )
    units_dir = step(
        "units_extract", extract.run, extract.Config(corpus=corpus_dir, kmeans=kmeans_dir, out=cfg.out / "units")
    )
    summary["units"] = {"path": str(units_dir), **json.loads((units_dir / "summary.json").read_text())}
    summary["seconds_per_step"] = timings
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(corpus_stats.format_stats(stats))
    units = summary["units"]
    print(f"units: {units['encoder']}, {units['utterances']} utterances, {units['merged_units_per_second']} units/s")
    print(f"seconds per step: {timings}")
    return cfg.out / "summary.json"
