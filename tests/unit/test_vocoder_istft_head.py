"""The Vocos-style iSTFT head: shapes, the look-ahead it promises, and a loss that learns (benchmarks/vocoder_links)."""

from __future__ import annotations

import torch

from vocoder.istft_head import IstftHead, stft_loss, waveform_loss
from vocoder.mel_vocoder import LogMel, MelSettings


def test_shapes_and_reach() -> None:
    torch.manual_seed(0)
    head = IstftHead(channels=16, blocks=2, kernel_size=5, n_fft=1280, lookahead_frames=3).eval()
    assert (head.left_context, head.right_context) == (9, 3)
    mel = torch.randn(2, 80, 40)
    audio = head(mel)
    assert audio.shape == (2, 40 * 320) and torch.isfinite(audio).all()
    # a frame's spectrum reads 3 frames ahead and no more: changing frame 30 leaves frames < 27 unchanged
    changed = mel.clone()
    changed[:, :, 30] += 5.0
    before, after = head.spectrum(mel), head.spectrum(changed)
    assert torch.equal(before[..., :27], after[..., :27]) and not torch.equal(before[..., 27], after[..., 27])


def test_losses_are_zero_on_the_target_and_fall_when_fitting_one_clip() -> None:
    torch.manual_seed(0)
    log_mel = LogMel(MelSettings())
    t = torch.arange(32 * 320) / 16_000
    target = (0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t))[None]
    assert float(stft_loss(target, target)) == 0.0
    head = IstftHead(channels=32, blocks=1)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    mel = log_mel(target)[..., :-1]
    losses = []
    for _ in range(30):
        stft, mel_l1 = waveform_loss(head(mel), target, log_mel)
        optimizer.zero_grad()
        (stft + mel_l1).backward()
        optimizer.step()
        losses.append(float((stft + mel_l1).detach()))
    assert losses[-1] < 0.7 * losses[0], losses
