"""Training throughput: the engine against SpeechGPT-style padded batches, same stage-2 data, same model, one run.

Data: a TTS corpus (4 voices) -> MFCC units (k=100, 50 Hz, repeats merged) -> `build stage2` with one turn per
example, so the engine does all the packing. What packing can gain is the padding share of the padded batches, set
by the spread of example lengths, so the corpus is chosen with `--lengths`:
- `utterances` (default): clips of about 1-20 s, each WordNet example sentences joined up to a word count drawn
  log-uniformly from 3-50 (mean 7 s). SpeechInstruct's cross-modal pairs come mostly from GigaSpeech, whose 8.28M
  XL segments in 10,000 h average 4.3 s; LibriSpeech's average 12.3 s.
- `sentences`: one WordNet sentence of 3-16 words per clip (the demo's kind of data, a narrow spread).
Model: a 4-layer, 256-wide Llama with a tokenizer trained on the data. Four ways, each from the same initial weights
through an epoch's worth of steps of the same data, timed after 2 warm-up steps (so the timed steps end with the next
epoch's first 2), run `--rounds` times alternating, each round with its own data order:
- packed: rows of `--seq-len` tokens, examples isolated by per-example causal attention, the LM head and loss only
  where a trained token is predicted (the engine's defaults);
- packed_all: the same with the LM head at every position, as transformers' own loss computes it;
- padded, SpeechGPT-style: `--padded-batch` examples per micro-batch, right-padded to the longest rounded up to 8
  (SpeechGPT's cm_sft.py: DataCollatorForSeq2Seq, 6 per device), transformers' SDPA attention reading the padding
  mask and the head at every position, as SpeechGPT's trainer runs the model (`packing: false`, `logits_at: all`);
- padded_eager: the same batches with transformers' eager attention, which is what SpeechGPT's pinned versions ran
  (transformers 4.33.1 on torch 1.13.1, which has no SDPA). Printed for reference; the speedup is taken against the
  faster SDPA way.
Prints median useful (non-pad) tokens/s of each and what packing alone gains. The last line is the speedup of the
engine's defaults over SpeechGPT-style batches: the median over rounds of each round's ratio (the two runs of a
round are back to back, so a drift in machine speed between rounds cancels), with its range.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from datasets import load_from_disk

from benchmarks.measure import flops_per_token, matmul_peak, padding_share, useful_tokens_per_second
from data_builders import build_stage2, synth_corpus
from data_builders.text_sources import load_sentences
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.model.vocab import add_speech_tokens
from speechgpt.text.template import SPEECHGPT_SYSTEM
from speechgpt.text.units import UnitFormat
from speechgpt.training.batches import TokenBatches
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import IGNORE, BatchPlan, Tokenized, tokenize_rows
from speechgpt.training.engine import train
from speechgpt.training.packed_attention import prepare_attention
from speechgpt.units import extract, fit
from speechgpt.units.encoders import EncoderConfig

VOICES = ["flite:slt", "flite:rms", "festival:kal_diphone", "espeak-ng:en-us+m3"]


def utterance_texts(count: int, min_words: int, max_words: int, seed: int = 0) -> list[str]:
    """`count` texts of WordNet example sentences joined in sampled order, each up to a word count drawn
    log-uniformly from min_words..max_words (the last sentence may overshoot it)."""
    rng = random.Random(seed)
    pool = load_sentences("wordnet", max_sentences=None, seed=seed, min_words=3, max_words=16)
    rng.shuffle(pool)
    sentences = iter(pool)
    texts = []
    for _ in range(count):
        target = round(math.exp(rng.uniform(math.log(min_words), math.log(max_words))))
        chosen: list[str] = []
        while sum(len(s.split()) for s in chosen) < target:
            sentence = next(sentences, None)
            if sentence is None:
                raise SystemExit(f"WordNet has too few sentences for {count} texts: lower --texts")
            chosen.append(sentence.rstrip(".!?;:,"))
        texts.append(". ".join(chosen) + ".")
    return texts


def build_data(root: Path, lengths: str, count: int) -> Path:
    if lengths == "utterances":
        source = root / "utterances.txt"
        source.write_text("\n".join(utterance_texts(count, 3, 50)) + "\n")
        text = {"text_source": str(source), "max_sentences": None, "min_words": 1, "max_words": 1000}
    else:
        text = {"max_sentences": count, "max_words": 16}
    corpus = synth_corpus.run(synth_corpus.Config(out=root / "corpus", voices=VOICES, heldout_voices=[], **text))
    kmeans = fit.run(fit.Config(corpus=corpus, out=root / "km", encoder=EncoderConfig(kind="mfcc"), k=100))
    units = extract.run(extract.Config(corpus=corpus, kmeans=kmeans, out=root / "units"))
    # one turn per example, as SpeechInstruct's cross-modal records: all packing is left to the engine
    return build_stage2.run(build_stage2.Config(units=units, out=root / "stage2", turns_per_example=1, k=100))


def tiny_model_and_examples(stage2: Path, seq_len: int) -> tuple[Any, Any, list[Tokenized]]:
    """The benchmarks' model (a 4x256 Llama with a tokenizer trained on the data and SpeechGPT's system text, units
    added) and the stage-2 dataset's training examples tokenized for it."""
    data = load_instruct_dataset(stage2)["train"]
    tokenizer = train_tokenizer([*data["text"], SPEECHGPT_SYSTEM], vocab_size=2000)
    model = build_tiny_lm("llama", tokenizer, hidden_size=256, num_layers=4, num_heads=4)
    add_speech_tokens(model, tokenizer, UnitFormat("default", 100))
    return model, tokenizer, tokenize_rows(data, tokenizer, seq_len)[0]


