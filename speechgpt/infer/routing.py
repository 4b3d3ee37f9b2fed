"""Route generated token ids to the parts of an answer while it is being generated: transcript text, answer text and
units, each as deltas the caller can show or vocode at once.

Units are recognized by id (`<sosp>`, `<eosp>` and every unit token are single ids in both unit formats), so the text
before `<sosp>` is the only thing decoded. Text deltas are cut from the decoded text of each part with its whitespace
collapsed, holding back a trailing `;`, whitespace, an unfinished UTF-8 character (`\ufffd`) or the start of a spelled
marker until the next token shows what they are; the deltas of a finished part add up to the parser's text for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from speechgpt.infer.constrain import TokenClasses
from speechgpt.text.template import EOA, TA, TQ, UA, marker_tokens

PartKind = Literal["transcript", "text"]
_MARKERS = marker_tokens()


@dataclass
class Delta:
    """New content of one part of the answer."""

    kind: Literal["transcript", "text", "units"]
    text: str = ""
    units: list[int] = field(default_factory=list)


class AnswerRouter:
    """Feed it the generated ids one at a time; it returns what each id added.

    Text before `[ta]` is the transcript for a spoken question (for a text question it is reported as answer text,
    which only happens when the structure constraint is off)."""

    def __init__(self, tokenizer: Any, classes: TokenClasses, speech_in: bool) -> None:
        self.tokenizer, self.classes = tokenizer, classes
        self.first_kind: PartKind = "transcript" if speech_in else "text"
        self.text_ids: list[int] = []
        self.in_speech = False
        self.speech_done = False
        self.text_closed = False
        self.emitted = {"head": "", "tail": ""}

    def feed(self, token: int) -> list[Delta]:
        if self.in_speech:
            if token == self.classes.eosp:
                self.in_speech, self.speech_done = False, True
            elif token in self.classes.unit_index:
                return [Delta("units", units=[self.classes.unit_index[token]])]
            return []
        if token == self.classes.sosp and not self.speech_done:
            self.in_speech = True
            return self._text_deltas(closed=True)
        if self.speech_done or self.text_closed:
            return []
        self.text_ids.append(token)
        return self._text_deltas(closed=False)

    def finish(self) -> list[Delta]:
        """Generation ended: whatever text was held back is final now."""
        return self._text_deltas(closed=True)

    def _text_deltas(self, closed: bool) -> list[Delta]:
        if self.text_closed:
            return []
        body = self.tokenizer.decode(self.text_ids)
        if EOA in body:
            body, closed = body.split(EOA, 1)[0], True
        self.text_closed = closed
        head, has_ta, tail = body.partition(TA)
        parts = [("head", self.first_kind, head.strip().removeprefix(TQ), closed or bool(has_ta))]
        if has_ta:
            answer, has_ua, _ = tail.partition(UA)
            parts.append(("tail", "text", answer, closed or bool(has_ua)))
        deltas = []
        for region, kind, raw, done in parts:
            stable = _stable_text(raw, done)
            previous = self.emitted[region]
            if stable.startswith(previous) and len(stable) > len(previous):
                deltas.append(Delta(kind, text=stable[len(previous) :]))
                self.emitted[region] = stable
        return deltas


def _stable_text(raw: str, closed: bool) -> str:
    """The part's text as the parser will give it, minus a tail that the next tokens could still change."""
    text = " ".join(raw.split())
    if not closed:
        text = text.rstrip("\ufffd")
        for marker in _MARKERS:
            for cut in range(len(marker) - 1, 0, -1):
                if text.endswith(marker[:cut]):
                    text = text[:-cut]
                    break
    return text.rstrip().rstrip(";").rstrip()
