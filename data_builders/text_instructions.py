"""Text instruction data as (id, question, answer) pairs: Alpaca-style and ShareGPT-style JSON or JSONL.

Alpaca: `{"instruction", "input", "output"}`; the question is the instruction, then the input when there is one.
ShareGPT: `{"conversations": [{"from": "human" | "gpt", "value": ...}, ...]}`; the first human -> gpt pair, or every
pair as its own item. A file may hold a JSON array of records or one record per line (whatever its suffix says).
A record may carry `id` and `split` (train, dev, test). A bad record becomes a `BadRecord` naming its line and what
is wrong; only an unreadable file as a whole stops the reading.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechgpt.data.corpus import safe_name

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
HUMAN_ROLES = frozenset({"human", "user"})
GPT_ROLES = frozenset({"gpt", "assistant", "chatgpt"})
SKIPPED_ROLES = frozenset({"system"})


@dataclass(frozen=True, slots=True)
class QAPair:
    id: str
    question: str
    answer: str
    split: str = "train"
    family: str = ""
    """The question family of `speechgpt build qa` data (empty for other sources)."""
    origin: str = ""
    """`file:line` of the record."""


@dataclass(frozen=True, slots=True)
class BadRecord:
    id: str
    origin: str
    """`file:line` of the record."""
    reason: str
    """`kind: detail`."""


def qa_clip_ids(pair_id: str) -> tuple[str, str]:
    """Corpus ids of a pair's spoken question and spoken answer (`speechgpt corpus synth qa=...` writes them,
    `speechgpt build stage3` and `speechgpt eval chat` look them up)."""
    return f"q-{pair_id}", f"a-{pair_id}"


class RecordError(ValueError):
    """One record that cannot be used; its message becomes the rejection reason."""


def read_text_instructions(path: str | Path, *, all_pairs: bool = False) -> tuple[list[QAPair], list[BadRecord]]:
    """Pairs and rejections of a file, or of a folder's train/dev/test `.jsonl` / `.json` files (split = file stem).

    For a single file the split is the record's `split`, else the file stem when it names a split, else train.
    Ids are the record's `id` (made file-name safe) or `<file stem>-<line>`; a repeated id is rejected.
    """
    path = Path(path)
    if path.is_dir():
        files = [f for s in SPLITS for f in (path / f"{s}.jsonl", path / f"{s}.json") if f.is_file()]
        if not files:
            raise FileNotFoundError(f"{path}: no train/dev/test .jsonl or .json files here")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{path}: no such file or folder")
    pairs: list[QAPair] = []
    bad: list[BadRecord] = []
    seen: set[str] = set()
    for file in files:
        default_split = file.stem if file.stem in SPLITS else "train"
        for line, record in iter_records(file):
            origin = f"{file}:{line}"
            try:
                found = pairs_of_record(record, f"{file.stem}-{line:06d}", default_split, all_pairs, origin)
            except RecordError as err:
                bad.append(BadRecord(_record_id(record, f"{file.stem}-{line:06d}"), origin, str(err)))
                continue
            for pair in found:
                if pair.id in seen:
                    bad.append(BadRecord(pair.id, origin, "duplicate id: seen in an earlier record"))
                    continue
                seen.add(pair.id)
                pairs.append(pair)
    log.info("%s: %d question/answer pairs, %d bad records", path, len(pairs), len(bad))
    return pairs, bad


def iter_records(file: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) for a JSON array (the line each element starts on) or JSON Lines. A JSON Lines line
    that does not parse is yielded as a `RecordError` in place of its record; a broken JSON array raises."""
    text = file.read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _array_records(text, file)
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            yield number, RecordError(f"invalid JSON: {err.msg} at column {err.colno}")


def _array_records(text: str, file: Path) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    while True:
        position = _skip_space(text, position)
        if position < len(text) and text[position] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}:{err.lineno}: not a valid JSON array: {err.msg}") from None
        yield text.count("\n", 0, position) + 1, record
        position = _skip_space(text, end)
        if position < len(text) and text[position] == ",":
            position += 1
        elif position >= len(text) or text[position] != "]":
            line = text.count("\n", 0, position) + 1
            raise ValueError(f"{file}:{line}: not a valid JSON array: expected ',' or ']'")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def pairs_of_record(
    record: Any, fallback_id: str, default_split: str, all_pairs: bool = False, origin: str = ""
) -> list[QAPair]:
    """The pairs of one Alpaca or ShareGPT record; raises RecordError naming what is wrong."""
    if isinstance(record, RecordError):
        raise record
    if not isinstance(record, dict):
        raise RecordError(f"not an object: a JSON {type(record).__name__}")
    record_id = _record_id(record, fallback_id)
    split = record.get("split", default_split)
    if split not in SPLITS:
        raise RecordError(f"bad split: {split!r} (train, dev or test)")
    family = record.get("family")
    family = family if isinstance(family, str) else ""
    if "conversations" in record:
        found = sharegpt_pairs(record["conversations"], all_pairs)
        if len(found) == 1:
            return [QAPair(record_id, found[0][0], found[0][1], split, family, origin)]
        return [QAPair(f"{record_id}-t{n}", q, a, split, family, origin) for n, (q, a) in enumerate(found, start=1)]
    if "instruction" in record:
        question, answer = alpaca_pair(record)
        return [QAPair(record_id, question, answer, split, family, origin)]
    raise RecordError(f"unknown record: no 'instruction' or 'conversations' key (keys: {sorted(record)[:6]})")


def alpaca_pair(record: dict[str, Any]) -> tuple[str, str]:
    instruction = _text(record.get("instruction"), "instruction")
    given = record.get("input")
    if given is not None and not isinstance(given, str):
        raise RecordError(f"bad input: expected a string, got {type(given).__name__}")
    extra = " ".join((given or "").split())
    question = f"{instruction} {extra}" if extra else instruction
    return question, _text(record.get("output"), "output")


def sharegpt_pairs(turns: Any, all_pairs: bool) -> list[tuple[str, str]]:
    """Human -> gpt pairs in order (a human turn answered by the next gpt turn); only the first unless `all_pairs`."""
    if not isinstance(turns, list):
        raise RecordError(f"bad conversations: expected a list, got {type(turns).__name__}")
    found: list[tuple[str, str]] = []
    asked: str | None = None
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise RecordError(f"bad turn: turn {number} is not an object")
        role = turn.get("from", turn.get("role"))
        if role in SKIPPED_ROLES:
            continue
        if role not in HUMAN_ROLES | GPT_ROLES:
            raise RecordError(f"bad turn: turn {number} has unknown speaker {role!r}")
        value = _text(turn.get("value", turn.get("content")), f"turn {number} value")
        if role in HUMAN_ROLES:
            asked = value
        elif asked is not None:
            found.append((asked, value))
            asked = None
            if not all_pairs:
                break
    if not found:
        raise RecordError("no pair: the conversation has no human turn answered by a gpt turn")
    return found


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"missing {name}: expected a string, got {type(value).__name__}")
    text = " ".join(value.split())
    if not text:
        raise RecordError(f"empty {name}")
    return text


def _record_id(record: Any, fallback: str) -> str:
    given = record.get("id") if isinstance(record, dict) else None
    if isinstance(given, bool) or not isinstance(given, str | int) or not str(given).strip():
        return fallback
    return safe_name(str(given).strip())
