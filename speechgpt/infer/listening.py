"""Streaming listening for the frozen-LLM variant (Freeze-Omni style): audio arrives in 160 ms chunks, the state head
decides after each one (0 keep listening, 1 answer now, 2 ignore), and on "answer" the frozen LLM answers in text.

    listener = FrozenListener(load_frozen_model("out/demo/frozen_qa/final"))
    for chunk in microphone_chunks():                 # 2560 samples (160 ms) at 16 kHz, float32 in [-1, 1]
        for decision in listener.push(chunk):
            ...                                      # decision.state: 0 / 1 / 2
        if listener.turn.outcome == "answer":
            for piece in listener.answer():          # text deltas, greedy, until EOS or max_new_tokens
                ...
    turn = listener.listen(clip)                     # a whole clip: turn.states, turn.text, turn.latencies()

Each push runs the frame features (fbank streams exactly), `SpeechEncoder.stream_step` with its caches, the adapter
with its left context and the frozen LLM with its KV cache (prefix tokens and prompt embeddings first, then each
chunk's speech embeddings); the decision of a chunk is read from the LLM's last hidden state at its end, exactly
where training reads it. A chunk's last fbank window reaches 15 ms past it, so a chunk is decided once the next
push (or `finish`) brings those samples. After a decision the utterance ends: audio later in the same push belongs
to the next one, which the next push starts (an "ignore" frees the state at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from speechgpt.infer.cached_lm import CachedLM
from speechgpt.infer.frozen_loading import FrozenModel
from speechgpt.model.state_labels import ANSWER, IGNORE_SPEECH, KEEP_LISTENING, STATE_NAMES
from speechgpt.model.word_pooling import WordStream

log = logging.getLogger(__name__)
SAMPLE_RATE = 16_000
Outcome = Literal["answer", "ignore"]
DEFAULT_SILENCE_S = 0.48


@dataclass(kw_only=True)
class ListenConfig:
    """How a whole clip is listened to (`FrozenListener.listen`, chat, serve, eval)."""

    trailing_silence_s: float | None = None
    """Silence pushed after a clip, as a microphone would keep sending it, so the state head hears the turn end;
    None: the silence the model's training clips ended with (its meta's trailing_silence_s), else 0.48 s."""
    answer_at_end: bool = True
    """When the clip and its trailing silence end without a decision, answer anyway (the turn is marked forced)."""
    decide: bool = True
    """Let the state head end the turn; False: keep listening to the whole clip and answer at its end (with
    `answer_at_end`), which is how a frozen-asr folder, whose state head never trained, transcribes."""
    realtime: bool = False
    """Push chunks at the pace of the audio (a live microphone); False: as fast as the model goes, so the measured
    latencies leave out the wait for trailing-silence chunks (`decision_delay_audio_s` reports that audio time)."""

    def __post_init__(self) -> None:
        if self.trailing_silence_s is not None and self.trailing_silence_s < 0:
            raise ValueError("trailing_silence_s must be >= 0")


@dataclass
class Decision:
    """The state head's decision at the end of one chunk."""

    chunk: int
    """Chunk index in the utterance."""
    state: int
    """0 keep listening, 1 answer, 2 ignore."""
    logits: list[float]
    """The state head's logits."""
    audio_s: float
    """Audio time of the chunk's end, from the utterance start."""
    time_s: float
    """time.perf_counter() when it was decided."""
    heard_s: float
    """Audio heard when it was decided: the chunk's end, or later where the features come a window late."""


