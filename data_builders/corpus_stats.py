"""`speechgpt corpus stats`: hours, speakers and utterances per split, and a duration histogram as PNG."""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechgpt.data.corpus import load_corpus
from speechgpt.data.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    corpus: Path
    """Corpus folder (from `corpus synth` or `corpus import`) or its dataset/ folder."""
    out: Path | None = None
    """Where stats.json and duration_histogram.png go; default: <corpus>/stats."""
    bins: int = 30
    """Histogram bins."""


def run(cfg: Config) -> Path:
    dataset = load_corpus(cfg.corpus)
    out = cfg.out or Path(cfg.corpus) / "stats"
    out.mkdir(parents=True, exist_ok=True)
    stats = corpus_stats(dataset["duration_s"], dataset["speaker"], dataset["split"])
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    plot_durations(dataset["duration_s"], out / "duration_histogram.png", cfg.bins, title=str(cfg.corpus))
    log.info("%s\n%s", cfg.corpus, format_stats(stats))
    return out


def corpus_stats(durations: list[float], speakers: list[str], splits: list[str]) -> dict[str, Any]:
    per_split: dict[str, dict[str, Any]] = defaultdict(lambda: {"utterances": 0, "seconds": 0.0, "speakers": set()})
    for duration, speaker, split in zip(durations, speakers, splits, strict=True):
        entry = per_split[split]
        entry["utterances"] += 1
        entry["seconds"] += duration
        entry["speakers"].add(speaker)
    total = sum(durations)
    return {
        "utterances": len(durations),
        "hours": round(total / 3600, 4),
        "speakers": len(set(speakers)),
        "mean_duration_s": round(total / len(durations), 3) if durations else 0.0,
        "max_duration_s": round(max(durations), 3) if durations else 0.0,
        "utterances_per_speaker": dict(sorted(Counter(speakers).items())),
        "splits": {
            split: {
                "utterances": e["utterances"],
                "hours": round(e["seconds"] / 3600, 4),
                "speakers": len(e["speakers"]),
            }
            for split, e in sorted(per_split.items())
        },
    }


def format_stats(stats: dict[str, Any]) -> str:
    lines = [
        f"utterances {stats['utterances']}, hours {stats['hours']:.3f}, speakers {stats['speakers']}, "
        f"mean {stats['mean_duration_s']:.2f}s, max {stats['max_duration_s']:.2f}s"
    ]
    for split, entry in stats["splits"].items():
        lines.append(f"  {split:<12} {entry['utterances']:>7} utt {entry['hours']:>8.3f} h {entry['speakers']:>4} spk")
    return "\n".join(lines)


def plot_durations(durations: list[float], path: Path, bins: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(durations, bins=bins, color="#3b6ea5")
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("utterances")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
