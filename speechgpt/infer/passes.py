"""The passes a chat answer is generated in: one for SpeechGPT's chain of modality, two when a spoken answer is
voiced from its text (`SessionConfig.speak_from="text"`): the chain up to its text answer, then the units."""

from __future__ import annotations

from dataclasses import dataclass, field

from speechgpt.infer.routing import AnswerRouter
from speechgpt.text.template import ParsedAnswer


@dataclass
class AnswerPass:
    """One generation of an answer: its prompt, its router, and what it wrote."""

    prompt_ids: list[int]
    router: AnswerRouter
    forced: str = ""
    """Answer text the prompt already holds (`speak_from="text"`: ` [ta] <answer>; [ua] <sosp>`)."""
    budget: int | None = None
    """Most new tokens; None: the sampling's max_new_tokens."""
    generated: list[int] = field(default_factory=list)
    raw: str = ""


def with_units(chain: ParsedAnswer, spoken: ParsedAnswer) -> ParsedAnswer:
    """The chain's transcript and text answer with the second pass's units."""
    return ParsedAnswer(
        transcript=chain.transcript,
        text=chain.text,
        units=spoken.units,
        problems=chain.problems + spoken.problems,
        complete=chain.complete and spoken.complete,
    )
