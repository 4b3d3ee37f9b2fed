"""The speech output alone: `speechgpt eval chat` also asks each question typed, wants a spoken answer (T2S) and has
the Whisper judge listen to it. Listening plays no part, so this measures how well a variant says an answer it
knows (the frozen variant's LLM answers typed questions as its backbone does): the ceiling of its S2S accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm import tqdm

from speechgpt.app.chat import ChatApp


def ask_typed(app: ChatApp, questions: list[dict[str, str]], judge: Any) -> tuple[list[dict[str, Any]], dict]:
    """Rows (question, expected, text answer, what the judge heard, both scored) and their summary: the text
    accuracy (T2T) and the spoken accuracy (T2S), overall and given a right text answer."""
    from speechgpt.eval.answers import answer_is_correct

    rows = []
    for question in tqdm(questions, desc="typed questions", unit="q"):
        app.reset()
        result = app.session.respond(text=question["instruction"], reply="speech")
        audio = result.audio if result.audio is not None and result.audio.size else None
        heard = judge.transcribe([audio])[0] if audio is not None else ""
        text = result.answer.text or ""
        rows.append(
            {
                "id": question["id"],
                "question": question["instruction"],
                "expected": question["output"],
                "text": text,
                "heard": heard,
                "units": len(result.answer.units),
                "text_correct": answer_is_correct(question["family"], question["output"], text),
                "spoken_correct": answer_is_correct(question["family"], question["output"], heard),
            }
        )
    right = [r for r in rows if r["text_correct"]]
    summary = {
        "questions": len(rows),
        "t2t_accuracy": _mean([r["text_correct"] for r in rows]),
        "t2s_accuracy": _mean([r["spoken_correct"] for r in rows]),
        "t2s_given_right_text": _mean([r["spoken_correct"] for r in right]) if right else None,
    }
    return rows, summary


def _mean(values: list[bool]) -> float:
    return round(float(np.mean(values)), 4)
