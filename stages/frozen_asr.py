"""Frozen-LLM variant, input stage 2: ASR through the frozen LLM (Freeze-Omni's second stage). The encoder of
`frozen-ctc`, a new adapter and learned prompt embeddings feed the LLM through `inputs_embeds`; the target is the
transcript's tokens. The LLM is frozen (no gradient, no optimizer state) and its weights fingerprint is checked
unchanged before the export.

Export: <out>/final/speech_modules.safetensors (encoder, adapter, prompt embeddings, state head) and
speech_modules.json (variant, stage, backbone, the LLM's fingerprint, features, CMVN, CTC vocabulary, template).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from speechgpt.config import save_config
from speechgpt.model.frozen_checkpoint import load_speech_encoder, read_speech_meta
from speechgpt.model.frozen_lm import build_frozen_speech_lm
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.distributed import setup_process
from speechgpt.training.encoded_examples import encoded_examples
from speechgpt.training.export import FINAL
from speechgpt.training.feature_cache import cached_features
from speechgpt.training.frozen_stage import (
    SpeechTemplate,
    capped,
    clips_of,
    corpus_rows,
    engine_bf16,
    init_feature_settings,
    load_frozen_lm,
    only_clips,
    report_skipped,
    set_trainable,
    speech_examples,
    speech_lm_meta,
    token_ids,
    train_speech_lm,
)
from speechgpt.training.speech_batches import SpeechBatches

log = logging.getLogger(__name__)
STAGE = "frozen-asr"


@dataclass(kw_only=True)
class Config:
    init: Path
    """The `frozen-ctc` export (<out>/final) whose encoder, features and CMVN this stage starts from."""
    backbone: str
    """The frozen LLM: a HF causal LM folder (e.g. the demo's out/demo/backbone/final) or a hub id."""
    corpus: Path
    """Corpus folder: `train_split` trains, train.eval_splits evaluate."""
    out: Path = Path("out/frozen_asr")
    """Run folder: config.yaml, features/ (cache), skipped.json, metrics.jsonl, checkpoints/, final/."""
    feature_cache: Path | None = None
    """Folder of the feature cache (null: <out>/features); stages over the same clips may share one."""
    template: str = "{speech}{target}"
    """The LLM's text around a clip: {speech} is where prompt and speech embeddings go, {target} the transcript
    (a chat LLM: its user-turn opening before {speech}, its assistant-turn opening before {target})."""
    eos: bool = False
    """Also train the tokenizer's EOS after the target (for LLMs that learned to end with it)."""
    train_split: str = "train"
    """Corpus split trained on."""
    same_clips_as: Path | None = None
    """An instruct dataset (`speechgpt build stage2`): train only on the clips its train split trains ASR on, so
    that this variant learns from the unified variant's clips and not from the sentences its eval holds out."""
    num_prompts: int = 5
    """Learned prompt embeddings before the speech."""
    adapter_kernel: int = 3
    """Kernel of the adapter's causal convolution."""
    adapter_stride: int = 2
    """Stride of the adapter's convolution (encoder frames per LLM embedding)."""
    pool_words: bool = False
    """Feed the LLM one embedding per spoken word (the words the encoder's CTC head finds; word_pooling) instead
    of one per `adapter_stride` frames; the adapter then maps each word's vector alone (kernel and stride 1)."""
    word_pause: int = 4
    """With pool_words: encoder frames with no character after which a word is whole (4 = 160 ms at 25 Hz)."""
    align_weight: float = 0.0
    """With pool_words: weight of pulling each word's embedding toward its transcript token's input embedding, on
    clips with as many words as transcript tokens (speech_alignment.align_loss)."""
    trainable: list[str] = field(default_factory=lambda: ["encoder", "adapter", "prompt"])
    """Speech modules trained (of encoder, adapter, prompt, state_head); the encoder's CTC head is kept as is. With
    the encoder frozen, its frames are computed once per clip before training (encoded_examples)."""
    max_batch_frames: int = 0
    """Padded frames per micro-batch at most (clips x longest clip; encoder frames when the encoder is frozen, else
    feature frames; 0: only train.micro_batch limits)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(micro_batch=8, lr=5e-4, eval_splits=["test"], max_eval_examples=100)
    )
    """Engine settings; eval_splits name corpus splits (`corpus synth` gives held-out voices the split test)."""

    def __post_init__(self) -> None:
        SpeechTemplate(self.template, self.eos)


def word_space(init: Path) -> int:
    """The space's index in the CTC vocabulary of `init`'s encoder, which marks where words begin and end."""
    vocab = read_speech_meta(init).get("ctc_vocab") or []
    if " " not in vocab:
        raise ValueError(
            f"{init}: pool_words needs an encoder whose CTC head spells words with spaces (a frozen-ctc export); "
            f"its CTC vocabulary has {len(vocab)} characters and no space"
        )
    return int(vocab.index(" "))


def run(cfg: Config) -> Path:
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)
    template = SpeechTemplate(cfg.template, cfg.eos)
    frozen = load_frozen_lm(cfg.backbone, engine_bf16(cfg.train, dist))
    model = build_frozen_speech_lm(
        frozen.lm,
        load_speech_encoder(cfg.init),
        adapter_kernel=1 if cfg.pool_words else cfg.adapter_kernel,
        adapter_stride=1 if cfg.pool_words else cfg.adapter_stride,
        num_prompts=cfg.num_prompts,
        seed=cfg.train.seed,
        word_space=word_space(cfg.init) if cfg.pool_words else None,
        word_pause=cfg.word_pause,
    )
    count = set_trainable(model, cfg.trainable)
    rows = corpus_rows(cfg.corpus, [cfg.train_split, *cfg.train.eval_splits])
    rows[cfg.train_split] = only_clips(rows[cfg.train_split], cfg.same_clips_as)
    evals = {s: capped(rows[s], cfg.train.max_eval_examples, cfg.train.seed) for s in cfg.train.eval_splits}
    settings = init_feature_settings(cfg.init)
    feats = cached_features(
        clips_of(rows[cfg.train_split], *evals.values()),
        settings,
        cfg.feature_cache or cfg.out / "features",
        rank=dist.rank,
        world=dist.world,
    )

    def targets_of(row: dict, features: object) -> dict[str, list[int]] | str:
        if not row["text"].strip():
            return "empty text"
        targets = template.targets(frozen.tokenizer, row["text"])
        if cfg.align_weight > 0:
            targets["word_ids"] = token_ids(frozen.tokenizer, row["text"].strip())
        return targets

    examples, skipped = {}, {}
    for split, split_rows in {cfg.train_split: rows[cfg.train_split], **evals}.items():
        examples[split], skipped[split] = speech_examples(split_rows, feats, targets_of)
    report_skipped(cfg.out, skipped, dist)
    if "encoder" not in cfg.trainable:
        examples = encoded_examples(model, examples, show_progress=dist.is_main)
    train_set = examples.pop(cfg.train_split)
    log.info("%s: %d training clips, %d trainable parameters (%s)", STAGE, len(train_set), count, cfg.trainable)
    batches = SpeechBatches(
        train_set,
        micro_batch=cfg.train.micro_batch,
        seed=cfg.train.seed,
        max_batch_frames=cfg.max_batch_frames,
        perplexity=True,
        weight_key="labels",
        eval_sets=examples,
    )
    extra = speech_lm_meta(STAGE, frozen, model, cfg.init, template)
    train_speech_lm(cfg.train, model, frozen, batches, cfg.out, extra, dist, "asr", cfg, align_weight=cfg.align_weight)
    return cfg.out / FINAL
