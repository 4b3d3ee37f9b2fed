"""The frozen variant in duplex mode on streams of held-out spoken questions, as synthesized and as recordings sound.

    .venv/bin/python -m benchmarks.duplex_streams                          # the demo's frozen chat, every kind
    .venv/bin/python -m benchmarks.duplex_streams --kinds clean noisy --set gain=false

The demo's test questions (`qa_speech`, held-out voices; `--questions out/demo/qa_speech_person`: the Piper voice,
which `make eval-duplex` streams next), six to a stream, 1.2 s apart after 1 s of lead, are pushed
through `DuplexSession` in 160 ms pieces (text answers only), each stream rewritten as a kind of recording: quiet
(-20 dB), loud (+10 dB, clipped), white noise at -40 dBFS throughout, low-frequency room noise at -48 dBFS, both
quiet and in room noise, a fan (low-passed noise at -38 dBFS). A question is answered when an answer event falls
between its start and the next question's; the first such answer is scored as `eval chat` scores it. Extra answers
(a second one in a window, or one before the first question) are the detector's and the state head's false alarms.
`--set key=value` changes the stream settings (speechgpt.infer.stream_input.StreamSettings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

PIECE = 2560  # 160 ms at 16 kHz
RATE = 16_000


def db(x: float) -> float:
    return float(10 ** (x / 20))


def kinds(rng: np.random.Generator) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    def hum(n: int, level: float) -> np.ndarray:
        x = np.cumsum(rng.standard_normal(n))
        x -= np.convolve(x, np.ones(400) / 400, mode="same")
        return (x / (x.std() + 1e-9) * db(level)).astype(np.float32)

    def fan(n: int, level: float) -> np.ndarray:
        x = np.convolve(rng.standard_normal(n), np.ones(8) / 8, mode="same")
        return (x / (x.std() + 1e-9) * db(level)).astype(np.float32)

    return {
        "clean": lambda s: s,
        "quiet": lambda s: s * db(-20),
        "loud": lambda s: np.clip(s * db(10), -1, 1),
        "noisy": lambda s: s + rng.standard_normal(s.size).astype(np.float32) * db(-40),
        "room": lambda s: s + hum(s.size, -48),
        "quiet_room": lambda s: s * db(-15) + hum(s.size, -60),
        "fan": lambda s: s + fan(s.size, -38),
    }


def streams(questions: list[dict[str, Any]], per_stream: int = 6, lead_s: float = 1.0, gap_s: float = 1.2):
    """(samples, [(question row, start second)]) of each stream."""
    from speechgpt.data.audio import read_audio

    for first in range(0, len(questions), per_stream):
        pieces, starts, clock = [np.zeros(round(lead_s * RATE), np.float32)], [], lead_s
        for row in questions[first : first + per_stream]:
            wave = read_audio(row["audio"]).samples
            starts.append((row, clock))
            pieces += [wave, np.zeros(round(gap_s * RATE), np.float32)]
            clock += (wave.size + round(gap_s * RATE)) / RATE
        yield np.concatenate([*pieces, np.zeros(RATE, np.float32)]), starts


def score(events: list[Any], starts: list[tuple[dict[str, Any], float]], answers: dict[str, str]) -> dict[str, int]:
    from speechgpt.eval.answers import answer_is_correct

    counts = {"answered": 0, "right": 0, "extra_answers": 0, "ignored": 0}
    said = [e for e in events if e.kind == "answer"]
    counts["extra_answers"] += sum(e.at_s <= starts[0][1] for e in said)
    for (row, start), (_, end) in zip(starts, [*starts[1:], (None, float("inf"))], strict=True):
        got = [e for e in said if start < e.at_s <= end]
        counts["ignored"] += sum(e.kind == "ignore" and start < e.at_s <= end for e in events)
        if got:
            key = row["id"].removeprefix("q-")
            counts["answered"] += 1
            counts["extra_answers"] += len(got) - 1
            counts["right"] += answer_is_correct(key.split("-")[0], answers[key], got[0].text or "")
    return counts


def main(argv: list[str] | None = None) -> None:
    from speechgpt.app.chat import ChatSetup, load_chat_app
    from speechgpt.config import config_from_dict, load_config
    from speechgpt.data.corpus import load_corpus
    from speechgpt.infer.duplex import DuplexConfig, DuplexSession
    from speechgpt.infer.stream_input import StreamSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/tiny/frozen_chat.yaml"))
    parser.add_argument("--questions", type=Path, default=Path("out/demo/qa_speech"))
    parser.add_argument("--kinds", nargs="+", default=None)
    parser.add_argument("--set", nargs="*", default=[], help="StreamSettings overrides, key=value (YAML values)")
    args = parser.parse_args(argv)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    settings = config_from_dict(StreamSettings, overrides, "--set")
    app = load_chat_app(load_config(ChatSetup, args.config, ["speech_decoder=null", "vocoder=null"]))
    corpus = load_corpus(args.questions)
    answers = {r["id"].removeprefix("a-"): r["text"] for r in corpus if r["id"].startswith("a-")}
    questions = [r for r in corpus if r["split"] == "test" and r["id"].startswith("q-")]
    rng = np.random.default_rng(0)
    rewrite = kinds(rng)
    results = {}
    print(f"questions: {args.questions} ({len(questions)} test questions)", flush=True)
    for kind in args.kinds or list(rewrite):
        totals = {"questions": len(questions), "answered": 0, "right": 0, "extra_answers": 0, "ignored": 0}
        for samples, starts in streams(questions):
            duplex = DuplexSession(app.session, DuplexConfig(stream=settings, speech=False))
            stream = rewrite[kind](samples)
            events = [e for i in range(0, stream.size, PIECE) for e in duplex.push(stream[i : i + PIECE])]
            for name, count in score([*events, *duplex.finish()], starts, answers).items():
                totals[name] += count
        results[kind] = totals
        print(
            f"{kind:<11} right {totals['right']:>3} of {totals['questions']}, answered {totals['answered']}, "
            f"extra answers {totals['extra_answers']}, ignored {totals['ignored']}",
            flush=True,
        )
    print(json.dumps({"settings": dataclasses.asdict(settings), "results": results}))


if __name__ == "__main__":
    main()