@dataclass
class Turn:
    """One utterance: its decisions, how it ended, the answer and when things happened (perf_counter times)."""

    decisions: list[Decision] = field(default_factory=list)
    outcome: Outcome | None = None
    """'answer' (state 1), 'ignore' (state 2), or None while listening / when nothing was decided."""
    forced: bool = False
    """Answered at the end of the audio without an "answer" decision (ListenConfig.answer_at_end)."""
    tokens: list[int] = field(default_factory=list)
    """The answer's token ids (EOS excluded)."""
    text: str = ""
    """The answer text."""
    ended: bool = False
    """The answer ended with EOS (False: cut at max_new_tokens, or no answer)."""
    heard_tokens: list[int] = field(default_factory=list)
    """With an adapter that reads words: each whole word's best token, in order (the text the LLM was given)."""
    llm_inputs: int = 0
    """Positions the LLM had read when it started answering (prefix, prompt, speech or question, answer prefix)."""
    audio_s: float = 0.0
    """Audio heard in this utterance, seconds."""
    speech_end_audio_s: float | None = None
    """Audio time of the end of speech."""
    speech_end_s: float | None = None
    """When the last audio chunk of the speech was pushed (by `end_of_speech`, or the push that was decided)."""
    decision_s: float | None = None
    """When the utterance was decided (answer or ignore)."""
    first_token_s: float | None = None
    """When the first answer token existed."""
    last_token_s: float | None = None
    """When the answer ended."""
    first_unit_s: float | None = None
    """When the first unit of the spoken answer existed (frozen variant with a speech decoder)."""
    first_audio_s: float | None = None
    """When the first audio of the spoken answer existed."""

    @property
    def states(self) -> list[int]:
        return [d.state for d in self.decisions]

    def latencies(self) -> dict[str, float | None]:
        """Seconds from the end of speech to the decision, the first text token, the first unit and the first audio
        of the spoken answer (None: did not happen), and the audio heard after the end of speech before the
        decision."""

        def since_end(t: float | None) -> float | None:
            return None if t is None or self.speech_end_s is None else round(t - self.speech_end_s, 4)

        heard = self.decisions[-1].heard_s if self.outcome and self.decisions and not self.forced else self.audio_s
        delay = None if self.speech_end_audio_s is None or self.outcome is None else heard - self.speech_end_audio_s
        return {
            "decision_s": since_end(self.decision_s),
            "first_token_s": since_end(self.first_token_s),
            "first_unit_s": since_end(self.first_unit_s),
            "first_audio_s": since_end(self.first_audio_s),
            "decision_delay_audio_s": None if delay is None else round(delay, 4),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "states": [STATE_NAMES[s] for s in self.states],
            "outcome": self.outcome,
            "forced": self.forced,
            "decision_chunk": self.decisions[-1].chunk if self.outcome and self.decisions and not self.forced else None,
            "audio_s": round(self.audio_s, 3),
            "latencies": self.latencies(),
        }


