"""`speechgpt eval chat`: held-out spoken questions answered in speech, scored by a judge nobody here trained.

Questions come from `speechgpt build qa` (their expected answers and families) and their audio from `speechgpt corpus
synth qa=...`, which had the held-out voices speak the dev/test questions; neither the voices nor the questions were
trained on. Each question goes through the whole chain (speech -> units -> transcript -> text answer -> answer
units -> vocoder), and the Whisper judge transcribes the spoken answer:

- `text_accuracy`: the model's text answer is correct (numbers compare by value);
- `spoken_accuracy`: what the judge hears in the spoken answer is correct;
- `transcript_wer`: the model's transcript of the question against the question's text; per voice group also the
  exact-transcript rate and the share of content words heard (`speechgpt.eval.transcript_scores`).

`session.reply: text` asks for text answers only (no vocoder, no judge: `spoken_accuracy` is null), a quicker S2T run.

Both variants report accuracy by voice group (`by_voices`): "held_out" voices never trained, "training" voices are
the speakers of the `speech` corpus' train split, heard in new renditions (the held-out questions) when
`seen_voices_speech` gives them. The frozen-LLM variant (a frozen model folder, or `variant=frozen`) listens to each
question as a stream and answers in text, then (given `speech_decoder` and a vocoder) in speech, which the judge
hears: `s2t_accuracy` and `spoken_accuracy` overall and by voices, the state head's decisions (`state`: answered
at the end of the question, not inside it; premature, ignored or undecided otherwise) and the latencies from the
end of speech (`latency`: p50/p90 of the decision, the first text token, the first unit, the first audio), printed
as a short table. The text answer is the one the stream gives: where the state head said "answer" (a premature
decision answers a partial question), at the end when it never decided (`listening.answer_at_end`), none when it
said "ignore" (scored wrong).

With spoken answers, each question is also asked typed (`typed`, speechgpt.app.typed_qa): `typed.t2s_accuracy` is
how well the variant says answers with no listening involved, the ceiling of its S2S accuracy.

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

from speechgpt.app.chat import ChatApp, ChatSetup, load_chat_app
from speechgpt.config import save_config
from speechgpt.data.audio import SAMPLE_RATE, read_audio, write_audio
from speechgpt.data.io import atomic_write_text
from speechgpt.infer.listening import Turn
from speechgpt.text.backbone_text import QA_KEYS, load_qa_split

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
    seen_voices_speech: Path | None = None
    """Question audio of the same split spoken by training voices (e.g. `speechgpt corpus synth qa=...` with training
    voices as its `heldout_voices`): asked too, so accuracy is reported on training voices beside held-out ones."""
    typed: bool = True
    """Also ask each question typed and judge its spoken answer (T2S: the speech output alone); speech replies only."""
    audio_examples: int = 4
    """Questions whose audio (and spoken answer) are kept under examples/, spread over the voice groups."""
    out: Path = Path("out/demo/spoken_qa")
    """Output folder: report.json, answers.jsonl, question.wav, answer.wav, examples/."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_questions < 1 or self.audio_examples < 0:
            raise ValueError("max_questions must be >= 1 and audio_examples >= 0")


@dataclass(frozen=True)
class QuestionClip:
    question: dict[str, str]
    audio: str
    speaker: str
    voices: str
    """'training' (a speaker of the `speech` corpus' train split) or 'held_out'."""


