"""The training engine every stage uses: DeepSpeed (ZeRO 0-3, CPU/gloo or GPU/bf16), warmup + decay, clipping,
gradient accumulation, evaluation per group, exact resume, metrics and export.

A stage hands over a model (any module; a HF causal LM, or a frozen LLM fed by speech modules) whose parameters to
train have `requires_grad`, a batch source (`speechgpt.training.batches`: token rows, audio features, ...), a loss
function that returns named parts (`speechgpt.training.losses`) and an export function. Nothing here knows which
stage is running or what a batch holds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from speechgpt.training.batches import BatchSource, MicroBatch
from speechgpt.training.checkpoint import (
    load_deepspeed_shards_safely,
    load_rank_state,
    prune,
    save_rank_state,
    seed_everything,
    step_folder,
)
from speechgpt.training.collectives import all_gather_objects, all_reduce_mean, all_reduce_sum
from speechgpt.training.config import TrainConfig
from speechgpt.training.distributed import Dist, setup_process
from speechgpt.training.losses import LossFn, token_loss, under_autocast
from speechgpt.training.metrics import MetricsLog
from speechgpt.training.run_signature import RunSignature, prepare_checkpoints
from speechgpt.training.schedule import lr_lambda

log = logging.getLogger(__name__)
Exporter = Callable[[Any, Path], None]
LRGroups = Sequence[tuple[Sequence[torch.nn.Parameter], float]]
"""Parameters that train at a peak learning rate of their own (on the same schedule), each list with its rate."""


@dataclass
class RunResult:
    out: Path
    final_step: int
    losses: list[float]
    """Training loss of each optimizer step run in this process (for tests and benchmarks)."""


@dataclass
class StepRecord:
    """One optimizer step, averaged over its micro-batches and the ranks."""

    parts: dict[str, float]
    count: int
    epoch: int
    ids: list[str]
    seconds: float


def train(
    cfg: TrainConfig,
    model: Any,
    batches: BatchSource,
    out: Path,
    *,
    loss: LossFn | None = None,
    export: Exporter | None = None,
    dist: Dist | None = None,
    lr_groups: LRGroups = (),
    settings: Any = None,
) -> RunResult:
    """Train `model` for cfg.max_steps optimizer steps on `batches`; resume from <out>/checkpoints when asked and
    they come from a run of the same settings, data and starting weights (speechgpt.training.run_signature).
    `settings` is the stage's whole config (default: `cfg`). `loss` defaults to the LM loss of token batches
    (`token_loss`); parameters in `lr_groups` peak at their own rate, the others at cfg.lr."""
    dist = dist or setup_process(cfg.num_threads)
    seed_everything(cfg.seed + dist.rank)
    loss_of = loss or token_loss(model, cfg.logits_at)
    if cfg.dtype == "bfloat16-autocast":
        loss_of = under_autocast(loss_of)
    checkpoints = out / "checkpoints"
    signature = RunSignature.of(cfg if settings is None else settings, data=batches.fingerprint(), model=model)
    prepare_checkpoints(
        checkpoints,
        signature,
        resume=cfg.resume,
        changed_run=cfg.changed_run,
        max_steps=cfg.max_steps,
        is_main=dist.is_main,
    )
    engine, scheduler = build_engine(cfg, model, dist, lr_groups)
    step = load_latest(engine, checkpoints, dist) if cfg.resume else 0
    metrics = MetricsLog(out, enabled=dist.is_main)
    data_log = MetricsLog(out, enabled=cfg.log_data_ids, name=f"data_rank{dist.rank}.jsonl")
    losses: list[float] = []
    with tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step", disable=not dist.is_main) as bar:
        while step < cfg.max_steps:
            record = train_step(engine, batches, loss_of, cfg, dist, step)
            step += 1
            data_log.write(step=step, ids=record.ids)
            losses.append(record.parts["loss"])
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                metrics.write(**step_metrics(engine, batches, record, step, scheduler.get_last_lr()))
            bar.update()
            bar.set_postfix(loss=f"{record.parts['loss']:.4f}")
            if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                evals = evaluate(engine, batches, loss_of, dist)
                if evals:
                    metrics.write(step=step, **evals)
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps:
                save_checkpoint(engine, checkpoints, step, cfg.keep_checkpoints, dist)
    metrics.plot()
    metrics.write_run_info(model, step)
    if export is not None:
        export(engine, out)
    return RunResult(out, step, losses)


def build_engine(cfg: TrainConfig, model: Any, dist: Dist, lr_groups: LRGroups = ()) -> tuple[Any, Any]:
    """AdamW over the trainable parameters (only those: a frozen LLM gets no optimizer state), the LR schedule,
    and the DeepSpeed engine around them."""
    import deepspeed

    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and dist.device != "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    groups = optimizer_groups(params, cfg.lr, lr_groups)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    schedule = lr_lambda(total=cfg.max_steps, warmup=cfg.warmup_steps, shape=cfg.schedule, min_ratio=cfg.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, bf16)
    )
    return engine, scheduler


def optimizer_groups(params: list[torch.nn.Parameter], lr: float, lr_groups: LRGroups) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: every trainable parameter at `lr`, except those `lr_groups` names, each at
    its own rate. Naming a parameter that does not train is an error (it would silently train nothing)."""
    trainable = {id(p) for p in params}
    own: dict[int, float] = {}
    for group, rate in lr_groups:
        if rate <= 0:
            raise ValueError(f"a learning rate must be > 0, got {rate}")
        for p in group:
            if id(p) not in trainable:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} has a learning rate but does not train")
            own[id(p)] = rate
    groups = [{"params": [p for p in params if id(p) not in own], "lr": lr}]
    for rate in sorted(set(own.values())):
        groups.append({"params": [p for p in params if own.get(id(p)) == rate], "lr": rate})
    return [group for group in groups if group["params"]]


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


