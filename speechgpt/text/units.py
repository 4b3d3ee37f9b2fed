"""How speech units are written as text.

`default`: one added token per unit, `<|u123|>`, a form that ordinary text never contains, so units cannot collide
with words like `<5>`. `legacy`: SpeechGPT's released data and checkpoints, `<661>`. Either way a span of units is
wrapped in `<sosp>` .. `<eosp>`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

SOSP, EOSP = "<sosp>", "<eosp>"
UnitFormatName = Literal["default", "legacy"]


@dataclass(frozen=True)
class UnitFormat:
    """Writes and reads unit tokens of one format for a codebook of `k` units."""

    name: UnitFormatName
    k: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be >= 1")
        if self.name not in ("default", "legacy"):
            raise ValueError(f"unknown unit format {self.name!r} (default or legacy)")

    @property
    def pattern(self) -> re.Pattern[str]:
        """Matches one unit token; group 1 is the id."""
        return _DEFAULT if self.name == "default" else _LEGACY

    def token(self, unit: int) -> str:
        return f"<|u{unit}|>" if self.name == "default" else f"<{unit}>"

    def tokens(self) -> list[str]:
        """Every unit token, id order: what a tokenizer needs added."""
        return [self.token(u) for u in range(self.k)]

    def span(self, units: Sequence[int]) -> str:
        """`<sosp>` + one token per unit + `<eosp>`; raises for ids outside the codebook."""
        bad = [u for u in units if not 0 <= u < self.k]
        if bad:
            raise ValueError(f"unit ids {bad[:5]} outside 0..{self.k - 1}")
        return SOSP + "".join(self.token(u) for u in units) + EOSP

    def read_span(self, body: str) -> tuple[list[int], list[str]]:
        """Unit ids of the text between `<sosp>` and `<eosp>`, and problems found (never raises)."""
        units: list[int] = []
        problems: list[str] = []
        position = 0
        for match in self.pattern.finditer(body):
            stray = body[position : match.start()].strip()
            if stray:
                problems.append(f"text inside unit span: {stray[:40]!r}")
            unit = int(match.group(1))
            if unit < self.k:
                units.append(unit)
            else:
                problems.append(f"unknown unit id {unit}")
            position = match.end()
        stray = body[position:].strip()
        if stray:
            problems.append(f"text inside unit span: {stray[:40]!r}")
        return units, problems


_DEFAULT = re.compile(r"<\|u(\d+)\|>")
_LEGACY = re.compile(r"<(\d+)>")


def convert_units_text(text: str, source: UnitFormat, target: UnitFormat) -> str:
    """Rewrite the unit tokens inside every `<sosp>`..`<eosp>` span from one format to another."""

    def rewrite(match: re.Match[str]) -> str:
        units, _ = source.read_span(match.group(1))
        return target.span(units)

    return re.sub(re.escape(SOSP) + r"(.*?)" + re.escape(EOSP), rewrite, text, flags=re.DOTALL)


def detect_unit_format(tokenizer: Any) -> UnitFormat:
    """The unit format a tokenizer was extended with: `<|u0|>`, `<|u1|>`, ... (default) or `<0>`, `<1>`, ... (legacy
    SpeechGPT); k counts the consecutive ids from 0. A tokenizer without unit tokens is an error."""
    vocab = tokenizer.get_vocab()
    names: tuple[UnitFormatName, ...] = ("default", "legacy")
    for name in names:
        probe = UnitFormat(name, 1)
        k = 0
        while probe.token(k) in vocab:
            k += 1
        if k:
            return UnitFormat(name, k)
    raise ValueError("the tokenizer has no unit tokens (<|u0|> or <0>): is this a speech LM from stage 1 or later?")
