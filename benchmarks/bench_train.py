"""Training throughput: packed rows against SpeechGPT-style padded batches, same stage-2 data, same model, one run.

Data: a TTS corpus (WordNet sentences, several voices) -> MFCC units (k=100) -> `build stage2` with one turn per
example, so the engine does all the packing. Model: a 4-layer, 256-wide Llama with a tokenizer trained on the data.
Two runs of the same engine, steps and initial weights:
- packed: rows of `--seq-len` tokens, examples isolated by per-example causal attention (the default);
- padded, SpeechGPT-style: `--padded-batch` examples per micro-batch, right-padded to the longest rounded up to 8
  (SpeechGPT's cm_sft.py: DataCollatorForSeq2Seq, 6 per device), and transformers' SDPA attention reading the
  padding mask, as SpeechGPT's trainer runs the model (the engine's `packing: false`).
Prints useful (non-pad) tokens/s of each and, last, the speedup of packed over padded.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from data_builders import build_stage2, synth_corpus
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.text.template import SPEECHGPT_SYSTEM
from speechgpt.text.units import UnitFormat
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import tokenize_rows
from speechgpt.training.engine import train
from speechgpt.training.lm_stage import prepare_attention
from speechgpt.units import extract, fit
from speechgpt.units.encoders import EncoderConfig

VOICES = ["flite:slt", "flite:rms", "festival:kal_diphone", "espeak-ng:en-us+m3"]


def build_data(root: Path, sentences: int, max_words: int) -> Path:
    corpus = synth_corpus.run(
        synth_corpus.Config(
            out=root / "corpus", voices=VOICES, heldout_voices=[], max_sentences=sentences, max_words=max_words
        )
    )
    kmeans = fit.run(fit.Config(corpus=corpus, out=root / "km", encoder=EncoderConfig(kind="mfcc"), k=100))
    units = extract.run(extract.Config(corpus=corpus, kmeans=kmeans, out=root / "units"))
    # one turn per example, as SpeechInstruct's cross-modal records: all packing is left to the engine
    return build_stage2.run(build_stage2.Config(units=units, out=root / "stage2", turns_per_example=1, k=100))


def useful_tokens_per_second(out: Path, skip: int) -> float:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "tokens" in r and r["step"] > skip]
    return sum(r["tokens"] for r in timed) / sum(r["seconds"] for r in timed)


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=120)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--padded-batch", type=int, default=6, help="SpeechGPT stage 2: 6 per device")
    parser.add_argument("--max-words", type=int, default=16, help="longest corpus sentence (length spread)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = load_instruct_dataset(build_data(root, args.sentences, args.max_words))["train"]
        tokenizer = train_tokenizer([*data["text"], SPEECHGPT_SYSTEM], vocab_size=2000)
        model = build_tiny_lm("llama", tokenizer, hidden_size=256, num_layers=4, num_heads=4)
        add_speech_tokens(model, tokenizer, UnitFormat("default", 100))
        examples, _ = tokenize_rows(data, tokenizer, args.seq_len)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        lengths = [len(e.input_ids) for e in examples]
        results = {}
        for name, packing, micro in (("packed", True, 1), ("padded", False, args.padded_batch)):
            model.load_state_dict(state)
            prepare_attention(model, packing=packing)
            cfg = TrainConfig(
                max_steps=args.steps,
                seq_len=args.seq_len,
                micro_batch=micro,
                packing=packing,
                eval_every=0,
                save_every=0,
                resume=False,
                warmup_steps=0,
            )
            started = time.perf_counter()
            train(cfg, model, examples, root / name, pad_id=tokenizer.pad_token_id)
            results[name] = (useful_tokens_per_second(root / name, skip=2), time.perf_counter() - started)
    print(
        f"data: {len(examples)} stage-2 examples, {min(lengths)}-{max(lengths)} tokens "
        f"(mean {sum(lengths) / len(lengths):.0f}); model: Llama 4x256; {args.steps} steps each, first 2 not timed"
    )
    labels = {
        "packed": f"packed (rows of {args.seq_len})",
        "padded": f"padded ({args.padded_batch} examples, longest, x8; SDPA + padding mask)",
    }
    for name, label in labels.items():
        print(f"{label + ':':<58}{results[name][0]:7.0f} useful tokens/s")
    flops_per_token = 6 * sum(p.numel() for p in model.parameters())  # forward + backward, attention left out
    peak = matmul_peak()
    for name in ("packed", "padded"):
        achieved = results[name][0] * flops_per_token / 1e9
        print(f"{name}: {achieved:.1f} useful GFLOP/s = {achieved / peak:.0%} of the fp32 matmul peak measured here")
    print(f"speedup {results['packed'][0] / results['padded'][0]:.2f}")


if __name__ == "__main__":
    main()
