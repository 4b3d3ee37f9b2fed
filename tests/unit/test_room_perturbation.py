"""Clips heard through noise and in a room: the SNR is the one asked for, the room keeps the clip's length and peak
and smears it in time, each clip's draw comes from its id, and the feature cache keys on the settings only when
they are on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from speechgpt.data.audio import write_audio
from speechgpt.training.feature_cache import Clip, FeatureSettings, cache_folder, cached_features
from speechgpt.training.room_perturbation import RoomSettings, room_perturbed, speech_power, with_noise, with_reverb

RATE = 16_000


def voiced(seconds: float = 1.0, lead_s: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = (0.2 * np.sin(2 * np.pi * 220 * t) * (t % 0.25 < 0.12)).astype(np.float32)  # bursts, like syllables
    return np.concatenate([np.zeros(int(lead_s * RATE), np.float32), tone])


def test_noise_sits_the_asked_snr_under_the_speech() -> None:
    clean = voiced()
    noisy = with_noise(clean, snr_db=20.0, seed=1)
    noise = noisy - clean
    assert 10 * np.log10(speech_power(clean) / np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(20.0, abs=0.3)
    assert np.array_equal(with_noise(clean, 20.0, seed=1), noisy) and not np.array_equal(
        with_noise(clean, 20.0, 2), noisy
    )


def test_a_room_keeps_length_and_peak_and_carries_sound_into_the_gaps() -> None:
    clean = voiced()
    wet = with_reverb(clean, rt60_s=0.5, seed=3)
    assert wet.size == clean.size and np.abs(wet).max() == pytest.approx(np.abs(clean).max(), rel=1e-5)
    gap = slice(int(0.3 * RATE) + int(0.13 * RATE), int(0.3 * RATE) + int(0.24 * RATE))  # between two bursts
    assert np.abs(clean[gap]).max() == 0 and np.sqrt(np.mean(wet[gap] ** 2)) > 1e-3


def test_each_clip_draws_its_own_perturbation_from_its_id() -> None:
    clean, room = voiced(), RoomSettings(noise_fraction=0.5, reverb_fraction=0.5)
    outs = {f"c{i}": room_perturbed(clean, f"c{i}", room) for i in range(40)}
    assert all(np.array_equal(outs[k], room_perturbed(clean, k, room)) for k in outs)  # the same on every run
    untouched = sum(np.array_equal(v, clean) for v in outs.values())
    assert 3 <= untouched <= 20  # about a quarter: neither draw under its fraction
    assert all(np.array_equal(room_perturbed(clean, k, RoomSettings()), clean) for k in outs)
    for bad in ({"noise_fraction": 1.5}, {"snr_db": [30.0, 10.0]}, {"rt60_s": [0.0, 0.5]}):
        with pytest.raises(ValueError):
            RoomSettings(**bad)  # type: ignore[arg-type]


def test_the_cache_keys_on_the_room_only_when_it_is_on(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav", voiced())
    clips = [Clip("a", str(tmp_path / "a.wav"))]
    plain = FeatureSettings(num_mel_bins=23)
    off = FeatureSettings(num_mel_bins=23, room=RoomSettings(snr_db=[5.0, 15.0]))  # fractions 0: no change
    on = FeatureSettings(num_mel_bins=23, room=RoomSettings(noise_fraction=1.0))
    assert cache_folder(tmp_path, plain, clips, 0.0) == cache_folder(tmp_path, off, clips, 0.0)
    assert cache_folder(tmp_path, on, clips, 0.0) != cache_folder(tmp_path, plain, clips, 0.0)
    clean = cached_features(clips, plain, tmp_path / "cache")
    noisy = cached_features(clips, on, tmp_path / "cache")
    assert not np.allclose(clean.features["a"].numpy(), noisy.features["a"].numpy())
    assert noisy.speech_end_s["a"] == clean.speech_end_s["a"]  # found before the noise


def test_a_later_stage_reads_the_room_from_the_export_it_starts_from(tmp_path: Path) -> None:
    """frozen-asr and frozen-qa inherit frozen-ctc's feature settings, nested room included, from its export's
    meta (whose extra keys, frame rate and width, are not settings)."""
    from dataclasses import asdict

    from speechgpt.model.frozen_checkpoint import META
    from speechgpt.training.frozen_stage import init_feature_settings

    trained = FeatureSettings(num_mel_bins=23, room=RoomSettings(noise_fraction=0.5, reverb_fraction=0.3))
    (tmp_path / META).write_text(json.dumps({"features": {**asdict(trained), "frame_rate": 100, "dim": 23}}))
    assert init_feature_settings(tmp_path) == trained
