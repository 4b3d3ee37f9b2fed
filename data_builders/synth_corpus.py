"""`speechgpt corpus synth`: a multi-speaker ASR/TTS corpus spoken by the TTS engines installed on this machine.

Two kinds: sentences (WordNet or a text file) each spoken by every voice or by a drawn few; or, with `qa`, the
questions and answers of an instruction file, each question and its answer spoken as clips `q-<id>` and `a-<id>` by
voices drawn for the question (training voices for train questions, held-out voices for dev/test ones). The second is
the speech that `speechgpt build stage3` joins with its questions, once `speechgpt units extract` has made its units.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_builders.text_instructions import qa_clip_ids, read_text_instructions
from data_builders.text_sources import clean_sentences, lines_of, load_sentences, wordnet_examples
from data_builders.tts import Voice, check_voice, parse_voice, tts_item
from data_builders.word_coverage import covering_sentences, target_texts, wordnet_glosses
from speechgpt.config import config_to_dict, save_config
from speechgpt.data.corpus import CorpusBuild, SourceItem
from speechgpt.data.io import atomic_write_text

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
_QA_FIELDS = {"qa", "qa_all_pairs", "qa_splits", "qa_heldout_speakers"}  # a sentence corpus keeps its old settings
HELDOUT_SPLITS = ("dev", "test")


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
    domain_min_words: int | None = None
    """Fewest words of a `domain_text` sentence (null: min_words); 1 keeps one-word answers ("seven"), which an
    answer voice's corpus needs."""
    voices: list[str] = field(default_factory=lambda: list(DEFAULT_VOICES))
    """Voices as engine:name (see `speechgpt corpus voices`); each becomes one speaker."""
    heldout_voices: list[str] = field(default_factory=lambda: list(DEFAULT_HELDOUT_VOICES))
    """Voices whose clips get split 'test' (never to be trained on); every other voice's clips get 'train'."""
    max_sentences: int | None = 300
    """Sentences drawn (seeded) from the text source; null keeps them all."""
    cover_words_of: list[str] = field(default_factory=list)
    """Texts (files as for text_source, e.g. the held-out questions `out/demo/qa/test.jsonl`) whose every word the
    corpus should speak in other sentences: for each word the sentences lack, up to `cover_per_word` sentences of the
    text source (WordNet: its examples, then its glosses) that say it are added; the texts themselves are never
    spoken. Words no sentence has are listed in coverage.json."""
    cover_per_word: int = 2
    """Sentences added per missing word of `cover_words_of`."""
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
    qa: Path | None = None
    """Speak questions and answers instead of sentences: a `speechgpt build qa` folder or Alpaca/ShareGPT JSON(L);
    train questions get a training voice, dev/test ones a held-out voice (the sentence options do not apply)."""
    qa_all_pairs: bool = False
    """ShareGPT `qa`: every human -> gpt pair of a conversation is a question (default: the first pair only)."""
    qa_splits: list[str] | None = None
    """Speak only the pairs of these splits of `qa` (null: every split)."""
    qa_heldout_speakers: Literal["heldout_voices", "training_voices"] = "heldout_voices"
    """Who speaks the dev/test pairs of `qa`: the held-out voices, or the training voices in new renditions (the
    questions no training clip speaks, by voices the model knows: the eval set that separates new questions from
    new voices)."""

    qa_answer_voice: str | None = None
    """Speak every answer of `qa` with this one voice, as SpeechGPT renders its answers in one voice (the vocoder's
    answer voice): then the units of an answer follow from its text alone, which a model can learn to say. Null:
    each answer gets a drawn voice, like its question."""

    def __post_init__(self) -> None:
        for key in [*self.speaking_voices(), *self.heldout_voices]:
            parse_voice(key)
        stray = sorted(set(self.heldout_voices) - set(self.voices))
        if stray:
            raise ValueError(f"heldout_voices {stray} are not among voices")
        if self.voices_per_sentence is not None and not 1 <= self.voices_per_sentence <= len(self.voices):
            raise ValueError(f"voices_per_sentence must be in 1..{len(self.voices)}")
        if self.cover_per_word < 1:
            raise ValueError("cover_per_word must be >= 1")
        if self.min_words < 1 or self.max_words < self.min_words:
            raise ValueError("need 1 <= min_words <= max_words")
        if self.domain_min_words is not None and not 1 <= self.domain_min_words <= self.max_words:
            raise ValueError("need 1 <= domain_min_words <= max_words")
        if self.qa is not None:
            if self.domain_text is not None or self.voices_per_sentence is not None or self.cover_words_of:
                raise ValueError(
                    "domain_text, voices_per_sentence and cover_words_of are for sentences; they do not apply with qa"
                )
            if not self.heldout_voices or not set(self.voices) - set(self.heldout_voices):
                raise ValueError("qa needs heldout_voices and at least one other (training) voice among voices")
        elif self.qa_answer_voice is not None:
            raise ValueError("qa_answer_voice applies only with qa")

    def speaking_voices(self) -> list[str]:
        """Every voice that speaks in this corpus: `voices`, and the answer voice."""
        return [*self.voices, *([self.qa_answer_voice] if self.qa_answer_voice else [])]


