"""Spoken questions answered by a frozen-variant export from whole clips, without streaming.

    .venv/bin/python -m benchmarks.frozen_whole_clip_qa                                # the demo's frozen-qa
    .venv/bin/python -m benchmarks.frozen_whole_clip_qa --model DIR --template "{speech}? {target}."

Each test question clip (held-out voices: the demo's qa_speech; training voices in new renditions: qa_speech_seen)
gets the trailing silence frozen-qa trained with, goes through the encoder and adapter in one pass, and the frozen
LLM answers greedily after the template's text; the answer is judged as `eval chat` judges S2T. This measures what
reaches the LLM with no streaming and no state head, so it also evaluates models listening cannot stream (an
adapter that reads words). For a word-reading adapter it also reports, on the clips with as many words as their
question has tokens, how many words' best token is the question's.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch


def answer(model: Any, template: Any, tokenizer: Any, features: torch.Tensor, max_tokens: int = 8) -> str:
    from speechgpt.model.frozen_lm import IGNORE, assemble_inputs

    prefix, fed, out = template.prefix_ids(tokenizer), template.answer_prefix_ids(tokenizer), []
    end = template.parts[2].strip()
    for _ in range(max_tokens):
        ids = fed + out
        batch = {
            "features": features[None],
            "feature_lengths": torch.tensor([features.shape[0]]),
            "text_ids": torch.tensor([ids]),
            "text_lengths": torch.tensor([len(ids)]),
            "labels": torch.full((1, len(ids)), IGNORE),
            "prefix_ids": torch.tensor([prefix]),
            "prefix_lengths": torch.tensor([len(prefix)]),
        }
        assembled, _ = assemble_inputs(model, batch)
        hidden = model.hidden_states(assembled.inputs_embeds, assembled.attention_mask)
        token = int(model.token_logits(hidden[0, -1]).argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
        if end and end in tokenizer.decode(out):
            break
    text = tokenizer.decode(out)
    return " ".join((text[: text.index(end)] if end and end in text else text).split())


def word_tokens_right(model: Any, tokenizer: Any, features: torch.Tensor, question: str) -> tuple[int, int] | None:
    """(words whose best token is the question's, words) when the clip has as many words as the question tokens."""
    speech = model.speech_embeddings(features[None], torch.tensor([features.shape[0]]))
    want = tokenizer(question, add_special_tokens=False)["input_ids"]
    if speech.token_logits is None or int(speech.lengths[0]) != len(want):
        return None
    best = speech.token_logits[0].argmax(-1).tolist()
    return sum(a == b for a, b in zip(best, want, strict=True)), len(want)


def evaluate(model_dir: Path, demo: Path, template_text: str | None, split: str) -> dict[str, Any]:
    from tqdm import tqdm

    from speechgpt.eval.answers import answer_is_correct
    from speechgpt.model.frozen_checkpoint import load_speech_modules, read_speech_meta
    from speechgpt.model.load import load_lm
    from speechgpt.training.feature_cache import cached_features
    from speechgpt.training.frozen_stage import SpeechTemplate, clips_of, corpus_rows, init_feature_settings

    meta = read_speech_meta(model_dir)
    lm, tokenizer = load_lm(meta["backbone"], dtype="float32")
    model = load_speech_modules(lm, model_dir).eval()
    template = SpeechTemplate(template_text or meta["template"]["text"], meta["template"]["eos"])
    records = [json.loads(line) for line in (demo / "qa" / f"{split}.jsonl").read_text().splitlines() if line]
    by_id = {r["id"]: r for r in records}
    silence = float(meta.get("trailing_silence_s", 0.32))
    result: dict[str, Any] = {"model": str(model_dir), "template": template.text}
    answers: Counter[str] = Counter()
    for voices, corpus in (("heldout_voices", "qa_speech"), ("training_voices", "qa_speech_seen")):
        rows = [r for r in corpus_rows(demo / corpus, [split])[split] if r["id"].removeprefix("q-") in by_id]
        feats = cached_features(
            clips_of(rows), init_feature_settings(model_dir), demo / "frozen_features", pad_s=silence
        )
        right, words, words_right, clips_all_right, clips_counted = 0, 0, 0, 0, 0
        for row in tqdm(rows, desc=voices, unit="clip"):
            record = by_id[row["id"].removeprefix("q-")]
            features = feats.features[row["id"]]
            with torch.no_grad():
                said = answer(model, template, tokenizer, features)
                scored = word_tokens_right(model, tokenizer, features, record["instruction"])
            answers[said] += 1
            right += answer_is_correct(record.get("family", ""), record["output"], said)
            if scored is not None:
                clips_counted += 1
                words_right += scored[0]
                words += scored[1]
                clips_all_right += scored[0] == scored[1]
        result[voices] = {
            "questions": len(rows),
            "s2t_right": right,
            "s2t_accuracy": round(right / max(len(rows), 1), 4),
        }
        if model.word_space is not None:
            result[voices] |= {
                "clips_word_count_right": clips_counted,
                "word_tokens_right": f"{words_right}/{words}",
                "clips_all_words_right": clips_all_right,
            }
    result["distinct_answers"] = len(answers)
    result["most_common_answers"] = answers.most_common(5)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("out/demo/frozen_qa/final"))
    parser.add_argument("--demo", type=Path, default=Path("out/demo"), help="the demo's output folder (qa, speech)")
    parser.add_argument("--template", default=None, help="the LLM's text around the speech (default: the model's)")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(json.dumps(evaluate(args.model, args.demo, args.template, args.split), indent=1))


if __name__ == "__main__":
    main()
