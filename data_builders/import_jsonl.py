"""`speechgpt build import`: SpeechInstruct JSONL (`{"prefix", "plain_text"}` per line) -> instruct dataset.

Each line's conversation is parsed in the file's unit format and formatted again with our template in
`to_unit_format`, so loss spans and prompt/response come out as the builders make them. A line that cannot be used
(not JSON, no plain_text, a conversation that does not follow the template, a task that cannot be told) becomes a
row of rejected.jsonl naming its line number and the reason; the import never stops on one.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from speechgpt.config import save_config
from speechgpt.data.instruct import TASKS, Task
from speechgpt.text.conversation import ConversationError, Turn, from_speechinstruct
from speechgpt.text.template import HUMAN, ChatTemplate, LossOn
from speechgpt.text.units import EOSP, SOSP, UnitFormat, UnitFormatName

log = logging.getLogger(__name__)

_TURN_PREFIX = re.compile(r"^turn \d+: ")  # reasons are counted by kind, whichever turn they concern


@dataclass(kw_only=True)
class Config:
    jsonl: Path
    """SpeechInstruct JSONL file to read."""
    out: Path = Path("out/imported")
    """Output folder: dataset/, rejected.jsonl, summary.json, token_lengths.png, config.yaml."""
    unit_format: UnitFormatName = "legacy"
    """Unit format of the file: 'legacy' (`<12>`, SpeechGPT's released data) or 'default' (`<|u12|>`)."""
    k: int = 1000
    """Codebook size of the file's units (SpeechGPT: 1000); larger ids make a line rejected."""
    to_unit_format: UnitFormatName = "default"
    """Unit format of the stored text."""
    task: str | None = None
    """Task of every line; null: inferred per line (asr, tts, com_* from [ta]/[ua], unit_lm for a bare span)."""
    split: str = "train"
    """Split the rows are stored in."""
    loss_on: LossOn = "answers"
    """'answers': train on the answers only; 'after_system': everything after the system prompt (SpeechGPT)."""
    tokenizer: str | None = None
    """Tokenizer (HF folder or hub id) for exact token counts; null: an approximation (one per unit or word)."""

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r} (one of {', '.join(TASKS)})")
        if self.k < 1:
            raise ValueError("k must be >= 1")


def turn_task(turn: Turn) -> Task:
    """asr (units in, text out), tts (text in, units out) or com_<in>2<out> for a chain-of-modality answer."""
    user, answer = turn
    speech_in, speech_out = user.units is not None, answer.units is not None
    if answer.chain:
        return f"com_{'s' if speech_in else 't'}2{'s' if speech_out else 't'}"  # type: ignore[return-value]
    if speech_in and not speech_out:
        return "asr"
    if not speech_in and speech_out:
        return "tts"
    kind = "speech in and speech out" if speech_in else "text in and text out"
    raise ValueError(f"cannot infer the task ({kind} without [ta]/[ua]); set task=")


def infer_task(turns: list[Turn]) -> Task:
    tasks = sorted({turn_task(turn) for turn in turns})
    if len(tasks) > 1:
        raise ValueError(f"turns of different tasks ({', '.join(tasks)}); set task=")
    return tasks[0]


def read_line(raw: bytes, number: int, cfg: Config, source: ChatTemplate) -> tuple[Example, str]:
    """The example of one JSONL line and its system prompt; raises ValueError (ConversationError included)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"invalid UTF-8 at byte {err.start}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    text = record.get("plain_text")
    if isinstance(text, str) and HUMAN not in text and text.strip().startswith(SOSP):
        return _unit_sequence(text.strip(), number, cfg, source.units), source.system
    conversation = from_speechinstruct(record, source)
    task = cfg.task or infer_task(conversation.turns)
    origin = [f"{cfg.jsonl.name}:{number}"]
    example = Example(f"line-{number:06d}", task, cfg.split, turns=conversation.turns, source_ids=origin)  # type: ignore[arg-type]
    return example, conversation.system


def _unit_sequence(text: str, number: int, cfg: Config, units: UnitFormat) -> Example:
    if not text.endswith(EOSP) or text.count(SOSP) != 1:
        raise ConversationError("a bare unit sequence must be one <sosp>..<eosp> span")
    found, problems = units.read_span(text.removeprefix(SOSP).removesuffix(EOSP))
    if problems or not found:
        raise ConversationError(f"bad unit sequence: {'; '.join(problems) or 'no units'}")
    task = cfg.task or "unit_lm"
    if task != "unit_lm":
        raise ConversationError(f"a bare unit sequence cannot be task {task}")
    origin = [f"{cfg.jsonl.name}:{number}"]
    return Example(f"line-{number:06d}", "unit_lm", cfg.split, turns=None, source_ids=origin, units=tuple(found))


def run(cfg: Config) -> Path:
    """Import cfg.jsonl into cfg.out and return it."""
    save_config(cfg, cfg.out)
    source = ChatTemplate(UnitFormat(cfg.unit_format, cfg.k))
    target_units = UnitFormat(cfg.to_unit_format, cfg.k)
    count = TokenCounter(target_units, cfg.tokenizer)
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    lines = cfg.jsonl.read_bytes().splitlines()
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            skipped["blank line"] += 1
            continue
        try:
            example, system = read_line(raw, number, cfg, source)
            rows.append(to_row(example, ChatTemplate(target_units, system=system, loss_on=cfg.loss_on), count))
        except ValueError as err:
            origin = f"{cfg.jsonl.name}:{number}"
            rejected.append({"id": f"line-{number:06d}", "origin": origin, "reason": str(err)})
            reasons[_TURN_PREFIX.sub("", str(err)).split(":")[0]] += 1
    extra = {
        "unit_format": target_units.name,
        "k": target_units.k,
        "source": str(cfg.jsonl),
        "lines": len(lines),
        "rejected_by_reason": dict(sorted(reasons.items())),
    }
    write_instruct_dataset(rows, cfg.out, skipped=skipped, rejected=rejected, extra=extra, exact_tokens=count.exact)
    if rejected:
        log.warning("%s: %d of %d lines rejected (see %s)", cfg.jsonl, len(rejected), len(lines), cfg.out)
    return cfg.out
