"""A tiny chat set-up made at test time: a random speech LM (unit tokens + template markers), an MFCC k-means with
random centroids and a random mel vocoder, saved where `speechgpt chat` / `serve` load them, plus a test WAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.lm_fixtures import UNITS, K, make_tiny_lm


def make_chat_model(out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from speechgpt.model.vocab import add_speech_tokens

    base = make_tiny_lm(out.with_name(out.name + "-base"))
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    add_speech_tokens(model, tokenizer, UNITS)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_kmeans(out: Path) -> Path:
    from speechgpt.config import config_to_dict
    from speechgpt.units.encoders import EncoderConfig, build_encoder
    from speechgpt.units.kmeans import KMeansModel

    encoder = EncoderConfig(kind="mfcc")
    dim = build_encoder(encoder).dim
    centroids = np.random.default_rng(0).standard_normal((K, dim)).astype(np.float32)
    KMeansModel(centroids, {"encoder_config": config_to_dict(encoder), "source": "test"}).save(out)
    return out


def make_vocoder(out: Path) -> Path:
    import torch

    from vocoder.load import save_vocoder
    from vocoder.mel_vocoder import MelNet, MelSettings

    torch.manual_seed(0)
    net = MelNet(K, embedding_dim=16, channels=32, dilations=(1, 1), n_mels=40)
    settings = MelSettings(n_fft=512, n_mels=40, griffin_lim_iters=4)
    return save_vocoder(out, net, route="mel", speakers=[], default_speaker=None, duration=None, mel=settings)


def make_chat_setup(root: Path) -> dict[str, Path]:
    """model/, kmeans/, vocoder/ and question.wav (1.2 s of a chirp) under `root`."""
    from speechgpt.data.audio import write_audio

    t = np.arange(int(1.2 * 16_000)) / 16_000
    wav = root / "question.wav"
    write_audio(wav, (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32))
    return {
        "model": make_chat_model(root / "model"),
        "kmeans": make_kmeans(root / "kmeans"),
        "vocoder": make_vocoder(root / "vocoder"),
        "wav": wav,
    }
