"""Multi-node training started the way SLURM and Kubernetes start it: the same `speechgpt train` command on every
machine with `--nnodes 2` and the machine's own `--node-rank`, no ssh. Here the two "machines" are two process groups
on this one, meeting over loopback; they share one output folder, as nodes share a filesystem."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from speechgpt.training.distributed import free_port
from tests.conftest import subprocess_env
from tests.lm_fixtures import K, make_instruct_dataset, make_tiny_lm

SPEECHGPT = [sys.executable, "-m", "speechgpt.cli"]
STEPS = 4


def start_node(command: list[str], node_rank: int, log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [*command, "--node-rank", str(node_rank)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a job step on its own machine
            env=subprocess_env(),
        )


def test_two_nodes_over_loopback_train_under_zero2_on_disjoint_data(tmp_path: Path) -> None:
    make_tiny_lm(tmp_path / "base")
    make_instruct_dataset(tmp_path / "d1", ["unit_lm"], count=40)
    out = tmp_path / "run"
    command = [
        *SPEECHGPT,
        "train",
        "stage1",
        "--nproc",
        "1",
        "--nnodes",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        f"model={tmp_path / 'base'}",
        f"data={tmp_path / 'd1'}",
        f"out={out}",
        f"units_k={K}",
        "train.zero_stage=2",
        f"train.max_steps={STEPS}",
        "train.eval_every=0",
        "train.save_every=0",
        "train.seq_len=256",
        "train.log_data_ids=true",
    ]
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = [start_node(command, rank, log) for rank, log in enumerate(logs)]
    started = time.monotonic()
    try:
        codes = [node.wait(timeout=600) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    tails = "\n".join(f"--- node {r}:\n{log.read_text(errors='replace')[-2500:]}" for r, log in enumerate(logs))
    assert codes == [0, 0], tails
    for rank, log in enumerate(logs):  # each node went through torchrun's multi-node form, not a local group
        assert f"torchrun --nproc_per_node=1 --nnodes=2 --node_rank={rank} --master_addr=127.0.0.1" in log.read_text()
    print(f"two nodes trained {STEPS} steps in {time.monotonic() - started:.1f} s")

    # One job of two ranks, one per node: every step, each rank read examples the other did not.
    ranks = [
        [json.loads(line)["ids"] for line in (out / f"data_rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == STEPS
    for ids_0, ids_1 in zip(*ranks, strict=True):
        assert ids_0 and ids_1 and not set(ids_0) & set(ids_1)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, STEPS + 1))
    assert (out / "final" / "config.json").exists()
