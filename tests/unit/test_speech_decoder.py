"""The frozen variant's speech decoder: cached generation equals the teacher-forced greedy reading of the same
sequence, with and without a prefix; it learns text -> units; parts train alone; a backbone of another width keeps
the AR decoder and rebuilds what reads the LLM."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from speechgpt.infer.frozen_speaking import AnswerSpeaker
from speechgpt.model.frozen_speaker import FrozenSpeaker, load_speech_decoder, save_speech_decoder
from speechgpt.model.speech_decoder import IGNORE, build_speech_decoder
from speechgpt.model.token_spelling import SPELLING_BYTES
from tests.decoder_fixtures import EmbeddingLM, WordTokenizer, fit_decoder

HIDDEN, UNITS = 24, 12


def small_decoder(**kw: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_speech_decoder(
        hidden_size=HIDDEN, num_units=UNITS, dim=32, heads=2, prefix_layers=1, ar_layers=2, dropout=0.0, **kw
    ).eval()


def teacher_forced_greedy(decoder, embeds, prefix, units: list[int], min_units: int, **read) -> list[int]:
    """The greedy choice at each position of the whole sequence read at once, under generate's rules."""
    target = torch.tensor([[*units, IGNORE]])  # one more position: the one that must choose EOS
    plen = torch.tensor([prefix.shape[1]]) if prefix is not None else None
    with torch.no_grad():
        text, lengths = decoder.text_inputs(embeds, torch.tensor([embeds.shape[1]]), **read)
        logits, _ = decoder._teacher_forced(text, lengths, target[:, :-1], prefix, plen)
    start = (prefix.shape[1] if prefix is not None else 0) + int(lengths[0])
    picks, previous = [], None
    for step in range(len(units) + 1):
        row = logits[0, start + step].clone()
        if previous is not None:
            row[previous] = float("-inf")
        if step < min_units:
            row[decoder.eos] = float("-inf")
        picks.append(int(row.argmax()))
        previous = picks[-1]
    return picks


@pytest.mark.parametrize(
    ("with_prefix", "spelling", "phonemes"), [(False, False, False), (True, False, False), (True, True, True)]
)
def test_cached_generation_equals_the_whole_sequence_read_at_once(
    with_prefix: bool, spelling: bool, phonemes: bool
) -> None:
    decoder = small_decoder(spelling=spelling, phonemes=phonemes)
    torch.manual_seed(1)
    embeds = torch.randn(1, 5, HIDDEN)
    read = {
        "spelled": torch.randint(0, 257, (1, 5, SPELLING_BYTES)) if spelling else None,
        "phonemes": (torch.randint(1, 40, (1, 7)), torch.tensor([7])) if phonemes else None,
    }
    prefix = decoder.prefix(torch.randn(1, 5, HIDDEN), torch.tensor([5])).detach() if with_prefix else None
    units = list(decoder.generate(embeds, prefix, max_units=30, min_units=3, **read))
    assert len(units) >= 3
    assert all(a != b for a, b in itertools.pairwise(units)), "merged units never repeat"
    whole = teacher_forced_greedy(decoder, embeds, prefix, units, min_units=3, **read)
    stopped = len(units) < 30
    assert whole[: len(units)] == units
    if stopped:
        assert whole[len(units)] == decoder.eos


def test_it_learns_text_to_units() -> None:
    decoder = small_decoder()
    embeds = torch.randn(2, 4, HIDDEN)
    units = torch.tensor([[1, 2, 3, 4, 5], [7, 6, 5, IGNORE, IGNORE]])
    first, parts = fit_decoder(decoder, embeds, torch.tensor([4, 3]), units)
    assert float(parts["units"]) < 0.1 * first and float(parts["accuracy"]) == 1.0
    assert list(decoder.generate(embeds[:1], None, max_units=20)) == [1, 2, 3, 4, 5]
    assert list(decoder.generate(embeds[1:2, :3], None, max_units=20)) == [7, 6, 5]


def test_set_trainable_trains_only_the_named_parts() -> None:
    decoder = small_decoder()
    count = decoder.set_trainable(["prefix"])
    trainable = {name.split(".")[0] for name, p in decoder.named_parameters() if p.requires_grad}
    assert trainable == {"prefix_in", "prefix_positions", "prefix_blocks", "prefix_norm"}
    assert count == sum(p.numel() for p in decoder.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="trainable must name"):
        decoder.set_trainable(["encoder"])


def test_another_width_rebuilds_what_reads_the_llm_and_keeps_the_ar_decoder(tmp_path: Path) -> None:
    decoder = small_decoder()
    save_speech_decoder(FrozenSpeaker(EmbeddingLM(10, HIDDEN), decoder), tmp_path, stage="frozen-tts")
    same = load_speech_decoder(tmp_path)
    assert all(
        torch.equal(a, b) for a, b in zip(same.state_dict().values(), decoder.state_dict().values(), strict=True)
    )
    wider = load_speech_decoder(tmp_path, hidden_size=40)
    assert wider.prenet[1].in_features == 40 and wider.prefix_in[1].in_features == 40
    assert torch.equal(wider.head.weight, decoder.head.weight)
    assert torch.equal(wider.blocks[0].qkv.weight, decoder.blocks[0].qkv.weight)


@pytest.mark.parametrize(("reader", "module"), [("spelling", "speller"), ("phonemes", "phoneme_embed")])
def test_a_decoder_that_reads_the_text_saves_and_loads_its_reader_and_needs_the_tokenizer(
    tmp_path: Path, reader: str, module: str
) -> None:
    words = WordTokenizer({0: " six", 1: " seven", 2: " é"})
    decoder = build_speech_decoder(hidden_size=HIDDEN, num_units=UNITS, dim=32, heads=2, **{reader: True})
    with pytest.raises(ValueError, match="tokenizer"):
        FrozenSpeaker(EmbeddingLM(3, HIDDEN), decoder)
    save_speech_decoder(FrozenSpeaker(EmbeddingLM(3, HIDDEN), decoder, words), tmp_path, stage="frozen-tts")
    loaded = load_speech_decoder(tmp_path)
    assert (loaded.spells, loaded.reads_phonemes) == (reader == "spelling", reader == "phonemes")
    saved, read = decoder.state_dict(), loaded.state_dict()
    assert saved.keys() == read.keys() and all(torch.equal(saved[k], read[k]) for k in saved)
    loaded.set_trainable(["prenet"])  # the reader is part of the pre-net: frozen-tts trains it
    assert {n.split(".")[0] for n, p in loaded.named_parameters() if p.requires_grad} == {"prenet", module}
    wider = load_speech_decoder(tmp_path, hidden_size=HIDDEN * 2)  # another LLM: the reader reads text, kept
    kept = getattr(wider, module).state_dict()
    assert all(torch.equal(v, getattr(decoder, module).state_dict()[k]) for k, v in kept.items())
    with pytest.raises(ValueError, match="tokenizer"):
        AnswerSpeaker(loaded, EmbeddingLM(3, HIDDEN))
    speaker = AnswerSpeaker(loaded.eval(), EmbeddingLM(3, HIDDEN), tokenizer=words, meta={"stage": "frozen-tts"})
    assert len(list(speaker.units([0, 1, 2], torch.zeros(1, 3, HIDDEN)))) >= 2