def train_step(
    engine: Any, batches: BatchSource, loss_of: LossFn, cfg: TrainConfig, dist: Dist, step: int
) -> StepRecord:
    """The grad_accum micro-batches of optimizer step `step` (0-based) on this rank; DeepSpeed steps the optimizer
    at the accumulation boundary."""
    started = time.perf_counter()
    sums: dict[str, float] = {}
    count, ids, epoch = 0, [], 0
    for micro in range(cfg.grad_accum):
        batch: MicroBatch = batches.micro_batch((step * cfg.grad_accum + micro) * dist.world + dist.rank)
        parts = loss_of(engine, to_device(batch.tensors, engine.device))
        engine.backward(reaching_every_trained_weight(engine, parts["loss"]))
        engine.step()
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        count, epoch = count + batch.count, batch.epoch
        ids += batch.ids
    names = sorted(sums, key=lambda name: name != "loss")  # the same order on every rank: "loss" first
    means = all_reduce_mean([sums[name] / cfg.grad_accum for name in names])
    total_count = int(all_reduce_sum([count])[0])
    return StepRecord(dict(zip(names, means, strict=True)), total_count, epoch, ids, time.perf_counter() - started)


def reaching_every_trained_weight(engine: Any, loss: torch.Tensor) -> torch.Tensor:
    """`loss`, or when it reaches no trained weight (a micro-batch that uses none of them, e.g. clips in which a word
    adapter's CTC head found no word), `loss` plus 0 x each trained weight: a zero gradient, not a failed backward."""
    if loss.requires_grad:
        return loss
    module = getattr(engine, "module", engine)
    return loss + sum(p.sum() * 0.0 for p in module.parameters() if p.requires_grad)


def step_metrics(engine: Any, batches: BatchSource, record: StepRecord, step: int, lrs: list[float]) -> dict[str, Any]:
    """The metrics.jsonl line of a step: total loss, each named part as `loss/<part>`, throughput, the first optimizer
    group's LR as `lr` (every group's as `lr_groups` where there are several: `optimizer_groups`' order), grad norm."""
    name = batches.count_name
    fields: dict[str, Any] = {"step": step, "epoch": record.epoch, "loss": record.parts["loss"], "lr": lrs[0]}
    if len(lrs) > 1:
        fields["lr_groups"] = list(lrs)
    fields |= {f"loss/{part}": value for part, value in record.parts.items() if part != "loss"}
    fields |= {name: record.count, "seconds": round(record.seconds, 4)}
    fields[f"{name}_per_s"] = round(record.count / record.seconds, 1)
    return {**_grad_norm(engine), **fields}


def to_device(tensors: dict[str, torch.Tensor], device: Any) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}


@torch.no_grad()
def evaluate(engine: Any, batches: BatchSource, loss_of: LossFn, dist: Dist) -> dict[str, float]:
    """Weighted mean of every loss part per split and group (each rank evaluates its share), and the perplexity
    of the total where the source's loss is a per-token cross-entropy."""
    engine.eval()
    sums: dict[tuple[str, str, str], list[float]] = {}
    for split, stream in batches.eval_batches(dist.rank, dist.world).items():
        for batch in stream:
            parts = loss_of(engine, to_device(batch.tensors, engine.device))
            for name, value in parts.items():
                entry = sums.setdefault((split, batch.group, name), [0.0, 0.0])
                entry[0] += float(value) * batch.weight
                entry[1] += batch.weight
    engine.train()
    merged: dict[tuple[str, str, str], list[float]] = {}
    for rank_sums in all_gather_objects(sums):
        for key, (total, weight) in rank_sums.items():
            entry = merged.setdefault(key, [0.0, 0.0])
            entry[0] += total
            entry[1] += weight
    results: dict[str, float] = {}
    for split, group, name in sorted(merged):
        total, weight = merged[(split, group, name)]
        results[f"eval/{split}/{group}/{name}"] = round(total / weight, 5)
        if name == "loss" and batches.perplexity:
            results[f"eval/{split}/{group}/ppl"] = round(math.exp(min(50.0, total / weight)), 3)
    return results


def save_checkpoint(engine: Any, folder: Path, step: int, keep: int, dist: Dist) -> None:
    """A DeepSpeed checkpoint (model, optimizer, scheduler) plus the step and every RNG, for exact resume.
    Each rank's RNG file is written before DeepSpeed moves `latest` to this step, so `latest` never names a
    checkpoint whose RNG file a kill cut short."""
    tag = step_folder(folder, step)
    save_rank_state(tag, dist.rank)
    engine.save_checkpoint(str(folder), tag=tag.name, client_state={"step": step})
    if dist.is_main:
        prune(folder, keep)


def load_latest(engine: Any, folder: Path, dist: Dist) -> int:
    """Resume from the step `latest` names; 0 when the run has no checkpoint yet. Every file loads with
    `weights_only=True`."""
    if not (folder / "latest").exists():
        return 0
    load_deepspeed_shards_safely(engine)
    path, state = engine.load_checkpoint(str(folder))
    if path is None:
        raise RuntimeError(f"{folder}: could not load the latest checkpoint")
    tag = folder / (folder / "latest").read_text().strip()
    load_rank_state(tag, dist.rank)
    log.info("rank %d resumed from %s at step %d", dist.rank, path, state["step"])
    return int(state["step"])


def _grad_norm(engine: Any) -> dict[str, float]:
    """DeepSpeed's global gradient norm where it computes one (it does not for every ZeRO stage)."""
    norm = engine.get_global_grad_norm()
    return {} if norm is None else {"grad_norm": round(float(norm), 5)}
