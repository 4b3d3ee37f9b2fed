"""What a chat turn gives back: `ChatResult` (the parsed answer, raw text, timings, audio) and the `ChatEvent`s that
`ChatSession.stream` yields while the answer is made. Both are JSON-ready through `to_json()` (audio is left out of
the JSON: only its length in samples and seconds is kept; the samples stay on the object as float32 numpy arrays)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from speechgpt.text.template import ParsedAnswer

Mode = Literal["s2s", "s2t", "t2s", "t2t"]
"""Question and answer modality: s2s speech->speech, s2t speech->text, t2s text->speech, t2t text->text."""
EventKind = Literal["state", "transcript", "text", "units", "audio", "done"]
MODES: tuple[Mode, ...] = ("s2s", "s2t", "t2s", "t2t")


@dataclass
class Timings:
    """Seconds, measured from the start of the call (`*_s` points in time) or summed (`*_time_s` durations)."""

    units_time_s: float = 0.0
    """Spent turning the spoken question into units (speech_to_units)."""
    first_token_s: float | None = None
    """When the first answer token existed."""
    last_token_s: float | None = None
    """When generation ended (its last token existed)."""
    first_audio_s: float | None = None
    """When the first audio samples existed (streamed: the first chunk; whole: the whole answer). None: no audio."""
    generate_time_s: float = 0.0
    """From the start of generation to its last token."""
    vocode_time_s: float = 0.0
    """Spent inside the vocoder."""
    total_s: float = 0.0
    """The whole call."""


@dataclass
class ChatResult:
    """One answered turn."""

    mode: Mode
    """Question -> answer modality."""
    answer: ParsedAnswer
    """The parser's reading of the answer: transcript, text, units, problems, complete."""
    raw: str
    """The generated text exactly as decoded (markers and unit tokens included); an answer voiced from its text
    (`SessionConfig.speak_from="text"`) gives the chain's pass, then the units pass."""
    question_text: str | None
    """The text question, or None for a spoken one."""
    question_units: list[int] | None
    """The spoken question's merged units, or None for a text one."""
    prompt_tokens: int
    """Tokens in the prompt the model was given (system, kept history, question)."""
    new_tokens: int
    """Tokens generated."""
    dropped_turns: int
    """Oldest history turns dropped to keep the prompt within its budget."""
    constrained: bool
    """Whether structure-constrained decoding was on."""
    audio_streamed: bool
    """Audio was produced chunk by chunk during generation (False: synthesized once at the end, or no audio)."""
    timings: Timings = field(default_factory=Timings)
    """Where the time went."""
    sample_rate: int | None = None
    """Sample rate of `audio`."""
    audio: np.ndarray | None = field(default=None, repr=False)
    """The spoken answer, float32 mono (None: a text answer, or no vocoder)."""
    listening: dict[str, Any] | None = None
    """Frozen-LLM variant, spoken question: the state head's decision per 160 ms chunk, the outcome and the
    latencies (speechgpt.infer.listening.Turn.to_json); None for the unified variant."""

    def to_json(self) -> dict[str, Any]:
        """Everything but the samples, as plain JSON types."""
        out = {k: v for k, v in asdict(self).items() if k != "audio"}
        samples = 0 if self.audio is None else len(self.audio)
        out["audio_samples"] = samples
        out["audio_seconds"] = samples / self.sample_rate if self.sample_rate else 0.0
        return out


@dataclass
class ChatEvent:
    """Something that happened while answering, in order. `kind`:
    - "state": the frozen-LLM variant's state head decided at the end of chunk `chunk`: `text` is the decision
      (keep_listening, answer, ignore);
    - "transcript": `text` is the next piece of the transcript of the spoken question;
    - "text": `text` is the next piece of the text answer;
    - "units": `units` are the next units of the spoken answer;
    - "audio": `audio` is the next chunk of the spoken answer (float32 at `sample_rate`);
    - "done": `result` is the full ChatResult (always the last event)."""

    kind: EventKind
    text: str = ""
    units: list[int] = field(default_factory=list)
    audio: np.ndarray | None = field(default=None, repr=False)
    sample_rate: int | None = None
    result: ChatResult | None = None
    chunk: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "state":
            out["state"], out["chunk"] = self.text, self.chunk
        elif self.kind in ("transcript", "text"):
            out["text"] = self.text
        elif self.kind == "units":
            out["units"] = list(self.units)
        elif self.kind == "audio":
            out["audio_samples"] = 0 if self.audio is None else len(self.audio)
            out["sample_rate"] = self.sample_rate
        elif self.result is not None:
            out["result"] = self.result.to_json()
        return out
