"""Each encoder backend on tiny random models: layer L is computed exactly as the full model computes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from speechgpt.units.encoders import EncoderConfig, Float32, build_encoder
from tests.unit.test_fairseq_hubert import fairseq_reference, fairseq_state, write_checkpoint

TINY_CONV = {
    "conv_dim": (16,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}
TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def waves() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(n, generator=gen) * 0.1 for n in (16_000, 7_000, 12_345)]


def assert_matches_full_model(encoder, full, waves, layer: int, atol: float = 1e-5) -> None:
    feats = encoder.encode(waves)  # one batch: clips of different lengths, padded
    with torch.inference_mode():
        for wave, got in zip(waves, feats, strict=True):
            want = full(wave[None], output_hidden_states=True).hidden_states[layer][0]
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)


def test_hubert_builds_only_layers_up_to_l_and_matches_full_model(tmp_path: Path, waves) -> None:
    torch.manual_seed(0)
    full = HubertModel(HubertConfig(**TINY, **TINY_CONV)).eval()
    full.save_pretrained(tmp_path)
    encoder = build_encoder(EncoderConfig(kind="hubert", path=str(tmp_path), layer=2))
    assert len(encoder.model.encoder.layers) == 2
    assert_matches_full_model(encoder, full, waves, layer=2)
    assert encoder.name == f"hubert:{tmp_path}@L2"


def test_wav2vec2_stable_layer_norm_layer_output(tmp_path: Path, waves) -> None:
    torch.manual_seed(1)
    config = Wav2Vec2Config(**TINY, **TINY_CONV, feat_extract_norm="layer", do_stable_layer_norm=True)
    full = Wav2Vec2Model(config).eval()
    full.save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(tmp_path)
    encoder = build_encoder(EncoderConfig(kind="wav2vec2", path=str(tmp_path), layer=1))
    assert len(encoder.model.encoder.layers) == 1 and not encoder.normalize
    assert_matches_full_model(encoder, full, waves, layer=1)


def test_whisper_encoder_layer_cut_to_clip_length(tmp_path: Path, waves) -> None:
    torch.manual_seed(2)
    config = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=1500,
    )
    full = WhisperModel(config).eval()
    full.save_pretrained(tmp_path)
    extractor = WhisperFeatureExtractor()
    extractor.save_pretrained(tmp_path)
    encoder = build_encoder(EncoderConfig(kind="whisper", path=str(tmp_path), layer=1))
    feats = encoder.encode(waves)
    with torch.inference_mode():
        for wave, got in zip(waves, feats, strict=True):
            mel = extractor(wave.numpy(), sampling_rate=16_000, return_tensors="pt").input_features
            want = full.encoder(mel, output_hidden_states=True).hidden_states[1][0, : len(wave) // 320]
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_fairseq_hubert_backend_matches_reference(tmp_path: Path, waves) -> None:
    state = fairseq_state()
    path = write_checkpoint(tmp_path / "tiny.pt", state, form="args")
    with pytest.raises(ValueError, match="trust_checkpoint"):
        build_encoder(EncoderConfig(kind="fairseq_hubert", path=str(path), layer=2))
    encoder = build_encoder(EncoderConfig(kind="fairseq_hubert", path=str(path), layer=2, trust_checkpoint=True))
    for wave, got in zip(waves, encoder.encode(waves), strict=True):
        torch.testing.assert_close(got, fairseq_reference(state, wave[None])[2][0], atol=1e-4, rtol=1e-4)


def test_bfloat16_stays_close_to_float32(tmp_path: Path, waves) -> None:
    torch.manual_seed(0)
    HubertModel(HubertConfig(**TINY, **TINY_CONV)).save_pretrained(tmp_path)
    fp32 = build_encoder(EncoderConfig(kind="hubert", path=str(tmp_path), layer=3)).encode(waves)
    bf16 = build_encoder(EncoderConfig(kind="hubert", path=str(tmp_path), layer=3, dtype="bfloat16")).encode(waves)
    for a, b in zip(fp32, bf16, strict=True):
        assert b.dtype == torch.float32
        cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        assert cosine.min() > 0.99


@pytest.mark.parametrize(("kind", "dim"), [("mfcc", 39), ("logmel", 80)])
def test_spectral_features_need_no_weights(kind: str, dim: int, waves) -> None:
    encoder = build_encoder(EncoderConfig(kind=kind))
    for wave, feats in zip(waves, encoder.encode(waves), strict=True):
        assert feats.shape == (len(wave) // 320 + 1, dim)
        torch.testing.assert_close(feats.mean(0), torch.zeros(dim), atol=1e-4, rtol=0)
    assert encoder.name == f"{kind}@50Hz"


def test_bad_encoder_settings_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs `path`"):
        EncoderConfig(kind="hubert")
    HubertModel(HubertConfig(**TINY, **TINY_CONV)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has 3 layers; layer 5 does not exist"):
        build_encoder(EncoderConfig(kind="hubert", path=str(tmp_path), layer=5))


def test_float32_islands_ignore_bfloat16_autocast() -> None:
    # HuBERT's grouped, even-kernel positional convolution gives noise in bfloat16 on CPUs with AMX
    conv = torch.nn.Conv1d(32, 32, 16, padding=8, groups=4)
    hidden = torch.randn(1, 32, 49)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        kept = Float32(conv)(hidden.to(torch.bfloat16))
    assert kept.dtype == torch.float32
    torch.testing.assert_close(kept, conv(hidden.to(torch.bfloat16).float()).detach())
