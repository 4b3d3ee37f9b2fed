"""Read fairseq checkpoints (pickles) without fairseq or omegaconf installed.

A fairseq checkpoint holds the model settings (`args`, an argparse Namespace, in older files; `cfg`, an omegaconf
DictConfig or plain dict, in newer ones) and the parameters under `model`. Tensors-only files load with
`weights_only=True`; anything else is unpickled only when the caller trusts the file, and omegaconf / fairseq / hydra
classes become inert stand-ins that record their state, turned into plain Python by `to_plain`.
"""

from __future__ import annotations

import argparse
import enum
import functools
import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import torch

logger = logging.getLogger(__name__)

STAND_IN_PACKAGES = frozenset({"omegaconf", "fairseq", "hydra"})
"""Top-level packages whose pickled classes are replaced by `PickledStandIn` (never imported, even if installed)."""


class PickledStandIn:
    """Inert replacement for a pickled omegaconf / fairseq class: records constructor args and pickled state."""

    source_name: ClassVar[str] = "?"
    constructor_args: tuple[Any, ...] = ()
    pickled_state: Any = None

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledStandIn:
        instance = super().__new__(cls)
        instance.constructor_args = args
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state

    def state_mapping(self) -> dict[str, Any]:
        """The pickled attributes, merging the (dict state, slot state) pair pickle uses for classes with slots."""
        parts = self.pickled_state if isinstance(self.pickled_state, tuple) else (self.pickled_state,)
        return {key: value for part in parts if isinstance(part, Mapping) for key, value in part.items()}

    def __repr__(self) -> str:
        return f"<stand-in for {self.source_name}>"


@functools.cache
def _stand_in_class(module_name: str, name: str) -> type[PickledStandIn]:
    return type(name, (PickledStandIn,), {"source_name": f"{module_name}.{name}", "__module__": __name__})


class _StandInUnpickler(pickle.Unpickler):
    def find_class(self, module_name: str, name: str, /) -> Any:
        if module_name.split(".")[0] in STAND_IN_PACKAGES:
            return _stand_in_class(module_name, name)
        return super().find_class(module_name, name)


class _StandInPickleModule:
    """The parts of the `pickle` module that `torch.load(pickle_module=...)` uses."""

    Unpickler = _StandInUnpickler

    @staticmethod
    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return _StandInUnpickler(file, **kwargs).load()


def to_plain(value: Any) -> Any:
    """Namespaces, mappings and omegaconf stand-ins (DictConfig, ListConfig, value nodes, enums) as plain Python."""
    if isinstance(value, PickledStandIn):
        state = value.state_mapping()
        if "_content" in state:  # DictConfig / ListConfig
            return to_plain(state["_content"])
        if "_val" in state:  # AnyNode, StringNode, IntegerNode, EnumNode, ...
            return to_plain(state["_val"])
        if len(value.constructor_args) == 1 and not state:  # an Enum member pickles as `EnumClass(value)`
            return to_plain(value.constructor_args[0])
        return value
    if isinstance(value, argparse.Namespace):
        return {key: to_plain(item) for key, item in vars(value).items()}
    if isinstance(value, Mapping):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_plain(item) for item in value) if type(value) in (list, tuple) else value
    if isinstance(value, enum.Enum):
        return value.value
    return value


@dataclass(frozen=True)
class FairseqCheckpoint:
    model_settings: dict[str, Any]
    """fairseq model settings (`cfg["model"]`, or every `args` entry for Namespace checkpoints)."""
    task_settings: dict[str, Any]
    """fairseq task settings (`cfg["task"]`, or `args`): holds `normalize` and `sample_rate`."""
    state: dict[str, torch.Tensor]
    """The fairseq parameter names and tensors."""


def _load_raw_checkpoint(path: Path, trust_checkpoint: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_checkpoint:
            blocked = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
            blocked_note = f" (such as {blocked.group(1)})" if blocked else ""
            raise ValueError(
                f"{path} holds pickled Python objects beyond tensors{blocked_note}; unpickling them can run arbitrary "
                "code stored in the file. Pass trust_checkpoint=True only for a checkpoint from a source you trust "
                "(e.g. the official fairseq / mHuBERT release)."
            ) from error
    logger.info("Unpickling %s with weights_only=False because trust_checkpoint=True", path)
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_StandInPickleModule)


def read_fairseq_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> FairseqCheckpoint:
    """Read a fairseq checkpoint's settings and parameters; needs `trust_checkpoint` unless it is tensors-only."""
    raw = _load_raw_checkpoint(Path(path), trust_checkpoint)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("model"), Mapping):
        raise ValueError(f"{path} is not a fairseq checkpoint: no 'model' parameter dict")
    cfg = to_plain(raw.get("cfg"))
    cfg = cfg if isinstance(cfg, Mapping) else {}
    args = to_plain(raw.get("args")) or {}
    model_settings = cfg.get("model") or args
    task_settings = cfg.get("task") or args
    if not isinstance(model_settings, Mapping) or not model_settings:
        raise ValueError(f"{path} has neither cfg['model'] nor args: cannot tell the model's architecture")
    state = dict(raw["model"])
    not_tensors = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if not_tensors:
        raise ValueError(f"{path}: 'model' entries that are not tensors: {not_tensors}")
    task = task_settings if isinstance(task_settings, Mapping) else {}
    return FairseqCheckpoint(model_settings=dict(model_settings), task_settings=dict(task), state=state)
