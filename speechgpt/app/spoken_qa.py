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
`seen_voices_speech` gives them, and "person" a voice made from a person's recordings (a Piper voice, never trained
on) when `person_speech` gives it. The frozen-LLM variant (a frozen model folder, or `variant=frozen`) listens to each
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
from speechgpt.eval.judge import Judge, load_judge, word_error_rate
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
    person_speech: Path | None = None
    """Question audio of the same split spoken by a voice made from a person's recordings (a Piper voice that no
    training corpus speaks, e.g. `speechgpt corpus synth qa=...` with `piper:en_US-joe-medium` as its held-out
    voice): asked too, as the voice group `person`, the nearest these tests come to a person asking."""
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
    """'training' (a speaker of the `speech` corpus' train split), 'held_out' or 'person' (from `person_speech`)."""


VOICE_GROUPS = {"training": "training voices", "held_out": "held-out voices", "person": "a person's voice"}
"""Voice groups in report order, with the words the tables print."""


def run(cfg: Config) -> Path:
    """Ask, listen, score; returns report.json's path."""
    save_config(cfg, cfg.out)
    questions = pick_questions(read_questions(cfg.qa, cfg.split), cfg.max_questions)
    clips = question_clips(cfg, questions)
    app = load_chat_app(cfg)
    judge = load_judge(cpu_threads=cfg.num_threads) if cfg.session.reply != "text" else None
    if app.variant == "frozen":
        from speechgpt.app.frozen_spoken_qa import run_frozen

        rows, report = run_frozen(app, clips, cfg, judge)
    else:
        rows, report = run_unified(app, clips, cfg, judge)
    if cfg.typed and app.speaks and judge is not None:
        from speechgpt.app.typed_qa import ask_typed

        typed_rows, report["typed"] = ask_typed(app, questions, judge)
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


def run_unified(
    app: ChatApp, clips: list[QuestionClip], cfg: Config, judge: Judge | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Speech in, speech out through the chain of modality; the Whisper judge listens to the spoken answers (no
    judge: text replies)."""
    from speechgpt.eval.answers import answer_is_correct

    speak = judge is not None
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
    report = summarize(rows)
    report["speak_from"] = app.session.config.speak_from
    report["by_voices"] = by_voices(rows, ("text_correct", "spoken_correct") if speak else ("text_correct",))
    score_transcripts(report, rows)
    report["latency"] = {key: spread([r[f"seconds_to_{name}"] for r in rows]) for key, name in UNIFIED_LATENCIES}
    print(unified_table(report, cfg.split), flush=True)
    return rows, report


UNIFIED_LATENCIES = (("units_s", "units"), ("first_token_s", "first_token"), ("first_audio_s", "first_audio"))
"""The unified variant's latencies from the end of speech (the whole question given): its units, the first token
of the chain of modality, the first audio."""


def spread(values: list[float | None]) -> dict[str, Any] | None:
    """p50 and p90 (and how many) of the values present; None when there is none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    p50, p90 = np.percentile(present, [50, 90])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "count": len(present)}


def group_rates(by_voices: dict[str, dict[str, Any]], column: str) -> str:
    """`column`'s rate in each voice group, as the tables print it: `held-out voices 56.5% of 46, ...`."""
    return ", ".join(
        f"{VOICE_GROUPS[g]} {100 * row[column]:.1f}% of {row['questions']}" for g, row in by_voices.items()
    )


def unified_table(report: dict[str, Any], split: str) -> str:
    """The unified variant's scores in a few lines, as the frozen variant's table gives its own."""
    lines = [f"unified variant: {report['questions']} spoken {split} questions, chain of modality"]
    for key, label, column in (("text_accuracy", "S2T", "text_correct"), ("spoken_accuracy", "S2S", "spoken_correct")):
        if report.get(key) is None:
            continue
        lines.append(f"  {label} accuracy: {100 * report[key]:.1f}% ({group_rates(report['by_voices'], column)})")
    lines.append(f"  transcript WER of the questions: {100 * report['transcript_wer']:.1f}%")
    for key, label in (("units_s", "units"), ("first_token_s", "first token"), ("first_audio_s", "first audio")):
        row = report["latency"][key]
        text = "-" if row is None else f"p50 {1000 * row['p50']:.0f} ms, p90 {1000 * row['p90']:.0f} ms"
        lines.append(f"  end of speech -> {label}: {text}")
    return "\n".join(lines)


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


def score_transcripts(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Add the transcripts' scores to a report with `by_voices`: `transcript_wer` over every row, and per voice
    group `transcript` (WER, exact-transcript rate, content words heard: speechgpt.eval.transcript_scores)."""
    from speechgpt.eval.transcript_scores import transcript_scores

    report["transcript_wer"] = round(word_error_rate([r["question"] for r in rows], [r["transcript"] for r in rows]), 4)
    for group, row in report["by_voices"].items():
        mine = [r for r in rows if r["voices"] == group]
        row["transcript"] = transcript_scores(
            [r["question"] for r in mine], [r["transcript"] for r in mine], [r["family"] for r in mine]
        )


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    first_audio = [r["seconds_to_first_audio"] for r in rows if r["seconds_to_first_audio"] is not None]
    spoken = [r["spoken_correct"] for r in rows]
    return {
        "questions": len(rows),
        "text_accuracy": round(float(np.mean([r["text_correct"] for r in rows])), 4),
        "spoken_accuracy": None if None in spoken else round(float(np.mean(spoken)), 4),
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
    """Each question's clip in `speech` (an error when one is missing), in `seen_voices_speech` and in
    `person_speech` (when given), with its voice group."""
    from speechgpt.data.corpus import load_corpus

    corpus = load_corpus(cfg.speech)
    training = {spk for spk, split in zip(corpus["speaker"], corpus["split"], strict=True) if split == "train"}
    sources = [(cfg.speech, None), (cfg.seen_voices_speech, None), (cfg.person_speech, "person")]
    clips = []
    for path, group in sources:
        if path is None:
            continue
        rows = corpus if path == cfg.speech else load_corpus(path)
        spoken = {i: (a, s) for i, a, s in zip(rows["id"], rows["audio"], rows["speaker"], strict=True)}
        for question in questions:
            found = spoken.get(f"q-{question['id']}")
            if found is None:
                raise ValueError(f"{path}: no audio for question {question['id']} (was it built with this qa?)")
            voices = group or ("training" if found[1] in training else "held_out")
            clips.append(QuestionClip(question, found[0], found[1], voices))
    return clips


def by_voices(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per voice group present: its question count and the mean of each boolean `keys` column."""
    groups: dict[str, dict[str, Any]] = {}
    for group in VOICE_GROUPS:
        mine = [r for r in rows if r["voices"] == group]
        if mine:
            groups[group] = {
                "questions": len(mine),
                **{k: round(float(np.mean([r[k] for r in mine])), 4) for k in keys},
            }
    return groups
