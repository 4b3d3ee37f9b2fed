"""`speechgpt demo`: the pipeline on the embedded offline default, one step after another.

Today it covers the corpus step: a multi-speaker corpus spoken by the machine's TTS voices, and its statistics.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from data_builders import corpus_stats, synth_corpus
from speechgpt.config import save_config
from speechgpt.data.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    out: Path = Path("out/demo")
    """Folder for every artifact of the demo and summary.json."""
    corpus: synth_corpus.Config = field(default_factory=synth_corpus.Config)
    """The TTS corpus (see `speechgpt corpus synth --help`); its `out` is ignored: it goes to <out>/corpus."""


def run(cfg: Config) -> Path:
    save_config(cfg, cfg.out)
    corpus_dir = synth_corpus.run(replace(cfg.corpus, out=cfg.out / "corpus"))
    stats_dir = corpus_stats.run(corpus_stats.Config(corpus=corpus_dir))
    stats = json.loads((stats_dir / "stats.json").read_text())
    summary = {
        "corpus": str(corpus_dir),
        "corpus_stats": stats,
        "duration_histogram": str(stats_dir / "duration_histogram.png"),
    }
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(corpus_stats.format_stats(stats))
    return cfg.out / "summary.json"
