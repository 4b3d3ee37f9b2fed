"""Frozen-LLM variant, input stage 1: the streaming speech encoder trained alone as a CTC character recognizer on a
corpus (Freeze-Omni's first stage; no LLM involved). Its global CMVN is fitted on the training clips' features.

Export: <out>/final/speech_modules.safetensors (the encoder with its CMVN and CTC head) and speech_modules.json
(variant, stage, the encoder's builder arguments, feature settings, CMVN, CTC vocabulary), which `frozen-asr`
starts from.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speechgpt.config import save_config
from speechgpt.model.ctc_vocab import build_char_vocab, encode_chars
from speechgpt.model.spec_augment import SpecAugment, spec_augment
from speechgpt.model.speech_encoder import build_speech_encoder
from speechgpt.model.speech_features import fit_cmvn
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.distributed import Dist, setup_process
from speechgpt.training.engine import train
from speechgpt.training.export import FINAL
from speechgpt.training.feature_cache import FeatureSettings, cached_features
from speechgpt.training.frozen_stage import (
    CTCRecognizer,
    EncoderSettings,
    capped,
    clips_of,
    corpus_rows,
    export_encoder,
    features_meta,
    only_clips,
    report_skipped,
    speech_examples,
    with_feature_dtype,
)
from speechgpt.training.speech_batches import SpeechBatches, SpeechExample

log = logging.getLogger(__name__)
STAGE = "frozen-ctc"


@dataclass(kw_only=True)
class Config:
    corpus: Path
    """Corpus folder (`speechgpt corpus synth|import`): `train_split` trains, train.eval_splits evaluate."""
    out: Path = Path("out/frozen_ctc")
    """Run folder: config.yaml, features/ (cache), skipped.json, metrics.jsonl, checkpoints/, final/."""
    feature_cache: Path | None = None
    """Folder of the feature cache (null: <out>/features); stages over the same clips may share one."""
    features: FeatureSettings = field(default_factory=FeatureSettings)
    """Frame features the encoder reads (the later stages keep them)."""
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    """Size and streaming shape of the speech encoder."""
    train_split: str = "train"
    """Corpus split trained on."""
    same_clips_as: Path | None = None
    """An instruct dataset (`speechgpt build stage2`): train only on the clips its train split trains ASR on, so
    that this variant learns from the unified variant's clips and not from the sentences its eval holds out."""
    max_batch_frames: int = 0
    """Padded feature frames per micro-batch at most (clips x longest clip; 0: only train.micro_batch limits)."""
    spec_augment: SpecAugment = field(default_factory=SpecAugment)
    """Masks on the training batches' features (none by default): a recognizer of a few voices hears new ones
    better."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(micro_batch=16, lr=1e-3, eval_splits=["test"], max_eval_examples=100)
    )
    """Engine settings; eval_splits name corpus splits (`corpus synth` gives held-out voices the split test)."""


def ctc_targets(text: str, frames: int, vocab: list[str], subsampling: int) -> dict[str, list[int]] | str:
    """A clip's CTC targets, or why it cannot be trained on."""
    if not text.strip():
        return "empty text"
    targets = encode_chars(text, vocab)
    if not targets:
        return "no character of the CTC vocabulary"
    if len(targets) > frames // subsampling:
        return "transcript longer than the clip's encoder frames"
    return {"ctc_targets": targets}


def ctc_examples(cfg: Config, dist: Dist) -> tuple[list[SpeechExample], dict[str, list[SpeechExample]], list[str]]:
    """(training examples, eval examples per split, CTC vocabulary: the training transcripts' characters)."""
    rows = corpus_rows(cfg.corpus, [cfg.train_split, *cfg.train.eval_splits])
    rows[cfg.train_split] = only_clips(rows[cfg.train_split], cfg.same_clips_as)
    evals = {s: capped(rows[s], cfg.train.max_eval_examples, cfg.train.seed) for s in cfg.train.eval_splits}
    cache = cfg.feature_cache or cfg.out / "features"
    clips = clips_of(rows[cfg.train_split], *evals.values())
    feats = cached_features(clips, cfg.features, cache, rank=dist.rank, world=dist.world)
    vocab = build_char_vocab(r["text"] for r in rows[cfg.train_split] if r["id"] in feats.features)
    examples, skipped = {}, {}
    for split, split_rows in {cfg.train_split: rows[cfg.train_split], **evals}.items():
        examples[split], skipped[split] = speech_examples(
            split_rows,
            feats,
            lambda row, features: ctc_targets(row["text"], features.shape[0], vocab, cfg.encoder.subsampling),
        )
    report_skipped(cfg.out, skipped, dist)
    return examples.pop(cfg.train_split), examples, vocab


def augmented(engine: Any, batch: dict[str, Any], settings: SpecAugment) -> dict[str, Any]:
    """The batch with SpecAugment's masks on its features while the model trains (evaluation hears them as they
    are)."""
    module = getattr(engine, "module", engine)
    if not module.training or not settings.active:
        return batch
    fill = module.encoder.cmvn_mean
    return {**batch, "features": spec_augment(batch["features"], batch["feature_lengths"], settings, fill)}


def run(cfg: Config) -> Path:
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)
    train_set, evals, vocab = ctc_examples(cfg, dist)
    batches = SpeechBatches(
        train_set,
        micro_batch=cfg.train.micro_batch,
        seed=cfg.train.seed,
        max_batch_frames=cfg.max_batch_frames,
        weight_key="ctc_targets",
        eval_sets=evals,
    )
    encoder = build_speech_encoder(
        input_dim=train_set[0].features.shape[1],
        frame_rate=cfg.features.frame_rate,
        ctc_vocab_size=len(vocab),
        **asdict(cfg.encoder),
    )
    encoder.set_cmvn(*fit_cmvn(e.features for e in train_set))
    model = CTCRecognizer(encoder)
    count = sum(p.numel() for p in model.parameters())
    log.info("%s: %d training clips, %d characters, %d trainable parameters", STAGE, len(train_set), len(vocab), count)
    extra: dict[str, Any] = {
        "stage": STAGE,
        **features_meta(cfg.features, encoder),
        "ctc_vocab": vocab,
        "trainable": ["encoder"],
        "trainable_parameters": count,
        "init": None,
    }
    train(
        cfg.train,
        model,
        batches,
        cfg.out,
        loss=lambda engine, batch: engine(augmented(engine, with_feature_dtype(engine, batch), cfg.spec_augment)),
        export=lambda engine, out: export_encoder(engine, out, extra, dist),
        dist=dist,
        settings=cfg,
    )
    return cfg.out / FINAL
