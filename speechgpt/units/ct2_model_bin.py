"""The variables of a CTranslate2 model.bin (binary version >= 5): names, shapes, data types and, on request, data.

Layout: version (uint32), spec name, spec revision and variable count (uint32 each), then per variable its name,
rank (uint8), dims (uint32 each), data type (uint8, CTranslate2's DataType enum) and byte count (uint32), followed
by the data. Strings are a uint16 length (with the closing NUL) and UTF-8 bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class Variable:
    name: str
    dims: tuple[int, ...]
    dtype: int
    """CTranslate2's DataType: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16."""
    data: bytes | None
    """The raw bytes where they were asked for, else None (the block was skipped)."""


def _unpack(f: BinaryIO, fmt: str) -> tuple[int, ...]:
    return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))


def _string(f: BinaryIO) -> str:
    (size,) = _unpack(f, "H")
    return f.read(size)[:-1].decode("utf-8")


def whisper_variables(model_bin: Path, read: Callable[[str], bool] = lambda name: False) -> Iterator[Variable]:
    """Every variable of a CTranslate2 Whisper model.bin in file order, with its data where `read(name)` is true.
    ValueError when the file is too old a format or holds another kind of model."""
    with model_bin.open("rb") as f:
        (version,) = _unpack(f, "I")
        if version < 5:
            raise ValueError(f"{model_bin}: CTranslate2 binary version {version} is too old (need >= 5)")
        spec = _string(f)
        if spec != "WhisperSpec":
            raise ValueError(f"{model_bin} holds a {spec}, not a Whisper model")
        _revision, count = _unpack(f, "II")
        for _ in range(count):
            name = _string(f)
            (ndim,) = _unpack(f, "B")
            dims = _unpack(f, f"{ndim}I")
            dtype, nbytes = _unpack(f, "BI")
            if read(name):
                yield Variable(name, dims, dtype, f.read(nbytes))
            else:
                f.seek(nbytes, 1)
                yield Variable(name, dims, dtype, None)
