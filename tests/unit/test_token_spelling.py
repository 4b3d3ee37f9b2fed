"""Token spelling for the frozen variant's speech decoder: the bytes each token decodes to; a spelling decoder tells
tokens apart by their letters alone; it saves and loads with its speller; the models that feed it insist on it."""

from __future__ import annotations

import pytest
import torch

from speechgpt.model.speech_decoder import IGNORE, build_speech_decoder
from speechgpt.model.token_spelling import SPELLING_BYTES, Speller, TokenSpelling
from tests.decoder_fixtures import EmbeddingLM, WordTokenizer, fit_decoder

HIDDEN, UNITS = 16, 10
WORDS = {0: " six", 1: " sex", 2: " seven", 3: " a very long token indeed", 4: "é"}


def _lm() -> EmbeddingLM:
    return EmbeddingLM(len(WORDS), HIDDEN)


def test_each_token_is_its_bytes_plus_one_padded_and_cut() -> None:
    tokenizer = WordTokenizer(WORDS)
    spelling = TokenSpelling(tokenizer)
    spelled = spelling(torch.tensor([[0, 4, 3], [1, -100, 0]]))
    assert spelled.shape == (2, 3, SPELLING_BYTES)
    assert spelled[0, 0].tolist() == [b + 1 for b in b" six"] + [0] * (SPELLING_BYTES - 4)
    assert spelled[0, 1, :3].tolist() == [0xC3 + 1, 0xA9 + 1, 0]  # UTF-8 bytes of "é"
    assert spelled[0, 2].tolist() == [b + 1 for b in b" a very long token indeed"[:SPELLING_BYTES]]
    assert spelled[1, 1].tolist() == [0] * SPELLING_BYTES  # padding spells nothing
    assert sorted(tokenizer.decoded) == [0, 1, 3, 4], "each token is decoded once"


def test_the_speller_reads_letters_and_their_places() -> None:
    torch.manual_seed(0)
    speller = Speller(8)
    spelling = TokenSpelling(WordTokenizer(WORDS))
    vectors = speller(spelling(torch.tensor([[0, 1, 0]])))
    assert vectors.shape == (1, 3, 8)
    assert torch.equal(vectors[0, 0], vectors[0, 2])
    assert not torch.allclose(vectors[0, 0], vectors[0, 1])  # " six" and " sex" differ in one letter
    with pytest.raises(ValueError, match="bytes"):
        speller(torch.zeros(1, 2, SPELLING_BYTES + 1, dtype=torch.long))


def test_a_spelling_decoder_says_tokens_apart_that_only_their_letters_tell_apart() -> None:
    """Every token gets the same embedding, so only the spelling can tell " six" from " sex"."""
    torch.manual_seed(0)
    decoder = build_speech_decoder(
        hidden_size=HIDDEN, num_units=UNITS, dim=32, heads=2, prefix_layers=1, ar_layers=2, dropout=0.0, spelling=True
    )
    spelling = TokenSpelling(WordTokenizer(WORDS))
    embeds = torch.ones(2, 1, HIDDEN)
    spelled = spelling(torch.tensor([[0], [1]]))
    units = torch.tensor([[1, 2, 3], [4, 5, IGNORE]])
    fit_decoder(decoder, embeds, torch.tensor([1, 1]), units, spelled=spelled)
    assert list(decoder.generate(embeds[:1], None, max_units=10, spelled=spelled[:1])) == [1, 2, 3]
    assert list(decoder.generate(embeds[1:], None, max_units=10, spelled=spelled[1:])) == [4, 5]
    with pytest.raises(ValueError, match="spelling"):
        decoder.loss(embeds, torch.tensor([1, 1]), units)
