"""`speechgpt eval chat` for the frozen-LLM variant (speechgpt.app.spoken_qa holds the protocol): each question
streamed to its listener, scored on the text answer, the state decisions, the spoken answer the judge hears (given
a speech decoder and a vocoder) and the latencies from the end of speech, per component. With an adapter that reads
words, the words the LLM was given are its transcript of the question, scored as the unified variant's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from speechgpt.app.chat import ChatApp
from speechgpt.app.spoken_qa import (
    QuestionClip,
    by_voices,
    group_rates,
    save_example,
    score_transcripts,
    spread,
)
from speechgpt.data.audio import read_audio
from speechgpt.infer.listening import Turn

if TYPE_CHECKING:
    from speechgpt.app.spoken_qa import Config
    from speechgpt.eval.judge import Judge


def run_frozen(
    app: ChatApp, clips: list[QuestionClip], cfg: Config, judge: Judge | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each question streamed to the frozen variant's listener (its trailing silence, then the end of the stream),
    scored on its text answer, its state decisions and its latencies; with a speech decoder, a vocoder and a judge
    (`session.reply` not text) its spoken answer is judged too. The summary is printed."""
    from speechgpt.eval.answers import answer_is_correct
    from speechgpt.infer.frozen_session import FrozenChatSession
    from speechgpt.infer.speech_input import question_samples
    from speechgpt.training.feature_cache import speech_end  # where the frozen stages' state labels put it

    if not isinstance(app.session, FrozenChatSession):
        raise TypeError("run_frozen needs the frozen variant's session")
    session, rows = app.session, []
    speak = session.speaks and judge is not None
    reads_words = session.listener.model.word_space is not None
    for index, clip in enumerate(tqdm(clips, desc="spoken questions", unit="q")):
        samples = read_audio(clip.audio).samples
        result = session.respond(audio=samples, reply="speech" if speak else "text")
        turn, q = session.listener.turn, clip.question
        correct = answer_is_correct(q["family"], q["output"], turn.text) if turn.outcome == "answer" else False
        listened = question_samples(samples, session.config.condition_input)  # what the listener was given
        rows.append(frozen_row(clip, turn, speech_end(listened), correct))
        if reads_words:  # the words the LLM was given: its transcript of the question
            rows[-1].update(family=q["family"], transcript=session.listener.heard_text())
        audio = result.audio if result.audio is not None and result.audio.size else None
        heard = judge.transcribe([audio])[0] if judge is not None and audio is not None else ""
        spoken = answer_is_correct(q["family"], q["output"], heard) if speak and turn.outcome == "answer" else False
        rows[-1].update(heard=heard, spoken_correct=spoken if speak else None, units=len(result.answer.units))
        answer_audio = (audio, result.sample_rate) if audio is not None and result.sample_rate else None
        rows[-1].update(save_example(cfg, index, len(clips), samples, answer_audio))
    report = summarize_frozen(rows, speak)
    if reads_words:
        score_transcripts(report, rows)
    print(frozen_table(report, cfg.split), flush=True)
    return rows, report


def frozen_row(clip: QuestionClip, turn: Turn, end_s: float, correct: bool) -> dict[str, Any]:
    """A question's scores: the answer, the decisions (0 keep listening, 1 answer, 2 ignore; "premature" when one
    came at a chunk that ended before the speech did) and the latencies of a decision the state head made."""
    decided = turn.outcome is not None and not turn.forced
    decision_audio = turn.decisions[-1].audio_s if decided else None
    premature = decision_audio is not None and decision_audio < end_s - 1e-6
    latencies = turn.latencies() if decided else {}
    return {
        "id": clip.question["id"],
        "voices": clip.voices,
        "speaker": clip.speaker,
        "question": clip.question["instruction"],
        "expected": clip.question["output"],
        "text": turn.text,
        "s2t_correct": correct,
        "states": "".join(str(state) for state in turn.states),
        "outcome": turn.outcome,
        "forced": turn.forced,
        "speech_end_s": round(end_s, 3),
        "decision_audio_s": None if decision_audio is None else round(decision_audio, 3),
        "state_correct": decided and turn.outcome == "answer" and not premature,
        "premature": premature,
        **{key: latencies.get(key) for key in LATENCIES},
        "decision_delay_audio_s": None if decision_audio is None else round(decision_audio - end_s, 3),
    }


LATENCIES = {
    "decision_s": "decision",
    "first_token_s": "first text token",
    "first_unit_s": "first unit",
    "first_audio_s": "first audio",
}
"""The frozen variant's latencies from the end of speech, per component, and how the table names them."""


def summarize_frozen(rows: list[dict[str, Any]], spoken: bool = False) -> dict[str, Any]:
    def rate(values: list[bool]) -> float:
        return round(float(np.mean(values)), 4)

    scored = ("s2t_correct", "state_correct", "spoken_correct") if spoken else ("s2t_correct", "state_correct")
    return {
        "variant": "frozen",
        "questions": len(rows),
        "s2t_accuracy": rate([r["s2t_correct"] for r in rows]),
        "spoken_accuracy": rate([r["spoken_correct"] for r in rows]) if spoken else None,
        "by_voices": by_voices(rows, scored),
        "state": {
            "accuracy": rate([r["state_correct"] for r in rows]),
            "premature": rate([r["premature"] for r in rows]),
            "ignored": rate([r["outcome"] == "ignore" and not r["premature"] for r in rows]),
            "undecided": rate([r["outcome"] is None or r["forced"] for r in rows]),
        },
        "latency": {key: spread([r[key] for r in rows]) for key in (*LATENCIES, "decision_delay_audio_s")},
        "example": {k: rows[0][k] for k in ("question", "text", "expected", "states")},
    }


def frozen_table(report: dict[str, Any], split: str) -> str:
    """The frozen variant's scores in a few lines."""
    spoken = report.get("spoken_accuracy") is not None
    answered = "in text and speech" if spoken else "in text"
    lines = [f"frozen-LLM variant: {report['questions']} spoken {split} questions, answered {answered}"]
    groups = report["by_voices"]
    for key, label in (("s2t_accuracy", "S2T"), ("spoken_accuracy", "S2S")):
        if report.get(key) is None:
            continue
        row_key = "s2t_correct" if key == "s2t_accuracy" else "spoken_correct"
        lines.append(f"  {label} accuracy: {100 * report[key]:.1f}% ({group_rates(groups, row_key)})")
    if report.get("transcript_wer") is not None:
        wer = 100 * report["transcript_wer"]
        lines.append(f"  transcript WER of the questions (the words the LLM read): {wer:.1f}%")
    state = report["state"]
    lines.append(
        f"  state head: answered at the end of the question {100 * state['accuracy']:.1f}% (inside it "
        f"{100 * state['premature']:.1f}%, ignored {100 * state['ignored']:.1f}%, "
        f"no decision {100 * state['undecided']:.1f}%)"
    )
    latency = report["latency"]
    for key, label in LATENCIES.items():
        row = latency[key]
        if row is None and key in ("first_unit_s", "first_audio_s"):
            continue  # answered in text
        text = "-" if row is None else f"p50 {1000 * row['p50']:.0f} ms, p90 {1000 * row['p90']:.0f} ms"
        lines.append(f"  end of speech -> {label}: {text}")
    delay = latency["decision_delay_audio_s"]
    if delay is not None:
        lines.append(f"  audio heard after the end of speech before the decision: p50 {1000 * delay['p50']:.0f} ms")
    return "\n".join(lines)
