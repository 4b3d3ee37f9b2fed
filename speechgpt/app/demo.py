"""`speechgpt demo`: the whole pipeline on the embedded offline default, one step after another.

Each step is one command with one YAML of configs/tiny/ (the first line of each file is the command that runs it
alone), so the demo reads top to bottom as the list below and every step can be rerun by hand. A second `make demo`
reuses every step whose code, config and inputs are unchanged since it finished (speechgpt/app/demo_ledger.py), and
a step that was killed resumes from its checkpoints. A training step whose checkpoints come from a run with other
settings, data or starting model trains again from step 0 (`changed_run: restart`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speechgpt.app.demo_ledger import StepLedger, code_fingerprint
from speechgpt.config import load_config
from speechgpt.data.io import atomic_write_text

log = logging.getLogger(__name__)

STEPS = [
    "qa",  # checkable questions: the task domain of the chain-of-modality data
    "corpus",  # TTS voices speak WordNet sentences and the domain's training questions
    "corpus_stats",
    "units_fit",  # k-means on the training voices
    "units_extract",
    "qa_speech",  # every question and its answer spoken (held-out voices for dev/test questions)
    "qa_units",  # their units, with the same k-means
    "build_stage1",
    "build_stage2",
    "build_stage3",  # the questions joined with the units of their speech
    "backbone",  # a tiny LM trained on text: the stand-in for a pretrained LLM
    "eval_text_backbone",  # its text accuracy on the test questions (the ceiling) and its held-out text loss
    "stage1",
    "stage2",
    "stage3",
    "eval_text_unified",  # the same text probe after the unified stages: what unfreezing cost
    "voice_corpus",  # the answer voice alone: the vocoder's training speech
    "voice_units",  # its units, from the same k-means
    "vocoder",  # units of any speaker -> speech in the answer voice
    "eval_asr",  # the stage-2 model's WER on training voices and on held-out voices
    "qa_speech_seen",  # the test questions again, by training voices in new renditions
    "qa_speech_person",  # and by a voice made from a person's recordings (Piper), which no corpus speaks
    "spoken_qa",  # held-out spoken questions answered in speech, judged by Whisper
    "spoken_qa_direct",  # the same questions answered directly in text, no transcript first (the ablation)
    "frozen_ctc",  # frozen-LLM variant: a streaming speech encoder trained as a CTC recognizer
    "frozen_asr",  # encoder + adapter + prompts into the frozen backbone, which says the transcript
    "frozen_qa",  # prompts + state head: spoken questions answered by the frozen backbone, when to answer
    "frozen_tts",  # its speech decoder learns text -> units from the answer voice, over the backbone's embeddings
    "frozen_speak",  # the prefix decoder learns to read the backbone's hidden states of its answers
    "frozen_eval_asr",  # the frozen variant's WER on the same examples as eval_asr
    "frozen_spoken_qa",  # the frozen variant listens to the same spoken questions as spoken_qa, answers in speech
    "eval_text_frozen",  # the text probe through the frozen variant's LLM: unchanged by construction
    "tts_unified",  # new sentences read aloud by the unified variant (stage 2's TTS form), judged by Whisper
    "tts_frozen",  # the same sentences read aloud by the frozen variant's speech decoder
    "compare",  # both variants side by side: out/demo/report/report.md and report.json
]


DEFAULT_ROOT = "out/demo"
"""The folder the step configs name their inputs and outputs under; `out` re-roots them."""


@dataclass(kw_only=True)
class Config:
    configs: Path = Path("configs/tiny")
    """Folder of the step configs (one YAML per step, named as in `steps`)."""
    steps: list[str] = field(default_factory=lambda: list(STEPS))
    """Steps to run, in order."""
    out: Path = Path(DEFAULT_ROOT)
    """Root of every output: paths under out/demo in the step configs move under it; summary.json goes here."""
    quick: bool = False
    """A smoke run of a few minutes: each step also takes its overrides from `quick_overrides` (small corpora, few
    steps, few questions). Its numbers show that everything runs, not what the pipeline learns."""
    quick_overrides: Path = Path("configs/tiny/quick.yaml")
    """`step: [key=value, ...]` overrides of the quick run."""
    backbone: str | None = None
    """An HF causal LM (folder, hub id or `.gguf` file) to start from instead of a tiny one trained from scratch:
    stage 0 then fine-tunes it on the QA text (`speechgpt train backbone base=...`), both variants build on it, and
    each step also takes its overrides from `pretrained_overrides`."""
    pretrained_overrides: Path = Path("configs/tiny/pretrained.yaml")
    """`step: [key=value, ...]` overrides of a run from a pretrained `backbone`: fine-tuning learning rates in place
    of the tiny model's, which would overwrite what the LLM knows."""