def run(cfg: Config) -> Path:
    """Ask, listen, score; returns report.json's path."""
    save_config(cfg, cfg.out)
    questions = pick_questions(read_questions(cfg.qa, cfg.split), cfg.max_questions)
    clips = question_clips(cfg, questions)
    app = load_chat_app(cfg)
    rows, report = run_frozen(app, clips, cfg) if app.variant == "frozen" else run_unified(app, clips, cfg)
    if cfg.typed and app.speaks and cfg.session.reply != "text":
        from speechgpt.app.typed_qa import ask_typed
        from speechgpt.eval.judge import load_judge

        typed_rows, report["typed"] = ask_typed(app, questions, load_judge())
        atomic_write_text(cfg.out / "typed_answers.jsonl", "".join(json.dumps(r) + "\n" for r in typed_rows))
        typed = report["typed"]
        print(
            f"  typed questions, spoken answers (T2S): {100 * typed['t2s_accuracy']:.1f}% of {typed['questions']}"
            f" (text answers right {100 * typed['t2t_accuracy']:.1f}%)",
            flush=True,
        )
    atomic_write_text(cfg.out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    log.info("spoken QA: %s", {k: v for k, v in report.items() if k != "example"})
    return cfg.out / "report.json"


def run_unified(app: ChatApp, clips: list[QuestionClip], cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Speech in, speech out through the chain of modality; the Whisper judge listens to the spoken answers."""
    from speechgpt.eval.answers import answer_is_correct
    from speechgpt.eval.judge import load_judge, word_error_rate
    from speechgpt.eval.transcript_scores import transcript_scores

    speak = cfg.session.reply != "text"
    judge = load_judge() if speak else None
    rows: list[dict[str, Any]] = []
    for index, clip in enumerate(tqdm(clips, desc="spoken questions", unit="q")):
        question = clip.question
        samples = read_audio(clip.audio).samples
        app.reset()
        result = app.session.respond(audio=samples, reply="speech" if speak else "text")
        answer = result.answer
        audio = result.audio
        heard = judge.transcribe([audio])[0] if judge is not None and audio is not None and audio.size else ""
        rows.append(
            {
                "id": question["id"],
                "family": question["family"],
                "voices": clip.voices,
                "speaker": clip.speaker,
                "question": question["instruction"],
                "expected": question["output"],
                "transcript": answer.transcript or "",
                "text": answer.text or "",
                "heard": heard,
                "text_correct": answer_is_correct(question["family"], question["output"], answer.text or ""),
                "spoken_correct": answer_is_correct(question["family"], question["output"], heard) if speak else None,
                "units": len(answer.units),
                "problems": list(answer.problems),
                "seconds_to_units": round(result.timings.units_time_s, 4),
                "seconds_to_first_token": result.timings.first_token_s,
                "seconds_to_first_audio": result.timings.first_audio_s,
                "seconds_total": round(result.timings.total_s, 3),
            }
        )
        answer_audio = (result.audio, result.sample_rate) if result.audio is not None and result.sample_rate else None
        rows[-1].update(save_example(cfg, index, len(clips), samples, answer_audio))
    wer = word_error_rate([r["question"] for r in rows], [r["transcript"] for r in rows])
    report = summarize(rows, wer)
    report["by_voices"] = by_voices(rows, ("text_correct", "spoken_correct") if speak else ("text_correct",))
    for group, row in report["by_voices"].items():
        mine = [r for r in rows if r["voices"] == group]
        row["transcript"] = transcript_scores(
            [r["question"] for r in mine], [r["transcript"] for r in mine], [r["family"] for r in mine]
        )
    return rows, report


def run_frozen(app: ChatApp, clips: list[QuestionClip], cfg: Config) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each question streamed to the frozen variant's listener (its trailing silence, then the end of the stream),
    scored on its text answer, its state decisions and its latencies; with a speech decoder and a vocoder (and
    `session.reply` not text) its spoken answer is judged too. The summary is printed."""
    from speechgpt.eval.answers import answer_is_correct
    from speechgpt.eval.judge import load_judge
    from speechgpt.infer.frozen_session import FrozenChatSession
    from speechgpt.training.feature_cache import speech_end  # where the frozen stages' state labels put it

    if not isinstance(app.session, FrozenChatSession):
        raise TypeError("run_frozen needs the frozen variant's session")
    session, rows = app.session, []
    speak = session.speaks and cfg.session.reply != "text"
    judge = load_judge() if speak else None
    for index, clip in enumerate(tqdm(clips, desc="spoken questions", unit="q")):
        samples = read_audio(clip.audio).samples
        result = session.respond(audio=samples, reply="speech" if speak else "text")
        turn, q = session.listener.turn, clip.question
        correct = answer_is_correct(q["family"], q["output"], turn.text) if turn.outcome == "answer" else False
        rows.append(frozen_row(clip, turn, speech_end(samples), correct))
        audio = result.audio if result.audio is not None and result.audio.size else None
        heard = judge.transcribe([audio])[0] if judge is not None and audio is not None else ""
        spoken = answer_is_correct(q["family"], q["output"], heard) if speak and turn.outcome == "answer" else False
        rows[-1].update(heard=heard, spoken_correct=spoken if speak else None, units=len(result.answer.units))
        answer_audio = (audio, result.sample_rate) if audio is not None and result.sample_rate else None
        rows[-1].update(save_example(cfg, index, len(clips), samples, answer_audio))
    report = summarize_frozen(rows, speak)
    print(frozen_table(report, cfg.split), flush=True)
    return rows, report


def save_example(
    cfg: Config, index: int, total: int, question: np.ndarray, answer: tuple[np.ndarray, int] | None
) -> dict[str, str]:
    """For `cfg.audio_examples` questions spread over the run (held-out voices first, then training voices): their
    audio and the answer's under examples/, named in the row; the first ones are also question.wav and answer.wav."""
    if index == 0:
        write_audio(cfg.out / "question.wav", question, SAMPLE_RATE)
        if answer is not None:
            write_audio(cfg.out / "answer.wav", answer[0], answer[1])
    chosen = {int(k * total / cfg.audio_examples) for k in range(min(cfg.audio_examples, total))}
    if index not in chosen:
        return {}
    paths = {"question_audio": f"examples/{index:03d}-question.wav"}
    write_audio(cfg.out / paths["question_audio"], question, SAMPLE_RATE)
    if answer is not None:
        paths["answer_audio"] = f"examples/{index:03d}-answer.wav"
        write_audio(cfg.out / paths["answer_audio"], answer[0], answer[1])
    return paths


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

    def spread(key: str) -> dict[str, Any] | None:
        values = [r[key] for r in rows if r[key] is not None]
        if not values:
            return None
        p50, p90 = np.percentile(values, [50, 90])
        return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "count": len(values)}

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
        "latency": {key: spread(key) for key in (*LATENCIES, "decision_delay_audio_s")},
        "example": {k: rows[0][k] for k in ("question", "text", "expected", "states")},
    }