def run(cfg: Config) -> Path:
    """Synthesize every clip not yet done, then write the corpus dataset. Returns cfg.out."""
    save_config(cfg, cfg.out)
    voices = [parse_voice(key) for key in cfg.voices]
    for key in cfg.speaking_voices():
        check_voice(parse_voice(key))
    items = qa_items(cfg, cfg.qa) if cfg.qa is not None else synth_items(cfg, voices, corpus_sentences(cfg))
    settings = build_settings(cfg, items)
    build = CorpusBuild(cfg.out, settings, cfg.max_duration_s, num_workers=cfg.num_workers, max_items=cfg.limit)
    summary = build.run(items, desc="synthesize")
    log.info("corpus %s: %s", cfg.out, summary)
    return cfg.out


def corpus_sentences(cfg: Config) -> list[str]:
    """The text source's sampled sentences, then every sentence of `domain_text` not among them."""
    sentences = load_sentences(
        cfg.text_source,
        max_sentences=cfg.max_sentences,
        seed=cfg.seed,
        min_words=cfg.min_words,
        max_words=cfg.max_words,
    )
    if cfg.domain_text is not None:
        fewest = cfg.min_words if cfg.domain_min_words is None else cfg.domain_min_words
        domain = load_sentences(
            cfg.domain_text, max_sentences=None, seed=cfg.seed, min_words=fewest, max_words=cfg.max_words
        )
        seen = set(sentences)
        sentences += [s for s in domain if s not in seen]
    if cfg.cover_words_of:
        sentences += word_coverage(cfg, sentences)
    return sentences


def word_coverage(cfg: Config, sentences: list[str]) -> list[str]:
    """Sentences that say the words of `cover_words_of` missing from `sentences`; coverage.json records them."""
    raw = wordnet_examples() + wordnet_glosses() if cfg.text_source == "wordnet" else lines_of(Path(cfg.text_source))
    pool = clean_sentences(raw, cfg.min_words, cfg.max_words)
    coverage = covering_sentences(
        target_texts(cfg.cover_words_of), sentences, pool, per_word=cfg.cover_per_word, seed=cfg.seed
    )
    if coverage.uncovered:
        log.warning("no sentence of %s says %s", cfg.text_source, ", ".join(coverage.uncovered))
    report = {"added": len(coverage.sentences), "covered": coverage.covered, "uncovered": coverage.uncovered}
    atomic_write_text(cfg.out / "coverage.json", json.dumps(report, indent=2) + "\n")
    return [s for s in coverage.sentences if s not in set(sentences)]


def build_settings(cfg: Config, items: list[SourceItem]) -> dict[str, Any]:
    """What defines the result (a resume under other settings is refused). A qa corpus names its items by content,
    so that speech of an edited question file is never reused under the same ids."""
    if cfg.qa is None:
        return {k: v for k, v in config_to_dict(cfg).items() if k not in _RUN_CONTROL | _QA_FIELDS}
    spoken = [[i.id, i.source, i.split, i.text] for i in items]
    digest = hashlib.sha256(json.dumps(spoken, ensure_ascii=False).encode()).hexdigest()
    return {"qa_items_sha256": digest, "max_duration_s": cfg.max_duration_s}


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


def qa_items(cfg: Config, qa: Path) -> list[SourceItem]:
    """A question clip and an answer clip per pair of `qa`, each spoken by a voice drawn by the pair's seeded generator
    (question first): from the training voices (voices not held out) for train pairs, from heldout_voices otherwise
    (or from the training voices, with qa_heldout_speakers=training_voices). With qa_answer_voice, that voice speaks
    every answer."""
    pairs, bad = read_text_instructions(qa, all_pairs=cfg.qa_all_pairs)
    if bad:
        log.warning("%s: %d records are not usable, so not spoken (`speechgpt build stage3` lists them)", qa, len(bad))
    training = [key for key in cfg.voices if key not in cfg.heldout_voices]
    items = []
    for pair in sorted(pairs, key=lambda p: p.id):
        if cfg.qa_splits is not None and pair.split not in cfg.qa_splits:
            continue
        heldout = pair.split in HELDOUT_SPLITS and cfg.qa_heldout_speakers == "heldout_voices"
        pool = cfg.heldout_voices if heldout else training
        rng = random.Random(f"{cfg.seed}:voice:{pair.id}")
        spoken = zip(qa_clip_ids(pair.id), ("question", "answer"), (pair.question, pair.answer), strict=True)
        for clip_id, role, text in spoken:
            answer_voice = cfg.qa_answer_voice if role == "answer" else None
            voice = parse_voice(answer_voice or rng.choice(pool))  # the question draws first: its voice is kept
            items.append(tts_item(clip_id, voice, text, pair.split, f"{voice.key} {role} of {pair.id}"))
    return items
