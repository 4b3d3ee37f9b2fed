"""The frozen variant's codec option: a corpus spoken by real TTS voices becomes EnCodec codes in the units contract
(random codec weights: no download), frozen-tts trains its decoder on them (repeats allowed: codes are per frame),
and the decoder's codes come out as audio through the codec folder's vocoder."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from speechgpt.data.units import load_units_dataset
from speechgpt.model.frozen_speaker import load_speech_decoder, spoken_text_ids
from speechgpt.model.load import load_lm
from speechgpt.training.decoder_stage import DecoderSettings
from stages import frozen_tts
from tests.integration.test_frozen_output_stages import train_cfg
from tests.lm_fixtures import make_tiny_lm
from vocoder import codec_units
from vocoder.load import load_answer_vocoder


def test_codec_codes_train_the_decoder_and_decode_to_audio(tiny_corpus: Path, tmp_path: Path) -> None:
    out = codec_units.run(codec_units.Config(corpus=tiny_corpus, out=tmp_path / "codes"))
    dataset = load_units_dataset(out)  # the units contract, checked
    row = dataset[0]
    assert row["encoder"].startswith("encodec24k@75Hz-q1+km1024:") and set(row["durations"]) == {1}
    assert abs(len(row["units"]) - 75 * row["duration_s"]) <= 2 and max(row["units"]) < 1024
    assert any(a == b for r in dataset for a, b in itertools.pairwise(r["units"]))  # codes repeat, nothing merged

    llama = make_tiny_lm(tmp_path / "llama")
    final = frozen_tts.run(
        frozen_tts.Config(
            backbone=str(llama),
            units=[out],
            out=tmp_path / "tts",
            decoder=DecoderSettings(dim=32, heads=2, prefix_layers=1, ar_layers=1),
            heldout_text_fraction=0.0,
            train=train_cfg(max_steps=2, eval_every=0, save_every=0, eval_splits=[]),
        )
    )
    decoder = load_speech_decoder(final)
    assert decoder.num_units == 1024 and not decoder.merged
    lm, tokenizer = load_lm(llama)
    embeds = lm.get_input_embeddings()(torch.tensor([spoken_text_ids(tokenizer, row["text"])])).float()
    codes = list(decoder.generate(embeds, None, max_units=30, min_units=30))
    vocoder = load_answer_vocoder(out / "vocoder")
    audio = vocoder(codes)
    assert len(codes) == 30 and audio.shape == (round(30 * 16_000 / 75),)
