"""The frozen-LLM variant (Freeze-Omni style), speech in: any Hugging Face causal LM, frozen, listens through a
trainable speech encoder, adapter, learned prompt embeddings and a state head.

The LLM is held by composition, with `requires_grad_(False)` and kept in eval mode, so an optimizer built from the
parameters that require grad never sees it and it holds no optimizer state; `weights_fingerprint` checks that its
weights are unchanged after a stage. Every width comes from the LLM's input embeddings (its hidden size).

An LLM input is, per clip: [prefix tokens] [prompt embeddings] [speech embeddings] [text tokens], right-padded.
The loss functions take a batch that is a plain dict of tensors (see each one) and return named loss parts, with
"loss" the weighted total: `ctc_loss_parts` (input stage 1), `asr_loss_parts` (stage 2), `qa_loss_parts` (stage 3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from speechgpt.model.speech_adapter import SpeechAdapter
from speechgpt.model.speech_alignment import align_loss, distill_loss
from speechgpt.model.speech_encoder import SpeechEncoder
from speechgpt.model.state_labels import STATE_NAMES
from speechgpt.model.word_pooling import Word, pool_words, words_whole

IGNORE = -100
Objective = Literal["ctc", "asr", "qa"]
LossParts = dict[str, torch.Tensor]


class FrozenSpeechLM(nn.Module):
    """A frozen causal LM with trainable speech modules; `forward(batch, objective)` returns named loss parts."""

    def __init__(
        self,
        lm: Any,
        encoder: SpeechEncoder,
        adapter: SpeechAdapter,
        prompt: torch.Tensor,
        num_states: int,
        word_space: int | None = None,
        word_pause: int = 4,
    ) -> None:
        super().__init__()
        self.lm = lm.requires_grad_(False).eval()
        self.word_space = word_space
        """The space's index in the encoder's CTC vocabulary when the adapter reads one vector per word
        (word_pooling); None: it reads the encoder's frames."""
        self.word_pause = word_pause
        """Encoder frames without a character after which a word is whole (word_pooling)."""
        self.encoder = encoder
        self.adapter = adapter
        # an Embedding, not a bare Parameter: ZeRO-3 gathers a module's weights when the module itself runs
        self.prompt = nn.Embedding(prompt.shape[0], prompt.shape[1])
        self.prompt.weight.data.copy_(prompt)
        self.state_head = nn.Linear(self.hidden_size, num_states)

    @property
    def hidden_size(self) -> int:
        return int(self.lm.get_input_embeddings().embedding_dim)

    @property
    def chunk_frames(self) -> int:
        """Encoder frames per chunk (one state decision each)."""
        return self.encoder.chunk

    def train(self, mode: bool = True) -> FrozenSpeechLM:
        super().train(mode)
        self.lm.eval()  # the LLM never trains: no dropout, whatever mode the speech modules are in
        for module in (self.encoder, self.adapter):  # nor does a speech module a stage keeps frozen
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def forward(self, batch: dict[str, torch.Tensor], objective: Objective = "asr", **options: Any) -> LossParts:
        return LOSSES[objective](self, batch, **options)

    def speech_embeddings(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> SpeechInputs:
        """The LLM inputs of a batch's speech (see SpeechInputs)."""
        return self.frame_embeddings(*self.encoder(features, feature_lengths))

    def frame_embeddings(self, frames: torch.Tensor, frame_lengths: torch.Tensor) -> SpeechInputs:
        """The LLM inputs of the encoder's output frames (B, T, dim), with frame_lengths (B,)."""
        if self.word_space is None:
            embeds, _ = self.adapter(frames)
            return SpeechInputs(embeds, self.adapter.output_lengths(frame_lengths), frame_lengths)
        labels = self.encoder.ctc_logits(frames).argmax(-1)
        pooled, counts, words = pool_words(frames, frame_lengths, labels, self.word_space, self.word_pause)
        embeds, logits = self.words_as_tokens(pooled)
        return SpeechInputs(embeds, counts, frame_lengths, words, logits)

    def words_as_tokens(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, hidden) expected token embeddings and (B, K, vocab) token logits of word vectors: the adapter's
        output scored against every input embedding of the LLM, and its softmax-weighted mean of them."""
        table = self.lm.get_input_embeddings().weight
        logits = self.adapter(pooled)[0].to(table.dtype) @ table.T
        return logits.float().softmax(-1).to(table.dtype) @ table, logits

    def prompt_embeddings(self) -> torch.Tensor:
        """(num_prompts, hidden) learned embeddings placed before the speech."""
        return self.prompt(torch.arange(self.prompt.num_embeddings, device=self.prompt.weight.device))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids.clamp(min=0))

    def hidden_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The LLM's last hidden states (after its final norm) for `inputs_embeds`."""
        return self.layer_states(inputs_embeds, attention_mask)[-1]

    def layer_states(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The LLM's hidden states after each layer, (B, L, hidden) each; the last one after its final norm."""
        dtype = self.lm.get_input_embeddings().weight.dtype
        out = self.lm.base_model(
            inputs_embeds=inputs_embeds.to(dtype),
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=True,
        )
        return tuple(out.hidden_states[1:])

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM-head logits of hidden states, with the final soft-capping of models that have one (Gemma 2)."""
        logits = self.lm.get_output_embeddings()(hidden)
        cap = getattr(self.lm.config, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def state_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.state_head(hidden.to(self.state_head.weight.dtype))


@dataclass
class SpeechInputs:
    embeds: torch.Tensor
    """(B, S, hidden) what the LLM reads of each clip, zero-padded."""
    lengths: torch.Tensor
    """(B,) embeddings per clip."""
    frame_lengths: torch.Tensor
    """(B,) encoder frames per clip."""
    words: list[list[Word]] | None = None
    """Each clip's words when the adapter reads words (then one embedding per word)."""
    token_logits: torch.Tensor | None = None
    """(B, S, vocab) when the adapter reads words: each word's scores over the LLM's tokens."""


@dataclass
class Assembled:
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    """(B, L) token ids to predict at their positions (IGNORE elsewhere), as in transformers' `labels`."""
    speech_start: torch.Tensor
    """(B,) position of each clip's first speech embedding."""
    speech: SpeechInputs


def assemble_inputs(model: FrozenSpeechLM, batch: dict[str, torch.Tensor]) -> tuple[Assembled, torch.Tensor]:
    """The LLM input of a batch, and each clip's encoder frame lengths.

    Batch keys: features (B, T, F) float, feature_lengths (B,) (or, with the encoder frozen, its output frames
    (B, T', dim) and frame_lengths (B,) instead), text_ids (B, U) (any id past text_lengths),
    text_lengths (B,), labels (B, U): the text id where it is predicted, IGNORE elsewhere; optional prefix_ids
    (B, P) with prefix_lengths (B,): tokens before the prompt (a system prompt or chat-turn opening)."""
    if "frames" in batch:  # the frozen encoder's output, computed once before training (encoded_examples)
        speech = model.frame_embeddings(batch["frames"], batch["frame_lengths"])
    else:
        speech = model.speech_embeddings(batch["features"], batch["feature_lengths"])
    embeds, lengths, frame_lengths = speech.embeds, speech.lengths, speech.frame_lengths
    dtype = model.lm.get_input_embeddings().weight.dtype
    text = model.embed_tokens(batch["text_ids"]).to(dtype)
    prefix = model.embed_tokens(batch["prefix_ids"]).to(dtype) if "prefix_ids" in batch else None
    prompt = model.prompt_embeddings().to(dtype)
    rows, row_labels, starts = [], [], []
    for b in range(embeds.shape[0]):
        p = int(batch["prefix_lengths"][b]) if prefix is not None else 0
        s, u = int(lengths[b]), int(batch["text_lengths"][b])
        parts = [prefix[b, :p]] if prefix is not None else []
        rows.append(torch.cat([*parts, prompt, embeds[b, :s].to(dtype), text[b, :u]]))
        untrained = batch["labels"].new_full((p + prompt.shape[0] + s,), IGNORE)
        row_labels.append(torch.cat([untrained, batch["labels"][b, :u]]))
        starts.append(p + prompt.shape[0])
    inputs = nn.utils.rnn.pad_sequence(rows, batch_first=True)
    sizes = torch.tensor([len(r) for r in rows], device=inputs.device)
    mask = torch.arange(inputs.shape[1], device=inputs.device)[None, :] < sizes[:, None]
    labels = nn.utils.rnn.pad_sequence(row_labels, batch_first=True, padding_value=IGNORE)
    starts_at = torch.tensor(starts, device=inputs.device)
    return Assembled(inputs, mask.long(), labels, starts_at, speech), frame_lengths


def lm_loss(model: FrozenSpeechLM, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens, the LM head run only where one is predicted (0 when none)."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # position t predicts token t + 1
    keep = targets != IGNORE
    if not bool(keep.any()):
        return hidden.sum() * 0.0
    return F.cross_entropy(model.token_logits(hidden[keep]).float(), targets[keep])


def chunk_end_positions(
    model: FrozenSpeechLM,
    speech_start: torch.Tensor,
    frame_lengths: torch.Tensor,
    num_chunks: int,
    words: list[list[Word]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, num_chunks) sequence position of the last speech embedding of each chunk, (B, num_chunks) bool: the
    chunk exists in the clip). A chunk's decision is read from the LLM's hidden state there. With `words` (the
    adapter reads words), that is the last word whole by the chunk's end (all of them at the clip's last chunk, as
    when a stream ends), or the input before the speech when none is."""
    chunk = torch.arange(num_chunks, device=frame_lengths.device)[None, :]
    frames_heard = torch.minimum((chunk + 1) * model.chunk_frames, frame_lengths[:, None])
    if words is None:
        embeds_heard = model.adapter.output_lengths(frames_heard)
    else:
        ends = frame_lengths.tolist()
        embeds_heard = torch.tensor(
            [
                [words_whole(w, heard, heard >= end) for heard in row]
                for w, row, end in zip(words, frames_heard.tolist(), ends, strict=True)
            ],
            device=frame_lengths.device,
        )
    exists = chunk * model.chunk_frames < frame_lengths[:, None]
    if words is not None and bool((speech_start < 1).any()):
        raise ValueError("an adapter that reads words needs a token or prompt embedding before the speech")
    return speech_start[:, None] + (embeds_heard - 1).clamp(min=-1 if words is not None else 0), exists


def state_loss(
    model: FrozenSpeechLM,
    hidden: torch.Tensor,
    speech_start: torch.Tensor,
    frame_lengths: torch.Tensor,
    state_labels: torch.Tensor,
    words: list[list[Word]] | None = None,
) -> torch.Tensor:
    """Cross-entropy of the state head at each chunk's end against `state_labels` (B, N), IGNORE where none."""
    positions, exists = chunk_end_positions(model, speech_start, frame_lengths, state_labels.shape[1], words)
    labelled = state_labels != IGNORE
    if bool((labelled & ~exists).any()):
        raise ValueError("state labels given for chunks past the end of their clip (labels and encoder disagree)")
    if not bool(labelled.any()):
        return hidden.sum() * 0.0
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(positions)
    logits = model.state_logits(hidden[rows[labelled], positions[labelled]])
    return F.cross_entropy(logits.float(), state_labels[labelled])


def unwrap(model: Any) -> Any:
    """The module inside a DeepSpeed engine (its `.module`); any other model as it is."""
    return getattr(model, "module", model)


def ctc_loss_parts(model: FrozenSpeechLM | SpeechEncoder, batch: dict[str, torch.Tensor]) -> LossParts:
    """Input stage 1, the encoder as a CTC ASR model. Batch: features, feature_lengths, ctc_targets (B, U) character
    indices (0 is blank, IGNORE pads). `model`: the wrapper or the encoder alone (stage 1 needs no LLM), or a
    DeepSpeed engine around either."""
    model = unwrap(model)
    encoder = model.encoder if isinstance(model, FrozenSpeechLM) else model
    frames, lengths = encoder(batch["features"], batch["feature_lengths"])
    log_probs = encoder.ctc_logits(frames).float().log_softmax(-1)
    targets = batch["ctc_targets"]
    target_lengths = (targets != IGNORE).sum(1)
    loss = F.ctc_loss(
        log_probs.transpose(0, 1), targets.clamp(min=0), lengths, target_lengths, blank=0, zero_infinity=True
    )
    return {"loss": loss, "ctc": loss.detach()}


def asr_loss_parts(model: FrozenSpeechLM, batch: dict[str, torch.Tensor], align_weight: float = 0.0) -> LossParts:
    """Input stage 2, ASR through the frozen LLM: the transcript tokens predicted after the speech embeddings.
    Batch: as `assemble_inputs` (labels = the transcript ids and end token, IGNORE on anything else); with
    align_weight > 0 also word_ids (see `align_loss`). loss = lm + align_weight * align."""
    model = unwrap(model)
    assembled, _ = assemble_inputs(model, batch)
    hidden = model.hidden_states(assembled.inputs_embeds, assembled.attention_mask)
    loss = lm_loss(model, hidden, assembled.labels)
    parts = {"lm": loss.detach()}
    if align_weight > 0:
        align = align_loss(model, assembled, batch["word_ids"])
        loss = loss + align_weight * align
        parts["align"] = align.detach()
    return {"loss": loss, **parts}


def qa_loss_parts(
    model: FrozenSpeechLM, batch: dict[str, torch.Tensor], state_weight: float = 1.0, distill_weight: float = 0.0
) -> LossParts:
    """Input stage 3, spoken question answering plus the state head. Batch: as `assemble_inputs` (labels = the
    answer tokens; clips not addressed to the assistant have none) and state_labels (B, N) per chunk, IGNORE past
    a clip's chunks (see state_labels.chunk_state_labels); with distill_weight > 0 also teacher_ids (see
    `distill_loss`). loss = lm + state_weight * state + distill_weight * distill."""
    model = unwrap(model)
    assembled, frame_lengths = assemble_inputs(model, batch)
    layers = model.layer_states(assembled.inputs_embeds, assembled.attention_mask)
    hidden = layers[-1]
    lm = lm_loss(model, hidden, assembled.labels)
    words = assembled.speech.words
    state = state_loss(model, hidden, assembled.speech_start, frame_lengths, batch["state_labels"], words)
    parts = {"lm": lm.detach(), "state": state.detach()}
    total = lm + state_weight * state
    if distill_weight > 0:
        distill = distill_loss(model, layers, assembled.attention_mask, batch)
        total = total + distill_weight * distill
        parts["distill"] = distill.detach()
    return {"loss": total, **parts}


LOSSES: dict[str, Callable[..., LossParts]] = {"ctc": ctc_loss_parts, "asr": asr_loss_parts, "qa": qa_loss_parts}


def build_frozen_speech_lm(
    lm: Any,
    encoder: SpeechEncoder,
    *,
    adapter_kernel: int = 3,
    adapter_stride: int = 2,
    num_prompts: int = 5,
    seed: int = 0,
    word_space: int | None = None,
    word_pause: int = 4,
) -> FrozenSpeechLM:
    """Freeze `lm` (any HF causal LM) and attach `encoder`, an adapter to its hidden size, `num_prompts` prompt
    embeddings (initialized as copies of random token embeddings, so they start at the LLM's input scale) and a
    state head over its last hidden state."""
    from speechgpt.model.speech_adapter import build_speech_adapter

    embeddings = lm.get_input_embeddings()
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(embeddings.num_embeddings, (num_prompts,), generator=generator)
    with torch.no_grad():
        prompt = embeddings(ids.to(embeddings.weight.device)).detach().float().clone()
    adapter = build_speech_adapter(
        encoder_dim=encoder.dim,
        hidden_size=embeddings.embedding_dim,
        kernel_size=adapter_kernel,
        stride=adapter_stride,
    )
    return FrozenSpeechLM(
        lm,
        encoder,
        adapter.to(prompt.device),
        prompt,
        num_states=len(STATE_NAMES),
        word_space=word_space,
        word_pause=word_pause,
    )


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state_dict (names, dtypes, shapes, bytes) in name order: equal iff the weights are.
    Under ZeRO-3 call it on gathered weights (partitioned tensors are placeholders)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def speech_modules_state_dict(model: FrozenSpeechLM) -> dict[str, torch.Tensor]:
    """Everything but the frozen LLM (encoder with its CMVN, adapter, prompt, state head): what a stage saves."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("lm.")}
