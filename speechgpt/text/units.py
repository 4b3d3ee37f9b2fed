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
    """The unit format and codebook size a tokenizer was extended with (`<|u0|>`.. or legacy `<0>`..), read from its
    vocabulary; a tokenizer without unit tokens is an error."""
    vocab = tokenizer.get_vocab()
    for name in ("default", "legacy"):
        pattern = _DEFAULT if name == "default" else _LEGACY
        ids = [int(m.group(1)) for token in vocab if (m := pattern.fullmatch(token))]
        if ids:
            if sorted(ids) != list(range(len(ids))):
                raise ValueError(f"the tokenizer's {name} unit tokens are not 0..{len(ids) - 1} without gaps")
            return UnitFormat(name, len(ids))  # type: ignore[arg-type]
    raise ValueError("the tokenizer has no unit tokens (<|u0|>.. or <0>..): was it extended with add_speech_tokens?")
