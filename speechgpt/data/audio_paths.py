"""Audio paths in saved datasets: written relative to the dataset's folder, read back absolute.

A corpus keeps its audio beside its dataset (`<build>/audio/...` next to `<build>/dataset/`), and a units dataset
points at its corpus' audio. Stored relative to the dataset folder (`../audio/flite_rms/utt1.flac`), those paths
survive moving or copying the output folder as a whole, and two builds of the same data in different folders write
the same bytes. `load_corpus` and `load_units_dataset` resolve them, so every reader gets absolute paths; a reader
of the raw dataset joins them to the dataset folder. A corpus build's journal holds the paths the same way, so a
moved build resumes in its new place. Absolute paths (audio outside the output folder, datasets and journals written
before this convention) are kept as they are, and made relative when a dataset is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechgpt.data.io import absolute_from, relative_to

AUDIO_COLUMN = "audio"


def has_path_column(features: Any) -> bool:
    """Whether a datasets Features has an `audio` column of plain strings (a file path, not datasets' Audio)."""
    import datasets

    return AUDIO_COLUMN in features and features[AUDIO_COLUMN] == datasets.Value("string")


def relative_audio_paths(dataset: Any, folder: Path) -> Any:
    """A dataset about to be saved in `folder`, with its audio paths made relative to it."""
    return _convert_column(dataset, relative_to(folder))


def absolute_audio_paths(dataset: Any, folder: Path) -> Any:
    """A dataset loaded from `folder`, with its audio paths resolved. It keeps the stored fingerprint: the paths
    name the same files, and the resume checks keyed on it (units extract's build.json) match wherever the folder
    lies and however an older build stored the paths."""
    return _convert_column(dataset, absolute_from(folder))


def _convert_column(dataset: Any, convert: Callable[[str], str]) -> Any:
    if not has_path_column(dataset.features):
        return dataset
    old = dataset[AUDIO_COLUMN]
    new = [convert(path) for path in old]
    if new == old:
        return dataset
    order, fingerprint = dataset.column_names, dataset._fingerprint
    converted = dataset.remove_columns(AUDIO_COLUMN).add_column(
        AUDIO_COLUMN, new, feature=dataset.features[AUDIO_COLUMN], new_fingerprint=fingerprint
    )
    return converted.select_columns(order, new_fingerprint=fingerprint)
