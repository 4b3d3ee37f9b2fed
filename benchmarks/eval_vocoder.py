"""Spoken answers a listener understands: `speechgpt eval resynth` on the demo's outputs, summarized.

    .venv/bin/python -m benchmarks.eval_vocoder                      # make eval-vocoder
    .venv/bin/python -m benchmarks.eval_vocoder max_clips=20 out=out/demo/resynth-small

Runs the answer voice's demo steps that have no output yet (its corpus, its units, the vocoder: the configs of
configs/tiny/, as `make demo` runs them), then the evaluation of configs/tiny/resynth.yaml (`key=value` arguments
override it): the answer voice's held-out sentences and the held-out voices' clips, each resynthesized in the answer
voice and judged beside its original audio (Whisper WER/CER, DNSMOS, MCD). Prints one row per set and audio, then,
last, `ratio_answer_voice X` and `ratio_heldout_voices Y`: each set's judge WER over its original audio's.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from speechgpt.app.demo import command_of
from speechgpt.app.resynth import Config, summary_lines
from speechgpt.app.resynth import run as run_resynth
from speechgpt.config import load_config

CONFIGS = Path("configs/tiny")
STEPS = ("voice_corpus", "voice_units", "vocoder")


def step_done(step: str, out: Path) -> bool:
    """A step's output is there; a vocoder must also hold sentences out (a multi-speaker one of an older demo
    cannot be judged on sentences it never heard, so it is trained anew)."""
    if step != "vocoder":
        return (out / "dataset").is_dir()
    meta = out / "vocoder" / "vocoder.json"
    return meta.is_file() and float(json.loads(meta.read_text()).get("heldout_text_fraction") or 0) > 0


def run_missing_steps(configs: Path = CONFIGS) -> None:
    """The answer-voice steps whose output is absent, in order, as the demo runs a step."""
    from speechgpt.cli import COMMANDS

    for step in STEPS:
        path = configs / f"{step}.yaml"
        module: Any = importlib.import_module(COMMANDS[command_of(path)].module)
        cfg = load_config(module.Config, path)
        if step_done(step, Path(cfg.out)):
            continue
        if step == "vocoder":
            cfg.resume = False  # an older vocoder's checkpoints do not fit the answer-voice model
        started = time.perf_counter()
        logging.getLogger(__name__).info("running %s (%s)", step, path)
        module.run(cfg)
        print(f"{step}: {time.perf_counter() - started:.1f} s", flush=True)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_missing_steps()
    cfg = load_config(Config, CONFIGS / "resynth.yaml", argv)
    report = json.loads(run_resynth(cfg).read_text(encoding="utf-8"))
    print("\n".join(summary_lines(report)))


if __name__ == "__main__":
    main(sys.argv[1:])
