"""The SpeechGPT-compatible chat template: one object formats training text (with loss-mask spans) and parses output.

    {system}[Human]: {instruction} This is input: {input}<eoh> [SpeechGPT]: {answer}<eoa>\n[Human]: ...

A chain-of-modality answer reads `{transcript}; [ta] {text answer}; [ua] <sosp>...<eosp>`; parts that a mode does not
have are left out (no transcript for a text question, no `[ua]` for a text answer). In our format every marker is an
added special token (see `marker_tokens`), so none of them can be spelled by ordinary text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from speechgpt.text.units import EOSP, SOSP, UnitFormat

HUMAN, ASSISTANT, EOH, EOA, TA, UA, TQ = "[Human]:", "[SpeechGPT]:", "<eoh>", "<eoa>", "[ta]", "[ua]", "[tq]"
INPUT_JOIN = " This is input: "
SPEECHGPT_SYSTEM = (
    "You are an AI assistant whose name is SpeechGPT.\n"
    "- SpeechGPT is a intrinsic cross-modal conversational language model that is developed by Fudan University.  "
    "SpeechGPT can understand and communicate fluently with human through speech or text chosen by the user.\n"
    "- It can perceive cross-modal inputs and generate cross-modal outputs.\n"
)
LossOn = Literal["answers", "after_system"]
SYSTEM_CONFIG_KEY = "speechgpt_system"
"""Key of the system text in a trained model's config.json (written by the stages, read by chat sessions)."""


def system_text(system: str | None) -> str:
    """The system text of a template: SpeechGPT's for None, else `system` ending in a newline (empty: none)."""
    if system is None:
        return SPEECHGPT_SYSTEM
    return system if not system or system.endswith("\n") else system + "\n"


def marker_tokens() -> list[str]:
    """The template's markers, added to a tokenizer as special tokens in our format."""
    return [HUMAN, ASSISTANT, EOH, EOA, TA, UA, SOSP, EOSP]


@dataclass(frozen=True)
class UserTurn:
    instruction: str = ""
    """What to do ("Transcribe the speech."); may be empty when the input is the whole question."""
    text: str | None = None
    """Text input."""
    units: tuple[int, ...] | None = None
    """Speech input as merged units."""


@dataclass(frozen=True)
class AssistantTurn:
    text: str | None = None
    """Text answer (in a chain: the part after `[ta]`)."""
    units: tuple[int, ...] | None = None
    """Speech answer as units (in a chain: the part after `[ua]`)."""
    transcript: str | None = None
    """Chain of modality: the transcript of a spoken question, said before the answer."""
    chain: bool = False
    """Chain-of-modality layout with `[ta]` / `[ua]` tags."""


@dataclass(frozen=True)
class Formatted:
    text: str
    """The whole training text."""
    loss_spans: list[tuple[int, int]]
    """Character ranges of `text` that are trained on (answers with their `<eoa>` by default)."""
    prompt: str
    """Text before the last answer, ending with `[SpeechGPT]:`: what a model is given at inference."""
    response: str
    """The last answer: a space, the answer, `<eoa>`."""


@dataclass
class ParsedAnswer:
    """A model's answer taken apart; `problems` lists whatever was missing or malformed (parsing never raises)."""

    transcript: str | None = None
    text: str | None = None
    units: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    complete: bool = False
    """The answer ended with `<eoa>`."""


