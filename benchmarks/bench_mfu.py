"""Model FLOPs utilization of the training engine: a Llama of ~1.1B parameters (TinyLlama-1.1B's shape with the
speech vocabulary), packed rows, DeepSpeed ZeRO-2, bf16 on GPU.

The data are random token ids in examples of 128-1024 tokens (log-uniform), every token trained, as in stage-1
unit pre-training: the speed of a step does not depend on which ids it reads. MFU counts the model's FLOPs, not the
hardware's (`benchmarks.measure.flops_per_token`):
    FLOPs per token = 6 * (matmul parameters, LM head included, embedding lookup not) + 6 * layers * hidden * n
where n = sum(len^2) / sum(len) over the examples (causal attention within each example; forward and backward).
The peak is the GPU's dense bf16 figure from its datasheet (`--peak-tflops` for GPUs not in the table), or on CPU a
matmul measured here in the training precision. `--preset tiny` runs a 4x256 model, for CPUs and for testing this
command.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.measure import flops_per_token, matmul_peak, useful_tokens_per_second
from speechgpt.training.batches import TokenBatches
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import IGNORE, Tokenized
from speechgpt.training.engine import train
from speechgpt.training.packed_attention import PACKED_SDPA, prepare_attention, use_packed_attention

PRESETS = {  # TinyLlama-1.1B's shape; its 32,000-token vocabulary plus 1000 units and the markers, rounded to 64
    "1b": {"hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
           "intermediate_size": 5632, "vocab_size": 33_024},
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
             "intermediate_size": 1024, "vocab_size": 2_112},
}  # fmt: skip
DENSE_BF16_TFLOPS = {  # datasheet figures without sparsity; the first name that the device's name contains wins
    "H100 PCIe": 756.0,
    "H100": 989.4,  # SXM5 / HBM3
    "H200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
}


def make_examples(count: int, vocab: int, seed: int = 0, lengths: tuple[int, int] = (128, 1024)) -> list[Tokenized]:
    """Random-token unit_lm examples, every token trained, lengths log-uniform in `lengths` (inclusive)."""
    rng = random.Random(seed)
    examples = []
    for i in range(count):
        length = round(math.exp(rng.uniform(math.log(lengths[0]), math.log(lengths[1]))))
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        examples.append(Tokenized(f"ex{i}", "unit_lm", ids, [IGNORE, *ids[1:]]))
    return examples


def peak_flops(dtype: torch.dtype, override: float | None) -> tuple[float, str]:
    if override:
        return override * 1e12, f"{override:g} TFLOP/s (given)"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in DENSE_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{tflops:g} TFLOP/s ({name}, dense bf16 datasheet)"
        raise SystemExit(f"no datasheet peak for {name!r}: pass --peak-tflops")
    measured = matmul_peak(dtype=dtype)
    return measured * 1e9, f"{measured:.1f} GFLOP/s ({dtype} 1024^3 matmul measured here)"


@dataclass
class Mfu:
    preset: str
    params: int
    tokens_per_s: float
    flops_per_token: float
    peak_flops: float
    peak_text: str

    @property
    def mfu(self) -> float:
        return self.tokens_per_s * self.flops_per_token / self.peak_flops


def training_llama(preset: str, seq_len: int, *, packing: bool = True, attention: str | None = None) -> Any:
    """A randomly initialised Llama of the preset's shape (built on the GPU when there is one: faster for 1B), its
    attention prepared for training as the stages prepare it, or set to `attention` (a transformers name, or
    PACKED_SDPA for the per-example SDPA that the stages use on packed rows without flash-attn)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(LlamaConfig(**PRESETS[preset], max_position_embeddings=seq_len))
    prepare_attention(model, packing=packing)
    if attention == PACKED_SDPA:
        use_packed_attention(model)
    elif attention is not None:
        model.set_attn_implementation(attention)
    return model


def engine_tokens_per_second(
    model: Any,
    examples: list[Tokenized],
    *,
    seq_len: int,
    micro_batch: int,
    zero: int,
    steps: int,
    warmup: int = 5,
    packing: bool = True,
) -> float:
    """Useful tokens/s of the engine training `model` for `steps` optimizer steps, the first `warmup` not timed."""
    cfg = TrainConfig(
        max_steps=steps,
        seq_len=seq_len,
        micro_batch=micro_batch,
        packing=packing,
        zero_stage=zero,  # type: ignore[arg-type]
        eval_every=0,
        save_every=0,
        resume=False,
        warmup_steps=0,
    )
    with tempfile.TemporaryDirectory(dir=scratch_folder()) as tmp:
        train(cfg, model, TokenBatches.for_config(cfg, examples, 0), Path(tmp))
        return useful_tokens_per_second(Path(tmp), skip=warmup)


def scratch_folder() -> str | None:
    """/dev/shm when it can hold the checkpoint the engine writes at the end of every run (~15 GB for the 1B preset
    under ZeRO-2, written in seconds there), else the default temporary folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > 32 * 2**30 else None


def measure_mfu(
    preset: str,
    *,
    seq_len: int,
    micro_batch: int,
    zero: int,
    steps: int,
    warmup: int = 5,
    peak_tflops: float | None = None,
    lengths: tuple[int, int] = (128, 1024),
) -> Mfu:
    model = training_llama(preset, seq_len)
    tokens_needed = seq_len * micro_batch * (steps + 1)
    per_example = 400 * lengths[0] // 128  # about the mean length when lengths span 8x, as the default's
    examples = make_examples(tokens_needed // per_example + 8, PRESETS[preset]["vocab_size"], lengths=lengths)
    rate = engine_tokens_per_second(
        model, examples, seq_len=seq_len, micro_batch=micro_batch, zero=zero, steps=steps, warmup=warmup
    )
    peak, peak_text = peak_flops(next(model.parameters()).dtype, peak_tflops)
    params = sum(p.numel() for p in model.parameters())
    return Mfu(preset, params, rate, flops_per_token(model, examples), peak, peak_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="1b" if torch.cuda.is_available() else "tiny")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4, help="packed rows per micro-batch")
    parser.add_argument("--zero", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps; the first 5 are not timed")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = measure_mfu(
        args.preset,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        zero=args.zero,
        steps=args.steps,
        peak_tflops=args.peak_tflops,
    )
    print(
        f"model: Llama {args.preset}, {result.params / 1e9:.3f}B parameters; ZeRO-{args.zero}; rows of {args.seq_len} "
        f"x {args.micro_batch} per micro-batch; {args.steps} steps, first 5 not timed"
    )
    print(
        f"throughput: {result.tokens_per_s:.0f} tokens/s; {result.flops_per_token / 1e9:.2f} GFLOP per token; "
        f"peak {result.peak_text}"
    )
    print(f"MFU {result.mfu:.1%}")


if __name__ == "__main__":
    main()
