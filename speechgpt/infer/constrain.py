"""Structure-constrained decoding: a `LogitsProcessor` that keeps a generated answer inside the chat template.

The answer after `[SpeechGPT]:` is walked as a small state machine over the generated token ids:

    transcript  (speech question only) text, left by a `;` token; then ` [ta]` is forced
    text        text; left by `;` (speech answer: ` [ua] <sosp>` is forced) or by `<eoa>` (text answer)
    units       unit tokens only; `<eosp>` once `min_units` are out (forced at `max_units`); then `<eoa>` is forced
    done

A text question starts in `text` with ` [ta]` forced; a spoken one may start with a forced ` [tq]` (SpeechGPT's
released answers do); a units-only answer, whose prompt already ends with its text answer and ` [ua] <sosp>`, starts in
`units`. How transitions are seen (BPE realities):
- Markers and units are added tokens in our format, so each is one id; in SpeechGPT's legacy layout only units,
  `<sosp>` and `<eosp>` are, and `[ta]`, `<eoa>`, ... are spelled by ordinary tokens. Either way the model never
  writes a marker freely: it chooses a *trigger* (a token that reads `;`, or the first id of `<eoa>`) and the processor
  forces the rest, with ids found by encoding the marker after a probe word (BPE splits depend on the left context).
  The state therefore follows from token ids alone; nothing is re-parsed.
- Text parts may not contain tokens whose text holds `<` or `[` (every marker and unit token starts with one, so none
  can be spelled out of pieces) or `;` (the part separator) other than a trigger; nor added special tokens.
- Text parts must hold visible text before they may end, so the parser never sees an empty transcript or answer.
- `max_new_tokens` is a hard budget: when only the tokens needed to close the answer remain, the shortest closing
  path is forced, so a constrained answer always ends with `<eoa>` and parses without problems.
`StructureDone` stops generation when the machine reaches `done`; `EndOfAnswer` stops an unconstrained one at `<eoa>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria

from speechgpt.text.template import EOA, TA, TQ, UA, marker_tokens
from speechgpt.text.units import EOSP, SOSP, UnitFormat

_PROBE = "a"
_BANNED_IN_TEXT = ("<", "[")


def encode_continuation(tokenizer: Any, text: str) -> list[int]:
    """Ids that spell `text` right after other text: encoded behind a probe word, which is then cut off."""
    alone = tokenizer.encode(_PROBE, add_special_tokens=False)
    joined = tokenizer.encode(_PROBE + text, add_special_tokens=False)
    if joined[: len(alone)] == alone and len(joined) > len(alone):
        return list(joined[len(alone) :])
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True, kw_only=True)
class AnswerShape:
    """What a mode's answer must contain."""

    transcript: bool
    """A spoken question: the answer starts with its transcript, then `; [ta]`."""
    transcript_tag: bool = False
    """Open the transcript with `[tq]` (SpeechGPT's released chain-of-modality answers do; our data does not)."""
    speech: bool
    """A spoken answer: `; [ua] <sosp>units<eosp>` follows the text answer; otherwise `<eoa>` does."""
    min_units: int = 1
    """Fewest units in a spoken answer."""
    max_units: int | None = None
    """Most units in a spoken answer (`<eosp>` is forced there); None: only `max_new_tokens` limits them."""
    units_only: bool = False
    """The prompt already ends with the text answer and ` [ua] <sosp>`: only the units, `<eosp>` and `<eoa>` are
    written (a spoken answer voiced from its text, `SessionConfig.speak_from`)."""

    def __post_init__(self) -> None:
        if self.min_units < 1 or (self.max_units is not None and self.max_units < self.min_units):
            raise ValueError(f"need 1 <= min_units <= max_units, got {self.min_units}, {self.max_units}")
        if self.units_only and (self.transcript or not self.speech):
            raise ValueError("a units-only answer is a spoken answer with no transcript")


