"""Time to first audio of a spoken answer: streamed vocoding against whole-answer vocoding, same model and prompt.

Uses the demo's stage-3 model, k-means and vocoder (configs/tiny/chat.yaml; `make demo` makes them). Greedy decoding,
so both ways generate the same tokens; they differ only in when the vocoder runs: while units are generated, in
chunks (streamed), or once after the last unit (whole). Runs alternate, `--repeats` each, and the medians are
compared. The spoken answer is held at `--answer-units` units (120: 4.3 s of speech with the demo model) by the
structure constraint: the tiny demo model's own spoken answers are often under a second, too short for the way of
vocoding to matter; `--answer-units 0` leaves the length to the model. Prints per-way timings, then
`speedup X.XX` (whole / streamed time to first audio) last.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import torch

from speechgpt.app.chat import ChatSetup, load_chat_app
from speechgpt.config import load_config
from speechgpt.infer import ChatResult, Sampling


def first_define_question(qa: Path) -> str:
    """A definition question of the training split: its answer is a phrase, so the spoken answer has some length."""
    for line in (qa / "train.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["family"] == "define":
            return str(record["instruction"])
    raise ValueError(f"{qa}/train.jsonl has no definition question")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/tiny/chat.yaml"), help="chat config (model etc.)")
    parser.add_argument("--text", help="question (default: the first definition question of out/demo/qa)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way")
    parser.add_argument(
        "--answer-units", type=int, default=120, help="spoken answer length in units (0: the model's own choice)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value settings of the chat config (vocoder=..., session.chunk_units=...)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    overrides = list(args.overrides)
    if args.answer_units:
        overrides += [f"session.min_units={args.answer_units}", f"session.max_units={args.answer_units}"]
    setup = load_config(ChatSetup, args.config, overrides)
    for key in ("model", "kmeans", "vocoder"):
        if not Path(getattr(setup, key)).exists():
            raise SystemExit(f"{getattr(setup, key)} not found: run `make demo` first (bench-chat uses its model)")
    app = load_chat_app(setup)
    question = args.text or first_define_question(Path("out/demo/qa"))
    sampling = Sampling(greedy=True, max_new_tokens=600)
    runs: dict[str, list[ChatResult]] = {"whole": [], "streamed": []}
    app.session.respond(text=question, reply="speech", sampling=sampling)  # warm-up
    for _ in range(args.repeats):
        for way in runs:
            app.reset()
            result = app.session.respond(
                text=question, reply="speech", sampling=sampling, stream_audio=way == "streamed"
            )
            runs[way].append(result)
    first = runs["streamed"][0]
    audio_s = len(first.audio) / first.sample_rate if first.audio is not None and first.sample_rate else 0.0
    print(f"question {question!r}: answer {first.answer.text!r}, {len(first.answer.units)} units, {audio_s:.2f} s")
    session = app.session.config
    print(
        f"vocoder {setup.vocoder}; streamed pushes: {session.first_chunk_units} units until audio, then "
        f"{session.chunk_units}"
    )
    ttfa = {}
    for way, results in runs.items():
        ttfa[way] = statistics.median(r.timings.first_audio_s or float("nan") for r in results)
        total = statistics.median(r.timings.total_s for r in results)
        print(f"{way:<9} time to first audio {ttfa[way]:.3f} s, total {total:.3f} s (median of {args.repeats})")
    if any(r.answer.units != first.answer.units for rs in runs.values() for r in rs):
        raise SystemExit("the two ways generated different answers: the comparison is not like for like")
    print(f"speedup {ttfa['whole'] / ttfa['streamed']:.2f}")


if __name__ == "__main__":
    main()
