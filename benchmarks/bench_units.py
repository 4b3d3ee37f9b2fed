"""Unit extraction speed: our extractor against a naive SpeechGPT-style loop, same audio, measured in one run.

HuBERT-base architecture (random weights: speed does not depend on them), layer 6, k-means k=1000. The naive loop
reads each file, runs the whole 12-layer model in fp32 and takes each frame's nearest centroid from the full distance
matrix. Ours builds only layers 1-6, batches length-sorted clips, decodes ahead in a thread and runs in `--dtype`.
Prints real-time factors, achieved GFLOP/s against a matmul peak measured here, id agreement and, last, the speedup.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.measure import matmul_peak
from data_builders.text_sources import load_sentences
from data_builders.tts import synthesize
from speechgpt.units.encoders import EncoderConfig, build_encoder
from speechgpt.units.extract import UnitExtractor
from speechgpt.units.kmeans import fit_kmeans

LAYER = 6
VOICES = ["flite:slt", "flite:rms", "festival:kal_diphone", "espeak-ng:en-us+m3"]


def make_audio(folder: Path, clips: int) -> list[Path]:
    sentences = load_sentences("wordnet", max_sentences=clips, seed=7, min_words=6, max_words=16)
    paths = []
    for i, sentence in enumerate(sentences):
        audio = synthesize(VOICES[i % len(VOICES)], sentence)
        path = folder / f"clip{i:03d}.flac"
        sf.write(path, audio.samples, 16_000)
        paths.append(path)
    return paths


def naive_ids(model: torch.nn.Module, paths: list[Path], centroids: torch.Tensor) -> list[torch.Tensor]:
    out = []
    with torch.inference_mode():
        for path in paths:
            wave = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
            feats = model(wave, output_hidden_states=True).hidden_states[LAYER][0]
            dist = ((feats[:, None, :] - centroids[None]) ** 2).sum(-1)
            out.append(dist.argmin(-1))
    return out


def ours_ids(extractor: UnitExtractor, paths: list[Path], batch_seconds: float) -> list[torch.Tensor]:
    from speechgpt.units.extract import _batches

    rows = [{"id": str(i), "audio": str(p), "duration_s": sf.info(p).duration} for i, p in enumerate(paths)]
    ids: dict[str, torch.Tensor] = {}
    for batch, waves in _batches(rows, batch_seconds, rejected=[]):
        for row, frame_ids in zip(batch, extractor.frame_ids(waves), strict=True):
            ids[row["id"]] = frame_ids
    return [ids[str(i)] for i in range(len(paths))]


def flops_per_second_of_audio(extractor: UnitExtractor) -> float:
    wave = torch.randn(16_000 * 4)
    with FlopCounterMode(display=False) as counter:
        extractor.encoder.encode([wave])
    return counter.get_total_flops() / 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import HubertConfig, HubertModel

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        full = HubertModel(HubertConfig()).eval()  # HuBERT base: 12 layers, 768 wide, 512-channel conv stack
        full.save_pretrained(folder / "hubert")
        paths = make_audio(folder, args.clips)
        seconds = sum(sf.info(p).duration for p in paths)
        with torch.inference_mode():
            sample = [
                full(torch.from_numpy(sf.read(p, dtype="float32")[0])[None], output_hidden_states=True)
                .hidden_states[LAYER][0]
                .numpy()
                for p in paths[:: max(1, len(paths) // 12)]
            ]
        kmeans = fit_kmeans(np.concatenate(sample), 1000, seed=0, niter=10, encoder="hubert-base-random@L6")
        centroids = torch.from_numpy(kmeans.centroids)
        encoder = build_encoder(
            EncoderConfig(kind="hubert", path=str(folder / "hubert"), layer=LAYER, dtype=args.dtype)
        )
        extractor = UnitExtractor(encoder, kmeans)

        start = time.perf_counter()
        reference = naive_ids(full, paths, centroids)
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        ours = ours_ids(extractor, paths, args.batch_seconds)
        ours_s = time.perf_counter() - start

    same = sum(int((a == b).sum()) for a, b in zip(reference, ours, strict=True))
    frames = sum(len(a) for a in reference)
    gflops = flops_per_second_of_audio(extractor) * seconds / ours_s / 1e9
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"audio: {len(paths)} clips, {seconds:.1f} s; threads {args.threads}; ours in {args.dtype}")
    print(f"naive : {seconds / naive_s:7.1f}x real time ({naive_s:.1f} s)")
    print(f"ours  : {seconds / ours_s:7.1f}x real time ({ours_s:.1f} s)")
    print(f"ours achieved {gflops:.1f} GFLOP/s; matmul peak here fp32 {peak32:.1f}, bf16 {peak16:.1f} GFLOP/s")
    print(f"identical unit ids: {same / frames:.2%} of {frames} frames")
    print(f"speedup {naive_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
