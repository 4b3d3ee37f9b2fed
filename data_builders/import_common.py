"""What the readers of `speechgpt corpus import` share: column names, audio suffixes and audio loaders."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from speechgpt.data.audio import Audio16k, AudioError, read_audio

UNKNOWN_SPEAKER = "unknown"
AUDIO_SUFFIXES = {".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".sph"}


class Columns(NamedTuple):
    audio: str
    text: str
    speaker: str
    id: str


def require_columns(names: list[str], cols: Columns, what: str) -> None:
    """Stop the import when the input (`what`) lacks the audio or the text column."""
    for column in (cols.audio, cols.text):
        if column not in names:
            raise ValueError(f"{what} has no column {column!r} (has {', '.join(names)}); see preset and *_column")


def file_loader(path: Path) -> Callable[[], Audio16k]:
    """A picklable loader of an audio file; a missing file rejects the item when it is converted."""
    if path.is_file():
        return functools.partial(read_audio, str(path))
    return functools.partial(unusable, f"audio file missing: {path}")


def no_audio() -> Audio16k:
    """The loader of an item rejected before decoding."""
    raise AudioError("bad audio: the item has no audio")


def unusable(reason: str) -> Audio16k:
    """The loader of audio known to be unusable: converting it rejects the item with `reason`."""
    raise AudioError(reason)
