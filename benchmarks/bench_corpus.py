"""Corpus synthesis throughput: the same clips with 1 and with 2 worker processes, measured in one run."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from data_builders import synth_corpus

VOICES = ["flite:slt", "festival:kal_diphone", "espeak-ng:en-us+m3"]


def clips_per_second(out: Path, workers: int, sentences: int) -> tuple[float, float]:
    cfg = synth_corpus.Config(
        out=out, voices=VOICES, heldout_voices=[], max_sentences=sentences, num_workers=workers, seed=1
    )
    start = time.perf_counter()
    synth_corpus.run(cfg)
    elapsed = time.perf_counter() - start
    return len(VOICES) * sentences / elapsed, elapsed


def main(sentences: int = 60) -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        serial, t1 = clips_per_second(Path(tmp) / "w1", 1, sentences)
        parallel, t2 = clips_per_second(Path(tmp) / "w2", 2, sentences)
    print(f"clips: {len(VOICES) * sentences} ({len(VOICES)} voices x {sentences} WordNet sentences)")
    print(f"1 worker : {serial:6.1f} clips/s ({t1:.1f} s)")
    print(f"2 workers: {parallel:6.1f} clips/s ({t2:.1f} s)")
    print(f"speedup {parallel / serial:.2f}")


if __name__ == "__main__":
    main()
