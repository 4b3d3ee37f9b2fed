"""Word pooling and distillation for the frozen-LLM variant: the words a CTC best path marks, one LLM input per word
(an expectation over the LLM's token embeddings), the state decision at the last word begun, the word-token loss,
the export's round trip, and cross-modal distillation's alignment of the text after the speech."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from speechgpt.model.frozen_checkpoint import load_speech_modules, read_speech_meta, save_speech_modules
from speechgpt.model.frozen_lm import (
    IGNORE,
    FrozenSpeechLM,
    SpeechInputs,
    asr_loss_parts,
    assemble_inputs,
    build_frozen_speech_lm,
    chunk_end_positions,
)
from speechgpt.model.speech_alignment import distill_loss
from speechgpt.model.speech_encoder import build_speech_encoder
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.model.word_pooling import Word, WordStream, find_words, pool_words, words_whole

SPACE, A, B, C = 1, 2, 3, 4  # CTC labels; 0 is the blank
FEATURE_DIM = 40


def test_find_words_reads_the_best_path() -> None:
    # " ab" (b held over two frames), a space, "b", a pause of 3 blank frames, "c", then the frames run out
    labels = [SPACE, 0, A, A, B, B, 0, SPACE, SPACE, 0, B, 0, 0, 0, C, 0]
    #          0      1  2  3  4  5  6  7      8      9  10 11 12 13 14 15
    assert find_words(labels, SPACE, pause=3) == [Word(2, 6, 8), Word(10, 11, 14), Word(14, 15, None)]
    assert find_words(labels, SPACE, pause=4) == [Word(2, 6, 8), Word(10, 15, None)]  # no pause: "bc" is one word
    assert find_words([B, 0, B, SPACE, A], SPACE, pause=4) == [Word(0, 3, 4), Word(4, 5, None)]  # a letter said twice
    assert find_words([0, 0, SPACE, 0], SPACE, pause=1) == []


def test_pool_words_means_each_word_and_a_clip_may_have_none() -> None:
    frames = torch.arange(2 * 6 * 2, dtype=torch.float32).reshape(2, 6, 2)
    labels = torch.tensor([[A, B, SPACE, C, C, 0], [0, 0, 0, 0, 0, 0]])
    pooled, counts, words = pool_words(frames, torch.tensor([6, 4]), labels, SPACE, pause=4)
    assert counts.tolist() == [2, 0]
    assert words == [[Word(0, 2, 3), Word(3, 5, None)], []]  # "c" held over two frames
    torch.testing.assert_close(pooled[0, 0], frames[0, :2].mean(0))
    torch.testing.assert_close(pooled[0, 1], frames[0, 3:5].mean(0))
    torch.testing.assert_close(pooled[1], torch.zeros(2, 2))
    assert [words_whole(words[0], heard, ended=False) for heard in (2, 3, 6)] == [0, 1, 1]
    assert words_whole(words[0], 6, ended=True) == 2


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return train_tokenizer(
        ["what is two plus two", "four is the answer", "the cat sat on the mat"] * 20, vocab_size=300
    )


def _word_model(tokenizer: Any, num_prompts: int = 2) -> FrozenSpeechLM:
    lm = build_tiny_lm("llama", tokenizer, hidden_size=48, num_layers=2, num_heads=4, tie_embeddings=False, seed=1)
    encoder = build_speech_encoder(
        input_dim=FEATURE_DIM, frame_rate=100, dim=32, num_layers=2, num_heads=4, left_chunks=2, dropout=0.0,
        ctc_vocab_size=6,
    )  # fmt: skip
    return build_frozen_speech_lm(
        lm, encoder, adapter_kernel=1, adapter_stride=1, num_prompts=num_prompts, seed=2, word_space=SPACE
    ).eval()


def _speech_batch(vocab_size: int, words: list[list[int]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    text_ids = torch.randint(3, vocab_size, (2, 4), generator=g)
    width = max(len(w) for w in words)
    return {
        "features": torch.randn(2, 96, FEATURE_DIM, generator=g),
        "feature_lengths": torch.tensor([96, 80]),
        "text_ids": text_ids,
        "text_lengths": torch.tensor([4, 3]),
        "labels": text_ids.clone(),
        "word_ids": torch.tensor([w + [IGNORE] * (width - len(w)) for w in words]),
    }


def _with_path(model: FrozenSpeechLM, labels: torch.Tensor) -> None:
    """Make the encoder's CTC head give `labels` (B, T) as its best path, whatever the frames."""
    onehot = torch.nn.functional.one_hot(labels, model.encoder.ctc_head.out_features).float() * 50
    model.encoder.ctc_logits = lambda frames: onehot[: frames.shape[0], : frames.shape[1]]  # type: ignore[method-assign]


