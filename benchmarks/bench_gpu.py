"""Every measurement that only a GPU can give, in one command that fits in 8 minutes on one H100/H200, into one JSON.

Parts (benchmarks/gpu_parts.py), each in its own process under its own time cap, so that a crash, an out-of-memory
or a hang in one is recorded in the JSON with its error and the others still run:
- mfu: model FLOPs utilization of the engine training a ~1.1B Llama (TinyLlama's shape) in bf16 under ZeRO-2,
  packed rows of 4 x 2048 tokens (`make bench-mfu`'s measurement; peak = the GPU's datasheet dense bf16);
- packing: useful tokens/s of the engine (same model, ZeRO-2) on packed rows with the stages' attention (flash-attn's
  varlen kernel when flash_attn is installed, else per-example SDPA; both are timed when it is), packed rows with
  transformers' SDPA and a block-diagonal mask from the position ids, and SpeechGPT-style padded batches;
- units: HuBERT-base (random weights; the speed is the same) layers 1-6 + k-means 1000 through the toolkit's
  UnitExtractor, in x real time, on ~3 h of audio held in GPU memory;
- vocoder: unit HiFi-GAN training steps/s through the vocoder's own training step (vocoder/step.py), with the
  discriminator, 64 segments of 28 frames (unit_hifigan's per-GPU batch), bfloat16 autocast.
The JSON (default out/bench/gpu.json, rewritten after every part) holds the device, the versions, and per part its
wall time, its cap and either its results or its error (and the results it had reported before). Each part's log
is written beside it (gpu.<part>.log). `--dry` runs the same code on CPU with tiny shapes, in under a minute.

On a machine without the project's .venv: `python -m benchmarks.bench_gpu` from the repository root, with the
project's dependencies importable (a missing one fails only the parts that import it).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CAPS_S = {"mfu": 150, "packing": 170, "units": 60, "vocoder": 60}
"""Seconds per part on the GPU, start-up included (imports take ~10 s); measured wall times are far below."""
BUDGET_S = 460
"""All parts together: a part gets at most what is left of this (8 minutes less the set-up around the parts)."""
DRY_CAP_S = 300
"""Per part in --dry: a shared 2-core CPU may take a minute for DeepSpeed's first op build."""
PACKAGES = ("transformers", "deepspeed", "flash-attn", "unit-hifigan", "numpy")
log = logging.getLogger(__name__)
PROCESS_GROUP_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU, tiny shapes: checks the command in seconds")
    parser.add_argument("--out", type=Path, default=Path("out/bench/gpu.json"))
    parser.add_argument("--parts", default=",".join(CAPS_S), help="comma-separated subset of: " + ", ".join(CAPS_S))
    parser.add_argument("--cap", action="append", default=[], metavar="PART=S", help="override a part's cap")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # a child process: run this part only
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.part:
        return run_child(args.part, args.dry, args.result)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(CAPS_S))
    if unknown:
        parser.error(f"unknown parts {unknown}")
    caps = {name: float(DRY_CAP_S if args.dry else cap) for name, cap in CAPS_S.items()}
    for item in args.cap:
        name, _, seconds = item.partition("=")
        caps[name] = float(seconds)
    return run_parts(parts, dry=args.dry, out=args.out, caps=caps)


def run_parts(parts: list[str], *, dry: bool, out: Path, caps: dict[str, float]) -> int:
    """Each part in a child process, one after the other; the JSON is rewritten after each. 0 when all succeed."""
    environment = describe_environment(dry)
    if not dry and environment["device"] == "cpu":
        print("bench-gpu: no GPU is visible; `--dry` checks the command on CPU", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"mode": "dry" if dry else "gpu", **environment, "parts": {}}
    started = time.perf_counter()
    deadline = started + (sum(caps[p] for p in parts) if dry else BUDGET_S)
    for name in parts:
        left = deadline - time.perf_counter()
        if left < 5:
            report["parts"][name] = {"ok": False, "error": "skipped: the time budget was spent", "cap_s": 0}
        else:
            cap = min(caps[name], left)
            report["parts"][name] = run_part(name, dry=dry, cap_s=cap, folder=out.parent, stem=out.stem)
        report["wall_s"] = round(time.perf_counter() - started, 1)
        write_json(out, report)
        entry = report["parts"][name]
        print(f"{name}: {'ok' if entry['ok'] else entry['error'].splitlines()[0]} ({entry.get('wall_s', 0)} s)")
    print(f"wrote {out}")
    return 0 if all(entry["ok"] for entry in report["parts"].values()) else 1


def run_part(name: str, *, dry: bool, cap_s: float, folder: Path, stem: str = "gpu") -> dict[str, Any]:
    """Run one part in a child process, killed at the cap; its results, or its error and what it reported before."""
    folder.mkdir(parents=True, exist_ok=True)
    result_path, log_path = folder / f"{stem}.{name}.result.json", folder / f"{stem}.{name}.log"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--part", name, "--result", str(result_path)]
    # each part is a one-process job of its own: a launcher's rank variables (or a calling process group's port,
    # still bound by that process) must not leak into it
    inherited = {k: v for k, v in os.environ.items() if k not in PROCESS_GROUP_VARIABLES}
    env = {**inherited, "PYTHONUNBUFFERED": "1"}
    if dry:
        command.append("--dry")
        env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU run, also on a GPU machine
    started = time.perf_counter()
    code = run_capped(command, env, log_path, cap_s)
    entry: dict[str, Any] = {"wall_s": round(time.perf_counter() - started, 1), "cap_s": round(cap_s, 1)}
    if result_path.exists():
        entry.update(json.loads(result_path.read_text()))
        result_path.unlink()
    if code is None:
        entry["error"] = f"timed out after {cap_s:.0f} s"  # a "result" beside it is what the part reported by then
    elif code != 0 and "error" not in entry:
        entry["error"] = f"exit code {code}: {log_tail(log_path)}"
    entry["ok"] = "error" not in entry
    entry["log"] = log_path.name
    return entry


def run_capped(command: list[str], env: dict[str, str], log_path: Path, cap_s: float) -> int | None:
    """The command's exit code, or None when it ran past `cap_s` and was killed with its whole process group."""
    with log_path.open("w") as log_file:
        child = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return child.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return None


def run_child(name: str, dry: bool, result_path: Path) -> int:
    """The part itself: results (or the error, with what was reported before it) into `result_path`."""
    from benchmarks import gpu_parts

    if dry:
        import torch

        torch.set_num_threads(1)
    reported: dict[str, Any] = {}

    def report(results: dict[str, Any]) -> None:
        reported.update(result=json.loads(json.dumps(results)))
        write_json(result_path, reported)

    try:
        report(gpu_parts.PARTS[name](gpu_parts.DRY if dry else gpu_parts.REAL, report))
    except (Exception, SystemExit) as err:
        log.exception("part %s failed", name)
        error = f"{type(err).__name__}: {err}"
        write_json(result_path, {**reported, "error": error, "traceback": traceback.format_exc()[-3000:]})
        return 1
    return 0


def describe_environment(dry: bool) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available() and not dry
    info: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu"}
    if cuda:
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    info |= {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    info["packages"] = {name: package_version(name) for name in PACKAGES}
    return info


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def log_tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all: a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
