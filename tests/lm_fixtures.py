"""Tiny causal LMs and instruct datasets made at test time (no downloads)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from data_builders.instruct_common import Example, TokenCounter, to_row, write_instruct_dataset
from speechgpt.model.tiny import build_tiny_lm, train_tokenizer
from speechgpt.text.template import AssistantTurn, ChatTemplate, UserTurn
from speechgpt.text.units import UnitFormat

K = 20
UNITS = UnitFormat("default", K)
SYSTEM = "You are a speech assistant.\n"
WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "what",
    "is",
    "plus",
    "minus",
    "the",
    "answer",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))) for _ in range(count)]


def make_tiny_lm(out: Path, family: str = "llama", tie: bool = True) -> Path:
    tokenizer = train_tokenizer([*sentences(200), SYSTEM, "[Human]: [SpeechGPT]: Transcribe. Say it."], 400)
    model = build_tiny_lm(family, tokenizer, hidden_size=64, num_layers=2, num_heads=4, tie_embeddings=tie)  # type: ignore[arg-type]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_instruct_dataset(out: Path, tasks: list[str], count: int = 60, seed: int = 0) -> Path:
    """`count` examples cycling over `tasks`, 80% train / 20% dev, units random but fixed per sentence."""
    rng = random.Random(seed)
    template = ChatTemplate(UNITS, system=SYSTEM)
    examples = []
    for i, text in enumerate(sentences(count, seed)):
        units = tuple(rng.randrange(K) for _ in range(rng.randint(4, 10)))
        task = tasks[i % len(tasks)]
        split = "train" if i < int(count * 0.8) else "dev"
        examples.append(Example(f"{task}-{i:03d}", task, split, _turns(task, text, units), [str(i)], units))  # type: ignore[arg-type]
    count_tokens = TokenCounter(UNITS)
    rows = [to_row(e, template, count_tokens) for e in examples]
    write_instruct_dataset(rows, out, skipped=Counter(), extra=None if tasks == ["unit_lm"] else {"system": SYSTEM})
    return out


def _turns(task: str, text: str, units: tuple[int, ...]):
    if task == "unit_lm":
        return None
    if task == "asr":
        return [(UserTurn(instruction="Transcribe.", units=units), AssistantTurn(text=text))]
    if task == "tts":
        return [(UserTurn(instruction="Say it.", text=text), AssistantTurn(units=units))]
    speech_in, speech_out = task[4] == "s", task[-1] == "s"
    user = UserTurn(units=units) if speech_in else UserTurn(text=text)
    answer = AssistantTurn(
        transcript=text if speech_in else None,
        text="the answer is " + text.split()[0],
        units=units[::-1] if speech_out else None,
        chain=True,
    )
    return [(user, answer)]
