"""The paths a frozen-variant folder's meta names (its backbone LLM, the folder its training started from), kept two
ways: as written (absolute) and, under `relative_paths`, relative to the folder. Read back, a relative path that
leads somewhere from the folder wins, so an output tree copied or moved as a whole uses its own backbone; a folder
copied alone still finds the one it was trained with. Hub ids pass through unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from speechgpt.data.io import absolute_from, relative_to

PATH_KEYS = ("backbone", "init")
RELATIVE = "relative_paths"


def portable_meta(meta: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`meta` about to be written into `folder`, with its absolute PATH_KEYS also relative to the folder."""
    relative_path = relative_to(folder)
    relative = {
        k: relative_path(v) for k, v in meta.items() if k in PATH_KEYS and isinstance(v, str) and os.path.isabs(v)
    }
    return {**meta, RELATIVE: relative} if relative else dict(meta)


def resolved_meta(meta: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """`meta` read from `folder`: each PATH_KEY the folder's relative path leads to, else as written."""
    absolute_path = absolute_from(folder)
    resolved = {k: v for k, v in meta.items() if k != RELATIVE}
    for key, relative in meta.get(RELATIVE, {}).items():
        path = absolute_path(relative)
        if os.path.exists(path):
            resolved[key] = path
    return resolved
