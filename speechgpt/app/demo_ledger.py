"""Which steps a rerun of `speechgpt demo` can reuse: out/demo/steps.json records each finished step.

A step is reused, not run, when all of these are as they were when it finished:
- the toolkit's code (every .py file of its packages);
- the step's command and its resolved config (overrides and re-rooting included);
- what the steps before it left on disk (each one's output folder, chained through their records);
- its own output folder (delete something in it, a checkpoint say, and the step runs again).

A folder's state is the name, size and modification time of each entry directly in it, except other steps' folders
(the corpus's stats/ is corpus_stats'): cheap, and it changes when the step's own files change. A step that runs again
invalidates every step after it, so a changed model is always evaluated again. Only finished steps are recorded: a
killed step runs again (and resumes from its checkpoints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import speechgpt
from speechgpt.data.io import atomic_write_text

LEDGER = "steps.json"
CODE_PACKAGES = ("speechgpt", "data_builders", "stages", "vocoder")
"""The source trees whose .py files the steps run (under the folder that holds the `speechgpt` package)."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def code_fingerprint(root: Path | None = None) -> str:
    """One digest of every .py file (path and bytes) of the toolkit's packages."""
    root = root or Path(speechgpt.__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def folder_state(folder: Path, skip: frozenset[str] = frozenset()) -> str:
    """Digest of the entries directly in `folder` (name, kind, size, modification time) but those named in `skip`;
    "missing" if it is not a folder."""
    if not folder.is_dir():
        return "missing"
    entries = sorted((e for e in os.scandir(folder) if e.name not in skip), key=lambda e: e.name)
    rows = [f"{e.name}|{e.is_dir()}|{e.stat().st_size}|{e.stat().st_mtime_ns}" for e in entries]
    return _digest(*rows)


def config_text(cfg: Any) -> str:
    """A step's resolved config as canonical JSON."""
    return json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)


@dataclass(frozen=True)
class StepRecord:
    key: str
    """Digest of the code, the step's command and config, and the record of the step before it."""
    output: str
    """What the step returned."""
    folder: str
    """Where it wrote (its config's `out`, else its output)."""
    state: str
    """`folder_state(folder)` when it finished."""
    seconds: float

    @property
    def chained(self) -> str:
        """What the next step's key builds on: this step's key and what it left on disk."""
        return _digest(self.key, self.state)


class StepLedger:
    """The records of one output root's finished steps."""

    def __init__(self, out: Path, code: str) -> None:
        self.path, self.code = out / LEDGER, code
        raw = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.records = {step: StepRecord(**rec) for step, rec in raw.get("steps", {}).items()}

    def key(self, step: str, words: tuple[str, ...], cfg: Any, upstream: str) -> str:
        return _digest(self.code, step, " ".join(words), config_text(cfg), upstream)

    def reusable(self, step: str, key: str) -> StepRecord | None:
        """The step's record where it finished under this key and its folder is as it left it."""
        record = self.records.get(step)
        if record is None or record.key != key or self._state(Path(record.folder)) != record.state:
            return None
        return record

    def _state(self, folder: Path) -> str:
        nested = (Path(r.folder) for r in self.records.values())
        return folder_state(folder, frozenset(f.name for f in nested if f.parent == folder))

    def finish(self, step: str, key: str, cfg: Any, output: str, seconds: float) -> StepRecord:
        """Record a step that just ran (written at once, so a killed demo keeps what finished)."""
        folder = Path(getattr(cfg, "out", None) or output)
        folder = folder if folder.is_dir() or not folder.exists() else folder.parent
        record = StepRecord(key, output, str(folder), self._state(folder), seconds)
        self.records[step] = record
        steps = {name: dataclasses.asdict(rec) for name, rec in self.records.items()}
        atomic_write_text(self.path, json.dumps({"steps": steps}, indent=2) + "\n")
        return record
