"""The models of a route, their optimizers and schedules, and one optimizer step (data-parallel over ranks).

mel: L1 between the net's log-mel and the audio's. hifigan: with the discriminator active, unit_hifigan's
discriminator step then generator step (mel x45 + feature matching x2 + least-squares GAN); before it, the mel term
alone. Both: + the duration predictor's MSE on log(1 + frames), in the generator optimizer.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from speechgpt.training.collectives import all_reduce_mean, average_gradients
from speechgpt.training.schedule import lr_lambda
from vocoder import hifigan
from vocoder.data import Batch
from vocoder.duration import DurationPredictor, duration_loss
from vocoder.mel_vocoder import LogMel, MelNet, mel_loss

if TYPE_CHECKING:
    from vocoder.train import Config

log = logging.getLogger(__name__)


class VocoderStep:
    """The models of a route (vocoder, duration predictor, discriminator), their optimizers and schedules, and
    one optimizer step over a batch; `speechgpt vocoder train` (vocoder/train.py) runs the loop around it."""

    def __init__(self, cfg: Config, n_units: int, speakers: list[str], device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.bfloat16 = cfg.dtype == "bfloat16"
        """Compute under bfloat16 autocast (`dtype: auto` settles it in `choose_precision`)."""
        self.model = build_model(cfg, n_units, speakers).to(device).train()
        self.duration = (
            DurationPredictor(cfg.embedding_dim, cfg.duration_hidden).to(device).train() if cfg.duration else None
        )
        schedule = lr_lambda(total=cfg.steps, warmup=cfg.warmup_steps, min_ratio=cfg.min_lr_ratio)
        params = [*self.model.parameters(), *(self.duration.parameters() if self.duration else [])]
        self.optim_g = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.optim_g, schedule)
        self.discriminator: nn.Module | None = None
        self.optim_d: torch.optim.Optimizer | None = None
        self.sched_d: torch.optim.lr_scheduler.LRScheduler | None = None
        if cfg.route == "mel":
            self.log_mel: nn.Module = LogMel(cfg.mel).to(device)
        else:
            self.log_mel = hifigan.HifiganLogMel().to(device)
            self.gen_loss, self.disc_loss = hifigan.losses(cfg.compile_losses)
            if cfg.discriminator_start is not None:
                self.discriminator = hifigan.build_discriminator().to(device).train()
                self.optim_d = torch.optim.AdamW(self.discriminator.parameters(), lr=cfg.lr, betas=cfg.betas)
                self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.optim_d, schedule)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16)

    def choose_precision(self, batch: Batch, trials: int = 4) -> None:
        """`dtype: auto`: bfloat16 on a GPU that has it; on a CPU, whichever of float32 and bfloat16 runs this
        route's forward and backward passes faster here (bf16 instructions help on some CPUs and are emulated, or
        slower, on others). Weights, optimizers and RNG are left as they were; ranks agree by majority."""
        if self.cfg.dtype != "auto":
            return
        if self.device.type == "cuda":
            self.bfloat16 = torch.cuda.is_bf16_supported()
            return
        seconds, rng = {}, torch.get_rng_state()
        for bfloat16 in (False, True):
            self.bfloat16, times = bfloat16, []
            for _ in range(trials):
                started = time.perf_counter()
                self._forward_backward(batch)
                times.append(time.perf_counter() - started)
            seconds[bfloat16] = statistics.median(times[1:])
        self.optim_g.zero_grad(set_to_none=False)
        torch.set_rng_state(rng)
        self.bfloat16 = all_reduce_mean([float(seconds[True] < seconds[False])])[0] >= 0.5
        log.info(
            "dtype auto: float32 %.1f ms, bfloat16 %.1f ms per forward+backward -> %s",
            seconds[False] * 1e3,
            seconds[True] * 1e3,
            "bfloat16" if self.bfloat16 else "float32",
        )

    def _forward_backward(self, batch: Batch) -> None:
        self._render(batch).float().square().mean().backward()

    def _render(self, batch: Batch) -> Tensor:
        """The route's model on the batch's frames, under autocast: log-mel (mel) or audio (hifigan)."""
        if self.cfg.route == "mel":
            with self.autocast():
                return self.model(batch.frames, batch.speaker)
        speaker = hifigan.speaker_input(self.model, batch.speaker)  # type: ignore[arg-type]
        with self.autocast():
            return self.model(batch.frames, speaker=speaker)

    def step(self, batch: Batch, step: int) -> dict[str, float]:
        """One optimizer step at 0-based `step`; returns the losses (this rank's) and the learning rate."""
        logs: dict[str, float] = {"lr": float(self.sched_g.get_last_lr()[0])}
        if self.cfg.route == "mel":
            loss = mel_loss(self._render(batch), self.log_mel, batch.audio)  # type: ignore[arg-type]
            logs["mel"] = float(loss.detach())
        else:
            loss = self._hifigan_loss(batch, step, logs)
        if self.duration is not None:
            embedding: nn.Module = self.model.unit_embedding  # type: ignore[assignment]
            embedded = embedding(batch.units).detach()
            dur = duration_loss(self.duration(embedded), batch.durations, batch.unit_mask)
            logs["duration"] = float(dur.detach())
            loss = loss + self.cfg.duration_weight * dur
        logs["loss"] = float(loss.detach())
        self.optim_g.zero_grad(set_to_none=False)
        loss.backward()
        params = [p for group in self.optim_g.param_groups for p in group["params"]]
        average_gradients(params)
        if self.cfg.clip_grad > 0:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_grad))
        self.optim_g.step()
        self.sched_g.step()
        return logs

    def _hifigan_loss(self, batch: Batch, step: int, logs: dict[str, float]) -> Tensor:
        """As unit_hifigan: forward passes and losses under autocast, backward passes outside it."""
        fake = self._render(batch)
        start = self.cfg.discriminator_start
        if self.discriminator is None or self.optim_d is None or start is None or step < start:
            loss = hifigan.mel_only_loss(self.log_mel, fake.float(), batch.audio)  # type: ignore[arg-type]
            logs["mel"] = float(loss.detach()) / hifigan.hifigan_loss.LAMBDA_MEL
            return loss
        real = batch.audio[:, None]
        with self.autocast():
            loss_d, _ = self.disc_loss(self.discriminator(real), self.discriminator(fake.detach()))
        self.optim_d.zero_grad(set_to_none=False)
        loss_d.backward()
        average_gradients(self.discriminator.parameters())
        self.optim_d.step()
        if self.sched_d is not None:  # the discriminator's schedule (warmup included) starts when it joins
            self.sched_d.step()
        with self.autocast():
            with torch.no_grad():
                real_out = self.discriminator(real)
            loss_g, parts = self.gen_loss(real_out, self.discriminator(fake))
        logs.update({"disc": float(loss_d.detach()), **{k: float(v.detach()) for k, v in parts.items()}})
        return loss_g

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "bfloat16": self.bfloat16,
        }
        if self.duration is not None:
            state["duration"] = self.duration.state_dict()
        if self.discriminator is not None and self.optim_d is not None and self.sched_d is not None:
            state |= {
                "discriminator": self.discriminator.state_dict(),
                "optim_d": self.optim_d.state_dict(),
                "sched_d": self.sched_d.state_dict(),
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optim_g.load_state_dict(state["optim_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.bfloat16 = bool(state.get("bfloat16", self.bfloat16))
        if self.duration is not None:
            self.duration.load_state_dict(state["duration"])
        if self.discriminator is not None and self.optim_d is not None and self.sched_d is not None:
            if "discriminator" not in state:
                raise RuntimeError("the checkpoint has no discriminator; resume with the settings that wrote it")
            self.discriminator.load_state_dict(state["discriminator"])
            self.optim_d.load_state_dict(state["optim_d"])
            self.sched_d.load_state_dict(state["sched_d"])


def build_model(cfg: Config, n_units: int, speakers: list[str]) -> nn.Module:
    if cfg.route == "hifigan":
        return hifigan.build_generator(n_units, speakers, cfg.embedding_dim)
    return MelNet(
        n_units,
        n_speakers=len(speakers),
        embedding_dim=cfg.embedding_dim,
        speaker_dim=cfg.speaker_dim,
        channels=cfg.channels,
        kernel_size=cfg.kernel_size,
        dilations=list(cfg.dilations),
        n_mels=cfg.mel.n_mels,
        lookahead_frames=cfg.lookahead_frames,
        dropout=cfg.dropout,
    )
