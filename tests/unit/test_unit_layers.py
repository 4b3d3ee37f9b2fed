"""benchmarks/unit_layers.py: its sentence pairs, and a run on a real two-voice TTS corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.unit_layers import main, voice_pairs
from speechgpt.units.runs import merge_repeats


def test_voice_pairs_pair_two_voices_on_one_sentence_and_on_two() -> None:
    rows = {
        "text": ["a", "a", "b", "b", "c", "c", "d"],
        "speaker": ["x", "x", "x", "y", "y", "x", "y"],
    }
    same, other = voice_pairs(rows, count=10, seed=0)
    # "a" is said by one voice only (twice), "d" once: neither makes a pair
    assert sorted((rows["text"][i], rows["text"][j]) for i, j in same) == [("b", "b"), ("c", "c")]
    for i, j in same + other:
        assert rows["speaker"][i] != rows["speaker"][j]
    for i, j in other:
        assert rows["text"][i] != rows["text"][j]
    assert len(voice_pairs(rows, count=2, seed=0)[0]) == 2
    with pytest.raises(ValueError, match="needs two sentences"):
        voice_pairs(rows, count=1, seed=0)


def test_the_voice_ratio_merges_repeats_only() -> None:
    assert merge_repeats(np.array([3, 3, 1, 1, 1, 3, 2]))[0] == [3, 1, 3, 2]
    assert merge_repeats(np.array([], dtype=int))[0] == []


@pytest.mark.usefixtures("_one_torch_thread")
def test_a_run_measures_each_layer(tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--corpus", str(tiny_corpus), "--voice-corpus", str(tiny_corpus), "--answer-voice", "flite:slt"]
    args += ["--heldout-fraction", "0.3", "--layers", "3", "4", "--k", "8", "--fit-clips", "8", "--pairs", "4"]
    args += ["--voice-train-clips", "8", "--clips", "3", "--threads", "1", "--out", str(tmp_path)]
    main(args)
    results = json.loads((tmp_path / "unit_layers.json").read_text())
    assert [r["layer"] for r in results] == [3, 4]
    assert "@L3[float32,clip]" in results[0]["encoder"] and "@L4[int8,clip]" in results[1]["encoder"]
    for r in results:
        assert r["voice_ratio"] > 0 and 0 <= r["same_sentence"] <= 1 and 0 < r["other_sentence"] <= 1
        assert r["lookup_wer"] >= 0 and r["merged_units_per_s"] > 0 and len(r["examples"]) == 3
    table = capsys.readouterr().out.splitlines()
    assert table[-3].split()[:2] == ["layer", "voice"] and table[-2].split()[0] == "3"
