"""`speechgpt vocoder train`: one training loop for both routes (mel net + Griffin-Lim, or unit HiFi-GAN), on CPU or
GPU, one process or several under torchrun (gloo on CPU, nccl on GPU; gradients averaged with one all_reduce per
step). Random fixed-length segments of (frame units, audio) from a units dataset; the duration predictor trains
jointly on the utterances' merged units and durations, fed the route's unit embedding (detached, so the vocoder's
embedding learns only from the audio). Checkpoints every `save_every` steps hold models, optimizers, schedulers,
step and each rank's data and torch RNG, so a resumed run continues exactly; `<out>/vocoder` is the loadable result.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from speechgpt.config import save_config
from speechgpt.training.checkpoint import (
    atomic_save,
    latest_step_folder,
    load_rank_state,
    mark_latest,
    safe_load,
    save_rank_state,
    step_folder,
)
from speechgpt.training.collectives import all_reduce_mean, barrier
from speechgpt.training.distributed import Dist, setup_torch_process
from speechgpt.training.metrics import MetricsLog
from speechgpt.training.run_signature import RunSignature, prepare_checkpoints
from vocoder.data import SegmentSampler, clips_fingerprint, load_clips, load_units_dataset
from vocoder.load import save_vocoder
from vocoder.mel_vocoder import MelSettings
from vocoder.step import VocoderStep

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    data: Path
    """Units dataset (folder of `speechgpt units extract`, or its dataset/): audio, units, durations, speaker."""
    out: Path = Path("out/vocoder")
    """Output folder: config.yaml, metrics.jsonl, checkpoints/, vocoder/ (the loadable vocoder)."""
    route: Literal["mel", "hifigan"] = "mel"
    """mel: small conv net to log-mel + Griffin-Lim (CPU minutes); hifigan: unit_hifigan's UnitVocoder (GPU)."""
    splits: list[str] = field(default_factory=lambda: ["train"])
    """Dataset splits to train on."""
    max_clips: int | None = None
    """Use only the first N clips of those splits (tests, quick runs)."""
    answer_voice: str | None = None
    """Train on this one voice (a speaker label of the data, or its voice key such as `flite:rms`): a single-voice
    vocoder that renders units of any speaker in that voice, as SpeechGPT's; None: every speaker of the data, each
    a voice of the vocoder (plus `any_speaker`)."""
    heldout_text_fraction: float = 0.0
    """Leave out of training the sentences that `vocoder.data.heldout_text` holds out at this fraction (in every
    voice), so that `speechgpt eval resynth` can judge sentences the vocoder never heard."""
    n_units: int | None = None
    """Unit vocabulary size; None reads k from the dataset's encoder tag (`...+km500:<fingerprint>`)."""
    any_speaker: str | None = "any"
    """Name of an extra voice trained on every speaker's clips (`speaker_dropout` of the segments): what synthesis
    uses for voices it never heard, such as a language model's units; None: no such voice."""
    speaker_dropout: float = 0.2
    """Fraction of segments whose speaker is replaced by `any_speaker`."""
    default_speaker: str | None = None
    """Voice used when synthesis names none; None: `any_speaker`, else the first training speaker."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 16
    """Segments per step per process."""
    segment_frames: int = 64
    """Segment length in 50 Hz unit frames (64 = 1.28 s)."""
    lr: float = 1e-3
    """Peak learning rate (unit_hifigan uses 2e-4)."""
    betas: tuple[float, float] = (0.8, 0.99)
    """AdamW betas (unit_hifigan's)."""
    warmup_steps: int = 50
    """Linear warmup steps, then cosine decay to lr * min_lr_ratio."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    clip_grad: float = 1.0
    """Gradient-norm clipping of the generator side (0 disables)."""
    embedding_dim: int = 128
    """Unit embedding width (also the duration predictor's input)."""
    speaker_dim: int = 64
    """Speaker embedding width (mel route; the hifigan route uses embedding_dim, as UnitVocoder does)."""
    channels: int = 192
    """Mel route: conv channels (192 beat 256 and 128 at equal CPU time, docs/benchmarks.md)."""
    kernel_size: int = 5
    """Mel route: conv kernel size (odd)."""
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 1, 2, 4])
    """Mel route: one residual conv block per entry, with that dilation (its span is the receptive field)."""
    lookahead_frames: int | None = None
    """Mel route: future frames an output frame may read (the latency a stream adds before its first audio, 20 ms
    each); None: centered convolutions, half the receptive field (30 frames with the default dilations)."""
    dropout: float = 0.0
    """Mel route: dropout after each residual block's convolution (training only)."""
    unit_noise: float = 0.0
    """Fraction of each segment's unit runs replaced by a random unit for the whole run (training only): an input
    noise that stands for a language model's wrong units and keeps the net from leaning on any one unit."""
    mel: MelSettings = field(default_factory=MelSettings)
    """Mel route: spectrogram analysis and Griffin-Lim settings."""
    discriminator_start: int | None = None
    """Hifigan route: step at which UnitDiscriminator and the adversarial losses join; None: mel loss only."""
    compile_losses: bool = False
    """Hifigan route: use unit_hifigan's torch.compile'd losses (GPU; on CPU the first step builds C++ for minutes)."""
    duration: bool = True
    """Train the duration predictor jointly (needed to synthesize units without durations)."""
    duration_hidden: int = 128
    """Duration predictor width."""
    duration_weight: float = 1.0
    """Weight of the duration loss."""
    log_every: int = 10
    """Steps between metrics.jsonl records."""
    save_every: int = 200
    """Steps between checkpoints (and one at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept."""
    resume: bool = True
    """Continue from <out>/checkpoints/latest when there is one and it comes from a run of the same settings, clips
    and starting weights (<out>/checkpoints/signature.json); false: delete any checkpoints there and start over."""
    changed_run: Literal["error", "restart"] = "error"
    """What resume does with checkpoints of a run whose settings, clips or starting weights differ: 'error' stops and
    says what changed; 'restart' deletes them and trains from step 0."""
    seed: int = 0
    """Seeds model init and (plus the rank) the segment sampler."""
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Compute precision of the vocoder (autocast; losses, optimizer and weights stay float32). bfloat16 was ~1.6x
    faster on an AMD EPYC with avx512_bf16 and ~1.3x slower on an Intel Xeon with the same flags; auto times a few
    passes of each before training and keeps the faster (bfloat16 on GPUs that have it); a resumed run keeps the
    precision its checkpoint was trained in."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: the GPU of this rank when there is one."""
    num_threads: int = 1
    """torch threads per process on CPU."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.segment_frames < 2 or self.save_every < 1:
            raise ValueError("steps, batch_size, save_every must be >= 1 and segment_frames >= 2")
        if not 0.0 <= self.speaker_dropout < 1.0:
            raise ValueError("speaker_dropout must lie in [0, 1)")
        if not 0.0 <= self.heldout_text_fraction < 1.0:
            raise ValueError("heldout_text_fraction must lie in [0, 1)")
        if self.route == "mel" and self.discriminator_start is not None:
            raise ValueError("discriminator_start is a hifigan-route setting")


def run(cfg: Config) -> Path:
    dist = setup_torch_process(cfg.num_threads, cfg.device)
    rank, world, device = dist.rank, dist.world, torch.device(dist.device)
    if rank == 0:
        save_config(cfg, cfg.out)
    dataset = load_units_dataset(cfg.data)
    clips, speakers = load_clips(
        dataset, cfg.splits, max_clips=cfg.max_clips, voice=cfg.answer_voice, heldout_fraction=cfg.heldout_text_fraction
    )
    voice = speakers[0] if cfg.answer_voice is not None else None
    if voice is not None:  # one voice: no speaker embedding, every clip's speaker index is 0
        speakers = []
    elif cfg.any_speaker is not None:
        if cfg.any_speaker in speakers:
            raise ValueError(f"any_speaker {cfg.any_speaker!r} is also a speaker of the data; choose another name")
        speakers.append(cfg.any_speaker)
    n_units = cfg.n_units or infer_n_units(dataset)
    log.info("rank %d/%d: %d clips, %d speakers, %d units, %s", rank, world, len(clips), len(speakers), n_units, device)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    trainer = VocoderStep(cfg, n_units, speakers, device)
    any_index = speakers.index(cfg.any_speaker) if cfg.any_speaker is not None and voice is None else None
    sampler = SegmentSampler(
        clips,
        cfg.batch_size,
        cfg.segment_frames,
        cfg.seed + rank,
        any_index,
        cfg.speaker_dropout,
        unit_noise=cfg.unit_noise,
        n_units=n_units,
    )
    checkpoints = cfg.out / "checkpoints"
    trained = torch.nn.ModuleList(
        [m for m in (trainer.model, trainer.duration, trainer.discriminator) if m is not None]
    )
    signature = RunSignature.of(cfg, data=clips_fingerprint(clips), model=trained)
    prepare_checkpoints(
        checkpoints, signature, resume=cfg.resume, changed_run=cfg.changed_run, max_steps=cfg.steps, is_main=rank == 0
    )
    step = load_latest(checkpoints, trainer, sampler, dist) if cfg.resume else 0
    if step == 0 and cfg.dtype == "auto":  # a probe batch of its own: the training batches stay the same
        probe = SegmentSampler(clips, cfg.batch_size, cfg.segment_frames, cfg.seed + 7919 + rank, any_index)
        trainer.choose_precision(probe.next_batch().to(device))
    metrics = MetricsLog(cfg.out, enabled=rank == 0)
    started, first = time.perf_counter(), step
    with tqdm(total=cfg.steps, initial=step, desc=f"vocoder {cfg.route}", unit="step", disable=rank != 0) as bar:
        while step < cfg.steps:
            tick = time.perf_counter()
            logs = trainer.step(sampler.next_batch().to(device), step)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                logs = dict(zip(logs, all_reduce_mean(list(logs.values())), strict=True))
                metrics.write(step=step, **logs, seconds=round(time.perf_counter() - tick, 4))
                bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if k != "lr"})
            bar.update()
            if step % cfg.save_every == 0 or step == cfg.steps:
                save_checkpoint(checkpoints, trainer, sampler, step, dist, cfg.keep_checkpoints)
    elapsed = time.perf_counter() - started
    if rank == 0:
        metrics.write(step=step, train_seconds=round(elapsed, 1), steps_per_s=round((step - first) / elapsed, 4))
        metrics.plot()
        save_vocoder(
            cfg.out / "vocoder",
            trainer.model,
            route=cfg.route,
            speakers=speakers,
            default_speaker=None if voice is not None else cfg.default_speaker or cfg.any_speaker or speakers[0],
            duration=trainer.duration,
            mel=cfg.mel if cfg.route == "mel" else None,
            extra={
                "n_units": n_units,
                "encoder": _encoder_name(dataset),
                "steps": step,
                "answer_voice": voice,
                "heldout_text_fraction": cfg.heldout_text_fraction,
            },
        )
    return cfg.out / "vocoder"


def infer_n_units(dataset: object) -> int:
    """k of the dataset's k-means, read from its encoder tag (`<encoder name>+km<k>:<fingerprint>`)."""
    from speechgpt.data.units import encoder_tag

    return encoder_tag(dataset).k


