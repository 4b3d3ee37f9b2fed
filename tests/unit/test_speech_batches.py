"""The frozen-LLM stages' batch source and feature cache: micro-batches a pure function of the global index,
length-bucketed within limits, every clip once per epoch; padding and lengths; evaluation one group per batch
weighted by its targets; features computed once, read back from the cache, bad clips rejected with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechgpt.data.audio import write_audio
from speechgpt.training.feature_cache import Clip, FeatureSettings, cached_features, speech_end
from speechgpt.training.speech_batches import IGNORE, SpeechBatches, SpeechExample, collate_speech


def examples(count: int, seed: int = 0, group: str = "asr") -> list[SpeechExample]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, 300, (count,), generator=gen).tolist()
    targets = [{"labels": [1] * (n // 50) + [IGNORE]} for n in lengths]
    return [
        SpeechExample(f"{group}{i:03d}", group, torch.randn(n, 4, generator=gen), targets[i])
        for i, n in enumerate(lengths)
    ]


def test_micro_batches_are_a_pure_function_of_the_index() -> None:
    data = examples(50)
    a = SpeechBatches(data, micro_batch=4, seed=3, max_batch_frames=800)
    b = SpeechBatches(data, micro_batch=4, seed=3, max_batch_frames=800)
    for index in reversed(range(40)):  # any order of asking gives the same batches
        x, y = a.micro_batch(index), b.micro_batch(index)
        assert x.ids == y.ids and x.epoch == y.epoch and torch.equal(x.tensors["features"], y.tensors["features"])
    assert SpeechBatches(data, micro_batch=4, seed=4).epoch(0) != a.epoch(0)
    for epoch in range(3):
        ids = [i for batch in a.epoch(epoch) for i in batch]
        assert sorted(ids) == list(range(50))  # every clip once per epoch
        for batch in a.epoch(epoch):
            frames = [data[i].frames for i in batch]
            assert len(batch) <= 4 and (len(batch) == 1 or max(frames) * len(batch) <= 800)
    assert a.epoch(0) != a.epoch(1)
    batch = a.micro_batch(0)
    assert batch.count == sum(data[int(i[3:])].frames for i in batch.ids)


def test_buckets_group_clips_of_similar_length() -> None:
    data = examples(64)
    bucketed = SpeechBatches(data, micro_batch=4, seed=0, bucket=16).epoch(0)
    unbucketed = SpeechBatches(data, micro_batch=4, seed=0, bucket=1).epoch(0)

    def padding(batches: list[list[int]]) -> int:
        return sum(max(data[i].frames for i in b) * len(b) - sum(data[i].frames for i in b) for b in batches)

    assert padding(bucketed) < 0.3 * padding(unbucketed)


def test_collate_pads_features_ids_and_labels() -> None:
    a = SpeechExample("a", "q", torch.ones(5, 2), {"prefix_ids": [7], "text_ids": [4, 5, 6], "labels": [-100, 5, 6]})
    b = SpeechExample("b", "q", torch.ones(3, 2), {"prefix_ids": [7, 8], "text_ids": [], "labels": []})
    batch = collate_speech([a, b])
    assert batch["features"].shape == (2, 5, 2) and batch["features"][1, 3:].abs().sum() == 0
    assert batch["feature_lengths"].tolist() == [5, 3]
    assert batch["text_ids"].tolist() == [[4, 5, 6], [0, 0, 0]] and batch["text_lengths"].tolist() == [3, 0]
    assert batch["prefix_ids"].tolist() == [[7, 0], [7, 8]] and batch["prefix_lengths"].tolist() == [1, 2]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, -100, -100]]


def test_eval_batches_hold_one_group_weighted_by_targets() -> None:
    dev = examples(7, seed=1, group="question") + examples(5, seed=2, group="noise")
    source = SpeechBatches(examples(8), micro_batch=3, seed=0, weight_key="labels", eval_sets={"dev": dev})
    seen = []
    for rank in range(2):
        for batch in source.eval_batches(rank, 2)["dev"]:
            groups = {i for i, e in enumerate(dev) if e.group == batch.group}
            assert len(batch.tensors["features"]) <= 3 and groups
            assert batch.weight == float((batch.tensors["labels"] != IGNORE).sum())
            seen.append(int(batch.tensors["feature_lengths"].sum()))
    assert sum(seen) == sum(e.frames for e in dev)  # the ranks' shares cover the split once
    framed = SpeechBatches(examples(8), micro_batch=3, seed=0, eval_sets={"dev": dev})
    assert next(b.weight for b in framed.eval_batches(0, 1)["dev"]) > 20  # no weight_key: frames


def tone(seconds: float, silence: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return np.concatenate([0.3 * np.sin(2 * np.pi * 220 * t), np.zeros(int(silence * 16000))]).astype(np.float32)


def test_features_are_cached_and_bad_clips_rejected(tmp_path: Path) -> None:
    clips = []
    for i, seconds in enumerate([0.5, 0.8, 1.1]):
        write_audio(tmp_path / f"c{i}.wav", tone(seconds, 0.4))
        clips.append(Clip(f"c{i}", str(tmp_path / f"c{i}.wav")))
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    write_audio(tmp_path / "short.wav", tone(0.01, 0.0))  # under one 25 ms window
    clips += [Clip("bad", str(tmp_path / "bad.wav")), Clip("short", str(tmp_path / "short.wav"))]
    settings = FeatureSettings(num_mel_bins=23)
    first = cached_features(clips, settings, tmp_path / "cache", shard_size=2)
    assert first.computed == 5 and sorted(first.features) == ["c0", "c1", "c2"]
    assert first.reasons() == {"unreadable audio": 1, "too short": 1}
    assert first.features["c0"].shape == (1 + (int(0.9 * 16000) - 400) // 160, 23)
    assert first.speech_end_s["c1"] == pytest.approx(0.8, abs=0.011)
    again = cached_features(list(reversed(clips)), settings, tmp_path / "cache", shard_size=2)
    assert again.computed == 0 and all(torch.equal(again.features[k], v) for k, v in first.features.items())
    assert again.rejected == first.rejected and again.speech_end_s == first.speech_end_s
    padded = cached_features(clips[:1], settings, tmp_path / "cache", pad_s=0.5)
    assert padded.computed == 1 and padded.features["c0"].shape[0] == first.features["c0"].shape[0] + 50
    assert len(list((tmp_path / "cache").iterdir())) == 2  # other clips or padding: another cache folder
    with pytest.raises(ValueError, match="unique"):
        cached_features(clips + clips[:1], settings, tmp_path / "cache")


def test_speech_end_ignores_trailing_silence_and_low_noise() -> None:
    wave = tone(1.0, 0.5)
    wave[16000:] += 1e-4 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
    assert speech_end(wave) == pytest.approx(1.0, abs=0.011)
    assert speech_end(np.zeros(8000, dtype=np.float32)) == 0.0


def test_trim_leading_silence_cuts_a_part_of_each_clips_silence_drawn_from_its_id(tmp_path: Path) -> None:
    """trim_leading_silence: each clip loses a part of its silence before speech, the part drawn from its id (the
    same on every run), never any of its speech; speech_start finds where speech begins."""
    from speechgpt.training.feature_cache import random_lead_cut, speech_start

    lead = np.zeros(8000, dtype=np.float32)  # 0.5 s of silence, 0.5 s of tone, 0.5 s of silence
    wave = np.concatenate([lead, tone(0.5, 0.5)])
    assert speech_start(wave) == pytest.approx(0.5, abs=0.011) and speech_start(lead) == 0.0
    cuts = [random_lead_cut(wave, f"clip-{i}") for i in range(50)]
    assert cuts == [random_lead_cut(wave, f"clip-{i}") for i in range(50)]
    assert all(0 <= c <= 8000 for c in cuts) and len(set(cuts)) > 40 and min(cuts) < 2000 and max(cuts) > 6000
    write_audio(tmp_path / "a.wav", wave)
    clips = [Clip("clip-7", str(tmp_path / "a.wav"))]
    settings = FeatureSettings(num_mel_bins=23)
    whole = cached_features(clips, settings, tmp_path / "cache")
    trimmed = cached_features(clips, FeatureSettings(num_mel_bins=23, trim_leading_silence=True), tmp_path / "cache")
    cut = random_lead_cut(wave, "clip-7")
    assert trimmed.features["clip-7"].shape[0] == 1 + (24000 - cut - 400) // 160
    assert trimmed.speech_end_s["clip-7"] == pytest.approx(whole.speech_end_s["clip-7"] - cut / 16000, abs=0.011)


def test_speed_perturbation_plays_each_clip_at_a_speed_drawn_from_its_id(tmp_path: Path) -> None:
    """speed_perturb: each clip is resampled by a factor drawn from its id within the spread (the same on every
    run): a faster clip is shorter and its tone higher; the features are those of the perturbed clip."""
    from speechgpt.training.feature_cache import perturbed_speed

    wave = tone(1.0, 0.0)  # 1 s of 220 Hz
    lengths = {f"clip-{i}": len(perturbed_speed(wave, f"clip-{i}", 0.1)) for i in range(40)}
    assert lengths == {f"clip-{i}": len(perturbed_speed(wave, f"clip-{i}", 0.1)) for i in range(40)}
    factors = [16000 / n for n in lengths.values()]
    assert all(0.899 < f < 1.101 for f in factors) and min(factors) < 0.95 and max(factors) > 1.05
    fast_id = min(lengths, key=lengths.__getitem__)
    fast = perturbed_speed(wave, fast_id, 0.1)
    peak_hz = np.argmax(np.abs(np.fft.rfft(fast))) * 16000 / len(fast)
    assert peak_hz == pytest.approx(220 * 16000 / len(fast), rel=0.02) and peak_hz > 225
    np.testing.assert_array_equal(perturbed_speed(wave, "clip-0", 0.0), wave)
    write_audio(tmp_path / "a.wav", wave)
    clips = [Clip(fast_id, str(tmp_path / "a.wav"))]
    perturbed = cached_features(clips, FeatureSettings(num_mel_bins=23, speed_perturb=0.1), tmp_path / "cache")
    assert perturbed.features[fast_id].shape[0] == 1 + (len(fast) - 400) // 160
    with pytest.raises(ValueError, match="speed_perturb"):
        FeatureSettings(speed_perturb=1.0)


def test_a_cache_moved_with_its_audio_is_still_found(tmp_path: Path) -> None:
    first = tmp_path / "first"
    write_audio(first / "audio" / "c0.wav", tone(0.5, 0.4))
    settings = FeatureSettings(num_mel_bins=23)
    assert cached_features([Clip("c0", str(first / "audio" / "c0.wav"))], settings, first / "cache").computed == 1
    moved = tmp_path / "moved"
    first.rename(moved)
    again = cached_features([Clip("c0", str(moved / "audio" / "c0.wav"))], settings, moved / "cache")
    assert again.computed == 0 and sorted(again.features) == ["c0"]
    elsewhere = cached_features([Clip("c0", str(moved / "audio" / "c0.wav"))], settings, tmp_path / "other" / "cache")
    assert elsewhere.computed == 1
