"""Starting a command in several processes, the three ways a training job starts:

- one machine: torchrun starts `nproc` processes;
- several machines, torchrun on each (how SLURM and Kubernetes jobs start): the same command runs on every machine
  with `nnodes`, its own `node_rank` and node 0's `master_addr`; nothing is reached over ssh;
- several machines from one: DeepSpeed's launcher reads a hostfile and starts every rank over ssh (pdsh), so it needs
  passwordless ssh to every host and this environment at the same path on each.

Both launchers are taken from the folder of the running Python (the virtual environment's bin/), never from PATH,
so the ranks run the same environment as the command that started them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from speechgpt.training.distributed import free_port

log = logging.getLogger(__name__)
DEFAULT_MASTER_PORT = 29500
"""torchrun's own default; with several nodes the port must be the same on every machine, so it cannot be random."""


@dataclass(frozen=True, kw_only=True)
class LaunchConfig:
    nproc: int = 1
    """Processes per machine (one per GPU; on CPU, processes sharing the machine's cores)."""
    nnodes: int = 1
    """Machines in the job; each runs the same command with its own node_rank (torchrun, no ssh)."""
    node_rank: int = 0
    """This machine's index, 0 .. nnodes - 1; node 0 hosts the rendezvous at master_addr:master_port."""
    master_addr: str | None = None
    """Address of node 0 that every machine reaches; required when nnodes > 1."""
    master_port: int | None = None
    """Rendezvous port on node 0; null: 29500 with several nodes, a free port on one machine."""
    hostfile: str | None = None
    """DeepSpeed hostfile ('host slots=N' per line): DeepSpeed's launcher starts every rank over ssh."""

    def __post_init__(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ValueError(f"nproc and nnodes must be at least 1, got nproc={self.nproc} nnodes={self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank must be in 0..{self.nnodes - 1} (nnodes={self.nnodes}), got {self.node_rank}")
        if self.nnodes > 1 and not self.master_addr:
            raise ValueError("nnodes > 1 needs master_addr: the address of node 0, the same on every machine")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            raise ValueError(f"master_port must be in 1..65535, got {self.master_port}")
        if self.hostfile is not None and self.nnodes > 1:
            raise ValueError(
                "give either a hostfile (DeepSpeed's launcher starts every machine over ssh) or nnodes/node_rank "
                "(the same command run on every machine), not both"
            )

    @property
    def is_distributed(self) -> bool:
        """More than this one process: the command must be started again under a launcher."""
        return self.nproc > 1 or self.nnodes > 1 or self.hostfile is not None


def launcher_path(name: str) -> Path:
    """`torchrun` or `deepspeed` from the running Python's bin folder; FileNotFoundError naming the fix if absent."""
    path = Path(sys.executable).with_name(name)  # not resolved: a venv's python is a link out of the venv
    if not path.is_file():
        package = "torch" if name == "torchrun" else name
        raise FileNotFoundError(
            f"{name} is not installed beside {sys.executable} (looked for {path}); "
            f"install {package} into this environment: {sys.executable} -m pip install {package}"
        )
    return path


def launch_command(argv: list[str], launch: LaunchConfig) -> list[str]:
    """The launcher command line that runs `speechgpt <argv>` as `launch` says."""
    if launch.hostfile is not None:
        command = [str(launcher_path("deepspeed")), "--hostfile", launch.hostfile, "--num_gpus", str(launch.nproc)]
        if launch.master_addr:
            command += ["--master_addr", launch.master_addr]
        if launch.master_port is not None:
            command += ["--master_port", str(launch.master_port)]
        return [*command, "--module", "speechgpt.cli", *argv]
    command = [str(launcher_path("torchrun")), f"--nproc_per_node={launch.nproc}"]
    if launch.nnodes > 1:
        port = launch.master_port or DEFAULT_MASTER_PORT
        command += [
            f"--nnodes={launch.nnodes}",
            f"--node_rank={launch.node_rank}",
            f"--master_addr={launch.master_addr}",
            f"--master_port={port}",
        ]
    else:
        command += [f"--master_addr={launch.master_addr}"] if launch.master_addr else []
        command.append(f"--master_port={launch.master_port or free_port()}")
    return [*command, "-m", "speechgpt.cli", *argv]


def relaunch(argv: list[str], launch: LaunchConfig) -> int:
    """Run `speechgpt <argv>` under torchrun or DeepSpeed's launcher; returns the launcher's exit code."""
    command = launch_command(argv, launch)
    log.info("launching: %s", " ".join(command))
    return subprocess.call(command)
