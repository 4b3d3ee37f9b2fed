"""Word pooling: one frozen-LLM input per spoken word, where its token would stand, instead of one per 80 ms.

A small frozen LLM reads a question only when each word is one input in its token's place: the demo's backbone,
given the exact token embeddings of the test questions, answers 43 of 46; with each embedding repeated 4 times (the
rate of 12.5 Hz speech embeddings) 17; with 3 zero vectors after each 10 (benchmarks/frozen_spread_probe.py). So
the adapter is given one vector per word. The encoder's CTC head (characters, input stage 1) finds the words: on
its best path, a word begins where a character other than the space is emitted first or after a space, and it ends
with the last frame of its last character. Word k is the mean of the encoder frames from its beginning to its end.

A word is whole once a space is emitted after it, or once `pause` frames pass with no character after its last one
(a pause between words the head did not mark), or when the stream ends. That is known from the frames heard so far,
so a stream feeds the LLM each word as it becomes whole, exactly the vector a pass over the whole clip gives it, and a
state decision reads the LLM after the last whole word: training and listening see the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLANK = 0


@dataclass(frozen=True)
class Word:
    start: int
    """First frame (its first character)."""
    end: int
    """One past the last frame of its last character."""
    whole_at: int | None
    """Frames heard when it is known to be whole (None: not before the clip's frames ran out)."""


def find_words(labels: list[int], space: int, pause: int) -> list[Word]:
    """The words of a best path (frame labels of one clip, its length only); see the module doc."""
    words: list[Word] = []
    start = end = -1
    previous = BLANK
    for frame, label in enumerate(labels):
        emitted = label != previous
        previous = label
        if start >= 0 and ((label == space and emitted) or (label == BLANK and frame + 1 - end >= pause)):
            words.append(Word(start, end, frame + 1))
            start = -1
        elif label not in (BLANK, space):
            start = frame if start < 0 else start
            end = frame + 1
    if start >= 0:
        words.append(Word(start, end, None))
    return words


def pool_words(
    frames: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, space: int, pause: int
) -> tuple[torch.Tensor, torch.Tensor, list[list[Word]]]:
    """(B, K, D) word vectors (the mean of each word's frames, zero-padded), (B,) word counts (a clip may have none)
    and each clip's words, from (B, T, D) encoder frames and (B, T) best-path labels."""
    found = [find_words(labels[row, :length].tolist(), space, pause) for row, length in enumerate(lengths.tolist())]
    counts = torch.tensor([len(w) for w in found], device=frames.device)
    pooled = frames.new_zeros(frames.shape[0], int(counts.max()) if len(found) else 0, frames.shape[2])
    for row, words in enumerate(found):
        for k, word in enumerate(words):
            pooled[row, k] = frames[row, word.start : word.end].mean(0)
    return pooled, counts, found


def words_whole(words: list[Word], frames_heard: int, ended: bool) -> int:
    """How many of a clip's words are whole after `frames_heard` frames (`ended`: the stream ended there)."""
    return len(words) if ended else sum(w.whole_at is not None and w.whole_at <= frames_heard for w in words)


class WordStream:
    """The words of one stream: push each chunk's encoder frames with their best-path labels, get the vectors of the
    words that became whole (those a pass over the whole clip gives them).

    It keeps only the frames after the last whole word: a word closes on a space or a blank frame, after which the
    best path reads as from a clip's start, so a long stream costs each chunk what its open word costs."""

    def __init__(self, space: int, pause: int) -> None:
        self.space, self.pause = space, pause
        self.frames: torch.Tensor | None = None
        self.labels: list[int] = []

    def push(self, frames: torch.Tensor, labels: list[int], ended: bool) -> torch.Tensor:
        """(n, D) frames and their n labels (`ended`: the stream ends after them) -> (k, D) the newly whole words."""
        heard = frames if self.frames is None else torch.cat([self.frames, frames])
        self.labels += labels
        words = find_words(self.labels, self.space, self.pause)
        whole = words[: words_whole(words, len(self.labels), ended)]
        pooled = [heard[w.start : w.end].mean(0) for w in whole]
        closed = [w.whole_at for w in whole if w.whole_at is not None]  # all of them, until the stream ends
        cut = len(self.labels) if ended else max(closed, default=0)
        self.frames, self.labels = heard[cut:], self.labels[cut:]
        return torch.stack(pooled) if pooled else heard.new_zeros(0, heard.shape[1])

    @property
    def pending_frames(self) -> int:
        """Frames kept: those after the last whole word."""
        return len(self.labels)
