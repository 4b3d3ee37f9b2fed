"""`speechgpt build export`: instruct dataset -> SpeechInstruct JSONL, one `<split>.jsonl` per split.

Each line is `{"prefix": ..., "plain_text": ...}` as SpeechGPT publishes its data (prefix = what the model is given,
plain_text = prefix + answer). With `legacy`, unit tokens are rewritten to SpeechGPT's `<12>` form: each conversation
is parsed and formatted again with the legacy template, and a row whose text would read back differently in that
form (text that looks like a unit token) is skipped and counted rather than written wrong.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechgpt.config import save_config
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.data.io import atomic_write_text
from speechgpt.text.conversation import ConversationError, parse_conversation, to_speechinstruct
from speechgpt.text.template import ChatTemplate
from speechgpt.text.units import EOSP, SOSP, UnitFormat, UnitFormatName, convert_units_text

log = logging.getLogger(__name__)

_SPANS = re.compile(re.escape(SOSP) + r"(.*?)" + re.escape(EOSP), re.DOTALL)
NOT_LEGACY = "not representable in the legacy unit format"


@dataclass(kw_only=True)
class Config:
    dataset: Path
    """Instruct dataset folder (from `speechgpt build stage1|stage2|stage3|import`)."""
    out: Path = Path("out/speechinstruct")
    """Output folder: one <split>.jsonl per split, summary.json, config.yaml."""
    splits: list[str] | None = None
    """Splits to export; null: every split of the dataset."""
    unit_format: UnitFormatName = "default"
    """Unit format of the dataset's text: 'default' (`<|u12|>`) or 'legacy' (`<12>`)."""
    legacy: bool = False
    """Write SpeechGPT's legacy unit tokens (`<12>`) whatever the dataset's format."""


def codebook_size(texts: list[str], units: UnitFormat) -> int:
    """Highest unit id found inside `<sosp>`..`<eosp>` spans + 1 (export needs no k: the tokens carry the ids)."""
    highest = -1
    for text in texts:
        for span in _SPANS.findall(text):
            highest = max([highest, *(int(u) for u in units.pattern.findall(span))])
    return highest + 1


def export_row(row: dict[str, Any], source: UnitFormat, target: UnitFormat) -> dict[str, str]:
    """The SpeechInstruct record of one row; raises ConversationError when it cannot be written in `target`."""
    if row["task"] == "unit_lm":
        text = row["text"] if source == target else convert_units_text(row["text"], source, target)
        return {"prefix": "", "plain_text": text}
    if source == target:
        return {"prefix": row["prompt"], "plain_text": row["text"]}
    conversation = parse_conversation(row["text"], source)
    formatted = ChatTemplate(target, system=conversation.system).format(conversation.turns)
    try:
        same = parse_conversation(formatted.text, target).turns == conversation.turns
    except ConversationError:
        same = False
    if not same:
        raise ConversationError(NOT_LEGACY)
    return to_speechinstruct(formatted)


def run(cfg: Config) -> Path:
    """Write `<out>/<split>.jsonl` for each split and return cfg.out."""
    save_config(cfg, cfg.out)
    dataset = load_instruct_dataset(cfg.dataset)
    splits = list(dataset) if cfg.splits is None else cfg.splits
    missing = sorted(set(splits) - set(dataset))
    if missing:
        raise ValueError(f"{cfg.dataset}: no split(s) {missing} (has {sorted(dataset)})")
    texts = [t for split in splits for t in dataset[split]["text"]]
    k = max(codebook_size(texts, UnitFormat(cfg.unit_format, 1)), 1)
    source = UnitFormat(cfg.unit_format, k)
    target = UnitFormat("legacy", k) if cfg.legacy else source
    lines_per_split: dict[str, int] = {}
    skipped: Counter[str] = Counter()
    for split in splits:
        lines = []
        for row in dataset[split]:
            try:
                record = export_row(row, source, target)
            except ConversationError as err:
                if str(err) != NOT_LEGACY:
                    raise ValueError(f"{cfg.dataset} row {row['id']}: {err}") from None
                log.warning("%s: skipped, %s", row["id"], NOT_LEGACY)
                skipped[NOT_LEGACY] += 1
                continue
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        atomic_write_text(cfg.out / f"{split}.jsonl", "".join(lines))
        lines_per_split[split] = len(lines)
    summary = {"lines": lines_per_split, "skipped": dict(sorted(skipped.items())), "unit_format": target.name}
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("%s: %s", cfg.out, summary)
    return cfg.out
