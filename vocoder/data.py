"""Vocoder training data: (units expanded by durations, audio) pairs from a units dataset, and random fixed-length
segments cropped from them with a seeded, checkpointable generator.

Every clip is decoded once and kept in memory (float32, peak-normalized to 0.95 like unit_hifigan's loader): the
embedded demo corpus is about an hour of audio, ~230 MB. Larger corpora want a streaming reader; the sampler's
interface (`next_batch`, `state_dict`) would stay the same.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.data.audio import read_audio
from speechgpt.data.corpus import safe_name
from speechgpt.data.units import load_units_dataset
from speechgpt.training.run_signature import ContentDigest

# the loader is the library's (the units contract); vocoder.train and the benchmarks import it from here
__all__ = [
    "HOP_LENGTH",
    "Batch",
    "Clip",
    "SegmentSampler",
    "heldout_text",
    "load_clips",
    "load_units_dataset",
    "make_clip",
    "speaker_label",
]

log = logging.getLogger(__name__)

HOP_LENGTH = 320
"""Samples per unit frame: 50 Hz frames at 16 kHz."""
PEAK = 0.95


@dataclass(frozen=True)
class Clip:
    """One training utterance: merged units with their durations, the speaker's index and the audio."""

    id: str
    units: np.ndarray
    durations: np.ndarray
    speaker: int
    audio: np.ndarray
    """float32 samples, trimmed or zero-padded to exactly `sum(durations) * HOP_LENGTH`."""

    @property
    def frames(self) -> np.ndarray:
        """Frame-level units (each merged unit repeated for its duration)."""
        return np.repeat(self.units, self.durations)


@dataclass
class Batch:
    frames: torch.Tensor
    """(B, S) frame-level unit ids."""
    audio: torch.Tensor
    """(B, S * HOP_LENGTH) float32 samples aligned with `frames`."""
    speaker: torch.Tensor
    """(B,) speaker indices."""
    units: torch.Tensor
    """(B, U) merged units of the whole utterances the segments come from, right-padded with 0."""
    durations: torch.Tensor
    """(B, U) their durations in frames, 0 on padding."""
    unit_mask: torch.Tensor
    """(B, U) true on real units."""

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(getattr(self, name).to(device) for name in self.__dataclass_fields__))


_NOT_WORD = re.compile(r"[^a-z0-9']+")


def heldout_text(text: str, fraction: float) -> bool:
    """Whether a sentence stays out of vocoder training: a hash of its lower-cased words falls in the first
    `fraction` of the range. The same sentence is held out in every voice, corpus and run, so evaluation can pick
    sentences the vocoder never heard without a list of them."""
    if fraction <= 0.0:
        return False
    words = " ".join(_NOT_WORD.sub(" ", text.lower()).split())
    return int.from_bytes(hashlib.sha256(words.encode()).digest()[:8], "big") / 2**64 < fraction


def speaker_label(voice: str, known: Sequence[str]) -> str:
    """The dataset's speaker label of `voice`: a label as is, or a voice key `engine:name` as corpus synth names
    it (`flite:slt` -> `flite-slt`)."""
    if voice in known:
        return voice
    engine, sep, name = voice.partition(":")
    label = safe_name(f"{engine}-{name}") if sep else voice
    if label not in known:
        raise ValueError(f"voice {voice!r} has no clips here; speakers: {sorted(set(known))}")
    return label


def load_clips(
    dataset: Any,
    splits: Sequence[str],
    speakers: Sequence[str] | None = None,
    max_clips: int | None = None,
    *,
    voice: str | None = None,
    heldout_fraction: float = 0.0,
) -> tuple[list[Clip], list[str]]:
    """Clips of the given splits, and the speaker list (sorted names of those splits unless `speakers` is given).
    `voice`: that speaker's clips only; `heldout_fraction`: leave out the sentences `heldout_text` holds out."""
    # row indices rather than `dataset.filter`, which would write cache files into the dataset's folder
    all_speakers = list(dataset["speaker"])
    label = speaker_label(voice, all_speakers) if voice is not None else None
    texts = dataset["text"] if heldout_fraction > 0 else None
    chosen = [
        i
        for i, split in enumerate(dataset["split"])
        if split in splits
        and (label is None or all_speakers[i] == label)
        and (texts is None or not heldout_text(texts[i], heldout_fraction))
    ][:max_clips]
    if not chosen:
        raise ValueError(f"no clips in splits {list(splits)}" + (f" of voice {voice!r}" if voice else ""))
    names = list(speakers) if speakers is not None else sorted({all_speakers[i] for i in chosen})
    index = {name: i for i, name in enumerate(names)}
    clips = []
    for i in tqdm(chosen, desc="load audio", unit="clip", leave=False):
        row = dataset[i]
        if row["speaker"] not in index:
            raise ValueError(f"{row['id']}: speaker {row['speaker']!r} is not one of the vocoder's speakers")
        clips.append(make_clip(row["id"], row["units"], row["durations"], index[row["speaker"]], row["audio"]))
    return clips, names


