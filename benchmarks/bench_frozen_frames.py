"""A frozen encoder run once per clip against at every step: frozen-asr's training steps, same model and batches.

Model: the demo's frozen-asr shape: a 4 x 256 Llama (frozen), the speech encoder of frozen-ctc (4 x 192, 2x
subsampling of 384-d frames at 50 Hz, as the units' Whisper layer gives them; frozen) and the word adapter (trained,
word-token loss x 5). Data: `--clips` random feature clips of 1.5-3 s with 6-token transcripts (random CTC head:
words wherever its best path puts spaces). Both ways train from the same initial weights on the same clips, in
micro-batches of 16 (bucketed by feature frames or by encoder frames, so grouped a little differently):
- every step: the encoder runs in each step's forward pass (as frozen-asr did before the frames were cached);
- once: `encoded_examples` computes each clip's frames before training (timed apart), the steps read them.
Timed after 2 warm-up steps, `--rounds` rounds alternating the ways. The last lines are the encoding time and the
speedup of the steps: the median over rounds of each round's ratio of step seconds, with its range.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.bench_train import timing_config
from speechgpt.model.frozen_lm import FrozenSpeechLM, build_frozen_speech_lm
from speechgpt.model.speech_encoder import build_speech_encoder
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.training.encoded_examples import encoded_examples
from speechgpt.training.engine import train
from speechgpt.training.frozen_stage import set_trainable, with_feature_dtype
from speechgpt.training.speech_batches import SpeechBatches, SpeechExample

WARMUP_STEPS = 2  # not timed: the first steps allocate and warm caches
FEATURE_DIM, FRAME_RATE = 384, 50


def build_model() -> FrozenSpeechLM:
    tokenizer = train_tokenizer([f"what is {a} plus {b}" for a in range(20) for b in range(20)], vocab_size=300)
    lm = build_tiny_lm("llama", tokenizer, hidden_size=256, num_layers=4, num_heads=4, seed=0)
    encoder = build_speech_encoder(
        input_dim=FEATURE_DIM, frame_rate=FRAME_RATE, dim=192, num_layers=4, num_heads=4, subsampling=2,
        conv_channels=64, left_chunks=8, dropout=0.1, ctc_vocab_size=30,
    )  # fmt: skip
    lm.requires_grad_(False)
    model = build_frozen_speech_lm(lm, encoder, adapter_kernel=1, adapter_stride=1, num_prompts=0, word_space=1)
    set_trainable(model, ["adapter"])
    return model


def clips(count: int, vocab: int) -> list[SpeechExample]:
    g = torch.Generator().manual_seed(0)
    examples = []
    for i in range(count):
        frames = int(torch.randint(75, 150, (1,), generator=g))
        text = torch.randint(3, vocab, (6,), generator=g).tolist()
        targets = {"text_ids": text, "labels": text, "word_ids": text}
        examples.append(SpeechExample(f"clip{i}", "asr", torch.randn(frames, FEATURE_DIM, generator=g), targets))
    return examples


def step_seconds(out: Path) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return sum(r["seconds"] for r in records if "seconds" in r and r["step"] > WARMUP_STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, alternating; medians are printed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = build_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    raw = clips(args.clips, model.lm.get_input_embeddings().num_embeddings)
    started = time.perf_counter()
    cached = encoded_examples(model, {"train": raw}, show_progress=False)["train"]
    encoding = time.perf_counter() - started
    seconds: dict[str, list[float]] = {"every step": [], "once": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for way, examples in (("every step", raw), ("once", cached)):
                model.load_state_dict(state)
                out = Path(tmp) / f"{way.replace(' ', '_')}-{round_}"
                cfg = timing_config(max_steps=args.steps, micro_batch=16, lr=2e-3, seed=round_)
                batches = SpeechBatches(examples, micro_batch=16, seed=round_, perplexity=True, weight_key="labels")
                train(cfg, model, batches, out, loss=lambda e, b: e(with_feature_dtype(e, b), "asr", align_weight=5.0))
                seconds[way].append(step_seconds(out))
    timed = args.steps - WARMUP_STEPS
    for way, runs in seconds.items():
        print(f"{way:>10}: {1000 * statistics.median(runs) / timed:.1f} ms a step (median of {len(runs)} runs)")
    ratios = [a / b for a, b in zip(seconds["every step"], seconds["once"], strict=True)]
    print(f"encoding {len(raw)} clips once: {encoding:.2f} s ({1000 * encoding / len(raw):.1f} ms a clip)")
    print(f"speedup {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
