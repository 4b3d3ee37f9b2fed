"""Reading formatted conversations back into turns, and SpeechInstruct JSONL records in and out.

SpeechGPT publishes its data as JSONL records `{"prefix": ..., "plain_text": ...}` (plain_text = prefix + answer)
with legacy unit tokens (`<661>`). Reading is tolerant of the spacing variants found in that data.
"""

from __future__ import annotations

from dataclasses import dataclass

from speechgpt.text.template import (
    ASSISTANT,
    EOA,
    EOH,
    HUMAN,
    INPUT_JOIN,
    AssistantTurn,
    ChatTemplate,
    Formatted,
    UserTurn,
    parse_answer,
)
from speechgpt.text.units import EOSP, SOSP, UnitFormat

Turn = tuple[UserTurn, AssistantTurn]


@dataclass(frozen=True)
class Conversation:
    system: str
    turns: list[Turn]


class ConversationError(ValueError):
    """Formatted text that does not follow the template."""


def parse_conversation(text: str, units: UnitFormat) -> Conversation:
    """Inverse of `ChatTemplate.format` (for text in canonical form); raises ConversationError naming the problem."""
    if HUMAN not in text:
        raise ConversationError(f"no {HUMAN!r} marker")
    system, *chunks = text.split(HUMAN)
    turns = []
    for number, chunk in enumerate(chunks, start=1):
        if EOH not in chunk or ASSISTANT not in chunk:
            raise ConversationError(f"turn {number}: missing {EOH!r} or {ASSISTANT!r}")
        user_part, answer_part = chunk.split(EOH, 1)
        answer = answer_part.split(ASSISTANT, 1)[1]
        if EOA not in answer:
            raise ConversationError(f"turn {number}: answer without {EOA!r}")
        turns.append((_read_user(user_part, units, number), _read_answer(answer.split(EOA, 1)[0], units, number)))
    return Conversation(system, turns)


def _read_user(part: str, units: UnitFormat, number: int) -> UserTurn:
    instruction, joined, given = part.strip().partition(INPUT_JOIN.strip())
    if not joined:
        instruction, given = "", instruction
        if not given.startswith(SOSP):
            return UserTurn(instruction=given)
    given = given.strip()
    if given.startswith(SOSP):
        found, problems = units.read_span(given.removeprefix(SOSP).split(EOSP, 1)[0])
        if problems or not given.endswith(EOSP):
            raise ConversationError(f"turn {number}: bad unit input: {problems or 'no <eosp>'}")
        return UserTurn(instruction=instruction.strip(), units=tuple(found))
    return UserTurn(instruction=instruction.strip(), text=given)


def _read_answer(answer: str, units: UnitFormat, number: int) -> AssistantTurn:
    parsed = parse_answer(answer + EOA, units)
    if parsed.problems:
        raise ConversationError(f"turn {number}: {'; '.join(parsed.problems)}")
    chain = "[ta]" in answer or "[ua]" in answer
    speech = tuple(parsed.units) if SOSP in answer else None
    return AssistantTurn(text=parsed.text, units=speech, transcript=parsed.transcript, chain=chain)


def to_speechinstruct(formatted: Formatted) -> dict[str, str]:
    """A SpeechInstruct JSONL record: `prefix` is what the model is given (SpeechGPT's ends with
    `[SpeechGPT]: `, space included), `plain_text` the whole text."""
    cut = len(formatted.prompt) + (1 if formatted.response.startswith(" ") else 0)
    return {"prefix": formatted.text[:cut], "plain_text": formatted.text}


def from_speechinstruct(record: dict[str, str], template: ChatTemplate) -> Conversation:
    """Turns of a SpeechInstruct record, validated against the template's unit format."""
    text = record.get("plain_text")
    if not isinstance(text, str):
        raise ConversationError("record has no 'plain_text' string")
    prefix = record.get("prefix")
    if isinstance(prefix, str) and not text.startswith(prefix):
        raise ConversationError("'plain_text' does not start with 'prefix'")
    return parse_conversation(text, template.units)
