"""The four measurements of `make bench-gpu` (benchmarks/bench_gpu.py runs each in its own process, under a cap).

Each part takes its sizes (REAL for one H100/H200, DRY for a CPU in seconds) and a `report` callback that keeps the
results so far (a part cut off at its cap keeps what it reported), and returns its results: a dict of JSON values.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, kw_only=True)
class Sizes:
    preset: str
    """Llama preset of benchmarks/bench_mfu.py for the MFU and packing parts."""
    seq_len: int
    """Packed row length."""
    micro_batch: int
    """Packed rows per micro-batch."""
    lengths: tuple[int, int]
    """Example lengths in tokens, log-uniform between these."""
    mfu_steps: int
    """Optimizer steps of the MFU run (the first `warmup` not timed)."""
    packing_steps: int
    """Timed optimizer steps of each packing way (after `warmup` more)."""
    padded_batch: int
    """Examples per padded micro-batch (about the useful tokens of one packed micro-batch)."""
    warmup: int
    """Untimed steps before each timed stretch."""
    hubert: dict[str, Any] = field(default_factory=dict)
    """HubertConfig arguments; empty: HuBERT base (12 x 768, 512-channel conv stack)."""
    layer: int
    """Encoder layer whose features are quantized (the layers above it are not built)."""
    k: int
    """k-means centroids."""
    clips: int
    """Audio clips of random noise (the speed does not depend on what they say)."""
    clip_seconds: tuple[float, float]
    """Clip durations, log-uniform between these."""
    batch_seconds: float
    """Audio seconds per encoder batch (`speechgpt units extract batch_seconds=`)."""
    vocoder_batch: int
    """Segments per vocoder step."""
    segment_frames: int
    """Segment length in 50 Hz unit frames."""
    vocoder_steps: int
    """Timed vocoder steps (after `warmup` more)."""


REAL = Sizes(
    preset="1b",
    seq_len=2048,
    micro_batch=4,
    lengths=(128, 1024),
    mfu_steps=30,  # as `make bench-mfu`
    packing_steps=15,
    padded_batch=16,  # mean length ~430 tokens: ~7,000 useful tokens, like 4 packed rows of 2048
    warmup=5,
    layer=6,  # as `make bench-units`
    k=1000,
    clips=1500,  # ~3.2 h of audio
    clip_seconds=(2.0, 20.0),
    batch_seconds=300.0,
    vocoder_batch=64,  # unit_hifigan's train.py: 64 segments of 8,960 samples per GPU
    segment_frames=28,
    vocoder_steps=30,
)
DRY = Sizes(
    preset="tiny",
    seq_len=256,
    micro_batch=2,
    lengths=(16, 128),
    mfu_steps=3,
    packing_steps=2,
    padded_batch=4,
    warmup=0,
    hubert={
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (16,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    },
    layer=2,
    k=16,
    clips=4,
    clip_seconds=(0.5, 1.5),
    batch_seconds=2.0,
    vocoder_batch=1,
    segment_frames=8,
    vocoder_steps=1,
)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def mfu(sizes: Sizes, report: Report) -> dict[str, Any]:
    """bf16 (GPU) model FLOPs utilization of the engine under ZeRO-2: `make bench-mfu`'s measurement."""
    from benchmarks.bench_mfu import measure_mfu

    result = measure_mfu(
        sizes.preset,
        seq_len=sizes.seq_len,
        micro_batch=sizes.micro_batch,
        zero=2,
        steps=sizes.mfu_steps,
        warmup=sizes.warmup,
        lengths=sizes.lengths,
    )
    return {
        "model": f"Llama {sizes.preset}",
        "params": result.params,
        "zero_stage": 2,
        "precision": "bfloat16" if torch.cuda.is_available() else "float32",
        "rows": f"{sizes.micro_batch} x {sizes.seq_len} tokens per micro-batch",
        "steps": sizes.mfu_steps,
        "untimed_steps": sizes.warmup,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "flops_per_token": result.flops_per_token,
        "peak_flops": result.peak_flops,
        "peak": result.peak_text,
        "mfu": round(result.mfu, 4),
    }


