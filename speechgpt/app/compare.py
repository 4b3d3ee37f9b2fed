"""`speechgpt compare`: the unified and the frozen-LLM variants side by side, from the results of their own steps.

Nothing is run again: the command reads what the demo's evaluation steps wrote (each a `report.json` of its own
command) and each training run's `run.json` and `metrics.jsonl`, and writes `<out>/report.json`, `<out>/report.md`,
PNG plots and example conversations (question audio, transcript, text answer, answer audio) linked from the report.

`report.json` is keyed for tools:

- `backbone.text_accuracy`, `backbone.heldout_text_loss`: the text backbone before any speech training (the ceiling);
- `variants.unified` and `variants.frozen`, each with
  - `s2t_accuracy` and `s2s_accuracy`: `{all, seen_voices, heldout_voices, person_voice}` (null where the variant
    has no such output or the evaluation no such voice group; `person_voice`: a voice made from a person's
    recordings, never trained on), and `direct_s2t_accuracy` for the unified variant (speech -> answer with no
    transcript) when measured;
  - `questions`: `{all, seen_voices, heldout_voices, person_voice, typed}`, how many questions those rates are over
    (`direct_questions` for direct mode); report.md gives each rate its 95% Wilson interval from them;
  - `t2s_accuracy`: typed questions answered in speech (the speech output alone, listening aside);
  - `text_accuracy_after`, `heldout_text_loss_after`: the same text probe after the variant's training (forgetting);
  - `asr_wer`: `{seen_voices, heldout_voices, person_voice}`, WER of the model's transcripts of the test questions
    (the frozen variant's: the words its adapter gave the LLM, when it reads words; null values when it reads
    frames), with `asr_exact` and `asr_content_words` beside it (speechgpt.eval.transcript_scores);
    `asr_wer_sentences`: WER on unseen corpus sentences (`eval asr`);
  - `ttfa_s` `{p50, p90}`: end of speech -> first audio, and `latency_s`, the same spread per component;
  - `params_trained` (the most any of its stages trained), `train_seconds` (all its stages), `stages` (run.json each).

A missing input is an error naming the file and the step that writes it; results a variant cannot give yet are null.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechgpt.app.compare_report import write_report
from speechgpt.app.spoken_qa import spread
from speechgpt.config import save_config
from speechgpt.data.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    backbone_text: Path = Path("out/demo/eval_text_backbone")
    """`speechgpt eval text` of the backbone: its text accuracy and held-out text loss before speech training."""
    unified_text: Path = Path("out/demo/eval_text_unified")
    """`speechgpt eval text` of the unified variant's last stage."""
    frozen_text: Path = Path("out/demo/eval_text_frozen")
    """`speechgpt eval text` of the frozen variant's last stage (it asks the backbone the folder names)."""
    unified_qa: Path = Path("out/demo/spoken_qa")
    """`speechgpt eval chat` of the unified variant on the spoken test questions (chain of modality)."""
    unified_direct_qa: Path | None = None
    """`speechgpt eval chat` of the unified variant in direct mode (no transcript), when run."""
    frozen_qa: Path = Path("out/demo/frozen_spoken_qa")
    """`speechgpt eval chat` of the frozen variant on the same questions."""
    unified_asr: Path | None = Path("out/demo/eval_asr")
    """`speechgpt eval asr` of the unified stage-2 model on unseen corpus sentences."""
    frozen_asr: Path | None = Path("out/demo/frozen_eval_asr")
    """`speechgpt eval asr` of the frozen variant on the same sentences."""
    unified_tts: Path | None = None
    """`speechgpt eval tts` of the unified variant (new sentences read aloud), when run."""
    frozen_tts_eval: Path | None = None
    """`speechgpt eval tts` of the frozen variant on the same sentences, when run."""
    unified_runs: list[Path] = field(
        default_factory=lambda: [Path("out/demo/stage1"), Path("out/demo/stage2"), Path("out/demo/stage3")]
    )
    """Training runs of the unified variant, in order."""
    frozen_runs: list[Path] = field(
        default_factory=lambda: [Path(f"out/demo/frozen_{name}") for name in ("ctc", "asr", "qa", "tts", "speak")]
    )
    """Training runs of the frozen variant, in order."""
    examples: int = 3
    """Example conversations per variant in the report."""
    out: Path = Path("out/demo/report")
    """Output folder: report.json, report.md, *.png, examples/."""


VOICE_GROUPS = {"training": "seen_voices", "held_out": "heldout_voices", "person": "person_voice"}
"""`eval chat`'s voice groups -> report.json's keys."""


def run(cfg: Config) -> Path:
    """Gather, write report.json and report.md; returns report.json's path."""
    backbone = read_report(cfg.backbone_text, "speechgpt eval text (the backbone)")
    unified_qa = read_report(cfg.unified_qa, "speechgpt eval chat (unified)")
    frozen_qa = read_report(cfg.frozen_qa, "speechgpt eval chat (frozen)")
    answers = {"unified": read_answers(cfg.unified_qa), "frozen": read_answers(cfg.frozen_qa)}
    save_config(cfg, cfg.out)  # after the inputs are found: a refused run leaves no output folder behind
    report = {
        "backbone": {
            "text_accuracy": backbone["text_accuracy"],
            "heldout_text_loss": backbone.get("heldout_text_loss"),
            "questions": backbone["questions"],
            "model": backbone["model"],
        },
        "variants": {
            "unified": unified_variant(cfg, unified_qa, answers["unified"]),
            "frozen": frozen_variant(cfg, frozen_qa),
        },
    }
    write_report(report, cfg, answers)
    path = cfg.out / "report.json"
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    log.info("comparison written to %s and report.md", path)
    return path


