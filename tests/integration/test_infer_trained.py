"""A tiny LM trained in-process on chain-of-modality text answers in every mode with the right parts, constrained or
not, and its spoken answers stream through a vocoder as they are generated."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from speechgpt.infer import ChatSession, Sampling, SessionConfig, load_chat_model
from speechgpt.model.load import save_lm
from speechgpt.text.template import AssistantTurn, ChatTemplate, UserTurn
from tests.lm_fixtures import SYSTEM, UNITS
from tests.unit.test_infer_fixtures import FakeStreamingVocoder, FakeVocoder, make_speech_lm

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
GREEDY = Sampling(greedy=True, max_new_tokens=60)


def _qa(count: int = 6) -> list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]:
    """(question, answer, question units, answer units); the same text always has the same units, as speech would."""
    rng = random.Random(0)
    speech: dict[str, tuple[int, ...]] = {}

    def units_of(text: str) -> tuple[int, ...]:
        if text not in speech:  # merged units: no unit follows itself
            units = [rng.randrange(UNITS.k)]
            while len(units) < rng.randint(5, 8):
                units.append(rng.choice([u for u in range(UNITS.k) if u != units[-1]]))
            speech[text] = tuple(units)
        return speech[text]

    pairs = []
    for a, b in rng.sample([(a, b) for a in range(6) for b in range(5)], count):
        question, answer = f"what is {NUMBERS[a]} plus {NUMBERS[b]}", f"the answer is {NUMBERS[a + b]}"
        pairs.append((question, answer, units_of(question), units_of(answer)))
    return pairs


def _examples(qa: list) -> list[tuple[UserTurn, AssistantTurn]]:
    examples = []
    for question, answer, q_units, a_units in qa:
        for speech_in in (True, False):
            for speech_out in (True, False):
                user = UserTurn(units=q_units) if speech_in else UserTurn(text=question)
                turn = AssistantTurn(
                    transcript=question if speech_in else None,
                    text=answer,
                    units=a_units if speech_out else None,
                    chain=True,
                )
                examples.append((user, turn))
    return examples


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AdamW steps on the 24 examples until they are learned, loss on the answers only."""
    folder = make_speech_lm(tmp_path_factory.mktemp("trained") / "untrained")
    loaded = load_chat_model(folder, device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    template = ChatTemplate(UNITS, system=SYSTEM)
    rows = []
    for user, turn in _examples(_qa()):
        formatted = template.format([(user, turn)])
        prompt = [tokenizer.bos_token_id, *tokenizer.encode(formatted.prompt, add_special_tokens=False)]
        answer = tokenizer.encode(formatted.response, add_special_tokens=False)
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    torch.manual_seed(0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(400):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.055:  # the floor is ~0.045: after a text answer, `;` vs `<eoa>` is a coin flip
            break
    assert loss.item() < 0.055, loss.item()
    return save_lm(model.eval(), tokenizer, folder.with_name("trained"))


def test_every_mode_answers_with_its_parts(trained: Path) -> None:
    session = ChatSession.from_pretrained(trained, device="cpu", config=SessionConfig(system=SYSTEM, sampling=GREEDY))
    for question, answer, q_units, a_units in _qa()[:4]:
        for mode in ("s2s", "s2t", "t2s", "t2t"):
            given = {"units": list(q_units)} if mode[0] == "s" else {"text": question}
            result = session.respond(**given, reply="speech" if mode[2] == "s" else "text")  # type: ignore[arg-type]
            session.reset()
            parsed = result.answer
            assert result.mode == mode and parsed.problems == [], (mode, result.raw)
            assert parsed.transcript == (question if mode[0] == "s" else None), result.raw
            assert parsed.text == answer and parsed.units == (list(a_units) if mode[2] == "s" else []), result.raw


def test_unconstrained_model_follows_the_template_but_picks_the_modality(trained: Path) -> None:
    """Off, the trained model still writes the chain, but whether it speaks is its own guess: the prompt of s2s and
    s2t (and of t2s and t2t) is the same, which is why the reply modality is imposed at decoding time."""
    config = SessionConfig(system=SYSTEM, sampling=GREEDY, constrained=False)
    session = ChatSession.from_pretrained(trained, device="cpu", config=config)
    for question, answer, q_units, a_units in _qa()[:4]:
        for given in ({"units": list(q_units)}, {"text": question}):
            result = session.respond(**given)  # type: ignore[arg-type]
            session.reset()
            parsed = result.answer
            missing_speech = result.mode == "s2s" and not parsed.units  # reported, not raised
            assert len(parsed.problems) == missing_speech and not result.constrained, result.raw
            assert parsed.transcript == (question if "units" in given else None) and parsed.text == answer
            assert parsed.units in ([], list(a_units)), result.raw


def test_constraint_imposes_the_reply_modality(trained: Path) -> None:
    """The prompt does not say which answer is wanted; the same prompt gets a spoken or a written answer on request."""
    session = ChatSession.from_pretrained(trained, device="cpu", config=SessionConfig(system=SYSTEM, sampling=GREEDY))
    for question, answer, _, a_units in _qa():
        spoken = session.respond(text=question, reply="speech")
        session.reset()
        written = session.respond(text=question, reply="text")
        session.reset()
        assert spoken.answer.text == written.answer.text == answer
        assert spoken.answer.units == list(a_units) and not written.answer.units and "[ua]" not in written.raw
        assert not spoken.answer.problems and not written.answer.problems


def test_spoken_answer_streams_through_the_vocoder(trained: Path) -> None:
    vocoder = FakeStreamingVocoder(per_unit=3)
    config = SessionConfig(system=SYSTEM, sampling=GREEDY, chunk_units=2)
    session = ChatSession.from_pretrained(trained, device="cpu", vocoder=vocoder, config=config)
    question, answer, q_units, a_units = _qa()[1]
    events = list(session.stream(units=list(q_units)))
    kinds = [e.kind for e in events]
    assert "".join(e.text for e in events if e.kind == "transcript") == question
    assert "".join(e.text for e in events if e.kind == "text") == answer
    assert kinds.index("audio") < len(kinds) - 1 - kinds[::-1].index("units")
    audio = np.concatenate([e.audio for e in events if e.kind == "audio"])
    assert np.array_equal(audio, FakeVocoder(per_unit=3)(a_units))
    result = events[-1].result
    assert result is not None and result.timings.first_audio_s < result.timings.last_token_s  # type: ignore[operator]
