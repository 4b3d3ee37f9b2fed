"""`speechgpt build stage1`: unit sequences for modality-adaptation pre-training (task `unit_lm`).

One example per utterance: `<sosp>` + its units + `<eosp>`, trained on every token (SpeechGPT's stage 1). Rows of
training voices (corpus splits in `train_splits`) go to split 'train', every other row (held-out voices) to 'test'.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from speechgpt.config import save_config
from speechgpt.data.units import codebook_size, load_units_rows
from speechgpt.text.template import ChatTemplate
from speechgpt.text.units import UnitFormat, UnitFormatName

log = logging.getLogger(__name__)

COLUMNS = ["id", "split", "units"]


@dataclass(kw_only=True)
class Config:
    units: Path
    """Units dataset folder (from `speechgpt units extract`)."""
    out: Path = Path("out/stage1")
    """Output folder: dataset/ (one folder per split), summary.json, token_lengths.png, config.yaml."""
    unit_format: UnitFormatName = "default"
    """How units are written: 'default' (`<|u12|>`) or 'legacy' (SpeechGPT's `<12>`)."""
    k: int | None = None
    """Codebook size; null: the `km<k>` of the units' encoder tag."""
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    """Corpus splits of training voices (-> split 'train'); rows of any other corpus split go to 'test'."""
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    """Output splits to write."""
    tokenizer: str | None = None
    """Tokenizer (HF folder or hub id) for exact token counts; null: an approximation (one per unit or word)."""
    seed: int = 0
    """Seed of the build (stage 1 draws nothing at random today; kept so every builder takes one)."""
    min_units: int = 1
    """Utterances with fewer units are skipped (counted in summary.json)."""

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ValueError("k must be >= 1")
        if self.min_units < 0:
            raise ValueError("min_units must be >= 0")
        if not self.train_splits:
            raise ValueError("train_splits must name at least one corpus split")


def voice_split(row: dict[str, Any], train_splits: list[str]) -> str:
    return "train" if row["split"] in train_splits else "test"


def run(cfg: Config) -> Path:
    """Write the stage-1 dataset to cfg.out and return it."""
    save_config(cfg, cfg.out)
    tag, rows = load_units_rows(cfg.units, COLUMNS)
    units = UnitFormat(cfg.unit_format, codebook_size(tag, rows, cfg.k))
    template = ChatTemplate(units)
    count = TokenCounter(units, cfg.tokenizer)
    skipped: Counter[str] = Counter()
    out_rows = []
    for row in rows:
        split = voice_split(row, cfg.train_splits)
        if split not in cfg.splits:
            skipped[f"split {split} not in splits"] += 1
            continue
        if len(row["units"]) < cfg.min_units:
            skipped["fewer than min_units units"] += 1
            continue
        example = Example(
            id=f"unit_lm-{row['id']}",
            task="unit_lm",
            split=split,
            turns=None,
            source_ids=[row["id"]],
            units=tuple(row["units"]),
        )
        out_rows.append(to_row(example, template, count))
    extra = {"unit_format": units.name, "k": units.k, "encoder": str(tag)}
    write_instruct_dataset(out_rows, cfg.out, skipped=skipped, extra=extra, exact_tokens=count.exact)
    return cfg.out