def test_word_model_feeds_one_token_expectation_per_word(tokenizer: Any) -> None:
    model = _word_model(tokenizer)
    paths = torch.zeros(2, 24, dtype=torch.long)
    paths[0, [2, 9, 22]] = torch.tensor([A, SPACE, B])  # clip 0: a word whole after its pause, one open at the end
    paths[1, [4]] = C  # clip 1: one word, whole after its pause
    _with_path(model, paths)
    batch = _speech_batch(len(tokenizer), [[5, 6], [7, 8]])
    speech = model.speech_embeddings(batch["features"], batch["feature_lengths"])
    assert speech.lengths.tolist() == [2, 1]
    assert speech.words == [[Word(2, 3, 7), Word(22, 23, None)], [Word(4, 5, 9)]]
    table = model.lm.get_input_embeddings().weight
    torch.testing.assert_close(speech.embeds, speech.token_logits.softmax(-1) @ table)
    # a chunk (4 encoder frames) decides after the last word whole by its end (before the speech when none is),
    # and after every word at the clip's last chunk
    positions, exists = chunk_end_positions(model, torch.tensor([5, 5]), speech.frame_lengths, 6, speech.words)
    assert positions[0].tolist() == [4, 5, 5, 5, 5, 6]
    assert positions[1].tolist()[:5] == [4, 4, 5, 5, 5] and exists[1].tolist() == [True] * 5 + [False]
    with pytest.raises(ValueError, match="before the speech"):
        chunk_end_positions(model, torch.tensor([0, 5]), speech.frame_lengths, 6, speech.words)
    # the word-token loss counts clip 0 (2 words, 2 tokens), not clip 1 (1 word, 2 tokens)
    parts = asr_loss_parts(model, batch, align_weight=1.0)
    want = torch.nn.functional.cross_entropy(speech.token_logits[0, :2], torch.tensor([5, 6]))
    torch.testing.assert_close(parts["align"], want)
    torch.testing.assert_close(parts["loss"], parts["lm"] + parts["align"])
    no_match = asr_loss_parts(model, {**batch, "word_ids": torch.tensor([[5, IGNORE, IGNORE], [5, 6, 7]])}, 1.0)
    assert float(no_match["align"]) == 0.0


def test_word_model_round_trips_through_its_export(tokenizer: Any, tmp_path: Path) -> None:
    model = _word_model(tokenizer)
    save_speech_modules(model, tmp_path)
    assert read_speech_meta(tmp_path)["adapter"] == {
        "kernel_size": 1,
        "stride": 1,
        "word_space": SPACE,
        "word_pause": 4,
    }
    again = load_speech_modules(model.lm, tmp_path).eval()
    assert again.word_space == SPACE
    features = torch.randn(1, 96, FEATURE_DIM)
    want = model.speech_embeddings(features, torch.tensor([96]))
    got = again.speech_embeddings(features, torch.tensor([96]))
    torch.testing.assert_close(got.embeds, want.embeds)


def test_distillation_compares_the_text_after_the_speech_with_the_text_after_the_transcript(tokenizer: Any) -> None:
    """With the speech standing exactly where the transcript's tokens stand, student and teacher read the same
    sequence: the loss is 0. Other speech gives a loss; a row without a teacher distills nothing."""
    model = _word_model(tokenizer, num_prompts=0)
    transcript, after = [10, 11, 12], [13, 14, 15, 16]
    table = model.lm.get_input_embeddings()

    def speech_of(ids: list[list[int]]) -> Any:
        lengths = torch.tensor([len(i) for i in ids])
        width = int(lengths.max())
        embeds = torch.stack([table(torch.tensor(i + [0] * (width - len(i)))) for i in ids])
        return lambda features, feature_lengths: SpeechInputs(embeds, lengths, feature_lengths)

    batch = {
        "features": torch.zeros(2, 8, FEATURE_DIM),
        "feature_lengths": torch.tensor([8, 8]),
        "prefix_ids": torch.tensor([[4], [4]]),
        "prefix_lengths": torch.tensor([1, 1]),
        "text_ids": torch.tensor([after, [*after[:3], 0]]),
        "text_lengths": torch.tensor([4, 3]),
        "labels": torch.full((2, 4), IGNORE),
        "teacher_ids": torch.tensor([[4, *transcript, *after], [4, *transcript, *after[:3], 0]]),
        "teacher_lengths": torch.tensor([8, 7]),
    }

    @torch.no_grad()
    def loss(speech: list[list[int]], teacher_lengths: list[int]) -> float:
        model.speech_embeddings = speech_of(speech)  # type: ignore[method-assign]
        assembled, _ = assemble_inputs(model, batch)
        layers = model.layer_states(assembled.inputs_embeds, assembled.attention_mask)
        return float(
            distill_loss(
                model, layers, assembled.attention_mask, {**batch, "teacher_lengths": torch.tensor(teacher_lengths)}
            )
        )

    assert loss([transcript, transcript], [8, 7]) == pytest.approx(0.0, abs=1e-10)
    assert loss([transcript, [20, 21]], [8, 7]) > 0.01  # row 1 heard other words (and fewer)
    assert loss([transcript, [20, 21]], [8, 0]) == pytest.approx(0.0, abs=1e-10)  # row 1 has no teacher


def test_a_word_stream_feeds_what_the_whole_pass_pools_and_keeps_only_the_open_word() -> None:
    g = torch.Generator().manual_seed(3)
    length = 400
    labels = torch.randint(0, 5, (1, length), generator=g)  # blanks, spaces and three letters: many short words
    labels[0, 100:130] = A  # one long word
    frames = torch.randn(1, length, 6, generator=g)
    want, count, _ = pool_words(frames, torch.tensor([length]), labels, SPACE, pause=3)
    stream, got, kept = WordStream(SPACE, pause=3), [], []
    for start in range(0, length, 7):
        end = min(start + 7, length)
        got.append(stream.push(frames[0, start:end], labels[0, start:end].tolist(), ended=end == length))
        kept.append(stream.pending_frames)
    torch.testing.assert_close(torch.cat(got), want[0, : int(count)])
    assert int(count) > 50 and stream.pending_frames == 0
    assert max(kept) < 7 + 30 + 3  # a chunk, the longest word and a pause: not the frames heard
