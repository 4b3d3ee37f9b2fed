"""`make bench-gpu` in its dry mode: the same parts as on a GPU, on CPU with tiny shapes, into one JSON; a part that
fails or runs past its cap is recorded with its error while the others keep their results."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_gpu, gpu_parts

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS: dict[str, list[tuple[str, ...]]] = {  # part: paths into its results that must be positive numbers
    "mfu": [("mfu",), ("tokens_per_s",), ("flops_per_token",), ("peak_flops",), ("params",)],
    "packing": [
        ("ways", "packed", "tokens_per_s"),
        ("ways", "padded", "tokens_per_s"),
        ("ways", "packed_sdpa_mask", "tokens_per_s"),
        ("speedup_packed_over_padded",),
        ("padding_share",),
    ],
    "units": [("x_real_time",), ("audio_s",), ("frames",), ("seconds",)],
    "vocoder": [("steps_per_s",), ("audio_s_per_s",), ("generator_params",), ("discriminator_params",)],
}


def value_at(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        results = results[key]
    return results


def test_dry_run_writes_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "gpu.json"
    with socket.socket() as taken:  # a calling process group's port, still bound: the parts must not inherit it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        group = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(taken.getsockname()[1])}
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_gpu", "--dry", "--out", str(out)],
            cwd=REPO,
            env={**os.environ, **group, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=1200,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "dry" and report["device"] == "cpu" and report["torch"]
    assert list(report["parts"]) == list(MEASUREMENTS)
    for part, paths in MEASUREMENTS.items():
        entry = report["parts"][part]
        assert entry["ok"] and "error" not in entry, entry
        assert 0 < entry["wall_s"] <= entry["cap_s"]
        assert (out.parent / entry["log"]).is_file()
        for path in paths:
            value = value_at(entry["result"], path)
            assert isinstance(value, int | float) and value > 0, (part, path, value)
    assert report["parts"]["packing"]["result"]["ways"]["packed"]["attention"] == "packed_sdpa"
    assert not list(out.parent.glob("*.result.json"))  # the children's hand-over files are gone


def test_a_part_past_its_cap_is_killed_and_recorded_while_the_next_runs(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    code = bench_gpu.run_parts(["vocoder", "units"], dry=True, out=out, caps={"vocoder": 1.0, "units": 600.0})
    report = json.loads(out.read_text())
    assert code == 1
    vocoder = report["parts"]["vocoder"]
    assert not vocoder["ok"] and vocoder["error"] == "timed out after 1 s" and vocoder["wall_s"] < 30
    units = report["parts"]["units"]
    assert units["ok"] and units["result"]["x_real_time"] > 0


def test_a_failing_part_records_its_error_and_what_it_reported_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_done(sizes: gpu_parts.Sizes, report: gpu_parts.Report) -> dict[str, Any]:
        report({"ways": {"packed": {"tokens_per_s": 5.0}}})
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setitem(gpu_parts.PARTS, "half_done", half_done)
    result_path = tmp_path / "part.json"
    assert bench_gpu.run_child("half_done", dry=True, result_path=result_path) == 1
    written = json.loads(result_path.read_text())
    assert written["error"] == "RuntimeError: CUDA out of memory"
    assert written["result"] == {"ways": {"packed": {"tokens_per_s": 5.0}}}
    assert "half_done" in written["traceback"]
