"""The frozen-LLM variant's spoken answers: its speech decoder reads the answer's tokens (through the frozen LLM's
token embeddings) and the LLM's last hidden states at them (through the prefix decoder), and writes merged units
one at a time, which a unit vocoder voices, streamed or whole (speechgpt.infer.speaking.AnswerVoice).

    speaker = load_answer_speaker("out/demo/frozen_speak/final", frozen)   # frozen: load_frozen_model(...)
    for unit in speaker.units(turn.tokens, listener.answer_hidden_states()):
        ...

The decoder must have been fitted to this LLM (its weights fingerprint is checked): after a backbone swap, re-align
it with `speechgpt train frozen-speak backbone=<new LLM> init=<old decoder>`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from speechgpt.infer.frozen_loading import FrozenModel
from speechgpt.model.frozen_speaker import TextReading, load_speech_decoder, read_decoder_meta
from speechgpt.model.speech_decoder import SpeechDecoder

log = logging.getLogger(__name__)


class AnswerSpeaker:
    """Units of an answer from its tokens and the LLM's hidden states at them (greedy, key/value cached)."""

    def __init__(
        self,
        decoder: SpeechDecoder,
        lm: Any,
        *,
        units_per_token: int = 24,
        floor_units: int = 48,
        min_units: int = 2,
        meta: dict | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.decoder, self.lm = decoder, lm
        self.reading = TextReading(decoder, tokenizer)
        self.units_per_token, self.floor_units, self.min_units = units_per_token, floor_units, min_units
        self.meta = meta or {}
        self.use_prefix = self.meta.get("stage", "frozen-speak") == "frozen-speak"
        """A `frozen-tts` decoder's prefix decoder never trained: it is left out."""

    @property
    def num_units(self) -> int:
        return self.decoder.num_units

    def units(self, tokens: Sequence[int], hidden: torch.Tensor) -> Iterator[int]:
        """Merged units of the answer whose token ids are `tokens`, `hidden` (1, len(tokens), hidden_size) the
        LLM's last hidden states at them; at most `units_per_token` units per token or `floor_units` (a one-token
        answer, its silences included, takes up to ~30 merged units)."""
        if not tokens:
            return
        if hidden.shape[1] != len(tokens):
            raise ValueError(f"{len(tokens)} answer tokens but {hidden.shape[1]} hidden states")
        device = self.decoder.head.weight.device
        with torch.inference_mode():
            ids = torch.tensor([list(tokens)], device=device)
            embeds = self.lm.get_input_embeddings()(ids).float()
            lengths = torch.tensor([len(tokens)], device=device)
            prefix = self.decoder.prefix(hidden.to(device), lengths) if self.use_prefix else None
            read = self.reading(ids, lengths)
        text_length = len(tokens) + (0 if read["phonemes"] is None else int(read["phonemes"][1][0]))
        wanted = max(self.units_per_token * len(tokens), self.floor_units)
        limit = min(wanted, self.decoder.max_positions - text_length - 1)
        yield from self.decoder.generate(embeds, prefix, max_units=limit, min_units=self.min_units, **read)

    def units_of_text(self, tokens: Sequence[int], bos_id: int | None) -> Iterator[int]:
        """Merged units of a text the LLM did not write (`tokens`, as it would write them inside a sentence): the
        LLM reads it alone, after BOS when it has one, and its hidden states at the text's tokens go to `units`."""
        if not tokens:
            return
        device = self.decoder.head.weight.device
        ids = ([] if bos_id is None else [bos_id]) + list(tokens)
        with torch.inference_mode():
            hidden = self.lm.base_model(input_ids=torch.tensor([ids], device=device), use_cache=False)
        yield from self.units(tokens, hidden.last_hidden_state[:, len(ids) - len(tokens) :].float())


def load_answer_speaker(folder: str | Path, frozen: FrozenModel, **options: Any) -> AnswerSpeaker:
    """The speech decoder of `folder` around the frozen variant's LLM; it must have been fitted to that LLM."""
    meta = read_decoder_meta(folder)
    fitted, ours = meta.get("lm_fingerprint"), frozen.meta.get("lm_fingerprint")
    if fitted != ours:
        raise ValueError(
            f"{folder}: this speech decoder was fitted to another LLM ({meta.get('backbone')}) than "
            f"{frozen.source} listens with; re-align it: speechgpt train frozen-speak init={folder} "
            f"backbone={frozen.meta.get('backbone')}"
        )
    if meta.get("stage") != "frozen-speak":
        log.warning(
            "%s: stage %s trained no prefix decoder; answers are voiced from tokens alone", folder, meta.get("stage")
        )
    decoder = load_speech_decoder(folder)
    decoder.to(next(frozen.model.parameters()).device).eval()
    return AnswerSpeaker(decoder, frozen.model.lm, meta=meta, tokenizer=frozen.tokenizer, **options)