class TokenClasses:
    """What each id of a tokenizer may be used for in an answer; built once per tokenizer (decodes the vocabulary)."""

    def __init__(self, tokenizer: Any, units: UnitFormat) -> None:
        self.tokenizer = tokenizer
        self.units = units
        self.size = len(tokenizer)
        self.unit_ids = self._single_ids(units.tokens(), required=True)
        self.sosp, self.eosp = self._single_ids([SOSP, EOSP], required=True)
        self.markers = {m: i for m, i in zip(marker_tokens(), self._single_ids(marker_tokens()), strict=True) if i >= 0}
        special = set(tokenizer.all_special_ids) | set(self.unit_ids) | set(self.markers.values())
        special |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self.text_ok = torch.zeros(self.size, dtype=torch.bool)
        self.content_ok = torch.zeros(self.size, dtype=torch.bool)
        self.separators: set[int] = set()
        tokens = tokenizer.convert_ids_to_tokens(list(range(self.size)))
        for index, token in enumerate(tokens):
            if index in special or token is None:
                continue
            text = tokenizer.convert_tokens_to_string([token])
            if text.lstrip() == ";":
                self.separators.add(index)
            elif text and not any(c in text for c in (*_BANNED_IN_TEXT, ";")):
                self.text_ok[index] = True
                self.content_ok[index] = bool(text.strip())
        if not self.separators or not bool(self.content_ok.any()):
            raise ValueError("the tokenizer has no `;` token or no text tokens; cannot constrain answers")
        self.unit_index = {token_id: unit for unit, token_id in enumerate(self.unit_ids)}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = tokenizer.eos_token_id
        self.eos_id = eos if eos is not None and eos not in self.unit_index and not self.text_ok[eos] else None

    def _single_ids(self, tokens: list[str], required: bool = False) -> list[int]:
        ids = []
        for token in tokens:
            found = self.tokenizer.convert_tokens_to_ids(token)
            if found is None or found == self.tokenizer.unk_token_id:
                if required:
                    raise ValueError(f"tokenizer has no single token {token!r}")
                found = -1
            ids.append(int(found))
        return ids

    @cached_property
    def sequences(self) -> dict[str, list[int]]:
        """Forced id sequences: after a `;` trigger, closing a part on budget, and the answer's end."""
        cont = lambda text: encode_continuation(self.tokenizer, text)  # noqa: E731
        return {
            "open_text": cont(f" {TA}"),
            "open_transcript": cont(f" {TQ}"),
            "after_sep_ta": cont(f" {TA}"),
            "close_transcript": cont(f"; {TA}"),
            "after_sep_ua": cont(f" {UA} {SOSP}"),
            "close_text_speech": cont(f"; {UA} {SOSP}"),
            "eoa": cont(EOA),
        }


def fewest_new_tokens(classes: TokenClasses, shape: AnswerShape) -> int:
    """The fewest tokens an answer of this shape is written in: its forced markers, one visible token per text part
    and `min_units` units."""
    seq = classes.sequences
    if shape.units_only:
        return shape.min_units + 1 + len(seq["eoa"])
    text = 1 + _tail_after_text(shape, seq)
    if shape.transcript:
        tag = len(seq["open_transcript"]) if shape.transcript_tag else 0
        return tag + 1 + len(seq["close_transcript"]) + text
    return len(seq["open_text"]) + text


def _tail_after_text(shape: AnswerShape, seq: dict[str, list[int]]) -> int:
    """Tokens that close an answer after its text part: `; [ua] <sosp>`, the units, `<eosp>`, `<eoa>` (or `<eoa>`)."""
    if shape.speech:
        return len(seq["close_text_speech"]) + shape.min_units + 1 + len(seq["eoa"])
    return len(seq["eoa"])


@dataclass
class _Row:
    phase: str
    forced: list[int] = field(default_factory=list)
    content: bool = False
    units: int = 0
    generated: int = 0
    finished: bool = False


