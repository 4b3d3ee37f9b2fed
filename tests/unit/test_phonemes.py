"""Phonemes for the frozen variant's speech decoder: espeak-ng's symbols of English text are all in the inventory;
the same sound is one symbol in different spellings; token rows read as whole words, padded; a phoneme-reading
decoder tells texts apart by their sounds alone, saves, loads and speaks through AnswerSpeaker; espeak-ng's library
writes what its command writes and reads each text the same whatever it read before; without espeak-ng the error
says what to install."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from speechgpt.model.speech_decoder import IGNORE, build_speech_decoder
from speechgpt.text import phonemes as phonemes_module
from speechgpt.text.phonemes import (
    PHONEME_OFFSET,
    PHONEME_SYMBOLS,
    UNKNOWN,
    WORD_BREAK,
    TextPhonemes,
    phoneme_ids,
    phonemize,
)
from tests.decoder_fixtures import EmbeddingLM, WordTokenizer, fit_decoder

HIDDEN, UNITS = 16, 10
WORDS = {0: " know", 1: " no", 2: " the", 3: " cat", 4: " ph", 5: "one", 6: " sixty", 7: " eight"}


def _lm() -> EmbeddingLM:
    return EmbeddingLM(len(WORDS), HIDDEN)


def test_english_text_is_inventory_symbols_with_stress_and_word_breaks() -> None:
    text = (
        "Fish usually goes with white wine; she felt tongue-tied with embarrassment. "
        "Could you clarify these remarks about the pleasure, the genre and the choir's 42 measures?"
    )
    symbols = phonemize(text)
    assert set(symbols) <= set(PHONEME_SYMBOLS)
    assert UNKNOWN not in phoneme_ids(text)
    assert symbols[0] != WORD_BREAK and symbols[-1] != WORD_BREAK
    assert symbols.count(WORD_BREAK) >= len(text.split()) - 1  # "42" reads as two words
    assert phonemize("the cat") == ("ð", "ə", WORD_BREAK, "k", "ˈ", "æ", "t")
    assert phoneme_ids("  the   cat ") == phoneme_ids("the cat"), "spacing does not matter"


def test_the_same_sounds_are_the_same_symbols_whatever_the_spelling() -> None:
    assert phonemize("know") == phonemize("no")
    assert phonemize("phone")[0] == phonemize("fun")[0] == "f"


def test_token_rows_read_as_whole_words_padded_with_zeros() -> None:
    reader = TextPhonemes(WordTokenizer(WORDS))
    ids, lengths = reader(torch.tensor([[4, 5, 2, 3], [7, 0, 0, 0]]), torch.tensor([2, 1]))
    assert lengths.tolist() == [len(phoneme_ids("phone")), len(phoneme_ids("eight"))]
    assert ids[0, : lengths[0]].tolist() == phoneme_ids("phone"), "' ph' + 'one' is said as the word 'phone'"
    assert ids[1, : lengths[1]].tolist() == phoneme_ids("eight")
    assert ids[1, lengths[1] :].eq(0).all()
    empty_ids, empty_lengths = reader(torch.tensor([[0]]), torch.tensor([0]))
    assert empty_lengths.tolist() == [1] and empty_ids.tolist() == [[PHONEME_OFFSET]], "an empty text: one break"


def test_a_phoneme_decoder_tells_apart_texts_that_differ_only_in_sound() -> None:
    torch.manual_seed(0)
    decoder = build_speech_decoder(hidden_size=HIDDEN, num_units=UNITS, dim=32, heads=2, dropout=0.0, phonemes=True)
    embeds = torch.zeros(2, 1, HIDDEN)  # the same token embedding: only the phonemes tell the rows apart
    reader = TextPhonemes(WordTokenizer(WORDS))
    sounds = reader(torch.tensor([[6], [7]]), torch.tensor([1, 1]))
    units = torch.tensor([[1, 2, 3], [4, 5, IGNORE]])
    fit_decoder(decoder, embeds, torch.tensor([1, 1]), units, phonemes=sounds)
    one = (sounds[0][:1, : sounds[1][0]], sounds[1][:1])
    two = (sounds[0][1:, : sounds[1][1]], sounds[1][1:])
    assert list(decoder.generate(embeds[:1], None, max_units=10, phonemes=one)) == [1, 2, 3]
    assert list(decoder.generate(embeds[1:], None, max_units=10, phonemes=two)) == [4, 5]
    with pytest.raises(ValueError, match="phonemes"):
        decoder.loss(embeds, torch.tensor([1, 1]), units)


def test_the_library_writes_what_the_command_writes() -> None:
    library = phonemes_module._library()
    if library is None:
        pytest.skip("libespeak-ng does not load here: phonemes come from the command")
    for text in ("what is three plus five", "Could you clarify these remarks?", "twenty eight.", "it's 42, isn't it"):
        assert library(text, "en-us").split() == phonemes_module._command(text, "en-us").split()
    with pytest.raises(ValueError, match="no voice"):
        library("a text", "no-such-voice")


def test_a_text_reads_the_same_whatever_the_library_read_before() -> None:
    """espeak-ng kept the second "." of "dream.." and read it as "dot" at the start of the next text, so a text's
    phonemes depended on the order texts were read in (and the demo's frozen-tts on its threads' timing)."""
    library = phonemes_module._library()
    if library is None:
        pytest.skip("libespeak-ng does not load here: each text is a process of its own")
    alone = library("Tone down", "en-us").split()
    for before in ("To sleep, perchance to dream..", "wait . . .", "e.g.", "Really?!", "It costs $5."):
        library(before, "en-us")
        assert library("Tone down", "en-us").split() == alone, before
    assert (
        library("To sleep, perchance to dream..", "en-us").split()
        == library("To sleep, perchance to dream", "en-us").split()
    )


def test_threads_load_the_library_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads = []

    def slow_load() -> str:
        loads.append(1)
        time.sleep(0.05)
        return "the library"

    monkeypatch.setattr(phonemes_module, "_LOADED", [])
    monkeypatch.setattr(phonemes_module.EspeakLibrary, "load", staticmethod(slow_load))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: phonemes_module._library(), range(8)))
    assert got == ["the library"] * 8 and len(loads) == 1


def test_without_espeak_ng_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phonemes_module, "_library", lambda: None)
    monkeypatch.setattr(phonemes_module.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        phonemize("a text no test has phonemized before")
