"""Small file helpers shared by every builder: atomic writes and JSONL that survives a killed writer."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def relative_to(folder: str | Path) -> Callable[[str], str]:
    """Path -> path relative to `folder` (absolute paths only; relative ones are already so)."""
    base = os.path.abspath(folder)
    return lambda path: os.path.relpath(path, base) if os.path.isabs(path) else path


def absolute_from(folder: str | Path) -> Callable[[str], str]:
    """Path relative to `folder` -> normalized absolute path (absolute paths unchanged)."""
    base = os.path.abspath(folder)
    return lambda path: path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and flush it: after a killed process a journal line is whole or cut at the end."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
        handle.flush()


def read_jsonl(path: str | Path, skip_truncated_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield records; with `skip_truncated_tail`, a last line cut by a killed writer is ignored."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if skip_truncated_tail and number == len(lines) and not line.endswith("\n"):
                return
            raise ValueError(f"{path}:{number}: not valid JSON") from None
