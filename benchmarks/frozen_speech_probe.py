"""Does the speech reach the frozen LLM? Each clip's transcript scored after that clip and after another one.

    .venv/bin/python -m benchmarks.frozen_speech_probe                      # the demo's frozen-asr, 30 training clips
    .venv/bin/python -m benchmarks.frozen_speech_probe --split test --limit 30

The frozen variant's listener hears a corpus clip (the model's trailing silence after it), then the transcript is
fed as the model's template lays it out, and the negative log-likelihood of its trained tokens is taken (teacher
forcing, nats per token). The same transcript is then scored after the next clip of the draw. When the speech tells
the LLM what was said, the own clip's loss is far below the other's; when they are equal, nothing gets through,
whatever the training loss says. Greedy transcripts of the clips are counted too (how many distinct ones).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from speechgpt.training.data import IGNORE


def scored_transcripts(frozen: Any, texts: list[str]) -> list[tuple[list[int], list[bool]]]:
    """For each text, the token ids fed after the speech (the template's text between speech and target, the
    target, EOS when trained so) and which of them training scores."""
    from speechgpt.infer.frozen_loading import META, speech_template

    template = speech_template(frozen.meta.get(META["template"]))
    rows = [template.targets(frozen.tokenizer, text) for text in texts]
    return [(row["text_ids"], [label != IGNORE for label in row["labels"]]) for row in rows]


def probe(model: Path, corpus: Path, split: str, limit: int, seed: int) -> dict[str, Any]:
    from tqdm import tqdm

    from speechgpt.data.audio import read_audio
    from speechgpt.data.corpus import load_corpus
    from speechgpt.infer.frozen_loading import load_frozen_model
    from speechgpt.infer.listening import FrozenListener, ListenConfig

    frozen = load_frozen_model(model, device="cpu")
    listener = FrozenListener(frozen, ListenConfig(decide=False))
    rows = [r for r in load_corpus(corpus).select_columns(["id", "audio", "text", "split"]) if r["split"] == split]
    if len(rows) < 2:
        raise ValueError(f"{corpus}: split {split!r} has {len(rows)} clips; the probe needs two or more")
    rows = random.Random(seed).sample(rows, min(limit, len(rows)))
    clips = [read_audio(r["audio"]).samples for r in rows]
    transcripts = scored_transcripts(frozen, [r["text"] for r in rows])

    def nll(clip: Any, transcript: tuple[list[int], list[bool]]) -> float:
        for _ in listener.hear(clip):
            pass
        return listener.target_nll(*transcript)

    own, other, heard = [], [], []
    for i in tqdm(range(len(rows)), desc="clips", unit="clip"):
        own.append(nll(clips[i], transcripts[i]))
        other.append(nll(clips[(i + 1) % len(rows)], transcripts[i]))
        heard.append(listener.listen(clips[i], 40).text)
    return {
        "model": str(model),
        "split": split,
        "clips": len(rows),
        "nll_own_clip": round(sum(own) / len(own), 4),
        "nll_other_clip": round(sum(other) / len(other), 4),
        "distinct_greedy_transcripts": len(set(heard)),
        "examples": [{"text": r["text"], "heard": h} for r, h in zip(rows[:6], heard, strict=False)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("out/demo/frozen_asr/final"))
    parser.add_argument("--corpus", type=Path, default=Path("out/demo/corpus"))
    parser.add_argument("--split", default="train", help="corpus split of the clips (train: clips it trained on)")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(probe(args.model, args.corpus, args.split, args.limit, args.seed), indent=2))


if __name__ == "__main__":
    main()
