"""One CPU process under DeepSpeed: the process group comes up without compiling the shared-memory allreduce op."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import deepspeed.ops
from speechgpt.training.distributed import setup_process
dist = setup_process(num_threads=1)
import deepspeed.comm
assert (dist.rank, dist.world, dist.device) == (0, 1, "cpu"), dist
assert deepspeed.comm.is_initialized()
assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False
"""


def test_a_lone_cpu_process_does_not_compile_the_shared_memory_op(tmp_path: Path) -> None:
    extensions = tmp_path / "torch_extensions"
    env = {k: v for k, v in os.environ.items() if k not in {"RANK", "WORLD_SIZE", "LOCAL_RANK"}}
    env.update(TORCH_EXTENSIONS_DIR=str(extensions), CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not list(extensions.glob("*/deepspeed_shm_comm*")) and not (extensions / "deepspeed_shm_comm").exists()
    assert "deepspeed_shm_comm_op built" not in result.stdout
