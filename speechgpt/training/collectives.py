"""Reductions across the ranks of a run that are no-ops in a single process: averaged metrics, summed counts,
gradient averaging for trainers that do not use DeepSpeed, and barriers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


def _initialized() -> bool:
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def _device() -> torch.device:
    import torch.distributed as tdist

    if tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Each value summed over the ranks, in one collective (float64)."""
    if not _initialized():
        return [float(v) for v in values]
    import torch.distributed as tdist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    tdist.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_mean(values: Sequence[float]) -> list[float]:
    """Each value averaged over the ranks, in one collective."""
    world = world_size()
    return [v / world for v in all_reduce_sum(values)]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable `obj`, in rank order (ranks may hold different keys; no collective count to match)."""
    if not _initialized():
        return [obj]
    import torch.distributed as tdist

    gathered: list[Any] = [None] * tdist.get_world_size()
    tdist.all_gather_object(gathered, obj)
    return gathered


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Data parallelism without DDP's hooks (which do not fit a two-optimizer GAN step): every rank's gradients
    replaced by their mean, in one all_reduce over a flat buffer."""
    if not _initialized():
        return
    import torch.distributed as tdist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = _flatten_dense_tensors(grads)
    tdist.all_reduce(flat)
    flat /= tdist.get_world_size()
    for grad, averaged in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(averaged)


def barrier() -> None:
    if _initialized():
        import torch.distributed as tdist

        tdist.barrier()


def world_size() -> int:
    if not _initialized():
        return 1
    import torch.distributed as tdist

    return tdist.get_world_size()