def packing_ways() -> dict[str, tuple[bool, str | None]]:
    """name: (packing, attention); None is the stages' own choice (flash_attention_2 when flash_attn is installed
    and a GPU is visible, else per-example SDPA on packed rows; SDPA with the padding mask on padded ones)."""
    import importlib.util

    from speechgpt.training.packed_attention import PACKED_SDPA

    ways: dict[str, tuple[bool, str | None]] = {"packed": (True, None), "padded": (False, None)}
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        ways["packed_per_example_sdpa"] = (True, PACKED_SDPA)  # what the stages run without flash-attn
    ways["packed_sdpa_mask"] = (True, "sdpa")  # transformers' SDPA, block-diagonal mask from the position ids
    return ways


def packing(sizes: Sizes, report: Report) -> dict[str, Any]:
    """Useful tokens/s of the engine (ZeRO-2) on packed rows with each attention, and on padded batches."""
    from benchmarks.bench_mfu import PRESETS, engine_tokens_per_second, make_examples, training_llama
    from benchmarks.measure import padding_share

    tokens = sizes.seq_len * sizes.micro_batch * (sizes.packing_steps + sizes.warmup + 1)
    count = tokens // round(mean_length(sizes.lengths)) + 8
    examples = make_examples(count, PRESETS[sizes.preset]["vocab_size"], lengths=sizes.lengths)
    results: dict[str, Any] = {
        "model": f"Llama {sizes.preset}",
        "examples": f"random tokens, {sizes.lengths[0]}-{sizes.lengths[1]} long (log-uniform), all trained",
        "packed_micro_batch": f"{sizes.micro_batch} x {sizes.seq_len} tokens",
        "padded_micro_batch": f"{sizes.padded_batch} examples, right-padded to the longest (x8)",
        "padding_share": round(padding_share(examples, sizes.padded_batch), 4),
        "steps": sizes.packing_steps,
        "untimed_steps": sizes.warmup,
        "ways": {},
    }
    for name, (packed, attention) in packing_ways().items():
        model = training_llama(sizes.preset, sizes.seq_len, packing=packed, attention=attention)
        chosen = model.config._attn_implementation
        rate = engine_tokens_per_second(
            model,
            examples,
            seq_len=sizes.seq_len,
            micro_batch=sizes.micro_batch if packed else sizes.padded_batch,
            zero=2,
            steps=sizes.packing_steps + sizes.warmup,
            warmup=sizes.warmup,
            packing=packed,
        )
        results["ways"][name] = {"attention": chosen, "tokens_per_s": round(rate, 1)}
        del model
        release_memory()
        ways = results["ways"]
        if "packed" in ways and "padded" in ways:
            speedup = ways["packed"]["tokens_per_s"] / ways["padded"]["tokens_per_s"]
            results["speedup_packed_over_padded"] = round(speedup, 3)
        report(results)
    return results


def mean_length(lengths: tuple[int, int]) -> float:
    low, high = lengths
    return (high - low) / math.log(high / low)


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def units(sizes: Sizes, report: Report) -> dict[str, Any]:
    """HuBERT (random weights) layer features + k-means nearest centroid, through the toolkit's UnitExtractor,
    on audio already in memory: x real time = audio seconds / wall seconds."""
    from transformers import HubertConfig, HubertModel

    from speechgpt.units.encoders import EncoderConfig, build_encoder
    from speechgpt.units.extract import UnitExtractor
    from speechgpt.units.kmeans import KMeansModel

    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # the extractor autocasts to bfloat16 on CPU only
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        HubertModel(HubertConfig(**sizes.hubert)).save_pretrained(tmp)
        encoder = build_encoder(EncoderConfig(kind="hubert", path=tmp, layer=sizes.layer))
    encoder.model.to(device())  # type: ignore[attr-defined]
    centroids = np.random.default_rng(0).standard_normal((sizes.k, encoder.dim)).astype(np.float32)
    extractor = UnitExtractor(encoder, KMeansModel(centroids, {"encoder": "random", "source": "bench"}))
    batches = audio_batches(sizes)
    extractor.frame_ids(batches[0][:2])  # warm-up: kernels chosen, memory pools filled
    synchronize()
    started = time.perf_counter()
    frames = sum(len(ids) for batch in batches for ids in extractor.frame_ids(batch))
    synchronize()
    seconds = time.perf_counter() - started
    audio_s = sum(len(w) for batch in batches for w in batch) / 16_000
    return {
        "encoder": f"HuBERT {'base' if not sizes.hubert else 'tiny'} (random weights), layers 1-{sizes.layer}",
        "k": sizes.k,
        "precision": "float32, TF32 matmuls" if torch.cuda.is_available() else "float32",
        "clips": sizes.clips,
        "audio_s": round(audio_s, 1),
        "batch_seconds": sizes.batch_seconds,
        "frames": frames,
        "seconds": round(seconds, 3),
        "x_real_time": round(audio_s / seconds, 1),
        "note": "audio in device memory: file decoding not included",
    }


