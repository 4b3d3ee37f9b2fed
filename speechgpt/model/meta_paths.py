"""The paths a frozen-variant folder's meta names (its backbone LLM, the folder its training started from), kept two
ways: as written (absolute) and, under `relative_paths`, relative to the folder. Read back, a relative path that
leads somewhere from the folder wins, so an output tree copied or moved as a whole uses its own backbone; a folder
copied alone still finds the one it was trained with. Hub ids pass through unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PATH_KEYS = ("backbone", "init")
RELATIVE = "relative_paths"


def portable_meta(meta: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`meta` about to be written into `folder`, with its absolute PATH_KEYS also relative to the folder."""
    base = os.path.abspath(folder)
    relative = {k: os.path.relpath(v, base) for k, v in meta.items() if k in PATH_KEYS and _absolute(v)}
    return {**meta, RELATIVE: relative} if relative else dict(meta)


def resolved_meta(meta: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`meta` read from `folder`: each PATH_KEY the folder's relative path leads to, else as written."""
    base = os.path.abspath(folder)
    resolved = {k: v for k, v in meta.items() if k != RELATIVE}
    for key, relative in meta.get(RELATIVE, {}).items():
        path = os.path.normpath(os.path.join(base, relative))
        if os.path.exists(path):
            resolved[key] = path
    return resolved


def _absolute(value: Any) -> bool:
    return isinstance(value, str) and os.path.isabs(value)
