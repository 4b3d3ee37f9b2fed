"""The frozen-LLM variant's two output stages end to end on a tiny Llama and a small units dataset: the files each
writes, which decoder parts train (and that the optimizer holds only those), the LLM unchanged, answers nobody
spoke skipped and counted, resume that continues with the losses of an uninterrupted run, and re-aligning the
decoder to another backbone (tiny Llama -> tiny Qwen2 of another width) by running output stage 2 again."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from speechgpt.data.units import units_features
from speechgpt.model.frozen_lm import weights_fingerprint
from speechgpt.model.frozen_speaker import load_speech_decoder, read_decoder_meta
from speechgpt.model.load import load_lm
from speechgpt.model.tiny import build_tiny_lm
from speechgpt.training.config import TrainConfig
from stages import frozen_speak, frozen_tts
from tests.integration.test_build_stage3 import write_questions
from tests.integration.test_frozen_stages import QUESTIONS, numel, optimizer_numel, records, step_losses
from tests.lm_fixtures import K, make_tiny_lm, sentences

TAG = f"mfcc@50Hz+km{K}:0123abcd"
META_KEYS = {"variant", "decoder", "lm_fingerprint", "stage", "backbone", "units_encoder", "trainable"}
META_KEYS |= {"trainable_parameters", "init"}


def train_cfg(**kw: Any) -> TrainConfig:
    base = dict(max_steps=4, micro_batch=4, lr=2e-3, warmup_steps=0, schedule="constant", eval_every=4, save_every=2)
    return TrainConfig(**{**base, **kw})


def write_units(out: Path) -> Path:
    """Sentences and the train questions' answers spoken in split train (units random, fixed per text), and the
    dev question's answer spoken by a held-out voice; "thirteen" is spoken by nobody."""
    import datasets

    rng = random.Random(0)
    texts = [(t, "train") for t in sentences(24)] + [("seven", "train"), ("three", "train"), ("Seven.", "dev")]
    rows = []
    for i, (text, split) in enumerate(texts):
        units = [rng.randrange(K) for _ in range(rng.randint(5, 12))]
        units = [u for j, u in enumerate(units) if j == 0 or u != units[j - 1]]
        rows.append(
            {"id": f"c{i:03d}", "audio": f"/nowhere/c{i:03d}.wav", "text": text, "speaker": "v1" if split == "train"
             else "v9", "duration_s": 1.0, "source": "test", "split": split, "orig_sample_rate": 16000,
             "orig_channels": 1, "units": units, "durations": [2] * len(units), "encoder": TAG}
        )  # fmt: skip
    datasets.Dataset.from_list(rows, features=units_features()).save_to_disk(str(out / "dataset"))
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frozen-out")


@pytest.fixture(scope="module")
def parts(root: Path) -> dict[str, Path]:
    return {
        "llama": make_tiny_lm(root / "llama"),
        "units": write_units(root / "units"),
        "qa": write_questions(root / "qa", QUESTIONS),
    }


def tts_config(parts: dict[str, Path], out: Path, **train: Any) -> frozen_tts.Config:
    return frozen_tts.Config(
        backbone=str(parts["llama"]),
        units=[parts["units"]],
        out=out,
        decoder=frozen_tts.DecoderSettings(dim=32, heads=2, prefix_layers=1, ar_layers=2),
        heldout_text_fraction=0.3,
        train=train_cfg(eval_splits=["heldout"], **train),
    )


def speak_config(parts: dict[str, Path], init: Path, out: Path, **kw: Any) -> frozen_speak.Config:
    train = kw.pop("train", {})
    return frozen_speak.Config(
        init=init,
        qa=parts["qa"],
        units=[parts["units"]],
        out=out,
        template="{speech}? {target}.",
        eos=True,
        sentences=6,
        train=train_cfg(eval_splits=["dev"], **train),
        **kw,
    )


@pytest.fixture(scope="module")
def tts(parts: dict[str, Path], root: Path) -> Path:
    return frozen_tts.run(tts_config(parts, root / "tts"))


@pytest.fixture(scope="module")
def speak(parts: dict[str, Path], tts: Path, root: Path) -> Path:
    return frozen_speak.run(speak_config(parts, tts, root / "speak"))


def check_resume(stage: Any, cfg: Any, straight: Path) -> None:
    """A run stopped after 2 steps and run again to 4 continues with the losses of the 4-step run."""
    stage.run(replace(cfg, train=replace(cfg.train, max_steps=2)))
    stage.run(cfg)
    resumed, whole = step_losses(cfg.out), step_losses(straight)
    assert sorted(resumed) == [1, 2, 3, 4]
    assert [resumed[s] for s in (3, 4)] == pytest.approx([whole[s] for s in (3, 4)], abs=1e-5)


