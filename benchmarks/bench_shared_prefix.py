"""Shared-prefix packing against whole examples: the engine on the same stage-2 rows, same model, one run.

Data: as `bench_train --lengths sentences` (the demo's kind: one WordNet sentence per clip, 4 TTS voices, MFCC
units, `build stage2` with one turn per example), every example starting with SpeechGPT's system text, as the
demo's do. Model: a 4-layer, 256-wide Llama. Both ways train from the same initial weights through one epoch of the
same rows (`--seq-len` tokens of whole examples each), with per-example causal attention and the LM head on trained
tokens only (the engine's defaults):
- whole: every example whole in its row;
- shared: `train.shared_prefix`: a row holds the system text once and each example its own tokens after it.
Timed after 2 warm-up steps, `--rounds` rounds alternating the ways. The work is counted the same for both: the
tokens of the whole examples trained on per second. The last line is the speedup of shared over whole: the median
over rounds of each round's ratio (the two runs of a round are back to back), with its range.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench_train import build_data, timing_config, tiny_model_and_examples
from speechgpt.training.batches import TokenBatches
from speechgpt.training.data import BatchPlan, Tokenized
from speechgpt.training.engine import train
from speechgpt.training.packed_attention import prepare_attention

WARMUP_STEPS = 2  # not timed: the first steps allocate and warm caches


def whole_tokens_per_second(out: Path, plan: BatchPlan, examples: list[Tokenized]) -> float:
    """Tokens of the whole examples in the epoch's steps after the warm-up, per second of those steps."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(r["seconds"] for r in records if "seconds" in r and r["step"] > WARMUP_STEPS)
    rows = plan.epoch(0)[WARMUP_STEPS:]
    return sum(len(examples[i].input_ids) for batch in rows for row in batch for i in row) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=150, help="sentences in the corpus, each spoken by 4 voices")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, alternating; medians are printed")
    parser.add_argument("--seq-len", type=int, default=2048)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, tokenizer, examples = tiny_model_and_examples(build_data(root, "sentences", args.texts), args.seq_len)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        runs: dict[bool, list[float]] = {False: [], True: []}
        plans = {}
        for round_ in range(args.rounds):
            for shared in (False, True):
                model.load_state_dict(state)
                prepare_attention(model, packing=True, shared_prefix=shared)
                cfg = timing_config(seq_len=args.seq_len, micro_batch=1, shared_prefix=shared, seed=round_)
                batches = TokenBatches.for_config(cfg, examples, tokenizer.pad_token_id)
                plans[shared] = batches.plan
                cfg.max_steps = len(batches.plan.epoch(0))
                out = root / f"{'shared' if shared else 'whole'}{round_}"
                train(cfg, model, batches, out)
                runs[shared].append(whole_tokens_per_second(out, batches.plan, examples))
    prefix = max(plans[True].prefixes or [0])
    lengths = [len(e.input_ids) for e in examples]
    print(
        f"data: {len(examples)} stage-2 examples (ASR and TTS), {min(lengths)}-{max(lengths)} tokens "
        f"(mean {sum(lengths) / len(lengths):.0f}), each starting with the same {prefix} untrained tokens"
    )
    epoch = plans[True].epoch(0)
    print(f"rows: {len(epoch)} of <= {args.seq_len} tokens counted whole, the same in both ways")
    for shared, label in ((False, "whole examples"), (True, "shared prefix")):
        computed = sum(plans[shared].real_tokens(batch) for batch in epoch) / len(epoch)
        speed = statistics.median(runs[shared])
        print(f"{label}: {computed:.0f} tokens computed per row, {speed:.0f} example tokens/s")
    ratios = [b / a for a, b in zip(runs[False], runs[True], strict=True)]
    print(f"per-round speedups {min(ratios):.2f}-{max(ratios):.2f}")
    print(f"speedup {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
