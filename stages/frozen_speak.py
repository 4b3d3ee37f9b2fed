"""Frozen-LLM variant, output stage 2: the NAR prefix decoder learns to read the frozen LLM's last hidden states of
its answers (Freeze-Omni's second output stage). The LLM reads each question's text and its answer as it writes
them (the template of the speech-in stages, the question where the speech goes); the prefix decoder turns the
hidden states at the answer's tokens into a prefix for the AR decoder, which writes the answer's units. Targets are
the units of the answer spoken in a units dataset (matched by text, punctuation and case aside); answers nobody
spoke are skipped and counted. Optionally, spoken sentences of the same datasets are read as plain text too.

Re-aligning the decoder to another backbone is this stage run again with the new LLM (`backbone=`) from the old
decoder (`init=`): when the LLM is not the one the decoder was fitted to, the pre-net (which reads its token
embeddings, rebuilt at the new width if it changed) trains beside the prefix decoder; the AR decoder is kept.

Export: <out>/final/speech_decoder.safetensors and speech_decoder.json, which `speechgpt chat` loads beside the
speech-in modules (`speech_decoder=`).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechgpt.config import save_config
from speechgpt.model.frozen_speaker import FrozenSpeaker, load_speech_decoder, read_decoder_meta, spoken_text_ids
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.decoder_stage import SpokenText, plain_text, spoken_texts, train_decoder
from speechgpt.training.distributed import setup_process
from speechgpt.training.export import FINAL
from speechgpt.training.frozen_stage import (
    FrozenLM,
    SpeechTemplate,
    capped,
    engine_bf16,
    load_frozen_lm,
    report_skipped,
    token_ids,
)
from speechgpt.training.speech_batches import IGNORE, SpeechBatches, SpeechExample
from speechgpt.training.spoken_qa_data import QARecord, chosen_answers, read_qa_records

log = logging.getLogger(__name__)
STAGE = "frozen-speak"


@dataclass(kw_only=True)
class Config:
    init: Path
    """The decoder this stage starts from: a `frozen-tts` export, or a `frozen-speak` one to re-align."""
    qa: Path
    """Question/answer folder from `speechgpt build qa` (train/dev/test.jsonl with ids)."""
    units: list[Path]
    """Units datasets in which the answers are spoken (e.g. `speechgpt units extract` of the spoken QA corpus),
    from the decoder's codebook. Training answers use clips of `train_split` only; evaluated ones any clip."""
    out: Path = Path("out/frozen_speak")
    """Run folder: config.yaml, skipped.json, metrics.jsonl, checkpoints/, final/."""
    backbone: str | None = None
    """The frozen LLM (null: the one `init` was fitted to); another LLM re-aligns the decoder to it."""
    template: str = "{speech}? {target}."
    """The LLM's text around an answer, as in `frozen-qa` ({speech}: here the question's text, {target}: the
    answer)."""
    eos: bool = False
    """The template's answers end with the tokenizer's EOS (not read by the decoder)."""
    answers: Literal["dataset", "backbone"] = "dataset"
    """Answers read: the QA dataset's, or the frozen LLM's own greedy answers (those somebody spoke)."""
    max_answer_tokens: int = 32
    """answers=backbone: tokens generated per answer at most."""
    sentences: int = 0
    """Spoken sentences (not answers) of the units datasets also read, as plain text after the template's prefix."""
    train_split: str = "train"
    """Split of the questions trained on; train.eval_splits (question splits) are evaluated."""
    trainable: list[str] = field(default_factory=lambda: ["prefix"])
    """Decoder parts trained (of prenet, prefix, ar); prenet is added when the LLM is not the decoder's."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(micro_batch=16, lr=1e-3, eval_splits=["dev"], max_eval_examples=100)
    )
    """Engine settings."""

    def __post_init__(self) -> None:
        SpeechTemplate(self.template, self.eos)
        if self.sentences < 0:
            raise ValueError("sentences must be >= 0")


def answer_example(
    record: QARecord, answer: str, clip: SpokenText, template: SpeechTemplate, tokenizer: Any
) -> SpeechExample:
    """The LLM reads [prefix] question [answer prefix] answer [end]; the decoder reads the answer's tokens."""
    parts = template.targets(tokenizer, answer)
    asked = token_ids(tokenizer, record.question)
    start = len(parts["prefix_ids"]) + len(asked) + parts["labels"].count(IGNORE)
    spoken = [t for t, label in zip(parts["text_ids"], parts["labels"], strict=True) if label != IGNORE]
    if template.eos and spoken and spoken[-1] == tokenizer.eos_token_id:
        spoken = spoken[:-1]
    context = parts["prefix_ids"] + asked + parts["text_ids"]
    targets = {"context_ids": context, "answer_start": [start], "text_ids": spoken, "units": clip.units}
    return SpeechExample(f"{record.id}:{clip.id}", "answer", None, targets)