@dataclass(frozen=True)
class ChatTemplate:
    units: UnitFormat
    system: str = SPEECHGPT_SYSTEM
    loss_on: LossOn = "answers"
    """'answers': only the assistant's answers are trained; 'after_system': SpeechGPT's own behaviour."""

    def user_text(self, turn: UserTurn) -> str:
        parts = [turn.instruction.strip()] if turn.instruction.strip() else []
        given = self.units.span(turn.units) if turn.units is not None else turn.text
        if given is not None:
            parts.append(given)
        body = INPUT_JOIN.join(parts) if len(parts) == 2 else "".join(parts)
        return f"{HUMAN} {body}{EOH} {ASSISTANT}"

    def answer_text(self, turn: AssistantTurn) -> str:
        """The answer with its leading space and `<eoa>`: the space belongs to the answer, because BPE tokenizers
        fold it into the next word (`Ġfour`), so a prompt ending at `[SpeechGPT]:` is continued the way it was
        trained."""
        speech = self.units.span(turn.units) if turn.units is not None else None
        if not turn.chain:
            if (speech is None) == (turn.text is None):
                raise ValueError("a plain answer has exactly one of text or units")
            return f" {speech if speech is not None else turn.text}{EOA}"
        parts = [turn.transcript] if turn.transcript is not None else []
        if turn.text is not None:
            parts.append(f"{TA} {turn.text}")
        if speech is not None:
            parts.append(f"{UA} {speech}")
        if not parts:
            raise ValueError("a chain-of-modality answer needs a text or a speech part")
        return " " + "; ".join(parts) + EOA

    def format(self, turns: Sequence[tuple[UserTurn, AssistantTurn]]) -> Formatted:
        """Training text of a (multi-turn) conversation with its loss spans."""
        if not turns:
            raise ValueError("a conversation needs at least one turn")
        text = self.system
        spans: list[tuple[int, int]] = []
        prompt = response = ""
        for index, (user, assistant) in enumerate(turns):
            text += ("\n" if index else "") + self.user_text(user)
            prompt, response = text, self.answer_text(assistant)
            spans.append((len(text), len(text) + len(response)))
            text += response
        if self.loss_on == "after_system":
            spans = [(len(self.system), len(text))]
        return Formatted(text, spans, prompt, response)

    def prompt(self, history: Sequence[tuple[UserTurn, AssistantTurn]], user: UserTurn) -> str:
        """What a model continues at inference: the history, then the new question up to `[SpeechGPT]:`."""
        before = self.format(history).text + "\n" if history else self.system
        return before + self.user_text(user)

    def parse(self, output: str, expect_speech: bool | None = None) -> ParsedAnswer:
        """Take apart an answer (the text after the last `[SpeechGPT]:`, or a whole generation)."""
        return parse_answer(output, self.units, expect_speech)


def parse_answer(output: str, units: UnitFormat, expect_speech: bool | None = None) -> ParsedAnswer:
    result = ParsedAnswer()
    body = output.rsplit(ASSISTANT, 1)[-1]
    if EOA in body:
        body, result.complete = body.split(EOA, 1)[0], True
    else:
        result.problems.append("no <eoa>: the answer was cut off")
    body = body.strip()
    if TA in body or UA in body:
        _parse_chain(body, units, result)
    elif SOSP in body or units.pattern.search(body):
        result.units = _read_speech(body, units, result.problems)
    else:
        result.text = body
    if expect_speech and not result.units:
        result.problems.append("no speech answer ([ua] with units) where one was expected")
    return result


def _parse_chain(body: str, units: UnitFormat, result: ParsedAnswer) -> None:
    head, _, speech = body.partition(UA)
    transcript_part, has_ta, text_part = head.partition(TA)
    transcript = transcript_part.strip().removeprefix(TQ).strip().rstrip(";").strip()
    result.transcript = _clean_text(transcript, units, result.problems, "transcript") or None
    if has_ta:
        result.text = _clean_text(text_part.strip().rstrip(";").strip(), units, result.problems, "text answer")
    else:
        result.problems.append("no [ta]: the chain has no text answer")
    if UA in body:
        result.units = _read_speech(speech.strip(), units, result.problems)
        if not result.units:
            result.problems.append("[ua] without units")


def _clean_text(text: str, units: UnitFormat, problems: list[str], where: str) -> str:
    """Text parts must hold no unit tokens or unit spans; strip them and report."""
    cleaned = re.sub(re.escape(SOSP) + r".*?(" + re.escape(EOSP) + r"|$)", "", text, flags=re.DOTALL)
    cleaned = units.pattern.sub("", cleaned)
    if cleaned != text:
        problems.append(f"units inside the {where}")
    return " ".join(cleaned.split())


def _read_speech(part: str, units: UnitFormat, problems: list[str]) -> list[int]:
    if not part.startswith(SOSP):
        problems.append("speech answer does not start with <sosp>")
    body = part.removeprefix(SOSP)
    if EOSP in body:
        body, rest = body.split(EOSP, 1)
        if rest.strip():
            problems.append(f"text after the unit span: {rest.strip()[:40]!r}")
    else:
        problems.append("unclosed unit span: no <eosp>")
    found, span_problems = units.read_span(body)
    problems.extend(span_problems)
    return found
