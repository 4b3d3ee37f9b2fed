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


FROZEN_FEATURES = {"kind": "fbank", "num_mel_bins": 40}


def chirp(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32)


def make_frozen_model(
    root: Path,
    *,
    stage: str = "frozen_qa",
    state_bias: tuple[float, ...] | None = None,
    template: str = "{speech}{target}",
    features: dict | None = None,
    words: bool = False,
) -> Path:
    """A frozen-variant model folder as the frozen stages export it: speech modules around a tiny random LLM saved
    beside it (`<root>/backbone`, named in the meta), `features` (default FROZEN_FEATURES: fbank; 50 Hz kinds get
    2x subsampling) with a CMVN fitted on a chirp. `state_bias`
    (3 logits) replaces the state head's bias, e.g. (60, 0, 0) to keep listening whatever it hears; `template`: the
    text around the speech, as the stages write it; `words`: the adapter reads one vector per word, which a random
    6-character CTC head (index 1 the space) marks (a test fits it to its clip so that its best path varies)."""
    import torch

    from speechgpt.model.frozen_checkpoint import save_speech_modules
    from speechgpt.model.frozen_lm import build_frozen_speech_lm
    from speechgpt.model.load import load_lm
    from speechgpt.model.speech_encoder import build_speech_encoder
    from speechgpt.model.speech_features import build_feature_extractor, fit_cmvn
    from speechgpt.model.state_labels import STATE_NAMES

    backbone = make_tiny_lm(root / "backbone", tie=False)
    lm, _ = load_lm(backbone)
    with torch.no_grad():  # a random 0.02-scale head makes every logit near 0: greedy text would be one token repeated
        lm.get_output_embeddings().weight.mul_(20)
    lm.save_pretrained(backbone)
    features = dict(features or FROZEN_FEATURES)
    extract = build_feature_extractor(**features)
    torch.manual_seed(0)
    encoder = build_speech_encoder(
        input_dim=extract.dim, frame_rate=extract.frame_rate, subsampling=4 if extract.frame_rate == 100 else 2,
        dim=32, num_layers=2, num_heads=4, left_chunks=2, dropout=0.0, ctc_vocab_size=6 if words else 0,
    )  # fmt: skip
    encoder.set_cmvn(*fit_cmvn(extract([torch.from_numpy(chirp(2.0))])))
    shape = {"adapter_kernel": 1, "adapter_stride": 1, "word_space": 1, "word_pause": 2} if words else {}
    model = build_frozen_speech_lm(lm, encoder, num_prompts=3, seed=1, **shape)
    if state_bias is not None:
        with torch.no_grad():
            model.state_head.bias.copy_(torch.tensor(state_bias))
    return save_speech_modules(
        model,
        root / "final",
        stage=stage,
        backbone=str(backbone.resolve()),
        features=features,
        template={"text": template, "eos": True},
        states=list(STATE_NAMES),
        trailing_silence_s=0.48,
    )


def make_speech_decoder(frozen_folder: Path, out: Path, *, stage: str = "frozen-speak") -> Path:
    """A random speech decoder for the frozen folder's backbone (units of the tiny vocoder's codebook), saved as
    `speechgpt train frozen-speak` exports it (its fingerprint that of the backbone as saved)."""

    import torch

    from speechgpt.model.frozen_checkpoint import read_speech_meta
    from speechgpt.model.frozen_speaker import FrozenSpeaker, save_speech_decoder
    from speechgpt.model.load import load_lm
    from speechgpt.model.speech_decoder import build_speech_decoder

    backbone = read_speech_meta(frozen_folder)["backbone"]
    lm, _ = load_lm(backbone)
    torch.manual_seed(0)
    hidden = lm.get_input_embeddings().embedding_dim
    decoder = build_speech_decoder(hidden_size=hidden, num_units=K, dim=32, heads=2, prefix_layers=1, ar_layers=1)
    return save_speech_decoder(FrozenSpeaker(lm, decoder), out, stage=stage, backbone=backbone)
