"""`speechgpt eval tts`: the sentences drawn are new (none that an excluded corpus says) and the same for the same
seed; both variants read a text aloud (the unified one in stage 2's TTS form, units only; the frozen one from the
LLM's hidden states of the text alone); the command judges the model's audio beside the answer voice's own
recordings, which the real judge understands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechgpt.app import tts_eval
from speechgpt.app.chat import ChatSetup, load_chat_app
from speechgpt.infer.frozen_session import NO_SPEECH_OUT
from speechgpt.infer.reading import read_aloud
from speechgpt.text.template import UserTurn
from speechgpt.text.units import EOSP, SOSP
from tests.chat_fixtures import make_chat_model, make_frozen_model, make_speech_decoder, make_vocoder
from tests.conftest import SENTENCES

NEW = [f"the {animal} walked over the small hill at noon" for animal in ("cat", "dog", "fox", "owl", "hen", "cow")]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tts-eval")
    frozen = make_frozen_model(root / "frozen")
    return {
        "unified": make_chat_model(root / "model"),
        "frozen": frozen,
        "decoder": make_speech_decoder(frozen, root / "decoder"),
        "vocoder": make_vocoder(root / "vocoder"),
    }


def test_sentences_are_new_and_drawn_the_same_way(tmp_path: Path, tiny_corpus: Path) -> None:
    source = tmp_path / "text.txt"
    source.write_text("\n".join([*SENTENCES, *NEW]) + "\n", encoding="utf-8")
    cfg = tts_eval.Config(text_source=str(source), exclude=[tiny_corpus], sentences=4, vocoder=None, kmeans=None)
    drawn = tts_eval.new_sentences(cfg)
    assert len(drawn) == 4 and set(drawn) <= set(NEW)
    assert tts_eval.new_sentences(cfg) == drawn
    assert tts_eval.new_sentences(tts_eval.Config(**{**cfg.__dict__, "seed": 1})) != drawn
    with pytest.raises(ValueError, match="need 7"):
        tts_eval.new_sentences(tts_eval.Config(**{**cfg.__dict__, "sentences": 7}))


def test_the_unified_model_reads_in_the_tts_form_with_units_only(parts: dict[str, Path]) -> None:
    setup = ChatSetup(model=parts["unified"], kmeans=None, vocoder=parts["vocoder"])
    setup.session.sampling.max_new_tokens = 12
    session = load_chat_app(setup).session
    answer, audio = read_aloud(session, "the cat sat", instruction="Read this aloud.")
    assert answer.units and len(answer.units) <= 12 and answer.text is None
    assert audio is not None and audio.size > 0
    assert session.history == []
    prompt, _ = session.build_prompt(UserTurn(instruction="Read this aloud.", text="the cat sat"), 12)  # type: ignore[union-attr]
    text = session.tokenizer.decode(prompt)  # type: ignore[union-attr]
    assert "Read this aloud. This is input: the cat sat" in text and SOSP not in text and EOSP not in text


def test_the_frozen_variant_reads_from_the_hidden_states_of_the_text_alone(parts: dict[str, Path]) -> None:
    setup = ChatSetup(model=parts["frozen"], speech_decoder=parts["decoder"], vocoder=parts["vocoder"])
    session = load_chat_app(setup).session
    answer, audio = read_aloud(session, "the cat sat")
    assert answer.units and audio is not None and audio.size > 0
    tokenizer, lm = session.frozen.tokenizer, session.frozen.model.lm  # type: ignore[union-attr]
    tokens = tokenizer(" the cat sat", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ids = torch.tensor([[tokenizer.bos_token_id, *tokens]])
        hidden = lm.base_model(input_ids=ids).last_hidden_state[:, 1:]
    assert list(session.speaker.units(tokens, hidden)) == answer.units  # type: ignore[union-attr]
    mute = load_chat_app(ChatSetup(model=parts["frozen"])).session
    with pytest.raises(ValueError, match="no speech decoder"):
        read_aloud(mute, "the cat sat")
    assert NO_SPEECH_OUT.startswith("no speech decoder")


def test_eval_tts_judges_the_model_beside_the_answer_voice(
    parts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "text.txt"
    source.write_text("\n".join(NEW) + "\n", encoding="utf-8")
    cfg = tts_eval.Config(
        model=parts["frozen"],
        speech_decoder=parts["decoder"],
        vocoder=parts["vocoder"],
        text_source=str(source),
        sentences=3,
        voice="flite:slt",
        out=tmp_path / "out",
    )
    report = json.loads(tts_eval.run(cfg).read_text())
    assert report["variant"] == "frozen" and report["sentences"] == 3
    assert report["wer"] > 0.8  # a random decoder says nothing a listener understands
    assert report["reference"]["wer"] < 0.3  # the voice's own recordings are understood
    rows = [json.loads(line) for line in (cfg.out / "sentences.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    assert len(texts) == 3 and texts == sorted(texts, key=NEW.index)
    assert all(r["units"] > 0 and "heard" in r and "reference_heard" in r for r in rows)
    assert len(list((cfg.out / "wavs" / "model").glob("*.wav"))) == 3
    assert np.isfinite(report["units_per_s"])

    # the other variant, on the same sentences in the same voice, takes this reference row instead of recording it
    import data_builders.tts

    unified = tts_eval.Config(**{**cfg.__dict__, "model": parts["unified"], "speech_decoder": None, "kmeans": None})
    unified.out, unified.reference_from = tmp_path / "unified", cfg.out
    with monkeypatch.context() as patched:
        patched.setattr(data_builders.tts, "synthesize", lambda *a: pytest.fail("recorded the reference again"))
        again = json.loads(tts_eval.run(unified).read_text())
    assert again["variant"] == "unified" and again["reference"] == report["reference"]
    heard = [json.loads(line)["reference_heard"] for line in (unified.out / "sentences.jsonl").read_text().splitlines()]
    assert heard == [r["reference_heard"] for r in rows]
    assert len(list((unified.out / "wavs" / "reference").glob("*.wav"))) == 3
    other_voice = tts_eval.Config(**{**unified.__dict__, "voice": "flite:rms", "out": tmp_path / "rms"})
    assert json.loads(tts_eval.run(other_voice).read_text())["reference"]["voice"] == "flite:rms"
