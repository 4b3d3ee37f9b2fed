"""The training engine every stage uses: DeepSpeed (ZeRO 0-3, CPU/gloo or GPU/bf16), warmup + decay, clipping,
gradient accumulation, packed or padded batches, evaluation per task, exact resume, metrics and export.

A stage hands over a model whose `forward(**batch)` returns an object with `.loss` (a HF causal LM, or any module,
e.g. a frozen LLM fed by a speech adapter), the parameters it wants trained (`requires_grad`), tokenized data and
an export function. For models that take transformers' `logits_to_keep`, the engine computes the loss itself with
the LM head on trained positions only (`logits_at`). Nothing here knows which stage is running.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.training.config import TrainConfig
from speechgpt.training.data import IGNORE, BatchPlan, Tokenized, collate_padded
from speechgpt.training.distributed import Dist, setup_process
from speechgpt.training.metrics import MetricsLog

log = logging.getLogger(__name__)
Exporter = Callable[[Any, Path], None]
LossFn = Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class RunResult:
    out: Path
    final_step: int
    losses: list[float]
    """Training loss of each optimizer step run in this process (for tests and benchmarks)."""


def deepspeed_config(cfg: TrainConfig, bf16: bool) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if cfg.deepspeed_config:
        base = json.loads(Path(cfg.deepspeed_config).read_text())
    zero = {**base.get("zero_optimization", {}), "stage": cfg.zero_stage}
    if cfg.zero_stage == 3:
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    return {
        **base,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.clip_grad,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape

    return factor


def train(
    cfg: TrainConfig,
    model: Any,
    train_examples: Sequence[Tokenized],
    out: Path,
    *,
    pad_id: int,
    eval_sets: Mapping[str, Sequence[Tokenized]] | None = None,
    export: Exporter | None = None,
    dist: Dist | None = None,
) -> RunResult:
    """Train `model` for cfg.max_steps optimizer steps; resume from <out>/checkpoints when asked. Returns losses."""
    import deepspeed

    dist = dist or setup_process(cfg.num_threads)
    seed_everything(cfg.seed + dist.rank)
    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and dist.device != "cpu")
    loss_of = batch_loss(model, cfg.logits_at, autocast=cfg.dtype == "bfloat16-autocast")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, bf16)
    )
    plan = BatchPlan(
        train_examples,
        seq_len=cfg.seq_len,
        micro_batch=cfg.micro_batch,
        packing=cfg.packing,
        seed=cfg.seed,
        pad_id=pad_id,
    )
    checkpoints = out / "checkpoints"
    step = load_latest(engine, checkpoints, dist) if cfg.resume else 0
    metrics = MetricsLog(out, enabled=dist.is_main)
    data_log = MetricsLog(out, enabled=cfg.log_data_ids, name=f"data_rank{dist.rank}.jsonl")
    losses: list[float] = []
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step", disable=not dist.is_main)
    while step < cfg.max_steps:
        started = time.perf_counter()
        loss_sum, tokens, ids = 0.0, 0, []
        for micro in range(cfg.grad_accum):
            index = (step * cfg.grad_accum + micro) * dist.world + dist.rank
            epoch, rows = plan.micro_batch_at(index)
            batch = {k: v.to(engine.device) for k, v in plan.collate(rows).items()}
            loss = loss_of(engine, batch)
            engine.backward(loss)
            engine.step()
            loss_sum += float(loss.detach())
            tokens += plan.real_tokens(rows)
            ids += [train_examples[i].id for row in rows for i in row]
        step += 1
        data_log.write(step=step, ids=ids)
        mean_loss = all_reduce_mean(loss_sum / cfg.grad_accum, dist)
        losses.append(mean_loss)
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            elapsed = time.perf_counter() - started
            metrics.write(
                **_grad_norm(engine),
                step=step,
                epoch=epoch,
                loss=mean_loss,
                lr=scheduler.get_last_lr()[0],
                tokens=int(all_reduce_sum(tokens, dist)),
                seconds=round(elapsed, 4),
                tokens_per_s=round(all_reduce_sum(tokens, dist) / elapsed, 1),
            )
        bar.update()
        bar.set_postfix(loss=f"{mean_loss:.4f}")
        if eval_sets and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.max_steps):
            metrics.write(step=step, **evaluate(engine, eval_sets, cfg, pad_id, dist, loss_of))
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps:
            save_checkpoint(engine, checkpoints, step, cfg.keep_checkpoints, dist)
    bar.close()
    metrics.plot()
    if export is not None:
        export(engine, out)
    return RunResult(out, step, losses)


def batch_loss(model: Any, logits_at: str, autocast: bool = False) -> LossFn:
    """The loss of a batch: the model's own `.loss`, or (logits_at='trained', models that take transformers'
    `logits_to_keep`) the mean cross-entropy of the trained tokens with the LM head run only where they are
    predicted, which is the same loss as transformers' over all positions. `autocast`: the forward pass runs
    under bfloat16 autocast (its backward follows the same casts)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model passes kwargs on
    if logits_at == "all" or "logits_to_keep" not in inspect.signature(base.forward).parameters:
        loss_of: LossFn = model_loss
    else:
        loss_of = trained_positions_loss
    if not autocast:
        return loss_of

    def autocast_loss(engine: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = next(iter(batch.values())).device.type
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return loss_of(engine, batch).float()

    return autocast_loss


def model_loss(engine: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return engine(**batch).loss


def trained_positions_loss(engine: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the trained tokens, with the LM head only where one is predicted."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)  # position t predicts t+1
    keep = targets != IGNORE
    logits = engine(**inputs, logits_to_keep=keep).logits  # (trained tokens, vocab)
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


@torch.no_grad()
def evaluate(
    engine: Any,
    eval_sets: Mapping[str, Sequence[Tokenized]],
    cfg: TrainConfig,
    pad_id: int,
    dist: Dist,
    loss_of: LossFn,
) -> dict[str, float]:
    """Token-weighted loss and perplexity per split and task (each rank takes every world-th example)."""
    engine.eval()
    results: dict[str, float] = {}
    for split, examples in eval_sets.items():
        sums: dict[str, list[float]] = {}
        for example in list(examples)[dist.rank :: dist.world]:
            batch = {k: v.to(engine.device) for k, v in collate_padded([example], pad_id).items()}
            loss = float(loss_of(engine, batch))
            n = example.trained_tokens
            entry = sums.setdefault(example.task, [0.0, 0.0])
            entry[0] += loss * n
            entry[1] += n
        for task in sorted(sums):
            total, count = (all_reduce_sum(v, dist) for v in sums[task])
            results[f"eval/{split}/{task}/loss"] = round(total / count, 5)
            results[f"eval/{split}/{task}/ppl"] = round(math.exp(min(50.0, total / count)), 3)
    engine.train()
    return results


def save_checkpoint(engine: Any, folder: Path, step: int, keep: int, dist: Dist) -> None:
    """A DeepSpeed checkpoint (model, optimizer, scheduler) plus the step and every RNG, for exact resume."""
    tag = f"step{step:07d}"
    # each rank's own generators, written before DeepSpeed moves `latest` to this tag, so `latest` never names
    # a checkpoint whose RNG file a kill cut short
    (folder / tag).mkdir(parents=True, exist_ok=True)
    tmp = folder / tag / f".rng_rank{dist.rank}.pt"
    torch.save(rng_state(), tmp)
    tmp.rename(folder / tag / f"rng_rank{dist.rank}.pt")
    engine.save_checkpoint(str(folder), tag=tag, client_state={"step": step})
    if dist.is_main:
        tags = sorted(p for p in folder.glob("step*") if p.is_dir())
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


def load_latest(engine: Any, folder: Path, dist: Dist) -> int:
    if not (folder / "latest").exists():
        return 0
    path, state = engine.load_checkpoint(str(folder))
    if path is None:
        raise RuntimeError(f"{folder}: could not load the latest checkpoint")
    tag = (folder / "latest").read_text().strip()
    set_rng_state(torch.load(folder / tag / f"rng_rank{dist.rank}.pt", weights_only=False))
    log.info("rank %d resumed from %s at step %d", dist.rank, path, state["step"])
    return int(state["step"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def all_reduce_sum(value: float, dist: Dist) -> float:
    if dist.world == 1:
        return float(value)
    import torch.distributed as tdist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=dist.device)
    tdist.all_reduce(tensor)
    return float(tensor[0])


def all_reduce_mean(value: float, dist: Dist) -> float:
    return all_reduce_sum(value, dist) / dist.world


def _grad_norm(engine: Any) -> dict[str, float]:
    """DeepSpeed's global gradient norm where it computes one (it does not for every ZeRO stage)."""
    norm = engine.get_global_grad_norm()
    return {} if norm is None else {"grad_norm": round(float(norm), 5)}
