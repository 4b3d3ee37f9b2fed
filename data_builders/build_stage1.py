"""`speechgpt build stage1`: unit sequences for modality-adaptation pre-training (task `unit_lm`).

One example per utterance: `<sosp>` + its units + `<eosp>`, trained on every token (SpeechGPT's stage 1). Rows of
training voices (corpus splits in `train_splits`) go to split 'train', every other row (held-out voices) to 'test'.
Also home of what the unit-based builders share: reading a units dataset and deciding the codebook size `k`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from speechgpt.config import save_config
from speechgpt.data.corpus import load_corpus
from speechgpt.text.template import ChatTemplate
from speechgpt.text.units import UnitFormat, UnitFormatName

log = logging.getLogger(__name__)

UNITS_COLUMNS = ["id", "text", "speaker", "split", "units", "encoder"]
_KM = re.compile(r"\+km(\d+)(?::|$)")


@dataclass(kw_only=True)
class Config:
    units: Path
    """Units dataset folder (from `speechgpt units extract`)."""
    out: Path = Path("out/stage1")
    """Output folder: dataset/ (one folder per split), summary.json, token_lengths.png, config.yaml."""
    unit_format: UnitFormatName = "default"
    """How units are written: 'default' (`<|u12|>`) or 'legacy' (SpeechGPT's `<12>`)."""
    k: int | None = None
    """Codebook size; null: `km<k>` of the units' encoder, else the highest unit id + 1."""
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


def load_units_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a units dataset (only the columns the builders use), sorted by id."""
    dataset = load_corpus(path)
    missing = [c for c in UNITS_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{path}: not a units dataset, missing columns {missing} (run `speechgpt units extract`)")
    if len(dataset) == 0:
        raise ValueError(f"{path}: the units dataset has no rows")
    return sorted(dataset.select_columns(UNITS_COLUMNS).to_list(), key=lambda r: r["id"])


def resolve_k(rows: list[dict[str, Any]], k: int | None) -> int:
    """Codebook size: `k` when given, else `km<k>` from the encoder column, else the highest unit id + 1."""
    encoders = sorted({r["encoder"] for r in rows})
    if len(encoders) > 1:
        raise ValueError(f"units from several encoders cannot share one codebook: {encoders}")
    needed = max((max(r["units"]) for r in rows if r["units"]), default=-1) + 1
    match = _KM.search(encoders[0]) if encoders else None
    from_encoder = int(match.group(1)) if match else None
    if k is not None:
        if k < needed:
            raise ValueError(f"k={k} but the units use ids up to {needed - 1}")
        if from_encoder is not None and k != from_encoder:
            log.warning("k=%d differs from the encoder's codebook (km%d)", k, from_encoder)
        return k
    if from_encoder is not None:
        if from_encoder < needed:
            raise ValueError(f"encoder says km{from_encoder} but the units use ids up to {needed - 1}")
        return from_encoder
    log.warning("encoder %s names no km<k>; using the highest unit id + 1 = %d (set k to be sure)", encoders, needed)
    return max(needed, 1)


def voice_split(row: dict[str, Any], train_splits: list[str]) -> str:
    return "train" if row["split"] in train_splits else "test"


def run(cfg: Config) -> Path:
    """Write the stage-1 dataset to cfg.out and return it."""
    save_config(cfg, cfg.out)
    rows = load_units_rows(cfg.units)
    units = UnitFormat(cfg.unit_format, resolve_k(rows, cfg.k))
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
    extra = {"unit_format": units.name, "k": units.k, "encoder": rows[0]["encoder"] if rows else None}
    write_instruct_dataset(out_rows, cfg.out, skipped=skipped, extra=extra, exact_tokens=count.exact)
    return cfg.out
