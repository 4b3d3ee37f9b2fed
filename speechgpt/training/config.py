"""Settings of the one training engine, shared by every stage (stages add which model, which data, which mask)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(kw_only=True)
class TrainConfig:
    max_steps: int = 100
    """Optimizer steps to train for (each step = grad_accum micro-batches on every rank)."""
    seq_len: int = 1024
    """Tokens per packed row (packed mode) or the longest example allowed (padded mode); longer examples are
    skipped and counted, never truncated."""
    micro_batch: int = 1
    """Packed rows (packed mode) or examples (padded mode) per micro-batch per rank."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    packing: bool = True
    """Pack several examples per row with per-example isolation (positions restart, no attention across
    examples); false: SpeechGPT-style batches padded to their longest example."""
    shared_prefix: bool = False
    """Packed mode: the untrained tokens that most examples begin with (a system prompt) are held once per row,
    each example attending to them and to itself: the same rows, losses and gradients with the prefix computed
    once per row (SpeechGPT's 83-token system text is over half of a short example); seq_len still counts the
    examples whole. It uses the per-example SDPA attention, also on GPU, where flash-attention's varlen kernel
    cannot read a shared prefix."""
    logits_at: Literal["trained", "all"] = "trained"
    """Where the LM head and the loss run. trained: only at positions whose next token is trained, through
    transformers' `logits_to_keep` (the same loss and gradients with less compute and memory, most for large
    vocabularies and for ASR rows, whose units are not trained); models without `logits_to_keep` use their own
    `.loss`. all: every position, as transformers' loss and SpeechGPT's trainer do."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    warmup_steps: int = 10
    """Linear warmup from 0 to the peak."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    clip_grad: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    zero_stage: Literal[0, 1, 2, 3] = 0
    """DeepSpeed ZeRO stage."""
    deepspeed_config: str | None = None
    """A DeepSpeed JSON (e.g. configs/deepspeed/zero3_offload.json) merged under the settings above."""
    dtype: Literal["auto", "float32", "bfloat16", "bfloat16-autocast"] = "auto"
    """Training precision; auto: bfloat16 on GPU, float32 on CPU. bfloat16: DeepSpeed's bf16 mode (bf16 weights and
    gradients, float32 master weights in the optimizer). bfloat16-autocast: float32 weights, gradients and optimizer,
    with matmuls and attention in bfloat16 under torch.autocast; on CPUs with bf16 matrix units (AMX), 1.3-1.7x
    faster than float32 for small Llamas (`make bench-precision`, docs/benchmarks.md)."""
    seed: int = 0
    """Seed of data order, dropout and initialisation."""
    eval_every: int = 50
    """Evaluate (loss and perplexity per task) every N steps and at the end; 0 disables."""
    eval_splits: list[str] = field(default_factory=lambda: ["dev"])
    """Dataset splits evaluated."""
    max_eval_examples: int = 200
    """Examples per eval split."""
    save_every: int = 50
    """Write a resumable DeepSpeed checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept (older ones are deleted)."""
    resume: bool = True
    """Continue from the latest checkpoint in <out>/checkpoints when there is one and it comes from a run of the same
    settings, training data and starting weights (<out>/checkpoints/signature.json); false: delete any checkpoints
    there and start from step 0."""
    changed_run: Literal["error", "restart"] = "error"
    """What resume does with checkpoints of a run whose settings, data or starting weights differ: 'error' stops and
    says what changed; 'restart' deletes them and trains from step 0 (the demo, which owns its outputs)."""
    log_every: int = 1
    """Write a metrics.jsonl line every N steps."""
    num_threads: int = 1
    """torch threads per process on CPU."""
    log_data_ids: bool = False
    """Write <out>/data_rank<R>.jsonl: the example ids each rank trained on at each step (audits data order)."""

    def __post_init__(self) -> None:
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        for name in ("max_steps", "seq_len", "micro_batch", "grad_accum", "num_threads", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if self.warmup_steps < 0 or self.eval_every < 0 or self.save_every < 0:
            raise ValueError("warmup_steps, eval_every and save_every must be >= 0")


@dataclass(kw_only=True)
class LoraSettings:
    r: int = 8
    """LoRA rank (SpeechGPT stage 3: 8)."""
    alpha: int = 16
    """LoRA alpha (SpeechGPT stage 3: 16)."""
    dropout: float = 0.05
    """LoRA dropout."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Linear layers that get adapters (SpeechGPT stage 3: q and v projections)."""
    train_speech_embeddings: bool = True
    """Keep the unit and marker embedding rows trainable (SpeechGPT froze them, a fault we fix)."""
    merge: bool = True
    """Also export the LoRA weights merged into the base model (<out>/final); the adapter is always saved."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError("LoRA r and alpha must be >= 1")
