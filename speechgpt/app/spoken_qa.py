"""`speechgpt eval chat`: held-out spoken questions answered in speech, scored by a judge nobody here trained.

Questions come from `speechgpt build qa` (their expected answers and families) and their audio from `speechgpt corpus
synth qa=...`, which had the held-out voices speak the dev/test questions; neither the voices nor the questions were
trained on. Each question goes through the whole chain (speech -> units -> transcript -> text answer -> answer
units -> vocoder), and the Whisper judge transcribes the spoken answer:

- `text_accuracy`: the model's text answer is correct (numbers compare by value);
- `spoken_accuracy`: what the judge hears in the spoken answer is correct;
- `transcript_wer`: the model's transcript of the question against the question's text.

The first question and its spoken answer are written as question.wav and answer.wav.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from speechgpt.app.chat import ChatSetup, load_chat_app
from speechgpt.config import save_config
from speechgpt.data.audio import SAMPLE_RATE, read_audio, write_audio
from speechgpt.data.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config(ChatSetup):
    qa: Path = Path("out/demo/qa")
    """Output of `speechgpt build qa`: <split>.jsonl with each question's family and expected answer."""
    speech: Path = Path("out/demo/qa_speech")
    """Question audio: the corpus `speechgpt corpus synth qa=...` spoke (ids `q-<question id>`)."""
    split: str = "test"
    """Questions of this split (dev/test questions are held out and spoken by held-out voices)."""
    max_questions: int = 24
    """Questions asked, spread evenly over the split's file order (which groups them by family)."""
    out: Path = Path("out/demo/spoken_qa")
    """Output folder: report.json, answers.jsonl, question.wav, answer.wav."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_questions < 1:
            raise ValueError("max_questions must be >= 1")


def run(cfg: Config) -> Path:
    """Ask, listen, score; returns report.json's path."""
    from speechgpt.eval.answers import answer_is_correct
    from speechgpt.eval.judge import load_judge, word_error_rate

    save_config(cfg, cfg.out)
    questions = pick_questions(read_questions(cfg.qa / f"{cfg.split}.jsonl"), cfg.max_questions)
    audio_of = question_audio(cfg.speech)
    app, judge = load_chat_app(cfg), load_judge()
    rows: list[dict[str, Any]] = []
    for index, question in enumerate(tqdm(questions, desc="spoken questions", unit="q")):
        path = audio_of.get(f"q-{question['id']}")
        if path is None:
            raise ValueError(f"{cfg.speech}: no audio for question {question['id']} (was it built with this qa?)")
        samples = read_audio(path).samples
        app.reset()
        result = app.session.respond(audio=samples, reply="speech")
        answer = result.answer
        heard = judge.transcribe([result.audio])[0] if result.audio is not None and result.audio.size else ""
        rows.append(
            {
                "id": question["id"],
                "question": question["instruction"],
                "expected": question["output"],
                "transcript": answer.transcript or "",
                "text": answer.text or "",
                "heard": heard,
                "text_correct": answer_is_correct(question["family"], question["output"], answer.text or ""),
                "spoken_correct": answer_is_correct(question["family"], question["output"], heard),
                "units": len(answer.units),
                "problems": list(answer.problems),
                "seconds_to_first_audio": result.timings.first_audio_s,
                "seconds_total": round(result.timings.total_s, 3),
            }
        )
        if index == 0:
            write_audio(cfg.out / "question.wav", samples, SAMPLE_RATE)
            if result.audio is not None and result.sample_rate:
                write_audio(cfg.out / "answer.wav", result.audio, result.sample_rate)
    report = summarize(rows, word_error_rate([r["question"] for r in rows], [r["transcript"] for r in rows]))
    atomic_write_text(cfg.out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    log.info("spoken QA: %s", {k: v for k, v in report.items() if k != "example"})
    return cfg.out / "report.json"


def summarize(rows: list[dict[str, Any]], transcript_wer: float) -> dict[str, Any]:
    first_audio = [r["seconds_to_first_audio"] for r in rows if r["seconds_to_first_audio"] is not None]
    return {
        "questions": len(rows),
        "text_accuracy": round(float(np.mean([r["text_correct"] for r in rows])), 4),
        "spoken_accuracy": round(float(np.mean([r["spoken_correct"] for r in rows])), 4),
        "transcript_wer": round(transcript_wer, 4),
        "well_formed": round(float(np.mean([not r["problems"] for r in rows])), 4),
        "mean_seconds_to_first_audio": round(float(np.mean(first_audio)), 3) if first_audio else None,
        "mean_seconds_total": round(float(np.mean([r["seconds_total"] for r in rows])), 3),
        "example": {k: rows[0][k] for k in ("question", "transcript", "text", "heard", "expected")},
    }


def read_questions(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run `speechgpt build qa`)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} has no questions")
    return rows


def pick_questions(questions: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    """`count` questions evenly spaced through the list (so every family is asked), in list order."""
    if count >= len(questions):
        return questions
    return [questions[int(i * len(questions) / count)] for i in range(count)]


def question_audio(speech: Path) -> dict[str, str]:
    from speechgpt.data.corpus import load_corpus

    corpus = load_corpus(speech)
    return dict(zip(corpus["id"], corpus["audio"], strict=True))
