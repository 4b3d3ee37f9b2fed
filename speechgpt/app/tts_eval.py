"""`speechgpt eval tts`: can a model say a sentence it never trained on, so that a listener understands it?

New sentences (drawn from `text_source`, none that a corpus in `exclude` says) are read aloud by the model, voiced by
the vocoder and transcribed by the Whisper judge; WER and CER are against the sentence. The answer voice's own
recording of each sentence (synthesized by `voice`) is judged too, as the reference row: the judge's own errors.

- The unified variant reads in stage 2's TTS form, `[Human]: {instruction} This is input: {text}<eoh> [SpeechGPT]:
  <sosp>`, and writes units only (constrained) until `<eosp>`.
- The frozen variant says the text as if its LLM had written it: the speech decoder reads the text's tokens and the
  LLM's hidden states of the text alone (speechgpt.infer.reading).

    speechgpt eval tts --config configs/tiny/tts_unified.yaml
    speechgpt eval tts --config configs/tiny/tts_frozen.yaml

Writes `report.json` (WER/CER of the model and of the reference, units per second, the sentences and what the judge
heard), `sentences.jsonl` and, with `write_wavs`, `wavs/{model,reference}/<n>.wav`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from speechgpt.app.chat import ChatSetup, load_chat_app
from speechgpt.config import save_config
from speechgpt.data.audio import write_audio
from speechgpt.data.io import atomic_write_text
from speechgpt.eval.judge import DEFAULT_MODEL, character_error_rate, load_judge, word_error_rate
from speechgpt.infer.reading import read_aloud

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config(ChatSetup):
    text_source: str = "wordnet"
    """Where the sentences come from: 'wordnet' (its example sentences) or a text file, one sentence a line."""
    exclude: list[Path] = field(default_factory=list)
    """Corpus folders whose sentences are never drawn (every corpus the models or the vocoder trained on)."""
    sentences: int = 40
    """Sentences read aloud, drawn with `seed`."""
    min_words: int = 4
    """Shortest sentence drawn, in words."""
    max_words: int = 12
    """Longest sentence drawn, in words."""
    seed: int = 0
    """Seed of the draw: the same arguments give the same sentences."""
    instruction: str | None = None
    """Unified variant: the TTS instruction; None: the first phrasing of data_builders/resources/tts_instructions.txt
    (one of those stage 2 trained on)."""
    voice: str | None = "festival:cmu_us_slt_arctic_hts"
    """TTS voice that records each sentence for the reference row (the answer voice); None: no reference row."""
    reference_from: Path | None = None
    """Another `eval tts` output folder whose reference row is reused where it read the same sentences in the same
    voice (the demo's tts_frozen takes tts_unified's); None, or another draw or voice: recorded and judged here."""
    judge_model: str = DEFAULT_MODEL
    """ASR judge: CTranslate2 Whisper folder or `package:<module>`."""
    write_wavs: bool = True
    """Keep the model's audio and the reference recordings."""
    out: Path = Path("out/tts_eval")
    """Output folder: report.json, sentences.jsonl, config.yaml, wavs/."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sentences < 1 or not 1 <= self.min_words <= self.max_words:
            raise ValueError("sentences must be >= 1 and 1 <= min_words <= max_words")


def new_sentences(cfg: Config) -> list[str]:
    """`cfg.sentences` sentences of `cfg.text_source` that no corpus of `cfg.exclude` says, drawn with `cfg.seed`."""
    from data_builders.text_sources import load_sentences
    from speechgpt.text.backbone_text import corpus_sentences
    from speechgpt.training.decoder_stage import plain_text

    said: set[str] = set()
    for corpus in cfg.exclude:
        texts = corpus_sentences(corpus, trained=True) + corpus_sentences(corpus, trained=False)
        said |= {plain_text(s) for s in texts}
    pool = load_sentences(
        cfg.text_source, max_sentences=None, seed=cfg.seed, min_words=cfg.min_words, max_words=cfg.max_words
    )
    pool = [s for s in pool if plain_text(s) not in said]
    if len(pool) < cfg.sentences:
        raise ValueError(
            f"{cfg.text_source}: {len(pool)} sentences left after excluding {cfg.exclude}, need {cfg.sentences}"
        )
    return [pool[i] for i in sorted(random.Random(cfg.seed).sample(range(len(pool)), cfg.sentences))]


def run(cfg: Config) -> Path:
    """Draw, read aloud, record the reference, judge; returns report.json's path."""
    from data_builders.instructions import load_instructions

    sentences = new_sentences(cfg)
    app = load_chat_app(cfg)
    if not app.speaks:
        raise ValueError(
            f"{cfg.model}: this setup cannot speak (give `vocoder`, and `speech_decoder` for the frozen variant)"
        )
    save_config(cfg, cfg.out)
    instruction = cfg.instruction if cfg.instruction is not None else load_instructions("tts")[0]
    judge = load_judge(cfg.judge_model, cpu_threads=cfg.num_threads)
    rows: list[dict[str, Any]] = []
    waves: list[np.ndarray] = []
    for sentence in tqdm(sentences, desc=f"reading aloud ({app.variant})", unit="sentence"):
        answer, audio = read_aloud(app.session, sentence, instruction=instruction)
        wave = audio if audio is not None else np.zeros(0, dtype=np.float32)
        waves.append(wave)
        rows.append({"text": sentence, "units": len(answer.units), "audio_s": round(wave.size / 16_000, 3)})
    heard = judge.transcribe(waves)
    report: dict[str, Any] = {
        "model": str(cfg.model),
        "variant": app.variant,
        "sentences": len(sentences),
        "wer": word_error_rate(sentences, heard),
        "cer": character_error_rate(sentences, heard),
        "units_per_s": units_rate(rows),
        "reference": reference_row(cfg, sentences, judge, rows) if cfg.voice else None,
    }
    for row, text in zip(rows, heard, strict=True):
        row["heard"] = text
    if cfg.write_wavs:
        for n, wave in enumerate(waves):
            write_audio(cfg.out / "wavs" / "model" / f"{n:03d}.wav", wave)
    atomic_write_text(cfg.out / "sentences.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(cfg.out / "report.json", json.dumps(report, indent=2) + "\n")
    ref = report["reference"]
    print(
        f"  {app.variant}: {len(sentences)} new sentences read aloud, judge WER {100 * report['wer']:.1f}%"
        f" (CER {100 * report['cer']:.1f}%)"
        + (f"; the answer voice's own recordings {100 * ref['wer']:.1f}%" if ref else ""),
        flush=True,
    )
    return cfg.out / "report.json"


def units_rate(rows: list[dict[str, Any]]) -> float | None:
    """Units per second of the model's audio over all sentences (None when it said nothing)."""
    seconds = sum(r["audio_s"] for r in rows)
    return round(sum(r["units"] for r in rows) / seconds, 2) if seconds else None


def reference_row(cfg: Config, sentences: list[str], judge: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer voice's own recordings of the sentences, judged: the row the model's WER is read against."""
    from data_builders.tts import synthesize

    assert cfg.voice is not None
    reused = reused_reference(cfg, sentences)
    if reused is not None:
        reference, heard_by_row = reused
        for row, text in zip(rows, heard_by_row, strict=True):
            row["reference_heard"] = text
        return reference
    waves = [np.asarray(synthesize(cfg.voice, s).samples, dtype=np.float32) for s in tqdm(sentences, desc="reference")]
    heard = judge.transcribe(waves)
    for row, text in zip(rows, heard, strict=True):
        row["reference_heard"] = text
    if cfg.write_wavs:
        for n, wave in enumerate(waves):
            write_audio(cfg.out / "wavs" / "reference" / f"{n:03d}.wav", wave)
    return {"voice": cfg.voice, "wer": word_error_rate(sentences, heard), "cer": character_error_rate(sentences, heard)}


def reused_reference(cfg: Config, sentences: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """`cfg.reference_from`'s reference row and what the judge heard of each recording, where that evaluation read
    the same sentences in the same voice (its recordings are copied when `write_wavs`); None otherwise."""
    source = cfg.reference_from
    if source is None:
        return None
    report_path, rows_path = source / "report.json", source / "sentences.jsonl"
    if not report_path.is_file() or not rows_path.is_file():
        log.info("%s: no finished `eval tts` there; recording the reference row here", source)
        return None
    reference = json.loads(report_path.read_text(encoding="utf-8")).get("reference")
    rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()]
    if not reference or reference.get("voice") != cfg.voice or [r["text"] for r in rows] != sentences:
        log.info("%s read other sentences or in another voice; recording the reference row here", source)
        return None
    if cfg.write_wavs:
        recordings = source / "wavs" / "reference"
        if not all((recordings / f"{n:03d}.wav").is_file() for n in range(len(rows))):
            log.info("%s lacks some reference recordings; recording the reference row here", recordings)
            return None
        shutil.copytree(recordings, cfg.out / "wavs" / "reference", dirs_exist_ok=True)
    log.info("reference row reused from %s", source)
    return reference, [r["reference_heard"] for r in rows]
