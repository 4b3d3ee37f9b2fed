"""What a resumed run must share with the run whose checkpoints it continues: its settings, its training data and
its starting weights. Only then is a resume exact; otherwise it would hand back a model trained on other data or
settings under the new run's name (a stage whose config, data or input model changed would return its old model).

`<out>/checkpoints/signature.json` holds the three, the settings in full so that a refusal says what changed:
- settings: the stage's resolved config, less the fields that only steer the run (`RUN_CONTROL`) and folder paths;
- data: the batch source's digest of its training examples (`ContentDigest`);
- weights: a digest of the model's starting tensors, so a stage started from a model retrained at the same path
  does not resume the old run.

    signature = RunSignature.of(stage_cfg, data=batches.fingerprint(), model=model)
    prepare_checkpoints(out / "checkpoints", signature, resume=True, changed_run="error", is_main=True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from speechgpt.data.io import atomic_write_text
from speechgpt.training.checkpoint import LATEST
from speechgpt.training.collectives import barrier

log = logging.getLogger(__name__)

SIGNATURE = "signature.json"
RUN_CONTROL = frozenset(
    {
        "out",
        "resume",
        "max_steps",
        "steps",
        "changed_run",
        "num_threads",
        "device",
        "eval_every",
        "eval_splits",
        "max_eval_examples",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "log_data_ids",
    }
)
"""Config fields (at any depth) that a resume may change: they steer the run, not what it learns, or (max_steps,
the vocoder's steps) extend it; a checkpoint past the new last step is a changed run."""
ChangedRun = Literal["error", "restart"]
SAMPLED_VALUES = 4096
"""Values of a large tensor that its digest reads (evenly strided); smaller ones are read whole."""


class ContentDigest:
    """A running digest of named arrays: shape, dtype and values (a strided sample of large ones, unless whole)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, name: str, *arrays: Any, whole: bool = False) -> None:
        """Hash `arrays` under `name`; `whole`: every value, not a sample (host arrays; 826 MB in 0.2 s here)."""
        self._hash.update(name.encode() + b"\0")
        for array in arrays:
            shape, values = (np.shape(array), np.asarray(array)) if whole else _sampled(array)
            self._hash.update(f"{shape}|{values.dtype}".encode())
            self._hash.update(memoryview(np.ascontiguousarray(values)).cast("B"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:24]


def _sampled(array: Any) -> tuple[tuple[int, ...], np.ndarray]:
    """An array's shape and its values, at most SAMPLED_VALUES of them (a tensor is sampled where it lives)."""
    if isinstance(array, torch.Tensor):
        sample = array.detach().reshape(-1)
        if sample.numel() > SAMPLED_VALUES:
            sample = sample[torch.linspace(0, sample.numel() - 1, SAMPLED_VALUES, device=sample.device).long()]
        sample = sample.float() if sample.is_floating_point() else sample.long()
        return tuple(array.shape), sample.cpu().numpy()
    values = np.asarray(array)
    flat = values.reshape(-1)
    if flat.size > SAMPLED_VALUES:
        flat = flat[np.linspace(0, flat.size - 1, SAMPLED_VALUES).astype(np.int64)]
    return values.shape, flat


def weights_digest(model: torch.nn.Module) -> str:
    """Digest of a model's parameters and buffers (names, shapes, sampled values)."""
    digest = ContentDigest()
    for name, tensor in model.state_dict().items():
        digest.add(name, tensor)
    return digest.hexdigest()


def settings_dict(settings: Any) -> Any:
    """A config (dataclass, mapping, list or value) as JSON-ready data without its RUN_CONTROL fields and folder
    paths (`Path` values: the data and weight digests stand for what they hold, so a moved folder still resumes)."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        settings = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    if isinstance(settings, dict):
        kept = {k: v for k, v in settings.items() if k not in RUN_CONTROL and not isinstance(v, Path)}
        return {str(k): settings_dict(v) for k, v in kept.items()}
    if isinstance(settings, list | tuple):
        return [settings_dict(v) for v in settings]
    return settings if isinstance(settings, bool | int | float | str | None) else str(settings)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


@dataclass(frozen=True)
class RunSignature:
    settings: dict[str, Any]
    data: str
    weights: str

    @classmethod
    def of(cls, settings: Any, *, data: str, model: torch.nn.Module) -> RunSignature:
        """The signature of a run about to start: call before any checkpoint is loaded into `model`."""
        return cls(json.loads(json.dumps(settings_dict(settings))), data, weights_digest(model))

    def differences(self, stored: RunSignature) -> list[str]:
        """What differs from `stored`, for a person to read: settings `field: old -> new`, data, weights."""
        old, new = _flat(stored.settings), _flat(self.settings)
        keys = sorted({*old, *new})
        changed = [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in keys if old.get(k) != new.get(k)]
        if stored.data != self.data:
            changed.append("the training data")
        if stored.weights != self.weights:
            changed.append("the starting weights (the model it starts from)")
        return changed

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / SIGNATURE, json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n")

    @classmethod
    def read(cls, folder: Path) -> RunSignature | None:
        path = folder / SIGNATURE
        return cls(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def prepare_checkpoints(
    folder: Path, signature: RunSignature, *, resume: bool, changed_run: ChangedRun, max_steps: int, is_main: bool
) -> None:
    """Make `folder` safe to resume from, before a run loads its latest checkpoint:
    - no checkpoint yet: the signature is written;
    - resume=false: every old checkpoint is deleted (the new run's would be pruned beside higher old steps);
    - checkpoints of the same signature: kept, to resume; of a run older than signatures: kept, and the signature
      written;
    - checkpoints of another signature, or past max_steps: changed_run='error' stops and says what differs,
      'restart' deletes them.
    Every rank calls it; rank 0 writes and deletes, the others wait for it."""
    pointer = folder / LATEST
    has_checkpoints = pointer.is_file()
    stored = RunSignature.read(folder)
    changes = signature.differences(stored) if has_checkpoints and stored is not None else []
    last = int(pointer.read_text().strip().removeprefix("step") or 0) if has_checkpoints else 0
    if last > max_steps:
        changes.append(f"its checkpoint is at step {last}, past max_steps {max_steps}")
    restart = not resume and folder.exists()
    if resume and has_checkpoints and stored is None:
        log.warning("%s: checkpoints without a %s (older than signatures); resuming unchecked", folder, SIGNATURE)
    if resume and changes:
        what = "; ".join(changes)
        if changed_run == "error":
            raise RuntimeError(
                f"{folder} holds checkpoints of a run with other settings, data or starting weights ({what}): "
                "delete the folder, train into another `out`, or start over with resume=false or changed_run=restart"
            )
        log.info("%s: checkpoints of another run (%s); training again from step 0", folder, what)
        restart = True
    if is_main:
        if restart:
            shutil.rmtree(folder, ignore_errors=True)
        if restart or not has_checkpoints or stored is None:
            signature.write(folder)
    barrier()
