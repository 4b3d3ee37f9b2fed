"""Training precision on this machine: the engine in float32 against `dtype: bfloat16-autocast` (float32 weights
and optimizer, matmuls and attention in bfloat16), same model, same packed rows, one run.

Models: Llamas of the given sizes (`--sizes`, layers x width, MLP 4x width, 2,560-token vocabulary like the demo's),
each trained from the same initial weights on packed rows of random-token examples of 128-1024 tokens (the speed of
a step does not depend on which ids it reads). The two precisions alternate over `--rounds`; per size it prints the
median useful tokens/s of each and the median of the per-round ratios as `speedup X.XX`.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path
from typing import Literal

import torch

from benchmarks.bench_mfu import make_examples
from benchmarks.measure import useful_tokens_per_second
from speechgpt.training.batches import TokenBatches
from speechgpt.training.config import TrainConfig
from speechgpt.training.engine import train
from speechgpt.training.packed_attention import prepare_attention

VOCAB = 2560
Precision = Literal["float32", "bfloat16-autocast"]
DTYPES: tuple[Precision, ...] = ("float32", "bfloat16-autocast")


def tokens_per_second(layers: int, width: int, dtype: Precision, steps: int) -> float:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        num_key_value_heads=width // 64,
        intermediate_size=4 * width,
        vocab_size=VOCAB,
        max_position_embeddings=2048,
    )
    model = LlamaForCausalLM(config)
    prepare_attention(model, packing=True)
    cfg = TrainConfig(
        max_steps=steps, seq_len=2048, eval_every=0, save_every=0, resume=False, warmup_steps=0, dtype=dtype
    )
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, model, TokenBatches.for_config(cfg, make_examples(6 * (steps + 1), VOCAB), 0), Path(tmp))
        return useful_tokens_per_second(Path(tmp), skip=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["4x256", "8x512"], help="layers x width")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (first 2 not timed)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    lines = []
    for size in args.sizes:
        layers, width = (int(x) for x in size.split("x"))
        runs: dict[Precision, list[float]] = {dtype: [] for dtype in DTYPES}
        for _ in range(args.rounds):
            for dtype in DTYPES:
                runs[dtype].append(tokens_per_second(layers, width, dtype, args.steps))
        ratios = [b / a for a, b in zip(runs["float32"], runs["bfloat16-autocast"], strict=True)]
        rates = ", ".join(f"{dtype} {statistics.median(runs[dtype]):.0f}" for dtype in DTYPES)
        lines.append(f"{size}: {rates} tokens/s; speedup {statistics.median(ratios):.2f}")
    print(f"engine, packed rows of 2048 tokens, medians of {args.rounds} alternating rounds of {args.steps} steps")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