def read_report(folder: Path, made_by: str) -> dict[str, Any]:
    path = folder / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run {made_by} first")
    return json.loads(path.read_text(encoding="utf-8"))


def read_answers(folder: Path) -> list[dict[str, Any]]:
    path = folder / "answers.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run speechgpt eval chat first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def questions(qa: dict[str, Any]) -> dict[str, Any]:
    """`{all, <voice groups>, typed}`: how many questions each accuracy of an eval chat report is over."""
    return {**by_group(qa, "questions", qa["questions"]), "typed": (qa.get("typed") or {}).get("questions")}


def by_group(qa: dict[str, Any], key: str, overall: Any) -> dict[str, Any]:
    """`{all, <voice groups>}` of one column of an eval chat report (an accuracy, or `questions`)."""
    groups = qa.get("by_voices", {})
    out: dict[str, Any] = {"all": overall}
    for group, name in VOICE_GROUPS.items():
        out[name] = groups.get(group, {}).get(key)
    return out


def training(runs: list[Path]) -> dict[str, Any]:
    """The runs' run.json files, the most parameters any of them trained, and their summed step seconds."""
    stages = {}
    for folder in runs:
        path = folder / "run.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the training run {folder} has not finished")
        stages[folder.name] = json.loads(path.read_text(encoding="utf-8"))
    return {
        "params_trained": max(s["params_trained"] for s in stages.values()),
        "train_seconds": round(sum(s["train_seconds"] for s in stages.values()), 1),
        "stages": stages,
    }


def text_after(folder: Path, what: str) -> dict[str, Any]:
    text = read_report(folder, f"speechgpt eval text ({what})")
    return {"text_accuracy_after": text["text_accuracy"], "heldout_text_loss_after": text.get("heldout_text_loss")}


def sentences_wer(folder: Path | None) -> dict[str, float | None] | None:
    """WER on unseen corpus sentences (eval asr's dev_seen_voices and dev splits)."""
    if folder is None:
        return None
    splits = read_report(folder, "speechgpt eval asr")["splits"]
    return {
        "seen_voices": splits.get("dev_seen_voices", {}).get("wer"),
        "heldout_voices": splits.get("dev", {}).get("wer"),
    }


def tts_scores(folder: Path | None) -> dict[str, Any] | None:
    """Judge WER/CER of new sentences the variant read aloud, beside the answer voice's own recordings (eval tts)."""
    if folder is None:
        return None
    tts = read_report(folder, "speechgpt eval tts")
    reference = tts.get("reference") or {}
    return {"wer": tts["wer"], "cer": tts["cer"], "sentences": tts["sentences"], "reference_wer": reference.get("wer")}


def transcript_fields(qa: dict[str, Any]) -> dict[str, Any]:
    """asr_wer, asr_exact and asr_content_words per voice group, from the transcripts `eval chat` scored (None where
    it has none: a frozen variant whose adapter reads frames says no transcript)."""
    transcripts = {VOICE_GROUPS[g]: row.get("transcript") or {} for g, row in qa.get("by_voices", {}).items()}
    return {
        f"asr_{key}": {name: t.get(score) for name, t in transcripts.items()}
        for key, score in (("wer", "wer"), ("exact", "exact"), ("content_words", "content_words"))
    }


def unified_variant(cfg: Config, qa: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]:
    direct = direct_questions = None
    if cfg.unified_direct_qa is not None:
        direct_qa = read_report(cfg.unified_direct_qa, "speechgpt eval chat (unified, direct mode)")
        direct, direct_questions = by_group(direct_qa, "text_correct", direct_qa["text_accuracy"]), questions(direct_qa)
    return {
        "questions": questions(qa),
        "s2t_accuracy": by_group(qa, "text_correct", qa["text_accuracy"]),
        "direct_s2t_accuracy": direct,
        "direct_questions": direct_questions,
        "s2s_accuracy": by_group(qa, "spoken_correct", qa.get("spoken_accuracy")),
        "speak_from": qa.get("speak_from", "chain"),
        "t2s_accuracy": (qa.get("typed") or {}).get("t2s_accuracy"),
        **text_after(cfg.unified_text, "unified"),
        **transcript_fields(qa),
        "asr_wer_sentences": sentences_wer(cfg.unified_asr),
        "tts": tts_scores(cfg.unified_tts),
        "ttfa_s": spread([a.get("seconds_to_first_audio") for a in answers]),
        "latency_s": {
            "units": spread([a.get("seconds_to_units") for a in answers]),
            "first_token": spread([a.get("seconds_to_first_token") for a in answers]),
            "first_audio": spread([a.get("seconds_to_first_audio") for a in answers]),
        },
        **training(cfg.unified_runs),
    }


def frozen_variant(cfg: Config, qa: dict[str, Any]) -> dict[str, Any]:
    latency = qa.get("latency", {})
    return {
        "questions": questions(qa),
        "s2t_accuracy": by_group(qa, "s2t_correct", qa["s2t_accuracy"]),
        "s2s_accuracy": by_group(qa, "spoken_correct", qa.get("spoken_accuracy")),
        "t2s_accuracy": (qa.get("typed") or {}).get("t2s_accuracy"),
        "state_accuracy": qa.get("state", {}).get("accuracy"),
        **text_after(cfg.frozen_text, "frozen"),
        **transcript_fields(qa),
        "asr_wer_sentences": sentences_wer(cfg.frozen_asr),
        "tts": tts_scores(cfg.frozen_tts_eval),
        "ttfa_s": latency.get("first_audio_s"),
        "latency_s": {
            "decision": latency.get("decision_s"),
            "first_token": latency.get("first_token_s"),
            "first_unit": latency.get("first_unit_s"),
            "first_audio": latency.get("first_audio_s"),
        },
        **training(cfg.frozen_runs),
    }