def _encoder_name(dataset: object) -> str:
    from speechgpt.data.units import encoder_tag

    return str(encoder_tag(dataset))


def save_checkpoint(
    folder: Path, trainer: VocoderStep, sampler: SegmentSampler, step: int, dist: Dist, keep: int
) -> None:
    """Each rank's RNG and sampler file, then rank 0's state, then `latest` names the step: a kill never leaves
    `latest` pointing at a half-written checkpoint."""
    tag = step_folder(folder, step)
    save_rank_state(tag, dist.rank, extra={"sampler": sampler.state_dict()})
    if dist.is_main:
        atomic_save({"step": step, **trainer.state_dict()}, tag / "state.pt")
    barrier()
    if dist.is_main:
        mark_latest(folder, tag, keep)


def load_latest(folder: Path, trainer: VocoderStep, sampler: SegmentSampler, dist: Dist) -> int:
    """Resume from the step `latest` names (every file loads with weights_only=True); 0 without a checkpoint."""
    tag = latest_step_folder(folder)
    if tag is None:
        return 0
    state = safe_load(tag / "state.pt", map_location=dist.device)
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise RuntimeError(
            f"{tag} does not fit this config (another route, voice or model size?): remove {folder} or set "
            f"resume=false ({str(err).splitlines()[0]})"
        ) from None
    sampler.load_state_dict(load_rank_state(tag, dist.rank)["sampler"])
    log.info("rank %d resumed from %s at step %d", dist.rank, tag, state["step"])
    return int(state["step"])
