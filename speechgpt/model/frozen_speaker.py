"""The frozen-LLM variant, speech out: a frozen causal LM and its speech decoder (speechgpt.model.speech_decoder).

`forward(batch, objective)` returns named loss parts for the two output stages:
- "tts" (output stage 1): text -> units pairs; the decoder reads the LLM's token embeddings of the text, no prefix.
  Batch: text_ids (B, T) with text_lengths, units (B, U) (IGNORE past each row's end).
- "speak" (output stage 2): the LLM reads a whole context (question and answer, as it would have written it) and
  the prefix decoder reads its last hidden states at the answer's tokens. Batch: context_ids (B, C) with
  context_lengths, answer_start (B,), text_ids (B, T) with text_lengths (the answer's tokens, which are
  context_ids[answer_start : answer_start + T]), units.

Saved as `speech_decoder.safetensors` (the decoder only; never the LLM) and `speech_decoder.json` (the builder's
arguments, the LLM's weights fingerprint the decoder was fitted to, and what the stage adds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from speechgpt.model.frozen_lm import weights_fingerprint
from speechgpt.model.meta_paths import portable_meta, resolved_meta
from speechgpt.model.speech_decoder import SpeechDecoder, build_speech_decoder
from speechgpt.model.token_spelling import TokenSpelling
from speechgpt.text.phonemes import TextPhonemes

Objective = Literal["tts", "speak"]
WEIGHTS, META = "speech_decoder.safetensors", "speech_decoder.json"


class FrozenSpeaker(nn.Module):
    """A frozen LLM (composition, `requires_grad_(False)`, eval mode) and a trainable speech decoder; `tokenizer`
    (the LLM's) where the decoder reads the text's spelling or phonemes."""

    def __init__(self, lm: Any, decoder: SpeechDecoder, tokenizer: Any = None) -> None:
        super().__init__()
        self.lm = lm.requires_grad_(False).eval()
        self.decoder = decoder
        self.reading = TextReading(decoder, tokenizer)

    def train(self, mode: bool = True) -> FrozenSpeaker:
        super().train(mode)
        self.lm.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor], objective: Objective = "tts") -> dict[str, torch.Tensor]:
        embeds, lengths = self.token_embeds(batch["text_ids"]), batch["text_lengths"]
        read = self.reading(batch["text_ids"], lengths)
        if objective == "tts":
            return self.decoder.loss(embeds, lengths, batch["units"], **read)
        if objective != "speak":
            raise ValueError(f"objective must be 'tts' or 'speak', not {objective!r}")
        prefix = self.decoder.prefix(self.answer_hidden_states(batch), lengths)
        return self.decoder.loss(embeds, lengths, batch["units"], prefix, lengths, **read)

    def token_embeds(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.lm.get_input_embeddings()(ids.clamp(min=0)).float()

    def answer_hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, hidden) the LLM's last hidden states at each row's answer tokens (zeros past text_lengths)."""
        ids, lengths = batch["context_ids"], batch["context_lengths"]
        mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).long()
        with torch.no_grad():
            hidden = self.lm.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        width = batch["text_ids"].shape[1]
        steps = torch.arange(width, device=ids.device)
        start = batch["answer_start"].reshape(-1)  # (B,), or (B, 1) as a collated one-item sequence
        index = (start[:, None] + steps[None, :]).clamp(max=ids.shape[1] - 1)
        picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1])).float()
        return picked * (steps[None, :] < batch["text_lengths"][:, None])[..., None]


class TextReading:
    """What a speech decoder reads of a text besides the LLM's token embeddings, from the LLM's tokenizer: each
    token's spelling and the text's phonemes, each where the decoder reads it.

        reading = TextReading(decoder, tokenizer)
        decoder.loss(embeds, lengths, units, **reading(ids, lengths))
    """

    def __init__(self, decoder: SpeechDecoder, tokenizer: Any) -> None:
        if tokenizer is None and (decoder.spells or decoder.reads_phonemes):
            raise ValueError("this speech decoder reads the text's spelling or phonemes: pass the LLM's tokenizer")
        self.spelling = TokenSpelling(tokenizer) if decoder.spells else None
        self.phonemes = TextPhonemes(tokenizer) if decoder.reads_phonemes else None

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> dict[str, Any]:
        """The `spelled` and `phonemes` arguments of SpeechDecoder.loss / generate for token ids (B, T) with
        lengths (B,)."""
        return {
            "spelled": None if self.spelling is None else self.spelling(ids),
            "phonemes": None if self.phonemes is None else self.phonemes(ids, lengths),
        }


def spoken_text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a text as an LLM writes it inside a sentence (a leading space, so a byte-level BPE gives the
    tokens of its answers)."""
    return [int(i) for i in tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]]


def save_speech_decoder(model: FrozenSpeaker, out: str | Path, **extra: Any) -> Path:
    """Write the decoder's weights and meta (its builder's arguments, the LLM's fingerprint, `extra`) into `out`."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.decoder.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    meta = {"variant": "frozen", "decoder": model.decoder.spec, "lm_fingerprint": weights_fingerprint(model.lm)}
    (out / META).write_text(json.dumps(portable_meta({**meta, **extra}, out), indent=2) + "\n")
    return out


def read_decoder_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {META} (train one with `speechgpt train frozen-tts` / `frozen-speak`)")
    return resolved_meta(dict(json.loads(path.read_text())), folder)


def load_speech_decoder(folder: str | Path, hidden_size: int | None = None) -> SpeechDecoder:
    """The decoder of `folder`. With `hidden_size` different from the one it was built for (another backbone), the
    parts that read the LLM (pre-net, prefix input) are rebuilt at the new width and the AR decoder is kept."""
    from safetensors.torch import load_file

    spec = dict(read_decoder_meta(folder)["decoder"])
    state = load_file(str(Path(folder) / WEIGHTS))
    reads_llm = ("prenet.", "prefix_in.")
    rebuilt = hidden_size is not None and hidden_size != spec["hidden_size"]
    if rebuilt:
        spec["hidden_size"] = hidden_size
        state = {k: v for k, v in state.items() if not k.startswith(reads_llm)}
    decoder = build_speech_decoder(**spec)
    missing, unexpected = decoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (rebuilt and k.startswith(reads_llm))]
    if missing or unexpected:
        raise ValueError(f"{folder}: decoder weights do not fit (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return decoder