class FrozenListener:
    """Listens to one stream of audio and answers in text; not thread-safe (one stream per listener)."""

    def __init__(self, frozen: FrozenModel, config: ListenConfig | None = None) -> None:
        self.frozen, self.model, self.tokenizer = frozen, frozen.model, frozen.tokenizer
        self.config = config or ListenConfig()
        encoder = self.model.encoder
        self.chunk_s = encoder.chunk / encoder.frame_rate
        self.chunk_samples = round(self.chunk_s * SAMPLE_RATE)
        self.device = next(self.model.encoder.parameters()).device
        eos = self.tokenizer.eos_token_id
        self.eos_ids = {int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None}
        silence = self.config.trailing_silence_s
        for value in (silence, frozen.trailing_silence_s, DEFAULT_SILENCE_S):
            if value is not None:
                self.trailing_silence_s: float = value
                break
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: fresh feature, encoder, adapter and LLM state (prefix and prompt prefilled)."""
        self._start(self.frozen.prefix_ids, prompt=True)

    def _start(self, ids: list[int], prompt: bool) -> None:
        self._features: Any = self.frozen.features.stream()
        self._encoder_state: Any = None
        self._adapter_history: torch.Tensor | None = None
        space = self.model.word_space
        self._words = None if space is None else WordStream(space, self.model.word_pause)
        self._lm = CachedLM(self.model.lm)
        self._heard, self._answered = 0, False
        self._answer_hidden: list[torch.Tensor] = []
        self._last_push_s: float | None = None
        self.turn = Turn()
        with torch.inference_mode():
            embeds = [self._token_embeds(ids)]
            if prompt:
                embeds.append(self.model.prompt_embeddings()[None].to(self._lm.dtype))
            self._last_hidden = self._lm.feed(torch.cat(embeds, 1))[:, -1]
        self._fresh = True

    def push(self, samples: np.ndarray | torch.Tensor) -> list[Decision]:
        """Hear the next piece of audio (16 kHz mono float32); the decisions of the chunks it completed, in order,
        ending at the first that is not "keep listening". A push after a decided utterance starts a new one."""
        if self.turn.outcome is not None:
            self.reset()
        self._fresh = False
        self._last_push_s = time.perf_counter()
        wave = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1)
        self._heard += wave.numel()
        self.turn.audio_s = self._heard / SAMPLE_RATE
        with torch.inference_mode():
            feats = self._features.push(wave)
            return self._encode(feats, final=False) if feats.shape[0] else []

    def finish(self) -> list[Decision]:
        """The audio stream ended: encode the last partial chunk and decide at it."""
        if self.turn.outcome is not None or self._fresh:
            return []
        with torch.inference_mode():
            rest = self._features.flush()
            return self._encode(rest if rest.numel() else torch.zeros(0, self.frozen.features.dim), final=True)

    def end_of_speech(self) -> None:
        """Mark the audio pushed so far as the end of the speech (latencies count from the last push)."""
        if self.turn.speech_end_s is None:
            self.turn.speech_end_s = self._last_push_s
            self.turn.speech_end_audio_s = self.turn.audio_s

    def force_answer(self) -> None:
        """Answer now although the state head did not say so (the caller knows the question ended)."""
        if self.turn.outcome is None:
            self.end_of_speech()
            self.turn.outcome, self.turn.forced, self.turn.decision_s = "answer", True, time.perf_counter()

    def answer(self, max_new_tokens: int = 128) -> Iterator[str]:
        """The text answer of an utterance decided "answer", greedy, token by token as text deltas; it stops at
        EOS, at the text that ends an answer in the model's template (left out of the answer) or at
        `max_new_tokens`, and is kept in `turn.text` / `turn.tokens`."""
        if self.turn.outcome != "answer" or self._answered:
            raise ValueError("answer() needs an utterance the listener decided to answer (and not answered yet)")
        self._answered = True
        shown, end = "", self.frozen.answer_end
        for token in self._greedy_tokens(max_new_tokens):
            self.turn.tokens.append(token)
            text = self._decoded().rstrip("\ufffd")  # hold back a character whose bytes are not all there yet
            if end and text.rstrip().endswith(end):
                self.turn.ended = True
                break
            text = _without_partial_end(text, end)
            if text.startswith(shown) and len(text) > len(shown):
                yield text[len(shown) :]
                shown = text
        self.turn.last_token_s = time.perf_counter()
        text = self._decoded().strip()
        self.turn.text = text[: -len(end)].rstrip() if end and text.endswith(end) else text
        if self.turn.text.startswith(shown) and len(self.turn.text) > len(shown):
            yield self.turn.text[len(shown) :]  # what was held back is final now

    def target_nll(self, ids: list[int], scored: list[bool]) -> float:
        """Mean negative log-likelihood (nats per token) of the `scored` tokens of `ids`, fed after what was heard,
        each predicted from everything before it (teacher forcing): how much the speech tells the LLM about a text.
        Call it instead of `answer()`; the utterance is used up."""
        if len(ids) != len(scored) or not any(scored):
            raise ValueError("target_nll needs one flag per token and at least one scored token")
        total = 0.0
        with torch.inference_mode():
            for token, score in zip(ids, scored, strict=True):
                if score:
                    total -= float(torch.log_softmax(self.model.token_logits(self._last_hidden)[0].float(), -1)[token])
                self._last_hidden = self._lm.feed(self._token_embeds([token]))[:, -1]
        self._answered = True
        return total / sum(scored)

    def _decoded(self) -> str:
        return str(self.tokenizer.decode(self.turn.tokens, skip_special_tokens=True)).lstrip()

    def heard_text(self) -> str:
        """With an adapter that reads words: the text of the words heard so far, as the LLM was given them."""
        if self._words is None:
            raise ValueError("heard_text needs an adapter that reads words (pool_words); this one reads frames")
        return str(self.tokenizer.decode(self.turn.heard_tokens, skip_special_tokens=True)).strip()

    def listen(self, clip: np.ndarray, max_new_tokens: int = 128) -> Turn:
        """A whole clip as a stream (see `hear`), then the answer if one was decided. Returns the turn: states per
        chunk, text, latencies."""
        for _ in self.hear(clip):
            pass
        if self.turn.outcome == "answer":
            for _ in self.answer(max_new_tokens):
                pass
        return self.turn

    def hear(self, clip: np.ndarray) -> Iterator[Decision]:
        """Push a whole clip chunk by chunk, then `trailing_silence_s` of silence, then end the stream, yielding each
        decision; with `answer_at_end`, an undecided clip is answered anyway (forced)."""
        self.reset()
        clip = np.asarray(clip, dtype=np.float32).reshape(-1)
        silence = np.zeros(round(self.trailing_silence_s * SAMPLE_RATE), np.float32)
        start, pushed = time.perf_counter(), 0
        for part, is_speech in ((clip, True), (silence, False)):
            for offset in range(0, len(part), self.chunk_samples):
                if self.turn.outcome is not None:
                    break
                piece = part[offset : offset + self.chunk_samples]
                pushed += len(piece)
                if self.config.realtime:
                    time.sleep(max(0.0, start + pushed / SAMPLE_RATE - time.perf_counter()))
                yield from self.push(piece)
            if is_speech:
                self.end_of_speech()
        yield from self.finish()
        if self.turn.outcome is None and self.config.answer_at_end:
            self.force_answer()

    def read(self, question: str) -> None:
        """A typed question: the frozen LLM reads its tokens after the prefix (no prompt embeddings, which stand
        before speech); `answer()` then answers it."""
        ids = self.tokenizer.encode(question.strip(), add_special_tokens=False)
        if not ids:
            raise ValueError("the text question is empty")
        self._start([*self.frozen.prefix_ids, *ids], prompt=False)
        self._fresh = False
        self.turn.outcome, self.turn.speech_end_s = "answer", time.perf_counter()
        self.turn.decision_s = self.turn.speech_end_s

    def _encode(self, feats: torch.Tensor, final: bool) -> list[Decision]:
        feats = feats[None].to(self.device)
        frames, self._encoder_state = self.model.encoder.stream_step(feats, self._encoder_state, final=final)
        chunk, decisions = self.model.chunk_frames, []
        if final and not frames.shape[1] and self._words is not None:
            self._feed_speech(frames, ended=True)  # the stream ended on a chunk boundary: its last word is whole
        for start in range(0, frames.shape[1], chunk):
            self._feed_speech(frames[:, start : start + chunk], ended=final and start + chunk >= frames.shape[1])
            decisions.append(self._decide())
            if decisions[-1].state != KEEP_LISTENING:
                break
        return decisions

    def _feed_speech(self, frames: torch.Tensor, ended: bool) -> None:
        """Feed the LLM a chunk's speech: its adapter embeddings, or the words that became whole (word_pooling)."""
        if self._words is None:
            embeds, self._adapter_history = self.model.adapter(frames, self._adapter_history)
        else:
            labels = self.model.encoder.ctc_logits(frames)[0].argmax(-1).tolist()
            embeds, logits = self.model.words_as_tokens(self._words.push(frames[0], labels, ended)[None])
            self.turn.heard_tokens += logits[0].argmax(-1).tolist()
        if embeds.shape[1]:
            self._last_hidden = self._lm.feed(embeds)[:, -1]

    def _decide(self) -> Decision:
        logits = self.model.state_logits(self._last_hidden)[0].float()
        index = len(self.turn.decisions)
        audio_s = min((index + 1) * self.chunk_s, self.turn.audio_s)  # the last, partial chunk ends with the audio
        state = int(logits.argmax()) if self.config.decide else KEEP_LISTENING
        decision = Decision(index, state, logits.tolist(), audio_s, time.perf_counter(), self.turn.audio_s)
        self.turn.decisions.append(decision)
        if decision.state in (ANSWER, IGNORE_SPEECH):
            self.end_of_speech()
            self.turn.outcome = "answer" if decision.state == ANSWER else "ignore"
            self.turn.decision_s = decision.time_s
            if decision.state == IGNORE_SPEECH:
                self._lm = CachedLM(self.model.lm)  # nothing to answer: free the cache now
        return decision

    def _token_embeds(self, ids: list[int]) -> torch.Tensor:
        tensor = torch.tensor([ids], dtype=torch.long, device=self.device)
        return self.model.embed_tokens(tensor).to(self._lm.dtype)

    def _greedy_tokens(self, max_new_tokens: int) -> Iterator[int]:
        # inference mode is entered per step: a generator must not leave it on in its caller between tokens
        with torch.inference_mode():
            if self.frozen.answer_prefix_ids:
                self._last_hidden = self._lm.feed(self._token_embeds(self.frozen.answer_prefix_ids))[:, -1]
        self.turn.llm_inputs = self._lm.length
        for step in range(max_new_tokens):
            with torch.inference_mode():
                token = int(self.model.token_logits(self._last_hidden).argmax(-1))
            if token in self.eos_ids:
                self.turn.ended = True
                return
            if self.turn.first_token_s is None:
                self.turn.first_token_s = time.perf_counter()
            yield token
            if step + 1 < max_new_tokens:
                self._feed_answer_token(token)

    def _feed_answer_token(self, token: int) -> None:
        with torch.inference_mode():
            self._last_hidden = self._lm.feed(self._token_embeds([token]))[:, -1]
        self._answer_hidden.append(self._last_hidden)

    def answer_hidden_states(self) -> torch.Tensor:
        """(1, T, hidden) the LLM's last hidden states at the answer's T tokens (what the speech decoder's prefix
        reads), feeding the tokens it has not read yet (the one that ended the answer)."""
        if not self._answered or not self.turn.tokens:
            raise ValueError("answer_hidden_states() needs an answered utterance with at least one token")
        for token in self.turn.tokens[len(self._answer_hidden) :]:
            self._feed_answer_token(token)
        return torch.stack(self._answer_hidden[: len(self.turn.tokens)], 1)


def _without_partial_end(text: str, end: str) -> str:
    """`text` less a tail that could be the start of `end` (the next token shows whether the answer ends there)."""
    for cut in range(min(len(end), len(text)), 0, -1):
        if text.rstrip().endswith(end[:cut]):
            return text.rstrip()[:-cut]
    return text