class StructureConstraint(LogitsProcessor):
    """Masks every token the template does not allow next (see the module docstring); one instance per `generate`."""

    def __init__(self, classes: TokenClasses, shape: AnswerShape, max_new_tokens: int) -> None:
        self.classes, self.shape, self.max_new_tokens = classes, shape, max_new_tokens
        self.seq = classes.sequences
        self._rows: list[_Row] = []
        self._start: int | None = None
        self._seen = 0
        self._masks: dict[tuple[str, int], torch.Tensor] = {}
        need = fewest_new_tokens(classes, shape)
        if max_new_tokens < need:
            raise ValueError(f"max_new_tokens={max_new_tokens} cannot hold this answer's structure (needs {need})")

    # -- budget: the fewest tokens that still close the answer -------------------------------------------------
    def _need(self, row: _Row) -> int:
        if row.phase == "transcript":
            rest = (
                (0 if row.content else 1)
                + len(self.seq["close_transcript"])
                + 1
                + _tail_after_text(self.shape, self.seq)
            )
        elif row.phase == "text":
            rest = (0 if row.content else 1) + _tail_after_text(self.shape, self.seq)
        elif row.phase == "units":
            rest = max(0, self.shape.min_units - row.units) + 1 + len(self.seq["eoa"])
        else:
            rest = 0
        return len(row.forced) + rest

    # -- following the generated ids ------------------------------------------------------------------------------
    def observe(self, input_ids: torch.Tensor) -> None:
        """Advance every row over ids it has not seen; called by the processor and by `StructureDone`."""
        if self._start is None:
            self._start = self._seen = input_ids.shape[1]
            self._rows = [self._initial_row() for _ in range(input_ids.shape[0])]
        for position in range(self._seen, input_ids.shape[1]):
            for row, token in zip(self._rows, input_ids[:, position].tolist(), strict=True):
                if not row.finished:
                    self._advance(row, int(token))
        self._seen = input_ids.shape[1]

    def _initial_row(self) -> _Row:
        if self.shape.units_only:
            return _Row("units")
        if self.shape.transcript:
            return _Row("transcript", forced=list(self.seq["open_transcript"]) if self.shape.transcript_tag else [])
        return _Row("text", forced=list(self.seq["open_text"]))

    def _advance(self, row: _Row, token: int) -> None:
        row.generated += 1
        if row.forced:
            row.forced.pop(0)
        elif row.phase in ("transcript", "text"):
            if token in self.classes.separators:
                self._enter_next_part(row, after_separator=True)
            elif row.phase == "text" and not self.shape.speech and token == self.seq["eoa"][0]:
                row.phase, row.forced = "done", list(self.seq["eoa"][1:])
            elif token < self.classes.size and bool(self.classes.content_ok[token]):
                row.content = True
        elif row.phase == "units":
            if token == self.classes.eosp:
                row.phase, row.forced = "done", list(self.seq["eoa"])
            elif token in self.classes.unit_index:
                row.units += 1
        if row.phase == "done" and not row.forced:
            row.finished = True

    def _enter_next_part(self, row: _Row, after_separator: bool) -> None:
        """Leave the current text part: force what follows (` [ta]` or ` [ua] <sosp>`, or `<eoa>`)."""
        if row.phase == "transcript":
            row.phase, row.content = "text", False
            row.forced = list(self.seq["after_sep_ta" if after_separator else "close_transcript"])
        elif self.shape.speech:
            row.phase = "units"
            row.forced = list(self.seq["after_sep_ua" if after_separator else "close_text_speech"])
        else:
            row.phase, row.forced = "done", list(self.seq["eoa"])

    # -- masking ----------------------------------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.observe(input_ids)
        allowed = torch.stack([self._allowed(row, scores.shape[-1]) for row in self._rows]).to(scores.device)
        scores = self._eos_ends_part(scores, allowed)
        return scores.masked_fill(~allowed, float("-inf"))  # type: ignore[return-value]

    def _eos_ends_part(self, scores: torch.FloatTensor, allowed: torch.Tensor) -> torch.FloatTensor:
        """The model's own EOS inside a transcript or a text answer means that part is over: its probability goes
        to the part's exit (`;` or `<eoa>`), so an LLM that learned to end texts with EOS (its pre-training, text
        replayed beside speech) ends the part there instead of writing on with its next-best token."""
        eos = self.classes.eos_id
        if eos is None:
            return scores
        scores = scores.clone()  # type: ignore[assignment]
        for index, row in enumerate(self._rows):
            if row.finished or row.forced or row.phase not in ("transcript", "text") or not row.content:
                continue
            exits = [token for token, _ in self._exits(row) if allowed[index, token]]
            if exits:
                scores[index, exits[0]] = torch.logaddexp(scores[index, exits[0]], scores[index, eos])
        return scores

    def _allowed(self, row: _Row, vocab: int) -> torch.Tensor:
        remaining = self.max_new_tokens - row.generated
        if not row.finished and not row.forced and row.phase != "done" and remaining <= self._need(row):
            self._close_on_budget(row)
        if row.finished or row.forced:
            return self._only(row.forced[0] if row.forced else self.classes.pad_id, vocab)
        if row.phase == "units":
            mask = self._mask("units", vocab).clone()
            if self.shape.max_units is not None and row.units >= self.shape.max_units:
                mask[:] = False
            if row.units >= self.shape.min_units:
                mask[self.classes.eosp] = True
            return mask
        must_write = remaining <= self._need(row)  # no visible text yet, and only one token to spare for it
        mask = self._mask("content" if must_write else "text", vocab).clone()
        if row.content:
            for token, after in self._exits(row):
                if remaining - 1 - after >= self._need_after_exit(row):
                    mask[token] = True
        return mask

    def _exits(self, row: _Row) -> list[tuple[int, int]]:
        """(trigger id, forced length after it) for leaving the current part."""
        if row.phase == "text" and not self.shape.speech:
            return [(self.seq["eoa"][0], len(self.seq["eoa"]) - 1)]
        after = len(self.seq["after_sep_ta" if row.phase == "transcript" else "after_sep_ua"])
        return [(token, after) for token in sorted(self.classes.separators)]

    def _need_after_exit(self, row: _Row) -> int:
        if row.phase == "transcript":
            return 1 + _tail_after_text(self.shape, self.seq)
        if self.shape.speech:
            return self.shape.min_units + 1 + len(self.seq["eoa"])
        return 0

    def _close_on_budget(self, row: _Row) -> None:
        if row.phase == "units":
            if row.units >= self.shape.min_units:
                row.phase, row.forced = "done", [self.classes.eosp, *self.seq["eoa"]]
        elif row.content:
            self._enter_next_part(row, after_separator=False)

    def _mask(self, kind: str, vocab: int) -> torch.Tensor:
        key = (kind, vocab)
        if key not in self._masks:
            mask = torch.zeros(vocab, dtype=torch.bool)
            size = min(vocab, self.classes.size)
            if kind == "units":
                mask[self.classes.unit_ids] = True
            else:
                mask[:size] = (self.classes.content_ok if kind == "content" else self.classes.text_ok)[:size]
            self._masks[key] = mask
        return self._masks[key]

    def _only(self, token: int, vocab: int) -> torch.Tensor:
        mask = torch.zeros(vocab, dtype=torch.bool)
        mask[token] = True
        return mask

    @property
    def finished(self) -> list[bool]:
        return [row.finished for row in self._rows]


class StructureDone(StoppingCriteria):
    """Stops each row once its constrained answer is complete (its `<eoa>` is out)."""

    def __init__(self, constraint: StructureConstraint) -> None:
        self.constraint = constraint

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        self.constraint.observe(input_ids)
        return torch.tensor(self.constraint.finished, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


class EndOfAnswer(StoppingCriteria):
    """Stops an unconstrained row when its generated text ends with `<eoa>` (one id or spelled out)."""

    def __init__(self, tokenizer: Any, prompt_length: int) -> None:
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        tails = [self.tokenizer.decode(row[max(self.prompt_length, len(row) - 8) :]) for row in input_ids.tolist()]
        return torch.tensor([EOA in tail for tail in tails], dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]
