"""`speechgpt units fit`: k-means over encoder features sampled from a corpus, under a frame budget."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechgpt.config import CONFIG_FILENAME, config_to_dict, dump_config, save_config
from speechgpt.data.audio import AudioError, read_audio
from speechgpt.data.corpus import load_corpus
from speechgpt.units.encoders import EncoderConfig, build_encoder
from speechgpt.units.kmeans import fit_kmeans

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    corpus: Path
    """Corpus folder (from `speechgpt corpus synth|import`)."""
    out: Path = Path("out/kmeans")
    """Folder for kmeans.safetensors + kmeans.json (which also records the encoder settings)."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """The speech encoder and layer whose features are clustered."""
    k: int | None = None
    """Clusters; default 1000 for transformer encoders (SpeechGPT's km1000), 100 for mfcc / logmel."""
    max_frames: int = 200_000
    """Frame budget: clips are drawn at random until this many frames (50 per second) are collected."""
    splits: list[str] = field(default_factory=lambda: ["train"])
    """Corpus splits to sample from (held-out voices stay unseen)."""
    seed: int = 0
    """Seed of clip order, frame sampling and k-means initialisation."""
    niter: int = 50
    """k-means iterations."""
    num_threads: int = 1
    """torch threads for feature extraction."""

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 2:
            raise ValueError("k must be >= 2")
        if self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")

    @property
    def clusters(self) -> int:
        return self.k or (100 if self.encoder.kind in ("mfcc", "logmel") else 1000)


def run(cfg: Config) -> Path:
    saved = cfg.out / CONFIG_FILENAME
    if (cfg.out / "kmeans.json").exists() and saved.exists() and saved.read_text() == dump_config(cfg):
        log.info("%s: k-means already fitted with this config; nothing to do", cfg.out)
        return cfg.out
    save_config(cfg, cfg.out)
    torch.set_num_threads(cfg.num_threads)
    features = sample_features(cfg)
    model = fit_kmeans(
        features, cfg.clusters, seed=cfg.seed, niter=cfg.niter, encoder=cfg.encoder.name, max_frames=cfg.max_frames
    )
    model.meta["encoder_config"] = config_to_dict(cfg.encoder)
    model.save(cfg.out)
    log.info("k-means k=%d on %d frames of %s -> %s", cfg.clusters, len(features), cfg.encoder.name, cfg.out)
    return cfg.out


def sample_features(cfg: Config) -> np.ndarray:
    corpus = load_corpus(cfg.corpus)
    wanted = set(cfg.splits)
    indices = [i for i, split in enumerate(corpus["split"]) if split in wanted]
    if not indices:
        raise ValueError(f"{cfg.corpus}: no rows in splits {sorted(wanted)}")
    random.Random(cfg.seed).shuffle(indices)
    encoder = build_encoder(cfg.encoder)
    chunks: list[np.ndarray] = []
    total = 0
    with tqdm(total=cfg.max_frames, desc="features", unit="frame") as bar:
        for index in indices:
            row = corpus[index]
            try:
                wave = torch.from_numpy(read_audio(row["audio"]).samples)
            except AudioError as err:
                log.warning("skipping %s (%s): %s", row["id"], row["audio"], err)
                continue
            feats = encoder.encode([wave])[0].numpy()
            chunks.append(feats)
            total += len(feats)
            bar.update(min(len(feats), cfg.max_frames - bar.n))
            if total >= cfg.max_frames:
                break
    return np.concatenate(chunks).astype(np.float32)
