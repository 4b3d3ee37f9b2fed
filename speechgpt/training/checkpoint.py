"""Checkpoint plumbing shared by every trainer: a folder per step (`step0000042/`), written file by file
atomically, and a `latest` pointer moved only once a step's files are all in place, so a killed run never resumes
from half a checkpoint. Every RNG (Python, NumPy, torch, CUDA) is saved per rank for exact resume.

Everything we write loads with `torch.load(weights_only=True)`: resuming a run folder never unpickles code.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechgpt.data.io import atomic_write_text

LATEST = "latest"


def step_folder(folder: Path, step: int) -> Path:
    return folder / f"step{step:07d}"


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then rename: the file is whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def safe_load(path: Path, map_location: Any = None) -> Any:
    """torch.load of a file we wrote, tensors and plain containers only (no code runs while loading)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file missing")
    return torch.load(path, map_location=map_location, weights_only=True)


def latest_step_folder(folder: Path) -> Path | None:
    """The step folder `latest` names, or None when there is no checkpoint yet."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    tag = folder / pointer.read_text().strip()
    if not tag.is_dir():
        raise RuntimeError(f"{pointer} names {tag.name}, which is missing")
    return tag


def mark_latest(folder: Path, tag: Path, keep: int) -> None:
    """Point `latest` at `tag`, then delete all but the newest `keep` step folders (call on rank 0 only)."""
    atomic_write_text(folder / LATEST, tag.name + "\n")
    prune(folder, keep)


def prune(folder: Path, keep: int) -> None:
    for old in sorted(p for p in folder.glob("step*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every generator of this process, as tensors and ints (loadable with weights_only=True)."""
    version, key, gauss = random.getstate()
    kind, np_key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(key), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(np_key, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, key, gauss = state["python"]
    random.setstate((version, tuple(key), gauss))
    kind, np_key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np_key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rank_state(tag: Path, rank: int, extra: dict[str, Any] | None = None) -> None:
    """This rank's RNG (and trainer-specific extras such as a sampler position) into `tag/rng_rank{rank}.pt`."""
    atomic_save({"rng": rng_state(), **(extra or {})}, tag / f"rng_rank{rank}.pt")


def load_rank_state(tag: Path, rank: int) -> dict[str, Any]:
    """Restore this rank's RNG from `tag` and return the file's extras."""
    path = tag / f"rng_rank{rank}.pt"
    if not path.is_file():
        raise RuntimeError(f"{path} missing: resume with the world size the checkpoint was written with")
    state = safe_load(path)
    set_rng_state(state.pop("rng"))
    return dict(state)


def seed_everything(seed: int) -> None:
    """The one seeding function: Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def deepspeed_safe_globals() -> list[Any]:
    """The DeepSpeed classes its ZeRO checkpoints pickle (loss scaler, ZeRO stage, fragment addresses): plain
    records that `weights_only` loading may rebuild without running code from the file."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def load_deepspeed_shards_safely(engine: Any) -> None:
    """Make DeepSpeed's checkpoint engine load its shards with `weights_only=True` (it unpickles them with
    `weights_only=False`, so a crafted file in a run folder would run code on resume)."""
    checkpoint_engine = getattr(engine, "checkpoint_engine", None)
    if checkpoint_engine is None or type(checkpoint_engine).__name__ != "TorchCheckpointEngine":
        return
    allowed = deepspeed_safe_globals()

    def load(path: str, map_location: Any = None) -> Any:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)

    checkpoint_engine.load = load
