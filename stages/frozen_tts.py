"""Frozen-LLM variant, output stage 1: the speech decoder's pre-net and AR decoder learn text -> units on spoken
texts (Freeze-Omni's decoder on TTS pairs). The decoder reads the frozen LLM's token embeddings of each text and
writes the text's merged units (the units of the vocoder's codebook, so both variants speak through one vocoder).
A stable share of the texts is held out (every rendition of a held-out text) and evaluated.

Export: <out>/final/speech_decoder.safetensors and speech_decoder.json (the decoder's builder arguments, the LLM's
fingerprint, backbone, units encoder tag, what trained), which `frozen-speak` starts from.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from speechgpt.config import save_config
from speechgpt.model.frozen_speaker import FrozenSpeaker, spoken_text_ids
from speechgpt.model.speech_decoder import build_speech_decoder
from speechgpt.text.phonemes import TextPhonemes, phoneme_ids, phonemize_all
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.decoder_stage import (
    DecoderSettings,
    held_out,
    spoken_texts,
    train_decoder,
)
from speechgpt.training.distributed import setup_process
from speechgpt.training.export import FINAL
from speechgpt.training.frozen_stage import capped, engine_bf16, load_frozen_lm, report_skipped
from speechgpt.training.speech_batches import SpeechBatches, SpeechExample

log = logging.getLogger(__name__)
STAGE = "frozen-tts"


@dataclass(kw_only=True)
class Config:
    backbone: str
    """The frozen LLM whose token embeddings the decoder reads: a HF causal LM folder or a hub id."""
    units: list[Path]
    """Units datasets (`speechgpt units extract`) of spoken texts, e.g. the answer voice's corpus and the spoken
    answers: their text and units (clips of `train_split` only)."""
    out: Path = Path("out/frozen_tts")
    """Run folder: config.yaml, skipped.json, metrics.jsonl, checkpoints/, final/."""
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    """Size of the speech decoder (its input width comes from the backbone)."""
    train_split: str = "train"
    """Corpus split of the clips used (other splits hold held-out voices)."""
    merged_units: bool | None = None
    """Whether the units have their repeats merged (null: merged unless some clip has a unit twice in a row, as
    codec codes from `speechgpt vocoder codec-units` do)."""
    heldout_text_fraction: float = 0.05
    """Share of the texts (all their renditions) held out and evaluated, as split `heldout`."""
    trainable: list[str] = field(default_factory=lambda: ["prenet", "ar"])
    """Decoder parts trained (of prenet, prefix, ar); the prefix decoder trains in `frozen-speak`."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(micro_batch=16, lr=1e-3, eval_splits=["heldout"], max_eval_examples=100)
    )
    """Engine settings; eval_splits may name `heldout` (the held-out texts)."""

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_text_fraction < 1:
            raise ValueError("heldout_text_fraction must be in [0, 1)")


def run(cfg: Config) -> Path:
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)
    frozen = load_frozen_lm(cfg.backbone, engine_bf16(cfg.train, dist))
    tag, clips = spoken_texts(cfg.units)
    hidden = int(frozen.lm.get_input_embeddings().embedding_dim)
    merged = cfg.merged_units
    if merged is None:
        merged = not any(a == b for clip in clips for a, b in itertools.pairwise(clip.units))
    decoder = build_speech_decoder(hidden_size=hidden, num_units=tag.k, merged=merged, **asdict(cfg.decoder))
    count = decoder.set_trainable(cfg.trainable)
    model = FrozenSpeaker(frozen.lm, decoder, frozen.tokenizer)
    examples: dict[str, list[SpeechExample]] = {"train": [], "heldout": []}
    skipped: dict[str, Counter[str]] = {"train": Counter(), "heldout": Counter()}
    clips = [c for c in clips if c.split == cfg.train_split]
    token_ids = {c.id: spoken_text_ids(frozen.tokenizer, c.text) for c in clips}
    # the text the decoder's phonemes are read from: its tokens decoded, as TextPhonemes reads each batch
    reader = TextPhonemes(frozen.tokenizer)
    decoded = {clip_id: reader.text(ids) for clip_id, ids in token_ids.items()} if cfg.decoder.phonemes else {}
    phonemize_all(decoded.values())
    for clip in clips:
        split = "heldout" if held_out(clip.text, cfg.heldout_text_fraction) else "train"
        ids = token_ids[clip.id]
        sounds = len(phoneme_ids(decoded[clip.id])) if decoded else 0
        if len(ids) + sounds + len(clip.units) + 1 > cfg.decoder.max_positions:
            skipped[split]["text and units longer than decoder.max_positions"] += 1
            continue
        examples[split].append(SpeechExample(clip.id, "tts", None, {"text_ids": ids, "units": clip.units}))
    report_skipped(cfg.out, skipped, dist)
    evals = {s: capped(examples[s], cfg.train.max_eval_examples, cfg.train.seed) for s in cfg.train.eval_splits}
    log.info("%s: %d training texts, %d trainable parameters (%s)", STAGE, len(examples["train"]), count, cfg.trainable)
    batches = SpeechBatches(
        examples["train"], micro_batch=cfg.train.micro_batch, seed=cfg.train.seed, weight_key="units", eval_sets=evals
    )
    extra = {
        "stage": STAGE,
        "backbone": frozen.path,
        "units_encoder": str(tag),
        "trainable": cfg.trainable,
        "trainable_parameters": count,
        "init": None,
    }
    train_decoder(cfg.train, model, frozen.fingerprint, batches, cfg.out, extra, dist, "tts", cfg)
    return cfg.out / FINAL