def test_tts_trains_the_prenet_and_ar_decoder_on_spoken_texts(tts: Path, parts: dict[str, Path], root: Path) -> None:
    meta = read_decoder_meta(tts)
    assert set(meta) == META_KEYS and meta["stage"] == "frozen-tts" and meta["units_encoder"] == TAG
    lm, _ = load_lm(parts["llama"])
    assert meta["lm_fingerprint"] == weights_fingerprint(lm)  # the LLM never changed
    decoder = load_speech_decoder(tts)
    assert decoder.num_units == K and decoder.prenet[1].in_features == 64
    trained = numel(decoder.prenet) + sum(numel(m) for m in decoder.part_names["ar"])
    assert meta["trainable_parameters"] == trained == optimizer_numel(tts.parent, 4)
    evals = records(tts.parent)[-1]
    assert {"eval/heldout/tts/loss", "eval/heldout/tts/accuracy"} <= set(evals)
    check_resume(frozen_tts, tts_config(parts, root / "tts_resumed"), tts.parent)


def test_speak_trains_the_prefix_decoder_on_the_llms_answers(speak: Path, tts: Path, parts: dict[str, Path]) -> None:
    meta = read_decoder_meta(speak)
    assert meta["stage"] == "frozen-speak" and meta["trainable"] == ["prefix"] and meta["template"]["eos"]
    assert meta["lm_fingerprint"] == read_decoder_meta(tts)["lm_fingerprint"]
    before, after = load_speech_decoder(tts), load_speech_decoder(speak)
    assert meta["trainable_parameters"] == sum(numel(m) for m in after.part_names["prefix"])
    assert meta["trainable_parameters"] == optimizer_numel(speak.parent, 4)
    assert torch.equal(before.head.weight, after.head.weight) and torch.equal(
        before.prenet[1].weight, after.prenet[1].weight
    )
    assert not torch.equal(before.prefix_in[1].weight, after.prefix_in[1].weight)
    skipped = json.loads((speak.parent / "skipped.json").read_text())
    assert skipped == {"train": {"answer spoken in no units dataset": 1}}  # "thirteen"
    evals = records(speak.parent)[-1]
    assert "eval/dev/answer/loss" in evals  # the dev answer, spoken by a held-out voice


def test_speak_resumes(speak: Path, tts: Path, parts: dict[str, Path], root: Path) -> None:
    check_resume(frozen_speak, speak_config(parts, tts, root / "speak_resumed"), speak.parent)


def test_realign_to_another_backbone(speak: Path, parts: dict[str, Path], root: Path) -> None:
    _, tokenizer = load_lm(parts["llama"])
    qwen = build_tiny_lm("qwen2", tokenizer, hidden_size=48, num_layers=2, num_heads=4, seed=3)
    qwen.save_pretrained(root / "qwen2")
    tokenizer.save_pretrained(root / "qwen2")
    final = frozen_speak.run(speak_config(parts, speak, root / "realigned", backbone=str(root / "qwen2")))
    meta = read_decoder_meta(final)
    lm, _ = load_lm(root / "qwen2")
    assert meta["lm_fingerprint"] == weights_fingerprint(lm) and meta["trainable"] == ["prefix", "prenet"]
    old, new = load_speech_decoder(speak), load_speech_decoder(final)
    assert new.prenet[1].in_features == 48 and new.prefix_in[1].in_features == 48
    assert torch.equal(old.head.weight, new.head.weight) and torch.equal(
        old.blocks[0].qkv.weight, new.blocks[0].qkv.weight
    )
    losses = step_losses(final.parent)
    assert sorted(losses) == [1, 2, 3, 4] and all(math.isfinite(v) for v in losses.values())


def test_a_spelling_phoneme_decoder_trains_its_readers_in_tts_and_keeps_them_in_speak(
    parts: dict[str, Path], root: Path
) -> None:
    cfg = tts_config(parts, root / "tts_spelled")
    tts = frozen_tts.run(replace(cfg, decoder=replace(cfg.decoder, spelling=True, phonemes=True)))
    decoder = load_speech_decoder(tts)
    assert decoder.spells and decoder.reads_phonemes
    trained = sum(numel(m) for name in ("prenet", "ar") for m in decoder.part_names[name])
    assert read_decoder_meta(tts)["trainable_parameters"] == trained == optimizer_numel(tts.parent, 4)
    speak = frozen_speak.run(speak_config(parts, tts, root / "speak_spelled"))
    after = load_speech_decoder(speak)
    assert after.spells and torch.equal(after.speller.bytes.weight, decoder.speller.bytes.weight)
    assert after.reads_phonemes and torch.equal(after.phoneme_embed.weight, decoder.phoneme_embed.weight)
    assert all(math.isfinite(v) for v in step_losses(speak.parent).values())
