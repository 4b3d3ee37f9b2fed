"""Run-length helpers for unit sequences: SpeechGPT's "merge repeated units" and its inverse.

SpeechGPT feeds the LM HuBERT k-means ids with consecutive repeats collapsed (``<5><5><5><2>`` -> ``<5><2>``);
the unit vocoder, or a duration model, needs the run lengths back. Durations are counted in encoder frames
(50 Hz for HuBERT, so one frame is 20 ms). Both directions are vectorized with numpy because they run over
millions of frames when a corpus is quantized.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FRAME_RATE_HZ = 50
"""Frames per second of the HuBERT features that unit ids (and thus durations) are counted in."""


def _as_int_vector(values: Sequence[int] | np.ndarray, name: str) -> np.ndarray:
    """Views `values` as a 1-D int64 array; rejects floats so that 2.7 frames never silently becomes 2."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def merge_repeats(ids: Sequence[int] | np.ndarray) -> tuple[list[int], list[int]]:
    """Collapses consecutive repeats: ``[5, 5, 5, 2, 2, 7]`` -> ``([5, 2, 7], [3, 2, 1])``.

    Returns the deduplicated units and how many frames each run lasted, so that
    ``expand_runs(*merge_repeats(ids)) == list(ids)``.
    """
    frames = _as_int_vector(ids, "ids")
    if frames.size == 0:
        return [], []
    run_starts = np.flatnonzero(frames[1:] != frames[:-1]) + 1
    run_starts = np.concatenate((np.zeros(1, dtype=np.int64), run_starts))
    run_lengths = np.diff(np.append(run_starts, frames.size))
    return frames[run_starts].tolist(), run_lengths.tolist()


def expand_runs(units: Sequence[int] | np.ndarray, durations: Sequence[int] | np.ndarray) -> list[int]:
    """Repeats each unit for its duration in frames: the inverse of `merge_repeats`.

    Raises ValueError naming the first bad position, because a silent mismatch would shift every later unit
    and the audio would drift out of sync without any visible error.
    """
    unit_array = _as_int_vector(units, "units")
    duration_array = _as_int_vector(durations, "durations")
    if unit_array.size != duration_array.size:
        position = min(unit_array.size, duration_array.size)
        raise ValueError(
            f"units and durations differ in length ({unit_array.size} vs {duration_array.size}); "
            f"position {position} has no partner"
        )
    too_short = np.flatnonzero(duration_array < 1)
    if too_short.size:
        position = int(too_short[0])
        raise ValueError(
            f"duration at position {position} is {int(duration_array[position])}; every run lasts at least 1 frame"
        )
    return np.repeat(unit_array, duration_array).tolist()
