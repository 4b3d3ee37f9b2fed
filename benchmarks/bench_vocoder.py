"""Vocoder speed with one CPU thread: the default (mel net + Griffin-Lim) vocoder whole and streamed, on the same units.

Uses the demo's trained vocoder and held-out units when they exist (`make demo`), else a randomly initialized
default-shape vocoder and random units (speed does not depend on the weights; the streamed-vs-whole distance does).
Prints the real-time factor (compute seconds per audio second) of whole-utterance and streamed synthesis, the time
to first audio of each (streamed: units pushed `--chunk` at a time as fast as they come), the units a stream needs
before its first audio, the relative log-mel distance between streamed and whole audio, a HiFi-GAN generator's
RTF for comparison, and last `rtf X.XXX` (whole synthesis, default vocoder; target <= 0.1).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from vocoder.duration import DurationPredictor
from vocoder.mel_vocoder import LogMel, MelNet, MelSettings
from vocoder.runtime import HifiganRenderer, MelRenderer, Vocoder

DEMO_VOCODER = Path("out/demo/vocoder/vocoder")
DEMO_UNITS = Path("out/demo/units")


def load_inputs(vocoder_path: Path, units_path: Path, count: int) -> tuple[Vocoder, list[list[int]], str]:
    if vocoder_path.is_dir() and units_path.is_dir():
        from vocoder.data import load_units_dataset
        from vocoder.load import load_vocoder

        dataset = load_units_dataset(units_path)
        held_out = [i for i, split in enumerate(dataset["split"]) if split != "train"]
        rows = [dataset[i] for i in held_out[:: max(1, len(held_out) // count)][:count]]
        return load_vocoder(vocoder_path), [r["units"] for r in rows], f"{vocoder_path}, held-out units"
    torch.manual_seed(0)
    net = MelNet(500, lookahead_frames=15)  # the demo's shape: one answer voice, 15 frames of look-ahead
    vocoder = Vocoder(MelRenderer(net, MelSettings()), DurationPredictor(128, 128))
    rng = np.random.default_rng(0)
    units = [[int(u) for u in rng.integers(0, 500, 70)] for _ in range(count)]  # ~3 s each at 23 units/s
    return vocoder, units, "random default-shape vocoder (run `make demo` for the trained one), random units"


def whole(vocoder: Vocoder, utterances: list[list[int]]) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    audio = [vocoder(units) for units in utterances]
    return audio, time.perf_counter() - started


def streamed(vocoder: Vocoder, utterances: list[list[int]], chunk: int) -> tuple[list[np.ndarray], float, list[float]]:
    outputs, first_audio, total = [], [], 0.0
    for units in utterances:
        stream = vocoder.stream()
        started = time.perf_counter()
        parts, first = [], None
        for i in range(0, len(units), chunk):
            parts.append(stream.push(units[i : i + chunk]))
            if first is None and len(parts[-1]):
                first = time.perf_counter() - started
        parts.append(stream.finish())
        total += time.perf_counter() - started
        first_audio.append(first if first is not None else total)
        outputs.append(np.concatenate(parts))
    return outputs, total, first_audio


def units_before_first_audio(vocoder: Vocoder, units: list[int]) -> int:
    stream = vocoder.stream()
    for n, unit in enumerate(units, 1):
        if len(stream.push([unit])):
            return n
    return len(units)


def log_mel_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    log_mel = LogMel(MelSettings())
    values = []
    for x, y in zip(a, b, strict=True):
        n = min(len(x), len(y))
        mx, my = log_mel(torch.from_numpy(x[:n])), log_mel(torch.from_numpy(y[:n]))
        values.append(float((mx - my).norm() / my.norm()))
    return float(np.mean(values))


def hifigan_rtf(utterance: list[int]) -> float:
    from unit_hifigan.model import UnitVocoder

    torch.manual_seed(0)
    vocoder = Vocoder(HifiganRenderer(UnitVocoder(500)), DurationPredictor(128, 128))
    started = time.perf_counter()
    audio = vocoder(utterance)
    return (time.perf_counter() - started) / (len(audio) / 16_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocoder", type=Path, default=DEMO_VOCODER)
    parser.add_argument("--units", type=Path, default=DEMO_UNITS)
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=10, help="units per streamed push")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    vocoder, utterances, source = load_inputs(args.vocoder, args.units, args.utterances)
    vocoder(utterances[0][:20])  # warm-up
    audio, whole_s = whole(vocoder, utterances)
    stream_audio, stream_s, first = streamed(vocoder, utterances, args.chunk)
    seconds = sum(len(a) for a in audio) / 16_000
    mean_utterance = seconds / len(audio)
    print(f"vocoder: {source}; {len(audio)} utterances, {seconds:.1f} s of audio, {args.threads} thread(s)")
    print(f"whole   : rtf {whole_s / seconds:.3f}, first audio after {whole_s / len(audio) * 1000:.0f} ms (mean)")
    print(
        f"streamed: rtf {stream_s / seconds:.3f}, first audio after {np.mean(first) * 1000:.0f} ms (mean, chunks of"
        f" {args.chunk} units), {units_before_first_audio(vocoder, utterances[0])} units before any audio"
    )
    distance = log_mel_distance(stream_audio, audio)
    print(f"mean utterance {mean_utterance:.2f} s; streamed vs whole relative log-mel distance {distance:.4f}")
    print(f"hifigan generator (13.7M params, random weights): rtf {hifigan_rtf(utterances[0]):.3f}")
    print(f"rtf {whole_s / seconds:.3f}")


if __name__ == "__main__":
    main()
