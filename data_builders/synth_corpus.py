"""`speechgpt corpus synth`: a multi-speaker ASR/TTS corpus spoken by the TTS engines installed on this machine."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from data_builders.text_sources import load_sentences
from data_builders.tts import Voice, check_voice, parse_voice, tts_item
from speechgpt.config import config_to_dict, save_config
from speechgpt.data.corpus import CorpusBuild, SourceItem

log = logging.getLogger(__name__)

DEFAULT_VOICES = [
    "flite:slt",
    "flite:rms",
    "flite:awb",
    "festival:kal_diphone",
    "festival:cmu_us_slt_arctic_hts",
    "espeak-ng:en-us+m3",
    "flite:kal16",
    "festival:ked_diphone",
]
DEFAULT_HELDOUT_VOICES = ["flite:kal16", "festival:ked_diphone"]
_RUN_CONTROL = {"out", "num_workers", "limit"}  # fields that do not change the result


@dataclass(kw_only=True)
class Config:
    out: Path = Path("out/corpus")
    """Output folder: audio/, dataset/ (HF save_to_disk), rejected.jsonl, summary.json, config.yaml."""
    text_source: str = "wordnet"
    """'wordnet' (example sentences of Debian's wordnet-base) or a text file with one sentence per line."""
    domain_text: str | None = None
    """A second source whose every sentence is spoken too, not capped by max_sentences: e.g. the task domain's training
    questions (`out/demo/qa/train.jsonl`), so that ASR learns the words the chat will hear. Never give held-out
    questions here."""
    voices: list[str] = field(default_factory=lambda: list(DEFAULT_VOICES))
    """Voices as engine:name (see `speechgpt corpus voices`); each becomes one speaker."""
    heldout_voices: list[str] = field(default_factory=lambda: list(DEFAULT_HELDOUT_VOICES))
    """Voices whose clips get split 'test' (never to be trained on); every other voice's clips get 'train'."""
    max_sentences: int | None = 300
    """Sentences drawn (seeded) from the text source; null keeps them all."""
    voices_per_sentence: int | None = None
    """Speak each sentence with this many voices drawn per sentence (seeded); null: every voice speaks every one."""
    min_words: int = 3
    """Shortest sentence kept, in words."""
    max_words: int = 16
    """Longest sentence kept, in words."""
    max_duration_s: float = 20.0
    """Clips longer than this are rejected (recorded in rejected.jsonl)."""
    seed: int = 0
    """Seed of sentence and voice sampling."""
    num_workers: int = 2
    """Synthesis processes."""
    limit: int | None = None
    """Stop after this many new clips; a rerun without it finishes the corpus (resume)."""

    def __post_init__(self) -> None:
        for key in [*self.voices, *self.heldout_voices]:
            parse_voice(key)
        stray = sorted(set(self.heldout_voices) - set(self.voices))
        if stray:
            raise ValueError(f"heldout_voices {stray} are not among voices")
        if self.voices_per_sentence is not None and not 1 <= self.voices_per_sentence <= len(self.voices):
            raise ValueError(f"voices_per_sentence must be in 1..{len(self.voices)}")
        if self.min_words < 1 or self.max_words < self.min_words:
            raise ValueError("need 1 <= min_words <= max_words")


def run(cfg: Config) -> Path:
    """Synthesize every (sentence, voice) pair not yet done, then write the corpus dataset. Returns cfg.out."""
    save_config(cfg, cfg.out)
    voices = [parse_voice(key) for key in cfg.voices]
    for voice in voices:
        check_voice(voice)
    sentences = load_sentences(
        cfg.text_source,
        max_sentences=cfg.max_sentences,
        seed=cfg.seed,
        min_words=cfg.min_words,
        max_words=cfg.max_words,
    )
    if cfg.domain_text is not None:
        domain = load_sentences(
            cfg.domain_text, max_sentences=None, seed=cfg.seed, min_words=cfg.min_words, max_words=cfg.max_words
        )
        seen = set(sentences)
        sentences += [s for s in domain if s not in seen]
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in _RUN_CONTROL}
    build = CorpusBuild(cfg.out, settings, cfg.max_duration_s, num_workers=cfg.num_workers, max_items=cfg.limit)
    summary = build.run(synth_items(cfg, voices, sentences), desc="synthesize")
    log.info("corpus %s: %s", cfg.out, summary)
    return cfg.out


def synth_items(cfg: Config, voices: list[Voice], sentences: list[str]) -> list[SourceItem]:
    rng = random.Random(cfg.seed)
    heldout = set(cfg.heldout_voices)
    items = []
    for index, sentence in enumerate(sentences):
        chosen = voices if cfg.voices_per_sentence is None else rng.sample(voices, cfg.voices_per_sentence)
        for voice in chosen:
            split = "test" if voice.key in heldout else "train"
            items.append(
                tts_item(f"{voice.speaker}-s{index:05d}", voice, sentence, split, f"{voice.key} sentence {index}")
            )
    return items
