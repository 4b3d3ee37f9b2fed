"""Instruction phrasings for the cross-modal tasks (stage 2), shipped in `data_builders/resources/`.

One phrasing per line. A list must hold at least `MIN_PHRASINGS` distinct, non-empty lines, and no line may contain
a template marker or unit-like token (that would change how the formatted text parses back).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from importlib import resources
from typing import Literal

from speechgpt.text.template import INPUT_JOIN, TQ, marker_tokens

Direction = Literal["asr", "tts"]
DIRECTIONS: tuple[Direction, ...] = ("asr", "tts")
MIN_PHRASINGS = 50
_FORBIDDEN = (*marker_tokens(), TQ, INPUT_JOIN.strip())
_UNIT_LIKE = re.compile(r"<\|?u?\d+\|?>")


def validate_instructions(lines: Sequence[str], source: str) -> tuple[str, ...]:
    """The phrasings of `lines` (trailing blank lines ignored); raises ValueError naming the first problem."""
    lines = list(lines)
    while lines and not lines[-1].strip():
        lines.pop()
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ValueError(f"{source}:{number}: empty phrasing")
        if line != line.strip() or "  " in line:
            raise ValueError(f"{source}:{number}: stray whitespace in {line!r}")
        bad = [m for m in _FORBIDDEN if m in line] + _UNIT_LIKE.findall(line)
        if bad:
            raise ValueError(f"{source}:{number}: contains template markup {bad[0]!r}")
        key = line.casefold()
        if key in seen:
            raise ValueError(f"{source}:{number}: duplicate of line {seen[key]}: {line!r}")
        seen[key] = number
    if len(lines) < MIN_PHRASINGS:
        raise ValueError(f"{source}: {len(lines)} phrasings, need at least {MIN_PHRASINGS}")
    return tuple(lines)


@functools.cache
def load_instructions(direction: Direction) -> tuple[str, ...]:
    """The validated phrasings of one direction: 'asr' (speech -> text) or 'tts' (text -> speech)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r} (asr or tts)")
    name = f"{direction}_instructions.txt"
    text = resources.files("data_builders").joinpath("resources", name).read_text(encoding="utf-8")
    return validate_instructions(text.splitlines(), f"data_builders/resources/{name}")


def sample_instruction(direction: Direction, rng: random.Random) -> str:
    """One phrasing drawn with the caller's seeded generator."""
    return rng.choice(load_instructions(direction))


def sample_instructions(direction: Direction, count: int, seed: int) -> list[str]:
    """`count` phrasings drawn (with replacement) from a generator seeded with `seed`."""
    rng = random.Random(seed)
    return [sample_instruction(direction, rng) for _ in range(count)]
