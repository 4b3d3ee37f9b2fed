"""`speechgpt units extract`: corpus -> units dataset (corpus columns + units, durations, encoder).

The corpus is cut into fixed shards; under torchrun each rank takes every WORLD_SIZE-th shard. A shard is written
atomically and skipped when it already exists, so a killed extraction resumes; rank 0 joins the shards at the end.
Within a shard, clips are sorted by length and batched up to an audio-seconds budget, so padding stays small.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from speechgpt.config import save_config
from speechgpt.data.audio import AudioError, read_audio
from speechgpt.data.audio_paths import absolute_audio_paths
from speechgpt.data.corpus import check_build_settings, load_corpus, save_dataset, write_dataset
from speechgpt.data.io import atomic_write_text
from speechgpt.data.units import EncoderTag, units_features
from speechgpt.units.encoders import EncoderConfig, FeatureEncoder, build_encoder
from speechgpt.units.kmeans import KMeansModel
from speechgpt.units.runs import merge_repeats

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    corpus: Path
    """Corpus folder to turn into units."""
    kmeans: Path
    """k-means folder from `speechgpt units fit` (it names the encoder and layer to use)."""
    out: Path = Path("out/units")
    """Output folder: dataset/ (HF), shards/, rejected.jsonl, summary.json."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Encoder precision (bfloat16 is faster on CPUs with bf16 instructions; compare ids with `make bench-units`)."""
    batch_seconds: float = 60.0
    """Audio seconds per encoder batch (clips are length-sorted, so batches hold similar lengths)."""
    shard_size: int = 500
    """Utterances per shard: the unit of resume and of work split across ranks."""
    num_threads: int = 1
    """torch threads per process."""

    def __post_init__(self) -> None:
        if self.batch_seconds <= 0 or self.shard_size < 1 or self.num_threads < 1:
            raise ValueError("batch_seconds, shard_size and num_threads must be positive")


class UnitExtractor:
    """Encoder + k-means: waveforms in, merged units with run lengths out."""

    def __init__(self, encoder: FeatureEncoder, kmeans: KMeansModel) -> None:
        if encoder.dim != kmeans.centroids.shape[1]:
            raise ValueError(f"encoder dim {encoder.dim} != k-means dim {kmeans.centroids.shape[1]}")
        self.encoder = encoder
        self.kmeans = kmeans
        self.tag = EncoderTag(encoder.name, len(kmeans.centroids), str(kmeans.meta["fingerprint"]))
        self.name = str(self.tag)  # the `encoder` column of every row it makes

    @classmethod
    def load(cls, kmeans_dir: Path, dtype: str = "float32") -> UnitExtractor:
        kmeans = KMeansModel.load(kmeans_dir)
        settings = dict(kmeans.meta.get("encoder_config") or {})
        if not settings:
            raise ValueError(f"{kmeans_dir}: kmeans.json records no encoder_config; refit with `speechgpt units fit`")
        settings["dtype"] = dtype
        return cls(build_encoder(EncoderConfig(**settings)), kmeans)

    def frame_ids(self, waves: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.kmeans.predict(f) for f in self.encoder.encode(waves)]

    def __call__(self, waves: list[torch.Tensor]) -> list[tuple[list[int], list[int]]]:
        return [merge_repeats(ids.numpy()) for ids in self.frame_ids(waves)]


