"""Which installed voice should say the answers? Each candidate speaks open sentences and the domain's answers.

    .venv/bin/python -m benchmarks.answer_voices                        # the default candidates, the demo's QA set
    .venv/bin/python -m benchmarks.answer_voices --voices flite:rms,flite:slt --sentences 80

The answer voice is what the vocoder renders every spoken answer in, so the Whisper judge's hearing of the voice's
own audio is the ceiling of every S2S and T2S score. Two sets, original audio only (no units, no vocoder), each clip
stored as the corpus stores it (16-bit FLAC: one word can sit so close to the judge's edge that rounding flips it):
- open sentences: WordNet examples drawn with a seed the demo's corpora do not use, judged by WER;
- answers: every distinct answer of the QA set's train and test questions, scored as the spoken answers are
  (`answer_is_correct`: numbers by value, other answers word for word), counted per question.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from data_builders.text_sources import load_sentences
from data_builders.tts import synthesize
from speechgpt.data.audio import read_audio, write_audio
from speechgpt.data.io import read_jsonl
from speechgpt.eval.answers import answer_is_correct
from speechgpt.eval.judge import Judge, load_judge

CANDIDATES = ["festival:cmu_us_slt_arctic_hts", "flite:rms", "flite:slt", "flite:awb", "piper:en_US-joe-medium"]


def question_answers(qa_dir: Path, splits: list[str]) -> dict[tuple[str, str], Counter[str]]:
    """(family, answer) -> how many questions of each split have that answer."""
    answers: dict[tuple[str, str], Counter[str]] = {}
    for split in splits:
        path = qa_dir / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such QA split (make one with `speechgpt build qa`)")
        for row in read_jsonl(path):
            answers.setdefault((row["family"], row["output"]), Counter())[split] += 1
    return answers


def stored_speech(voice: str, text: str) -> np.ndarray:
    """`text` spoken by `voice`, through a 16-bit FLAC file and back, as the demo's corpora hold their clips."""
    with tempfile.TemporaryDirectory(prefix="answer-voices-") as tmp:
        path = Path(tmp) / "clip.flac"
        write_audio(path, synthesize(voice, text).samples)
        return read_audio(path).samples


def judge_voice(voice: str, sentences: list[str], answers: dict[tuple[str, str], Counter[str]], judge: Judge) -> dict:
    """The judge's WER on the voice's open sentences and its hearing of the voice's answers, per split."""
    sentence_score = judge.score([stored_speech(voice, s) for s in sentences], sentences)
    keys = sorted(answers)
    heard_all = judge.transcribe([stored_speech(voice, answer) for _, answer in keys])
    right: Counter[str] = Counter()
    asked: Counter[str] = Counter()
    misses = []
    for (family, answer), heard in zip(keys, heard_all, strict=True):
        asked.update(answers[family, answer])
        if answer_is_correct(family, answer, heard):
            right.update(answers[family, answer])
        else:
            misses.append(f"{answer} -> {heard}")
    return {
        "voice": voice,
        "sentences_wer": sentence_score.wer,
        "answers_heard": {split: right[split] / asked[split] for split in asked},
        "questions": dict(asked),
        "misses": misses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", default=",".join(CANDIDATES), help="comma-separated voice keys")
    parser.add_argument("--qa", type=Path, default=Path("out/demo/qa"), help="QA folder (speechgpt build qa)")
    parser.add_argument("--splits", default="train,test")
    parser.add_argument("--sentences", type=int, default=160, help="open WordNet sentences per voice")
    parser.add_argument("--seed", type=int, default=321, help="draw of the open sentences")
    parser.add_argument("--out", type=Path, default=None, help="write every voice's result here as JSON")
    args = parser.parse_args()
    sentences = load_sentences("wordnet", max_sentences=args.sentences, seed=args.seed, min_words=3, max_words=12)
    answers = question_answers(args.qa, args.splits.split(","))
    judge = load_judge()
    results = []
    print(f"{'voice':<32} {'open WER':>8}  answers heard (questions)")
    for voice in args.voices.split(","):
        result = judge_voice(voice, sentences, answers, judge)
        results.append(result)
        heard = "  ".join(
            f"{split} {share:.1%} ({result['questions'][split]})" for split, share in result["answers_heard"].items()
        )
        print(f"{voice:<32} {result['sentences_wer']:8.1%}  {heard}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
