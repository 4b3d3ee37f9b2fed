"""EnCodec wrapper: bandwidth -> codebooks, round-trip shapes at 16 and 24 kHz, determinism, local weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vocoder.codec import CodecConfig, EncodecCodec, build_codec, load_encodec_state


@pytest.fixture(scope="module")
def codec() -> EncodecCodec:
    return build_codec(CodecConfig(bandwidth=1.5, seed=0))


def speech_like(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 180 * t * (1 + 0.2 * t))).astype(np.float32)


@pytest.mark.parametrize(("bandwidth", "n_q"), [(0.75, 1), (1.5, 2), (3.0, 4), (24.0, 32)])
def test_bandwidth_sets_codebooks(bandwidth: float, n_q: int) -> None:
    assert CodecConfig(bandwidth=bandwidth).n_q == n_q


def test_bad_bandwidth_is_rejected() -> None:
    for bandwidth in (1.0, 0.0, 48.0):
        with pytest.raises(ValueError, match=r"multiple of 0\.75"):
            CodecConfig(bandwidth=bandwidth)


def test_round_trip_shapes_16k_and_24k(codec: EncodecCodec) -> None:
    wave = speech_like(2.0)
    codes = codec.encode(wave)
    assert codes.dtype == torch.long and codes.shape == (2, 150)  # 2 s at 75 frames/s
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024
    assert codes[0].unique().numel() > 5  # the random codebooks are not all one entry
    audio = codec.decode(codes)
    assert audio.dtype == np.float32 and audio.shape == (32_000,)
    assert codec.decode(codes, sample_rate=24_000).shape == (48_000,)
    assert codec.encode(speech_like(2.0, 24_000), sample_rate=24_000).shape == (2, 150)
    assert codec.encode(wave[:1000]).shape == (2, 5)  # ceil(1000 / 16000 * 75)
    assert codec.encode(np.zeros(0, np.float32)).shape == (2, 0)
    assert codec.decode(torch.zeros(2, 0, dtype=torch.long)).shape == (0,)


def test_deterministic_and_seeded(codec: EncodecCodec) -> None:
    wave = speech_like(1.0)
    torch.manual_seed(123)  # the global RNG must not matter
    first = codec.encode(wave)
    again = build_codec(CodecConfig(bandwidth=1.5, seed=0))
    assert torch.equal(first, again.encode(wave))
    np.testing.assert_array_equal(codec.decode(first), again.decode(first))
    other = build_codec(CodecConfig(bandwidth=1.5, seed=1))
    assert not torch.equal(first, other.encode(wave))


def test_single_codebook_is_the_first_residual_stage(codec: EncodecCodec) -> None:
    single = build_codec(CodecConfig(bandwidth=0.75, seed=0))
    wave = speech_like(1.0)
    codes = single.encode(wave)
    assert codes.shape == (1, 75)
    assert torch.equal(codes[0], codec.encode(wave)[0])
    assert single.decode(codes).shape == (16_000,)
    with pytest.raises(ValueError, match="shape"):
        single.decode(codes[0])


def test_local_weights_load(tmp_path: Path, codec: EncodecCodec) -> None:
    path = tmp_path / "my_encodec.th"
    torch.save(codec.model.state_dict(), path)
    loaded = build_codec(CodecConfig(weights=str(path), bandwidth=1.5))
    wave = speech_like(1.0)
    assert torch.equal(loaded.encode(wave), codec.encode(wave))
    bad = tmp_path / "encodec_24khz-d7cc33bc.th"  # released name: the checksum is checked
    bad.write_bytes(path.read_bytes())
    with pytest.raises(RuntimeError, match="checksum"):
        load_encodec_state(bad)
    with pytest.raises(FileNotFoundError):
        load_encodec_state(tmp_path / "missing.th")