def clips_fingerprint(clips: Sequence[Clip]) -> str:
    """Digest of the clips a vocoder trains on, every sample of their audio (a resume checks it:
    speechgpt.training.run_signature): 0.2 s for the demo's 5,504 training clips (826 MB of audio)."""
    digest = ContentDigest()
    for clip in clips:
        digest.add(f"{clip.id}|{clip.speaker}", clip.units, clip.durations, clip.audio, whole=True)
    return digest.hexdigest()


def make_clip(clip_id: str, units: Sequence[int], durations: Sequence[int], speaker: int, audio: Any) -> Clip:
    """A clip from a dataset row's values; `audio` is a path or an array of 16 kHz samples."""
    samples = read_audio(audio).samples if isinstance(audio, str | Path) else np.asarray(audio, dtype=np.float32)
    units_array = np.asarray(units, dtype=np.int64)
    durations_array = np.asarray(durations, dtype=np.int64)
    if units_array.shape != durations_array.shape or units_array.size == 0:
        raise ValueError(f"{clip_id}: {units_array.size} units but {durations_array.size} durations")
    length = int(durations_array.sum()) * HOP_LENGTH
    samples = samples[:length]
    if len(samples) < length:
        samples = np.pad(samples, (0, length - len(samples)))
    samples = samples * (PEAK / max(float(np.abs(samples).max()), 1e-8))
    return Clip(clip_id, units_array, durations_array, speaker, samples.astype(np.float32))


class SegmentSampler:
    """Random batches of `segment_frames`-frame crops. One numpy generator per rank (seeded with seed + rank)
    decides every choice, so its state, saved in a checkpoint, puts a resumed run on the same batches."""

    def __init__(
        self,
        clips: Sequence[Clip],
        batch_size: int,
        segment_frames: int,
        seed: int,
        any_speaker: int | None = None,
        speaker_dropout: float = 0.0,
        *,
        unit_noise: float = 0.0,
        n_units: int = 0,
    ) -> None:
        if not clips:
            raise ValueError("no clips to sample from")
        if unit_noise > 0 and n_units < 1:
            raise ValueError("unit_noise needs the unit vocabulary size (n_units)")
        self.unit_noise, self.n_units = unit_noise, n_units
        """Fraction of a segment's unit runs replaced by a random unit, and the units to draw from."""
        self.clips = list(clips)
        self.batch_size = batch_size
        self.segment_frames = segment_frames
        self.any_speaker, self.speaker_dropout = any_speaker, speaker_dropout
        """Index of the voice trained on every speaker's clips, and how often a segment is given to it."""
        self.rng = np.random.default_rng(seed)
        self._frames = [c.frames for c in self.clips]

    def next_batch(self) -> Batch:
        picks = self.rng.integers(0, len(self.clips), size=self.batch_size)
        frames, audio = [], []
        for i in picks:
            f, a = self._crop(self._frames[i], self.clips[i].audio)
            frames.append(f)
            audio.append(a)
        if self.unit_noise > 0:  # drawn after the crops, so the noise leaves the segments as they would be
            frames = [self._noisy(f) for f in frames]
        chosen = [self.clips[i] for i in picks]
        speakers = [c.speaker for c in chosen]
        if self.any_speaker is not None:
            dropped = self.rng.random(len(speakers)) < self.speaker_dropout
            speakers = [self.any_speaker if drop else s for s, drop in zip(speakers, dropped, strict=True)]
        longest = max(len(c.units) for c in chosen)
        units = np.zeros((len(chosen), longest), dtype=np.int64)
        durations = np.zeros_like(units)
        for row, clip in enumerate(chosen):
            units[row, : len(clip.units)] = clip.units
            durations[row, : len(clip.units)] = clip.durations
        return Batch(
            frames=torch.from_numpy(np.stack(frames)),
            audio=torch.from_numpy(np.stack(audio)),
            speaker=torch.tensor(speakers, dtype=torch.long),
            units=torch.from_numpy(units),
            durations=torch.from_numpy(durations),
            unit_mask=torch.from_numpy(durations > 0),
        )

    def _crop(self, frames: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = self.segment_frames
        while len(frames) < size:  # short clips are repeated, as unit_hifigan's crop_segment does
            frames, audio = np.concatenate([frames, frames]), np.concatenate([audio, audio])
        start = int(self.rng.integers(0, len(frames) - size + 1))
        return frames[start : start + size], audio[start * HOP_LENGTH : (start + size) * HOP_LENGTH]

    def _noisy(self, frames: np.ndarray) -> np.ndarray:
        """`frames` with `unit_noise` of their runs (a unit and its repeats) each set to one random unit."""
        run = np.cumsum(np.diff(frames, prepend=-1) != 0) - 1  # each frame's run index
        replaced = self.rng.random(run[-1] + 1) < self.unit_noise
        random_units = self.rng.integers(0, self.n_units, size=run[-1] + 1)
        return np.where(replaced[run], random_units[run], frames)

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