def frozen_table(report: dict[str, Any], split: str) -> str:
    """The frozen variant's scores in a few lines."""
    spoken = report.get("spoken_accuracy") is not None
    answered = "in text and speech" if spoken else "in text"
    lines = [f"frozen-LLM variant: {report['questions']} spoken {split} questions, answered {answered}"]
    groups = report["by_voices"]
    names = {"training": "training voices", "held_out": "held-out voices"}
    for key, label in (("s2t_accuracy", "S2T"), ("spoken_accuracy", "S2S")):
        if report.get(key) is None:
            continue
        row_key = "s2t_correct" if key == "s2t_accuracy" else "spoken_correct"
        accuracy = ", ".join(f"{names[g]} {100 * row[row_key]:.1f}% of {row['questions']}" for g, row in groups.items())
        lines.append(f"  {label} accuracy: {100 * report[key]:.1f}% ({accuracy})")
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


def summarize(rows: list[dict[str, Any]], transcript_wer: float) -> dict[str, Any]:
    first_audio = [r["seconds_to_first_audio"] for r in rows if r["seconds_to_first_audio"] is not None]
    spoken = [r["spoken_correct"] for r in rows]
    return {
        "questions": len(rows),
        "text_accuracy": round(float(np.mean([r["text_correct"] for r in rows])), 4),
        "spoken_accuracy": None if None in spoken else round(float(np.mean(spoken)), 4),
        "transcript_wer": round(transcript_wer, 4),
        "well_formed": round(float(np.mean([not r["problems"] for r in rows])), 4),
        "mean_seconds_to_first_audio": round(float(np.mean(first_audio)), 3) if first_audio else None,
        "mean_seconds_total": round(float(np.mean([r["seconds_total"] for r in rows])), 3),
        "example": {k: rows[0][k] for k in ("question", "transcript", "text", "heard", "expected")},
    }


def read_questions(qa: Path, split: str) -> list[dict[str, str]]:
    """The split's questions, each with its family and expected answer (`load_qa_split`); none is an error."""
    rows = load_qa_split(qa, split, (*QA_KEYS, "family"))
    if not rows:
        raise ValueError(f"{qa / f'{split}.jsonl'} has no questions")
    return rows


def pick_questions(questions: list[dict[str, str]], count: int) -> list[dict[str, str]]:
    """`count` questions evenly spaced through the list (so every family is asked), in list order."""
    if count >= len(questions):
        return questions
    return [questions[int(i * len(questions) / count)] for i in range(count)]


def question_clips(cfg: Config, questions: list[dict[str, str]]) -> list[QuestionClip]:
    """Each question's clip in `speech` (an error when one is missing) and in `seen_voices_speech` (when given),
    with its voice group."""
    from speechgpt.data.corpus import load_corpus

    corpus = load_corpus(cfg.speech)
    training = {spk for spk, split in zip(corpus["speaker"], corpus["split"], strict=True) if split == "train"}
    clips = []
    for path in [cfg.speech] if cfg.seen_voices_speech is None else [cfg.speech, cfg.seen_voices_speech]:
        rows = corpus if path == cfg.speech else load_corpus(path)
        spoken = {i: (a, s) for i, a, s in zip(rows["id"], rows["audio"], rows["speaker"], strict=True)}
        for question in questions:
            found = spoken.get(f"q-{question['id']}")
            if found is None:
                raise ValueError(f"{path}: no audio for question {question['id']} (was it built with this qa?)")
            voices = "training" if found[1] in training else "held_out"
            clips.append(QuestionClip(question, found[0], found[1], voices))
    return clips


def by_voices(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per voice group present: its question count and the mean of each boolean `keys` column."""
    groups: dict[str, dict[str, Any]] = {}
    for group in ("training", "held_out"):
        mine = [r for r in rows if r["voices"] == group]
        if mine:
            groups[group] = {
                "questions": len(mine),
                **{k: round(float(np.mean([r[k] for r in mine])), 4) for k in keys},
            }
    return groups
