"""Vocoder training: a few steps of each route with finite losses, the files written, exact resume."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from speechgpt.data.corpus import load_corpus, write_dataset
from speechgpt.units.extract import units_features
from vocoder import train
from vocoder.data import SegmentSampler, heldout_text, load_clips, load_units_dataset
from vocoder.load import load_vocoder

N_UNITS = 20


def units_dataset_from_corpus(corpus: Path, out: Path, seed: int = 0) -> Path:
    """The corpus' real TTS clips with made-up merged units (k=20) whose durations cover each clip."""
    rng = np.random.default_rng(seed)
    rows = []
    for row in load_corpus(corpus):
        frames = math.ceil(row["duration_s"] * 50)
        durations: list[int] = []
        while sum(durations) < frames:
            durations.append(int(min(rng.integers(1, 6), frames - sum(durations))))
        units = [int(u) for u in rng.integers(0, N_UNITS, len(durations))]
        rows.append({**row, "units": units, "durations": durations, "encoder": f"fake+km{N_UNITS}:0"})
    return write_dataset(rows, out, units_features())


@pytest.fixture(scope="module")
def units_data(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return units_dataset_from_corpus(tiny_corpus, tmp_path_factory.mktemp("units") / "dataset")


def tiny_config(data: Path, out: Path, **overrides: object) -> train.Config:
    settings: dict = {
        "data": data,
        "out": out,
        "steps": 4,
        "batch_size": 2,
        "segment_frames": 16,
        "channels": 32,
        "dilations": [1, 2],
        "embedding_dim": 16,
        "speaker_dim": 8,
        "duration_hidden": 16,
        "warmup_steps": 1,
        "log_every": 1,
        "save_every": 2,
        "keep_checkpoints": 3,
        **overrides,
    }
    return train.Config(**settings)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_segments_align_units_with_audio(units_data: Path) -> None:
    clips, speakers = load_clips(load_units_dataset(units_data), ["train"])
    assert speakers == ["flite-slt"] and all(len(c.audio) == len(c.frames) * 320 for c in clips)
    batch = SegmentSampler(clips, 3, 16, seed=0).next_batch()
    assert batch.frames.shape == (3, 16) and batch.audio.shape == (3, 16 * 320)
    assert bool((batch.durations.sum(1) > 0).all()) and batch.unit_mask.shape == batch.units.shape
    # the crop's frames are the clip's frames at the offset where its audio was cut
    clip = clips[0]
    sampler = SegmentSampler([clip], 1, 16, seed=3)
    batch = sampler.next_batch()
    start = next(
        s
        for s in range(len(clip.frames) - 15)
        if np.array_equal(clip.audio[s * 320 : (s + 16) * 320], batch.audio[0].numpy())
    )
    assert batch.frames[0].tolist() == clip.frames[start : start + 16].tolist()
    # speaker dropout hands about that fraction of segments to the any-speaker voice
    many = SegmentSampler(clips, 400, 4, seed=0, any_speaker=9, speaker_dropout=0.25).next_batch().speaker
    assert 0.15 < float((many == 9).float().mean()) < 0.35


def test_unit_noise_replaces_whole_runs_at_about_its_fraction(units_data: Path) -> None:
    clips, _ = load_clips(load_units_dataset(units_data), ["train"])
    clean = SegmentSampler(clips, 64, 16, seed=5).next_batch().frames
    noisy = SegmentSampler(clips, 64, 16, seed=5, unit_noise=0.3, n_units=N_UNITS).next_batch().frames
    changed_runs = kept_runs = 0
    for before, after in zip(clean.tolist(), noisy.tolist(), strict=True):
        starts = [i for i in range(len(before)) if i == 0 or before[i] != before[i - 1]]
        for start, end in zip(starts, [*starts[1:], len(before)], strict=True):
            run = after[start:end]
            assert len(set(run)) == 1  # a run is replaced whole, by one unit
            changed_runs += run[0] != before[start]
            kept_runs += run[0] == before[start]
    assert 0.2 < changed_runs / (changed_runs + kept_runs) < 0.4
    with pytest.raises(ValueError, match="n_units"):
        SegmentSampler(clips, 1, 16, seed=0, unit_noise=0.1)


def test_mel_route_trains_saves_and_resumes_exactly(units_data: Path, tmp_path: Path) -> None:
    regularized = {"dropout": 0.1, "unit_noise": 0.2}  # their randomness must resume exactly too
    full = tiny_config(units_data, tmp_path / "full", splits=["train", "test"], **regularized)
    folder = train.run(full)
    steps = [r for r in records(full.out) if "mel" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(r["mel"]) and math.isfinite(r["duration"]) for r in steps)
    assert {p.name for p in folder.iterdir()} >= {
        "vocoder.json",
        "config.json",
        "model.safetensors",
        "duration.safetensors",
    }
    assert (full.out / "config.yaml").is_file() and (
        full.out / "checkpoints" / "latest"
    ).read_text().strip() == "step0000004"
    vocoder = load_vocoder(folder)
    assert not vocoder.renderer.net.training  # type: ignore[attr-defined]  # dropout is off in synthesis
    expected = (N_UNITS * 16 + 3 * 8) + (24 * 32 * 5 + 32) + 2 * (32 * 32 * 5 + 32 + 64) + (32 * 80 + 80)
    assert sum(p.numel() for p in vocoder.renderer.net.parameters()) == expected  # type: ignore[attr-defined]
    voices = sorted(set(load_units_dataset(units_data)["speaker"]))
    assert len(voices) == 2 and vocoder.speakers == [*voices, "any"] and vocoder.default_speaker == "any"

    # a run killed after its step-2 checkpoint, restarted: the same weights as the uninterrupted run
    resumed = tiny_config(units_data, tmp_path / "resumed", splits=["train", "test"], **regularized)
    (resumed.out / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.out / "checkpoints" / "step0000002", resumed.out / "checkpoints" / "step0000002")
    (resumed.out / "checkpoints" / "latest").write_text("step0000002\n")
    train.run(resumed)
    assert [r["step"] for r in records(resumed.out) if "mel" in r] == [3, 4]
    assert [r["mel"] for r in records(resumed.out) if "mel" in r] == [r["mel"] for r in steps[2:]]
    for name in ("model.safetensors", "duration.safetensors"):
        mine, theirs = load_file(str(folder / name)), load_file(str(resumed.out / "vocoder" / name))
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_dtype_auto_picks_a_precision_and_changes_nothing_else(
    units_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="vocoder.step"):
        train.run(tiny_config(units_data, tmp_path / "auto", dtype="auto", steps=2))
    assert "dtype auto: float32" in caplog.text
    state = torch.load(tmp_path / "auto" / "checkpoints" / "step0000002" / "state.pt", weights_only=False)
    fixed = tiny_config(units_data, tmp_path / "fixed", dtype="bfloat16" if state["bfloat16"] else "float32", steps=2)
    train.run(fixed)
    # the timing passes touched no weight, batch or random state: the same losses as the chosen precision alone
    assert [r["mel"] for r in records(tmp_path / "auto") if "mel" in r] == [
        r["mel"] for r in records(fixed.out) if "mel" in r
    ]


def test_hifigan_route_mel_warmup_then_discriminator(units_data: Path, tmp_path: Path) -> None:
    from unit_hifigan.model import UnitVocoder

    cfg = tiny_config(
        units_data,
        tmp_path / "hifigan",
        route="hifigan",
        steps=2,
        batch_size=1,
        segment_frames=8,
        discriminator_start=1,
        save_every=10,
        lr=2e-4,
    )
    folder = train.run(cfg)
    first, second = (r for r in records(cfg.out) if "mel" in r)
    assert "disc" not in first and {"disc", "fm_mpd", "mpd"} <= set(second)
    assert all(math.isfinite(v) for r in (first, second) for v in r.values())
    state = torch.load(cfg.out / "checkpoints" / "step0000002" / "state.pt", weights_only=False)
    assert {"discriminator", "optim_d", "sched_d", "optim_g", "duration"} <= set(state)
    generator = UnitVocoder.from_pretrained(folder)
    assert generator.n_units == N_UNITS and generator.speakers == ["flite-slt", "any"]
    assert load_vocoder(folder).route == "hifigan"


def test_heldout_text_is_stable_and_near_its_fraction() -> None:
    assert heldout_text("The cat sat on the warm mat.", 0.15)  # the tiny corpus's first sentence (tests rely on it)
    assert heldout_text("the CAT sat on the  warm mat", 0.15)  # case, spacing and punctuation do not matter
    assert not heldout_text("The cat sat on the warm mat.", 0.0)
    sentences = [f"sentence number {i} of the list" for i in range(4000)]
    held = [s for s in sentences if heldout_text(s, 0.15)]
    assert 0.13 < len(held) / len(sentences) < 0.17
    assert all(heldout_text(s, 0.3) for s in held)  # a larger fraction holds out a superset


def test_answer_voice_trains_one_voice_without_its_heldout_sentences(units_data: Path, tmp_path: Path) -> None:
    dataset = load_units_dataset(units_data)
    clips, _ = load_clips(dataset, ["train", "test"], voice="flite:slt", heldout_fraction=0.15)
    texts = {row["id"]: row["text"] for row in dataset}
    assert {c.speaker for c in clips} == {0} and len(clips) == 3  # slt's 4 sentences less the held-out one
    assert all(texts[c.id] != "The cat sat on the warm mat." and c.id.startswith("flite-slt") for c in clips)
    with pytest.raises(ValueError, match="no clips here"):
        load_clips(dataset, ["train"], voice="flite:awb")

    cfg = tiny_config(
        units_data,
        tmp_path / "voice",
        splits=["train", "test"],
        steps=2,
        answer_voice="flite:slt",
        heldout_text_fraction=0.15,
    )
    folder = train.run(cfg)
    vocoder = load_vocoder(folder)
    meta = json.loads((folder / "vocoder.json").read_text())
    assert meta["answer_voice"] == "flite-slt" and meta["heldout_text_fraction"] == 0.15
    # one voice: no speaker embedding, so every speaker's units render alike
    assert vocoder.speakers == [] and vocoder.renderer.net.speaker_embedding is None  # type: ignore[attr-defined]
    units = [1, 2, 3, 4]
    assert np.array_equal(vocoder(units, [2, 2, 2, 2]), vocoder(units, [2, 2, 2, 2], speaker="anyone"))
