"""What every SpeechInstruct builder shares: the example schema, token counting, the dataset writer and summary.

An instruct dataset folder holds `dataset/` (a HF DatasetDict saved to disk, one split per folder), `summary.json`
(examples per split and task, skipped inputs by reason), `token_lengths.png`, `rejected.jsonl` and `config.yaml`.
Rows follow `speechgpt.data.instruct` (the contract the training stages read).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechgpt.data.corpus import write_dataset
from speechgpt.data.instruct import Task, instruct_features
from speechgpt.data.io import atomic_write_text
from speechgpt.text.conversation import Turn
from speechgpt.text.template import ChatTemplate, marker_tokens
from speechgpt.text.units import UnitFormat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    id: str
    task: Task
    split: str
    turns: list[Turn] | None
    """The conversation; None for stage-1 unit sequences, which have no template."""
    source_ids: list[str]
    """Corpus rows the example was made from."""
    units: tuple[int, ...] | None = None
    """Stage 1 only: the unit sequence itself."""


class TokenCounter:
    """Token lengths with the model's tokenizer when given (units and markers added), else an approximation:
    one token per unit or marker plus one per word or punctuation mark of the remaining text."""

    def __init__(self, units: UnitFormat, tokenizer_path: str | None = None) -> None:
        self.units = units
        self.exact = tokenizer_path is not None
        self._tokenizer: Any = None
        if tokenizer_path is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
            self._tokenizer.add_tokens(units.tokens() + marker_tokens(), special_tokens=True)
        markers = "|".join(re.escape(m) for m in marker_tokens())
        self._pieces = re.compile(rf"{units.pattern.pattern}|{markers}|\w+|[^\w\s]")

    def __call__(self, text: str) -> int:
        if self._tokenizer is not None:
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return len(self._pieces.findall(text))


def to_row(example: Example, template: ChatTemplate, count: TokenCounter) -> dict[str, Any]:
    if example.turns is None:
        if example.units is None:
            raise ValueError(f"{example.id}: an example needs turns or units")
        text = template.units.span(example.units)
        prompt, response, spans = "", text, [[0, len(text)]]
    else:
        formatted = template.format(example.turns)
        text, prompt, response = formatted.text, formatted.prompt, formatted.response
        spans = [list(span) for span in formatted.loss_spans]
    return {
        "id": example.id,
        "task": example.task,
        "split": example.split,
        "prompt": prompt,
        "response": response,
        "text": text,
        "loss_spans": spans,
        "num_tokens": count(text),
        "source_ids": list(example.source_ids),
    }


def write_instruct_dataset(
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    skipped: Counter[str],
    rejected: Sequence[dict[str, str]] = (),
    extra: dict[str, Any] | None = None,
    exact_tokens: bool = False,
) -> dict[str, Any]:
    """Write `<out>/dataset` (one folder per split + dataset_dict.json), summary.json and token_lengths.png."""
    if not rows:
        raise ValueError(f"{out}: no examples to write (skipped: {dict(skipped)}, rejected: {len(rejected)})")
    splits = sorted({r["split"] for r in rows})
    tmp = out / "dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split in splits:
        split_rows = sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"])
        write_dataset(split_rows, tmp / split, instruct_features())
    (tmp / "dataset_dict.json").write_text(json.dumps({"splits": splits}) + "\n")
    shutil.rmtree(out / "dataset", ignore_errors=True)
    tmp.rename(out / "dataset")
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in sorted(rejected, key=lambda r: r["id"]))
    atomic_write_text(out / "rejected.jsonl", lines)
    lengths = [r["num_tokens"] for r in rows]
    summary = {
        "examples": len(rows),
        "per_split_task": {
            s: dict(sorted(Counter(r["task"] for r in rows if r["split"] == s).items())) for s in splits
        },
        "tokens": {
            "exact": exact_tokens,
            "total": sum(lengths),
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
            "max": max(lengths, default=0),
        },
        "skipped": dict(sorted(skipped.items())),
        "rejected": len(rejected),
        **(extra or {}),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_token_lengths(rows, out / "token_lengths.png")
    log.info("%s: %s", out, summary)
    return summary


def plot_token_lengths(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for task in sorted({r["task"] for r in rows}):
        ax.hist([r["num_tokens"] for r in rows if r["task"] == task], bins=30, alpha=0.6, label=task)
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
