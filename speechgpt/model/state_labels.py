"""Per-chunk labels for the frozen-LLM variant's state head, from what the data says about each clip.

At the end of every 160 ms chunk the head decides: 0 keep listening, 1 answer now, 2 ignore (go back to listening
without answering). Freeze-Omni's listening loop acts on 1 and 2 alike as end-of-turn decisions, so a clip's labels
are 0 while its speech lasts and, from the first chunk heard in full after the speech ended, 1 for a question
addressed to the assistant and 2 for anything else (corpus sentences that are not questions, noise).
"""

from __future__ import annotations

import math

KEEP_LISTENING, ANSWER, IGNORE_SPEECH = 0, 1, 2
STATE_NAMES = ("keep_listening", "answer", "ignore")


def chunk_state_labels(
    num_chunks: int,
    *,
    speech_end_s: float,
    addressed: bool,
    chunk_s: float = 0.16,
    min_silence_s: float | None = None,
) -> list[int]:
    """Labels of a clip's `num_chunks` chunks (chunk c ends at (c + 1) * chunk_s seconds).

    A chunk ends the turn once at least `min_silence_s` (one chunk by default) has passed since `speech_end_s`,
    i.e. after a whole chunk of silence; every later chunk too. The last chunk ends the turn in any case, so each
    clip teaches its decision even when its trailing silence is shorter than that."""
    if num_chunks < 1:
        return []
    silence = chunk_s if min_silence_s is None else min_silence_s
    end_label = ANSWER if addressed else IGNORE_SPEECH
    # the small tolerance keeps a boundary that lands exactly on speech_end + silence from rounding away
    first_end = math.ceil((speech_end_s + silence) / chunk_s - 1e-6) - 1
    first_end = min(max(first_end, 0), num_chunks - 1)
    return [KEEP_LISTENING] * first_end + [end_label] * (num_chunks - first_end)
