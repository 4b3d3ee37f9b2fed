"""Process setup for DeepSpeed on CPU (gloo) or GPU (nccl); `speechgpt.training.launch` starts several processes."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
REPO_CACHE = Path(__file__).resolve().parents[2] / ".cache"


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process(num_threads: int) -> Dist:
    """Make this process a DeepSpeed rank: environment for one process when not launched by torchrun/deepspeed,
    the CPU accelerator when there is no GPU, and the process group."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO_CACHE / "torch_extensions"))
    _single_process_environment()
    import deepspeed

    if not cuda and os.environ["WORLD_SIZE"] == "1":
        skip_shared_memory_allreduce()
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    return _this_rank(cuda, num_threads)


def skip_shared_memory_allreduce() -> None:
    """Tell DeepSpeed its shared-memory allreduce op (`deepspeed_shm_comm`) is unavailable, so `init_distributed`
    does not compile it: a lone CPU process has no peer to reduce with, and the compile took 23 s of every fresh
    clone's first stage (the op is cached in `TORCH_EXTENSIONS_DIR`, under the repository). Ranks of a multi-process
    CPU run keep it."""
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def setup_torch_process(num_threads: int, device: str = "auto") -> Dist:
    """The same for trainers that run without DeepSpeed (the vocoder): a torch process group (gloo on CPU, nccl on
    GPU) only when launched as several processes. `device`: auto (this rank's GPU when there is one), cpu, cuda."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no GPU is visible")
    cuda = torch.cuda.is_available() and device != "cpu"
    _single_process_environment()
    if int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if cuda else "gloo")
    return _this_rank(cuda, num_threads)


def _single_process_environment() -> None:
    """A plain `python` start (no torchrun/deepspeed launcher): the environment of a one-process group."""
    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
        )


def _this_rank(cuda: bool, num_threads: int) -> Dist:
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(num_threads)
    return Dist(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank, f"cuda:{local_rank}" if cuda else "cpu"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