def sentence_example(clip: SpokenText, template: SpeechTemplate, tokenizer: Any) -> SpeechExample:
    prefix, ids = template.prefix_ids(tokenizer), spoken_text_ids(tokenizer, clip.text)
    targets = {"context_ids": prefix + ids, "answer_start": [len(prefix)], "text_ids": ids, "units": clip.units}
    return SpeechExample(clip.id, "sentence", None, targets)


def decoder_to_train(cfg: Config, frozen: FrozenLM, before: dict[str, Any], tag: str) -> tuple[Any, list[str], int]:
    """The decoder of `init` around this LLM, the parts that train (the pre-net too when the LLM is not the one
    the decoder was fitted to: a re-alignment) and their parameter count."""
    if before.get("units_encoder") not in (None, tag):
        raise ValueError(f"{cfg.init} speaks units of {before['units_encoder']}, the units datasets are of {tag}")
    decoder = load_speech_decoder(cfg.init, hidden_size=int(frozen.lm.get_input_embeddings().embedding_dim))
    trainable = list(cfg.trainable)
    if before["lm_fingerprint"] != frozen.fingerprint and "prenet" not in trainable:
        log.info("%s: the decoder was fitted to another LLM (%s): re-aligning, the pre-net trains too", STAGE,
                 before["backbone"])  # fmt: skip
        trainable.append("prenet")
    return decoder, trainable, decoder.set_trainable(trainable)


def build_examples(
    cfg: Config, records: dict[str, QARecord], answers: dict, clips: list[SpokenText], tokenizer: Any, splits: list[str]
) -> tuple[dict[str, list[SpeechExample]], dict[str, Counter[str]]]:
    """Per split, an example per spoken rendition of each record's answer (training: clips of train_split only;
    evaluated: held-out voices' renditions first), plus `sentences` spoken sentences in training; and per split
    the records left out, by reason."""
    template = SpeechTemplate(cfg.template, cfg.eos)
    by_text: dict[tuple[bool, str], list[SpokenText]] = defaultdict(list)
    for clip in clips:
        by_text[clip.split == cfg.train_split, plain_text(clip.text)].append(clip)
    examples: dict[str, list[SpeechExample]] = {s: [] for s in splits}
    skipped: dict[str, Counter[str]] = {s: Counter() for s in splits}
    for record in sorted(records.values(), key=lambda r: r.id):
        if record.split not in examples:
            continue
        answer = answers.get(record.id) or ""
        spoken = by_text.get((True, plain_text(answer)), [])
        if record.split != cfg.train_split:
            spoken = by_text.get((False, plain_text(answer)), []) or spoken
        if not spoken:
            skipped[record.split]["no answer" if not answer else "answer spoken in no units dataset"] += 1
        examples[record.split] += [answer_example(record, answer, c, template, tokenizer) for c in spoken]
    used = {plain_text(a) for a in [*answers.values(), *(r.answer for r in records.values())]}
    others = [c for c in clips if c.split == cfg.train_split and plain_text(c.text) not in used]
    chosen = random.Random(cfg.train.seed).sample(others, min(cfg.sentences, len(others)))
    examples[cfg.train_split] += [sentence_example(c, template, tokenizer) for c in chosen]
    return examples, skipped


def run(cfg: Config) -> Path:
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)
    before = read_decoder_meta(cfg.init)
    frozen = load_frozen_lm(cfg.backbone or before["backbone"], engine_bf16(cfg.train, dist))
    tag, clips = spoken_texts(cfg.units)
    decoder, trainable, count = decoder_to_train(cfg, frozen, before, str(tag))
    records = read_qa_records(cfg.qa)
    splits = list(dict.fromkeys([cfg.train_split, *cfg.train.eval_splits]))
    answers = chosen_answers(
        cfg.answers,
        records,
        [rid for rid, r in records.items() if r.split in splits],
        frozen,
        SpeechTemplate(cfg.template, cfg.eos),
        max_new_tokens=cfg.max_answer_tokens,
        cache=cfg.out / "backbone_answers.json",
        dist=dist,
    )
    examples, skipped = build_examples(cfg, records, answers, clips, frozen.tokenizer, splits)
    report_skipped(cfg.out, skipped, dist)
    train_set = examples.pop(cfg.train_split)
    evals = {s: capped(examples[s], cfg.train.max_eval_examples, cfg.train.seed) for s in cfg.train.eval_splits}
    log.info("%s: %d training answers and sentences, %d trainable parameters (%s)", STAGE, len(train_set), count,
             trainable)  # fmt: skip
    batches = SpeechBatches(
        train_set, micro_batch=cfg.train.micro_batch, seed=cfg.train.seed, weight_key="units", eval_sets=evals
    )
    extra = {
        "stage": STAGE,
        "backbone": frozen.path,
        "units_encoder": str(tag),
        "template": SpeechTemplate(cfg.template, cfg.eos).meta(),
        "answers": cfg.answers,
        "trainable": trainable,
        "trainable_parameters": count,
        "init": str(cfg.init.resolve()),
    }
    model = FrozenSpeaker(frozen.lm, decoder, frozen.tokenizer)
    train_decoder(cfg.train, model, frozen.fingerprint, batches, cfg.out, extra, dist, "speak", cfg)
    return cfg.out / FINAL