def command_of(path: Path) -> tuple[str, ...]:
    """The command words of a step config, read from its first line `# speechgpt <words> --config ...`."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    words = first.removeprefix("#").split()
    if not words or words[0] != "speechgpt" or "--config" not in words:
        raise ValueError(f"{path}: first line must be `# speechgpt COMMAND --config {path}`")
    return tuple(words[1 : words.index("--config")])


def run(cfg: Config) -> Path:
    from speechgpt.cli import COMMANDS

    timings: dict[str, float] = {}
    outputs: dict[str, str] = {}
    reused: list[str] = []
    ledger = StepLedger(cfg.out, code_fingerprint())
    upstream = ""
    started_all = time.perf_counter()
    for step in cfg.steps:
        path = cfg.configs / f"{step}.yaml"
        words = command_of(path)
        module: Any = importlib.import_module(COMMANDS[words].module)
        overrides = step_overrides(cfg, step)
        step_cfg = restarting(rerooted(load_config(module.Config, path, overrides), DEFAULT_ROOT, str(cfg.out)))
        key = ledger.key(step, words, step_cfg, upstream)
        record = ledger.reusable(step, key)
        if record is not None:
            log.info("demo step %s: reused (code, config and inputs unchanged since it ran)", step)
            reused.append(step)
        else:
            log.info("demo step %s: speechgpt %s --config %s %s", step, " ".join(words), path, " ".join(overrides))
            started = time.perf_counter()
            output = str(module.run(step_cfg))
            record = ledger.finish(step, key, step_cfg, output, round(time.perf_counter() - started, 1))
        outputs[step], timings[step], upstream = record.output, record.seconds, record.chained
    results = {step: json.loads(Path(path).read_text()) for step, path in outputs.items() if path.endswith(".json")}
    summary = {
        "results": results,
        "outputs": outputs,
        "seconds_per_step": timings,
        "seconds_total": round(sum(timings.values()), 1),
        "reused": reused,
        "seconds_this_run": round(time.perf_counter() - started_all, 1),
    }
    atomic_write_text(cfg.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    for step, seconds in timings.items():
        print(f"{step:<18} {seconds:7.1f} s{' (reused)' if step in reused else '':<9}  {outputs[step]}")
    print(headline(results))
    return cfg.out / "summary.json"


def add_arguments(parser: Any) -> None:
    """`--quick` and `--backbone DIR` beside key=value."""
    parser.add_argument("--quick", action="store_const", const=True, default=None, help="a smoke run (quick=true)")
    parser.add_argument("--backbone", default=None, help="HF causal LM folder, hub id or .gguf file to start from")


def step_overrides(cfg: Config, step: str) -> list[str]:
    """A step's key=value overrides: the quick run's, then a pretrained backbone's, then stage 0's `base=`."""
    quick = read_step_overrides(cfg.quick_overrides).get(step, []) if cfg.quick else []
    if cfg.backbone is None:
        return quick
    base = [f"base={cfg.backbone}"] if step == "backbone" else []
    return [*quick, *read_step_overrides(cfg.pretrained_overrides).get(step, []), *base]


def read_step_overrides(path: Path) -> dict[str, list[str]]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ValueError(f"{path}: expected `step: [key=value, ...]` entries")
    return {str(step): [str(o) for o in overrides] for step, overrides in raw.items()}


def rerooted(cfg: Any, old: str, new: str) -> Any:
    """`cfg` with every path or string field under `old` (and lists of them, nested configs) moved under `new`."""
    if old == new:
        return cfg

    def move(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return rerooted(value, old, new)
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, (str, Path)):
            text = str(value)
            if text == old or text.startswith(old + "/"):
                moved = new + text[len(old) :]
                return Path(moved) if isinstance(value, Path) else moved
        return value

    changes = {f.name: move(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    return dataclasses.replace(cfg, **changes)


def restarting(cfg: Any) -> Any:
    """`cfg` with changed_run='restart' wherever it has that field (a training step's settings): the demo owns its
    outputs, so a step whose settings, data or starting model changed trains again rather than stopping."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "changed_run":
            changes[f.name] = "restart"
        elif f.init and dataclasses.is_dataclass(value) and not isinstance(value, type):
            owned = restarting(value)
            if owned is not value:
                changes[f.name] = owned
    return dataclasses.replace(cfg, **changes) if changes else cfg


def headline(results: dict[str, Any]) -> str:
    """The demo's outcome in a few lines: ASR WER by voice group and the spoken answers' accuracy."""
    lines = []
    asr = results.get("eval_asr", {}).get("splits", {})
    for split, label in (("dev_seen_voices", "training voices"), ("dev", "held-out voices")):
        if split in asr:
            row = asr[split]
            known = row.get("wer_in_vocabulary")
            line = f"stage-2 ASR WER, {label}, unseen sentences: {100 * row['wer']:.1f}% over {row['examples']}"
            if known is not None:
                line += f" ({100 * known:.1f}% over the {row['examples_in_vocabulary']} in-vocabulary ones)"
            lines.append(line)
    frozen_asr = results.get("frozen_eval_asr", {}).get("splits", {})
    if frozen_asr:
        wers = ", ".join(f"{100 * row['wer']:.1f}% on {split}" for split, row in frozen_asr.items())
        lines.append(f"frozen variant ASR WER, unseen sentences: {wers}")
    frozen_qa = results.get("frozen_spoken_qa")
    if frozen_qa:
        from speechgpt.app.spoken_qa import VOICE_GROUPS

        groups = ", ".join(
            f"{VOICE_GROUPS[group]} {100 * row['s2t_correct']:.0f}% of {row['questions']}"
            for group, row in frozen_qa["by_voices"].items()
        )
        lines.append(
            f"frozen variant, spoken test questions answered in text: {100 * frozen_qa['s2t_accuracy']:.0f}% "
            f"({groups}); answered at the question's end {100 * frozen_qa['state']['accuracy']:.0f}%"
        )
        if frozen_qa.get("spoken_accuracy") is not None:
            typed = frozen_qa.get("typed") or {}
            said = f"; typed questions, spoken answers {100 * typed['t2s_accuracy']:.0f}%" if typed else ""
            lines.append(
                f"frozen variant, spoken answers correct (judge): {100 * frozen_qa['spoken_accuracy']:.0f}%{said}"
            )
    qa = results.get("spoken_qa")
    if qa:
        example = qa["example"]
        lines += [
            f"unified variant, spoken test questions: text answer correct {100 * qa['text_accuracy']:.0f}%, "
            f"spoken answer correct (judge) {100 * qa['spoken_accuracy']:.0f}% of {qa['questions']}",
            f"asked {example['question']!r} -> heard {example['transcript']!r}, answered {example['text']!r}, "
            f"the judge hears {example['heard']!r}",
        ]
    return "\n".join(lines)