def timing_config(**settings: Any) -> TrainConfig:
    """An engine config for timed runs: no evaluation, no checkpoints, no resuming, no warmup of the learning rate."""
    return TrainConfig(eval_every=0, save_every=0, resume=False, warmup_steps=0, **settings)


WARMUP_STEPS = 2  # not timed: the first steps allocate and warm caches
RUNS = {  # name: (packing, logits_at, attention or None for the engine's choice, label)
    "packed": (True, "trained", None, "packed rows, LM head on trained tokens (engine default)"),
    "packed_all": (True, "all", None, "packed rows, LM head everywhere"),
    "padded": (False, "all", None, "padded, SpeechGPT-style (SDPA + padding mask, head everywhere)"),
    "padded_eager": (False, "all", "eager", "padded, eager attention (SpeechGPT's pinned transformers)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", choices=["utterances", "sentences"], default="utterances", help="see above")
    parser.add_argument("--texts", type=int, default=60, help="texts in the corpus, each spoken by 4 voices")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each way, alternating; medians are printed")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--padded-batch", type=int, default=6, help="SpeechGPT stage 2: 6 per device")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stage2 = build_data(root, args.lengths, args.texts)
        seconds = sorted(load_from_disk(str(root / "corpus" / "dataset"))["duration_s"])
        model, tokenizer, examples = tiny_model_and_examples(stage2, args.seq_len)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        runs: dict[str, list[float]] = {name: [] for name in RUNS}
        for round_ in range(args.rounds):  # alternate the ways, so that drift in machine speed hits all of them
            for name, (packing, logits_at, attention, _) in RUNS.items():
                model.load_state_dict(state)
                prepare_attention(model, packing=packing)
                if attention:
                    model.set_attn_implementation(attention)
                micro_batch = 1 if packing else args.padded_batch
                plan = BatchPlan(
                    examples, seq_len=args.seq_len, micro_batch=micro_batch, packing=packing, seed=round_, pad_id=0
                )
                cfg = timing_config(
                    max_steps=len(plan.epoch(0)) + WARMUP_STEPS,
                    seq_len=args.seq_len,
                    micro_batch=micro_batch,
                    packing=packing,
                    logits_at=logits_at,
                    seed=round_,
                )
                out = root / f"{name}{round_}"
                train(cfg, model, TokenBatches.for_config(cfg, examples, tokenizer.pad_token_id), out)
                runs[name].append(useful_tokens_per_second(out, skip=WARMUP_STEPS))
        results = {name: statistics.median(values) for name, values in runs.items()}
    lengths = sorted(len(e.input_ids) for e in examples)
    trained = sum(label != IGNORE for e in examples for label in e.labels) / sum(lengths)
    print(
        f"data: {len(examples)} stage-2 examples (ASR and TTS) from {len(seconds)} clips of {seconds[0]:.1f}-"
        f"{seconds[-1]:.1f} s (mean {sum(seconds) / len(seconds):.1f} s); {lengths[0]}-{lengths[-1]} tokens "
        f"(mean {sum(lengths) / len(lengths):.0f}, median {lengths[len(lengths) // 2]}), {trained:.0%} of them trained"
    )
    print(
        f"model: Llama 4x256, vocabulary {len(tokenizer)}; medians of {args.rounds} alternating runs of an epoch "
        f"each; padded batches of {args.padded_batch} (longest, x8) are "
        f"{padding_share(examples, args.padded_batch):.0%} padding"
    )
    for name, (*_, label) in RUNS.items():
        print(f"{label + ':':<66}{results[name]:7.0f} useful tokens/s")
    per_token = flops_per_token(model, examples)
    peak = matmul_peak()
    for name in RUNS:
        achieved = results[name] * per_token / 1e9
        print(f"{name}: {achieved:.1f} useful GFLOP/s = {achieved / peak:.0%} of the fp32 matmul peak measured here")
    print(f"packing alone (head everywhere on both): {round_ratio(runs, 'packed_all', 'padded')[0]:.2f}")
    print(f"against eager attention, as SpeechGPT ran: {round_ratio(runs, 'packed', 'padded_eager')[0]:.2f}")
    speedup, low, high = round_ratio(runs, "packed", "padded")
    print(f"per-round speedups {low:.2f}-{high:.2f}")
    print(f"speedup {speedup:.2f}")


def round_ratio(runs: dict[str, list[float]], fast: str, slow: str) -> tuple[float, float, float]:
    """Median, lowest and highest over rounds of fast/slow within each round."""
    ratios = [a / b for a, b in zip(runs[fast], runs[slow], strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


if __name__ == "__main__":
    main()