def run(cfg: Config) -> Path:
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:
        save_config(cfg, cfg.out)
    torch.set_num_threads(cfg.num_threads)
    corpus = load_corpus(cfg.corpus)
    extractor = UnitExtractor.load(cfg.kmeans, cfg.dtype)
    settings = {
        "corpus": corpus._fingerprint,
        "extractor": extractor.name,
        "dtype": cfg.dtype,
        "shard_size": cfg.shard_size,
    }
    check_build_settings(cfg.out, settings, write=rank == 0)  # finished shards are only reused for the same work
    shards = [range(s, min(s + cfg.shard_size, len(corpus))) for s in range(0, len(corpus), cfg.shard_size)]
    shard_dir = cfg.out / "shards"
    mine = [i for i in range(len(shards)) if i % world == rank]
    todo = [i for i in mine if not (shard_dir / _shard_name(i, len(shards))).exists()]
    log.info("rank %d/%d: %d shards, %d already done", rank, world, len(mine), len(mine) - len(todo))
    total = sum(len(shards[i]) for i in todo)
    with tqdm(total=total, desc="units", unit="utt", disable=rank != 0) as bar:
        for i in todo:
            rows = [corpus[j] for j in shards[i]]
            extract_shard(extractor, rows, shard_dir / _shard_name(i, len(shards)), cfg.batch_seconds, bar)
    _barrier(world)
    if rank == 0:
        _join_shards(cfg.out, [shard_dir / _shard_name(i, len(shards)) for i in range(len(shards))], extractor.name)
    return cfg.out


def extract_shard(extractor: UnitExtractor, rows: list[dict], path: Path, batch_seconds: float, bar: tqdm) -> None:
    """Units for one shard's rows, written to `path` (dataset + rejected.jsonl) via a temporary folder."""
    out_rows: list[dict[str, Any]] = []
    rejected: list[dict[str, str]] = []
    for batch, waves in _batches(rows, batch_seconds, rejected):
        for row, (units, durations) in zip(batch, extractor(waves), strict=True):
            out_rows.append({**row, "units": units, "durations": durations, "encoder": extractor.name})
        bar.update(len(batch))
    bar.update(len(rejected))
    order = {row["id"]: i for i, row in enumerate(rows)}
    out_rows.sort(key=lambda r: order[r["id"]])
    tmp = path.with_name(path.name + ".tmp")
    write_dataset(out_rows, tmp / "dataset", units_features())
    atomic_write_text(tmp / "rejected.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in rejected))
    tmp.rename(path)


def _batches(
    rows: list[dict], batch_seconds: float, rejected: list[dict[str, str]]
) -> Iterator[tuple[list[dict], list[torch.Tensor]]]:
    """Batches of similar-length clips (sorted by the corpus' duration_s); a thread decodes ahead of the encoder."""
    ordered = sorted(rows, key=lambda r: r["duration_s"])
    batch: list[dict] = []
    waves: list[torch.Tensor] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for row, result in zip(ordered, pool.map(_decode, ordered), strict=True):
            if isinstance(result, str):
                rejected.append({"id": row["id"], "origin": row["audio"], "reason": result})
                continue
            if batch and (len(batch) + 1) * len(result) > batch_seconds * 16_000:
                yield batch, waves
                batch, waves = [], []
            batch.append(row)
            waves.append(result)
    if batch:
        yield batch, waves


def _decode(row: dict) -> torch.Tensor | str:
    try:
        return torch.from_numpy(read_audio(row["audio"]).samples)
    except AudioError as err:
        return str(err)


def _join_shards(out: Path, paths: list[Path], encoder: str) -> None:
    import datasets

    parts = [absolute_audio_paths(datasets.load_from_disk(str(p / "dataset")), p / "dataset") for p in paths]
    joined = (
        datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_list([], features=units_features())
    )
    rejected = "".join((p / "rejected.jsonl").read_text() for p in paths)
    save_dataset(joined, out / "dataset")
    atomic_write_text(out / "rejected.jsonl", rejected)
    durations = [sum(d) for d in joined["durations"]]
    summary = {
        "utterances": len(joined),
        "rejected": rejected.count("\n"),
        "encoder": encoder,
        "frames": sum(durations),
        "units": sum(len(u) for u in joined["units"]),
    }
    summary["merged_units_per_second"] = round(summary["units"] / max(1, summary["frames"]) * 50, 2)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("units: %s", summary)


def _shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def _barrier(world: int) -> None:
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
