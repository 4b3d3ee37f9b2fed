"""`speechgpt eval asr`: word error rate of a trained model's own transcripts (the stage-2 ASR task).

Every ASR example of the chosen splits of an instruct dataset is given to the model as its prompt (the instruction
and the speech units, up to `[SpeechGPT]:`); the model continues greedily until `<eoa>`; the parsed text is scored
against the example's answer with the judge's normalization (numbers as words, no punctuation). Splits of the stage-2
builder: 'dev_seen_voices' holds training voices on unseen sentences, 'dev'/'test' held-out voices on unseen
sentences, so the two WERs separate sentence generalization from voice generalization. Each split also reports the
WER of its in-vocabulary utterances (every word seen in the training split's transcripts): a small model cannot
spell words it never heard, so that number isolates recognition from vocabulary.

A frozen-LLM variant folder (frozen-asr's export) is scored on the same examples and references: it hears each
example's clip (its source id in `corpus`) through the streaming listener, which lets the frozen LLM say the
transcript at the end of the clip. An adapter that reads words (pool_words) gives the LLM each word as a token
expectation, so its transcript is those words' best tokens, the text the LLM reads: a frozen LLM, fed a sentence,
continues it rather than repeats it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from speechgpt.config import save_config
from speechgpt.data.io import atomic_write_text
from speechgpt.text.template import EOA, parse_answer
from speechgpt.text.units import detect_unit_format

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    model: Path
    """Model folder (HF layout with its tokenizer), e.g. the stage-2 `final` export."""
    data: Path
    """Instruct dataset folder (a builder's output with dataset/, or the dataset itself)."""
    splits: list[str] = field(default_factory=lambda: ["dev_seen_voices", "dev"])
    """Splits whose 'asr' examples are transcribed."""
    max_examples: int | None = 100
    """Examples per split (the first ones, in dataset order); null for all."""
    batch_size: int = 16
    """Prompts generated together (left-padded)."""
    max_new_tokens: int = 48
    """Longest transcript generated, in tokens."""
    out: Path = Path("out/eval_asr")
    """Output folder: report.json (WER per split) and transcripts.jsonl."""
    variant: Literal["auto", "unified", "frozen"] = "auto"
    """Which variant `model` is (auto: the folder says; a frozen-LLM folder holds speech_modules.json)."""
    corpus: Path | None = None
    """The corpus the examples' source ids name: the frozen variant hears those clips (needed for it)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be >= 1")


def run(cfg: Config) -> Path:
    """Transcribe, score, write report.json; returns its path."""
    from datasets import load_from_disk

    from speechgpt.eval.judge import word_error_rate
    from speechgpt.eval.text_normalize import normalize_transcript
    from speechgpt.infer.frozen_loading import resolve_variant
    from speechgpt.model.load import load_lm

    save_config(cfg, cfg.out)
    folder = cfg.data / "dataset" if (cfg.data / "dataset").is_dir() else cfg.data
    dataset = load_from_disk(str(folder))
    variant = resolve_variant(cfg.model, cfg.variant)
    if variant == "frozen":
        transcribe = frozen_transcriber(cfg)
    else:
        model, tokenizer = load_lm(cfg.model)
        model.eval()

        def transcribe(rows: list[dict[str, Any]]) -> list[str]:
            return transcribe_prompts(model, tokenizer, [r["prompt"] for r in rows], cfg.batch_size, cfg.max_new_tokens)

    report: dict[str, Any] = {"model": str(cfg.model), "variant": variant, "data": str(cfg.data), "splits": {}}
    vocabulary = training_vocabulary(dataset)
    rows_out: list[dict[str, Any]] = []
    for split in cfg.splits:
        if split not in dataset:
            raise ValueError(f"{folder}: no split {split!r} (has {', '.join(dataset)})")
        rows = [r for r in dataset[split] if r["task"] == "asr"][: cfg.max_examples]
        if not rows:
            raise ValueError(f"{folder}: split {split!r} has no 'asr' examples")
        started = time.perf_counter()
        hyps = transcribe(rows)
        refs = [r["response"].removesuffix(EOA).strip() for r in rows]
        known = [i for i, ref in enumerate(refs) if set(normalize_transcript(ref).split()) <= vocabulary]
        report["splits"][split] = {
            "wer": round(word_error_rate(refs, hyps), 4),
            "examples": len(rows),
            "wer_in_vocabulary": round(word_error_rate([refs[i] for i in known], [hyps[i] for i in known]), 4)
            if known
            else None,
            "examples_in_vocabulary": len(known),
            "seconds": round(time.perf_counter() - started, 1),
        }
        pairs = zip(rows, refs, hyps, strict=True)
        rows_out += [{"split": split, "id": r["id"], "ref": ref, "hyp": hyp} for r, ref, hyp in pairs]
        log.info("ASR %s: WER %.1f%% over %d examples", split, 100 * report["splits"][split]["wer"], len(rows))
    atomic_write_text(cfg.out / "transcripts.jsonl", "".join(json.dumps(r) + "\n" for r in rows_out))
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    return cfg.out / "report.json"


def frozen_transcriber(cfg: Config) -> Any:
    """Transcripts of the frozen variant: each example's clip heard whole (no state decisions), then greedy text,
    or with an adapter that reads words the words it gave the LLM."""
    from speechgpt.data.audio import read_audio
    from speechgpt.data.corpus import load_corpus
    from speechgpt.infer.frozen_loading import load_frozen_model
    from speechgpt.infer.listening import FrozenListener, ListenConfig

    if cfg.corpus is None:
        raise ValueError(f"{cfg.model} is a frozen-variant folder: give corpus= (the clips the examples' ids name)")
    corpus = load_corpus(cfg.corpus).select_columns(["id", "audio"])
    audio_of = dict(zip(corpus["id"], corpus["audio"], strict=True))
    listener = FrozenListener(load_frozen_model(cfg.model, device="cpu"), ListenConfig(decide=False))
    words = listener.model.word_space is not None

    def transcribe(rows: list[dict[str, Any]]) -> list[str]:
        texts = []
        for row in tqdm(rows, desc="listen", unit="clip"):
            clip = row["source_ids"][0]
            if clip not in audio_of:
                raise ValueError(f"{cfg.corpus}: no clip {clip!r} (named by example {row['id']} of {cfg.data})")
            samples = read_audio(audio_of[clip]).samples
            if words:
                for _ in listener.hear(samples):
                    pass
                texts.append(listener.heard_text())
            else:
                texts.append(listener.listen(samples, cfg.max_new_tokens).text)
        return texts

    return transcribe


def training_vocabulary(dataset: Any) -> set[str]:
    """Normalized words of the training split's ASR answers."""
    from speechgpt.eval.text_normalize import normalize_transcript

    if "train" not in dataset:
        return set()
    answers = [r["response"].removesuffix(EOA) for r in dataset["train"] if r["task"] == "asr"]
    return {word for answer in answers for word in normalize_transcript(answer).split()}


@torch.inference_mode()
def transcribe_prompts(
    model: Any, tokenizer: Any, prompts: list[str], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy continuations of ASR prompts until `<eoa>`, parsed as text answers."""
    units = detect_unit_format(tokenizer)
    eoa = tokenizer.convert_tokens_to_ids(EOA)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eoa
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="transcribe", unit="batch"):
            batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            generated = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eoa, pad_token_id=pad
            )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            continuations = tokenizer.batch_decode(new_tokens, skip_special_tokens=False)
            texts += [_answer_text(c, units) for c in continuations]
    finally:
        tokenizer.padding_side = side
    return texts


def _answer_text(continuation: str, units: Any) -> str:
    parsed = parse_answer(continuation.split(EOA)[0] + EOA, units, expect_speech=False)
    return parsed.text or ""
