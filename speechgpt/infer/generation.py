"""Sampling settings and token streaming: `generate` runs in a worker thread and hands each new token id to the
caller as soon as it exists, so the caller can vocode units while the model keeps generating.

Processor order inside `generate`: repetition penalty, then ours (the structure constraint), then temperature, top-k
and top-p, so sampling only ever spreads probability over tokens the template allows.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

_END = object()


@dataclass(kw_only=True)
class Sampling:
    """How the answer is decoded."""

    greedy: bool = False
    """Always take the most likely token (temperature, top_p, top_k and seed are then unused)."""
    temperature: float = 0.8
    """Softmax temperature for sampling (SpeechGPT's default: 0.8)."""
    top_p: float = 0.8
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (1.0: off)."""
    top_k: int = 60
    """Keep the k most likely tokens (0: off)."""
    repetition_penalty: float = 1.0
    """Divides the logits of tokens already in the sequence (1.0: off); it also touches recurring unit tokens."""
    max_new_tokens: int = 512
    """Most tokens in one answer, units included; a constrained answer is closed in time to fit."""
    seed: int | None = None
    """Seed for sampling; the same seed, prompt and model give the same answer. None: not reseeded."""

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling settings: {self}")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")

    def generation_config(self, tokenizer: Any) -> GenerationConfig:
        """A complete config, so a checkpoint's own generation_config.json does not change how we decode."""
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        common: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "eos_token_id": eos,
            "pad_token_id": pad,
        }
        if self.greedy:
            return GenerationConfig(do_sample=False, **common)
        return GenerationConfig(
            do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, **common
        )


class _QueueStreamer(BaseStreamer):
    """Skips the prompt (the first `put`) and queues every generated id."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self._prompt_done = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_done:
            self._prompt_done = True
            return
        for token in value.reshape(-1).tolist():
            self.queue.put(int(token))

    def end(self) -> None:
        self.queue.put(_END)


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


def stream_tokens(
    model: Any,
    input_ids: torch.Tensor,
    config: GenerationConfig,
    *,
    processors: Sequence[LogitsProcessor] = (),
    stopping: Sequence[StoppingCriteria] = (),
    seed: int | None = None,
) -> Iterator[int]:
    """Yield generated ids (one prompt, batch 1) while `generate` runs in a thread; errors there are raised here.

    Closing the iterator early stops generation at the next token."""
    streamer = _QueueStreamer()
    cancel = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode():
                model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    logits_processor=LogitsProcessorList(processors),
                    stopping_criteria=StoppingCriteriaList([*stopping, _Cancelled(cancel)]),
                    streamer=streamer,
                )
        except BaseException as err:  # handed to the caller's thread
            errors.append(err)
        finally:
            streamer.end()

    thread = threading.Thread(target=work, name="speechgpt-generate", daemon=True)
    thread.start()
    try:
        while (item := streamer.queue.get()) is not _END:
            yield item
    finally:
        cancel.set()
        thread.join()
    if errors:
        raise errors[0]