def audio_batches(sizes: Sizes) -> list[list[torch.Tensor]]:
    """Noise clips of log-uniform durations, sorted by length and cut into batches of at most `batch_seconds`, as
    `speechgpt units extract` batches a corpus."""
    rng = random.Random(0)
    low, high = (math.log(s) for s in sizes.clip_seconds)
    samples = sorted(round(16_000 * math.exp(rng.uniform(low, high))) for _ in range(sizes.clips))
    batches: list[list[torch.Tensor]] = [[]]
    for n in samples:
        if batches[-1] and (len(batches[-1]) + 1) * n > sizes.batch_seconds * 16_000:
            batches.append([])
        batches[-1].append(0.1 * torch.randn(n, device=device()))
    return batches


def vocoder(sizes: Sizes, report: Report) -> dict[str, Any]:
    """Training steps/s of the unit HiFi-GAN route with its discriminator from the first step: the vocoder
    trainer's own step (discriminator step, then generator step with mel + feature matching + GAN losses, and the
    duration predictor), bfloat16 autocast on GPU, on random units and noise."""
    from vocoder.data import HOP_LENGTH, Batch
    from vocoder.train import Config

    cuda = torch.cuda.is_available()
    cfg = Config(
        data=Path("unused"),
        route="hifigan",
        discriminator_start=0,
        batch_size=sizes.vocoder_batch,
        segment_frames=sizes.segment_frames,
        steps=sizes.warmup + sizes.vocoder_steps,
        warmup_steps=0,
        dtype="bfloat16" if cuda else "float32",
    )
    torch.manual_seed(0)
    trainer = vocoder_step(cfg, 1000, ["s0", "any"])
    b, s = sizes.vocoder_batch, sizes.segment_frames
    batch = Batch(
        frames=torch.randint(0, 1000, (b, s)),
        audio=0.1 * torch.randn(b, s * HOP_LENGTH),
        speaker=torch.zeros(b, dtype=torch.long),
        units=torch.randint(0, 1000, (b, s)),
        durations=torch.full((b, s), 2),
        unit_mask=torch.ones(b, s, dtype=torch.bool),
    ).to(device())
    for step in range(sizes.warmup):
        trainer.step(batch, step)
    synchronize()
    started = time.perf_counter()
    for step in range(sizes.warmup, sizes.warmup + sizes.vocoder_steps):
        trainer.step(batch, step)
    synchronize()
    seconds = time.perf_counter() - started
    discriminator: Any = trainer.discriminator
    return {
        "generator_params": sum(p.numel() for p in trainer.model.parameters()),
        "discriminator_params": sum(p.numel() for p in discriminator.parameters()),
        "precision": "bfloat16 autocast" if cuda else "float32",
        "batch": f"{b} segments x {s} frames ({s * HOP_LENGTH} samples)",
        "compiled_losses": cfg.compile_losses,
        "steps": sizes.vocoder_steps,
        "untimed_steps": sizes.warmup,
        "steps_per_s": round(sizes.vocoder_steps / seconds, 3),
        "audio_s_per_s": round(sizes.vocoder_steps * b * s / 50 / seconds, 3),  # seconds of segments per second
    }


def vocoder_step(cfg: Any, n_units: int, speakers: list[str]) -> Any:
    """The vocoder trainer's models, optimizers and step on this process' device (the one place naming its class)."""
    from vocoder.step import VocoderStep

    return VocoderStep(cfg, n_units, speakers, device())


PARTS: dict[str, Callable[[Sizes, Report], dict[str, Any]]] = {
    "mfu": mfu,
    "packing": packing,
    "units": units,
    "vocoder": vocoder,
}
