"""Where is intelligibility lost between units and sound? Each link of the vocoder judged on its own.

    .venv/bin/python -m benchmarks.vocoder_links                     # demo outputs; ~15 min on one thread
    .venv/bin/python -m benchmarks.vocoder_links --clips 10 --head-steps 20     # smoke run

On the answer voice's held-out sentences (and held-out voices' clips), each beside the original audio:
- real log-mel -> Griffin-Lim: what the inversion loses;
- real log-mel -> a Vocos-style iSTFT head (vocoder/istft_head.py) trained here for `--head-steps` on the answer
  voice's real log-mel, without a discriminator (multi-resolution STFT + mel losses): a neural waveform model;
- predicted log-mel (the trained vocoder's MelNet, given durations) -> Griffin-Lim: the demo's route;
- predicted log-mel -> a second head trained on the MelNet's predictions (ground-truth-aligned, as Tacotron 2's
  WaveNet was): whether a neural waveform model recovers what the predicted mel lost.
Prints judge WER, CER and DNSMOS OVRL per link and set; results also go to `--out`/links.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from speechgpt.app.resynth import select_rows, vocoder_meta
from speechgpt.data.audio import read_audio
from speechgpt.data.units import load_units_dataset
from speechgpt.eval.judge import Judge, character_error_rate, load_judge, word_error_rate
from speechgpt.eval.mos import load_dnsmos
from vocoder.data import SegmentSampler, load_clips
from vocoder.istft_head import IstftHead, waveform_loss
from vocoder.load import load_vocoder
from vocoder.mel_vocoder import LogMel, MelInverter, MelNet, MelSettings

log = logging.getLogger(__name__)
Render = Callable[[dict[str, Any]], np.ndarray]


def train_head(
    clips: list[Any], mel_of: Callable[[Any], torch.Tensor], steps: int, seed: int = 0
) -> tuple[IstftHead, float]:
    """An IstftHead trained on (log-mel from `mel_of(batch)`, real audio) crops: 16 x 32 frames, AdamW 1e-3."""
    torch.manual_seed(seed)
    sampler, log_mel = SegmentSampler(clips, 16, 48, seed=seed), LogMel(MelSettings())
    head = IstftHead(channels=192, blocks=4, lookahead_frames=6)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, betas=(0.8, 0.99))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps, pct_start=0.05)
    started = time.perf_counter()
    for step in range(steps):
        batch = sampler.next_batch()
        with torch.no_grad():
            mel = mel_of(batch)[..., 8:40]  # the middle: the MelNet's frames there saw context on both sides
        stft, mel_l1 = waveform_loss(head(mel), batch.audio[:, 8 * 320 : 40 * 320], log_mel)
        optimizer.zero_grad()
        (stft + mel_l1).backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            log.info("head step %d: stft %.3f mel %.3f", step, float(stft.detach()), float(mel_l1.detach()))
    return head.eval(), time.perf_counter() - started


def judge_link(judge: Judge, rows: list[dict[str, Any]], render: Render) -> dict[str, float]:
    with torch.inference_mode():
        waves = [np.clip(render(row), -1.0, 1.0).astype(np.float32) for row in rows]
    references, heard = [row["text"] for row in rows], judge.transcribe(waves)
    dnsmos = load_dnsmos()
    return {
        "wer": word_error_rate(references, heard),
        "cer": character_error_rate(references, heard),
        "mos_ovrl": float(np.mean([dnsmos.score(w, hop_s=10).ovrl for w in waves])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocoder", type=Path, default=Path("out/demo/vocoder/vocoder"))
    parser.add_argument("--voice-data", type=Path, default=Path("out/demo/voice_units"))
    parser.add_argument("--data", type=Path, default=Path("out/demo/units"), help="held-out voices' units")
    parser.add_argument("--clips", type=int, default=40, help="clips per set")
    parser.add_argument("--head-steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("out/demo/vocoder_links"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    fraction = float(vocoder_meta(args.vocoder).get("heldout_text_fraction") or 0.15)
    vocoder = load_vocoder(args.vocoder)
    net: MelNet = vocoder.renderer.net  # type: ignore[attr-defined]
    log_mel, inverter = LogMel(MelSettings()), MelInverter(MelSettings())
    voice = load_units_dataset(args.voice_data)
    clips, _ = load_clips(voice, ["train"], heldout_fraction=fraction)
    real_head, real_s = train_head(clips, lambda b: log_mel(b.audio)[..., :-1], args.head_steps)
    gta_head, gta_s = train_head(clips, lambda b: net(b.frames).float(), args.head_steps)

    def real_mel(row: dict[str, Any]) -> torch.Tensor:
        return log_mel(torch.from_numpy(read_audio(row["audio"]).samples))[:, :-1]

    def predicted_mel(row: dict[str, Any]) -> torch.Tensor:
        return net(vocoder.frame_units(row["units"], row["durations"])[None])[0].float()

    links: dict[str, Render] = {
        "original": lambda row: read_audio(row["audio"]).samples,
        "real_mel+griffin_lim": lambda row: inverter(real_mel(row)).numpy(),
        "real_mel+istft_head": lambda row: real_head(real_mel(row)[None])[0].numpy(),
        "predicted_mel+griffin_lim": lambda row: inverter(predicted_mel(row)).numpy(),
        "predicted_mel+istft_head(gta)": lambda row: gta_head(predicted_mel(row)[None])[0].numpy(),
    }
    sets = {
        "answer_voice": select_rows(voice, ["train"], args.clips, heldout_fraction=fraction),
        "heldout_voices": select_rows(
            load_units_dataset(args.data), ["dev", "test"], args.clips, heldout_fraction=fraction
        ),
    }
    judge = load_judge()
    results: dict[str, Any] = {"head_train_s": {"real": round(real_s, 1), "gta": round(gta_s, 1)}}
    for name, rows in sets.items():
        for link, render in links.items():
            results[f"{name}/{link}"] = row = judge_link(judge, rows, render)
            print(
                f"{name:<15} {link:<30} WER {100 * row['wer']:5.1f}%  CER {100 * row['cer']:5.1f}%  "
                f"DNSMOS {row['mos_ovrl']:.2f}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "links.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
