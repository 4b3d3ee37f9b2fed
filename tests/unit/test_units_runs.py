from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechgpt.units.runs import expand_runs, merge_repeats


def test_known_example() -> None:
    assert merge_repeats([5, 5, 5, 2, 2, 7]) == ([5, 2, 7], [3, 2, 1])
    assert expand_runs([5, 2, 7], [3, 2, 1]) == [5, 5, 5, 2, 2, 7]


def test_empty_and_single() -> None:
    assert merge_repeats([]) == ([], [])
    assert expand_runs([], []) == []
    assert merge_repeats([9]) == ([9], [1])


def test_numpy_input_gives_python_ints() -> None:
    units, durations = merge_repeats(np.array([3, 3, 0, 0, 0], dtype=np.uint16))
    assert (units, durations) == ([3, 0], [2, 3])
    assert all(type(value) is int for value in units + durations)


# A small alphabet makes long runs likely, a large one makes runs of 1 likely; sample both.
id_lists = st.one_of(
    st.lists(st.integers(0, 3), max_size=300),
    st.lists(st.integers(0, 999), max_size=300),
)


@settings(max_examples=200, deadline=None)
@given(id_lists)
def test_round_trip(ids: list[int]) -> None:
    units, durations = merge_repeats(ids)
    assert expand_runs(units, durations) == ids
    assert len(units) == len(durations)
    assert all(duration >= 1 for duration in durations)
    assert all(left != right for left, right in itertools.pairwise(units))
    assert sum(durations) == len(ids)


def test_million_frames() -> None:
    rng = np.random.default_rng(0)
    ids = np.repeat(rng.integers(0, 1000, size=200_000), rng.integers(1, 10, size=200_000))
    units, durations = merge_repeats(ids)
    assert np.array_equal(expand_runs(units, durations), ids)


def test_length_mismatch_names_position() -> None:
    with pytest.raises(ValueError, match=r"\(3 vs 2\); position 2"):
        expand_runs([1, 2, 3], [1, 1])


@pytest.mark.parametrize("bad", [0, -2])
def test_short_duration_names_position(bad: int) -> None:
    with pytest.raises(ValueError, match=f"position 1 is {bad}"):
        expand_runs([1, 2, 3], [4, bad, 1])


def test_rejects_non_integers_and_matrices() -> None:
    with pytest.raises(TypeError, match="durations must hold integers"):
        expand_runs([1, 2], [1.5, 2.0])
    with pytest.raises(TypeError, match="ids must hold integers"):
        merge_repeats([0.5, 0.5])
    with pytest.raises(ValueError, match="one-dimensional"):
        merge_repeats(np.zeros((2, 3), dtype=np.int64))
