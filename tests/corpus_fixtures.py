"""Audio and corpus-output helpers shared by the corpus import tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RATE = 16_000


def tone(seconds: float, rate: int = RATE, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono, 0.5 * mono], axis=1)


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.2, 0.2, int(seconds * RATE)).astype(np.float32)


def read_rejected(out: Path) -> dict[str, str]:
    lines = (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    reasons = {row["id"]: row["reason"] for row in rows}
    assert len(reasons) == len(rows), "one rejection per item"
    return reasons


def reason_kind(reason: str) -> str:
    return reason.split(":")[0]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())
