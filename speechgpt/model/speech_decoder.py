"""The frozen-LLM variant's speech decoder (Freeze-Omni's shape, over our units): a pre-net over the LLM's token
embeddings of the answer text (and, with `spelling`, each token's bytes: speechgpt.model.token_spelling; with
`phonemes`, the text's phonemes after its tokens: speechgpt.text.phonemes), a NAR prefix decoder over the LLM's last
hidden states of that text, and an AR decoder that writes the answer's merged units after them.

One AR sequence per answer: [prefix (from the hidden states)] [pre-net(text token embeddings)] [phonemes] [BOS]
[u1 .. un], causal, predicting u1 .. un and then EOS. Positions count from the first text token, so the prefix adds
keys to attend to without moving anything the AR decoder learned before it had one: output stage 1 trains the
pre-net and AR decoder on text -> speech pairs with no prefix; output stage 2 trains the prefix decoder alone on the
frozen LLM's hidden states of answers. Units are merged by default (no unit follows itself), so generation never
repeats the last one; codec codes (one per frame) may.
Widths of its inputs come from the backbone's hidden size; everything else from `build_speech_decoder`'s arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechgpt.model.token_spelling import Speller
from speechgpt.text.phonemes import PHONEME_OFFSET, PHONEME_SYMBOLS

IGNORE = -100
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


class Block(nn.Module):
    """Pre-norm transformer block whose attention can append to a key/value cache."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, L, dim); mask (B, 1, L, L_cache + L) bool (True: may attend) or None (all); returns (out, k/v)."""
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, length, dim)))
        return x + self.drop(self.ffn(self.norm2(x))), (k, v)


class SpeechDecoder(nn.Module):
    def __init__(
        self,
        *,
        hidden_size: int,
        num_units: int,
        dim: int,
        heads: int,
        prefix_layers: int,
        ar_layers: int,
        ffn_dim: int,
        max_positions: int,
        dropout: float,
        merged: bool,
        spelling: bool = False,
        phonemes: bool = False,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder width {dim} is not a multiple of its {heads} heads")
        self.num_units, self.max_positions, self.merged = num_units, max_positions, merged
        self.bos = self.eos = num_units  # the extra row of the unit embedding / of the head
        # the LLM's embeddings and hidden states come at its own scale: normalized first, so that the text is not
        # drowned by the unit and position embeddings beside it (it was, at 0.02-std inputs: the decoder spoke
        # every one-word answer alike)
        self.prenet = nn.Sequential(
            nn.LayerNorm(hidden_size), nn.Linear(hidden_size, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim)
        )
        self.speller = Speller(dim) if spelling else None
        """Reads each text token's spelling beside its embedding (speechgpt.model.token_spelling), or None."""
        self.phoneme_embed = nn.Embedding(PHONEME_OFFSET + len(PHONEME_SYMBOLS), dim) if phonemes else None
        """Reads the text's phonemes after its tokens (speechgpt.text.phonemes; id 0 pads), or None."""
        self.prefix_in = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, dim))
        self.prefix_positions = nn.Embedding(max_positions, dim)
        self.prefix_blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout) for _ in range(prefix_layers))
        self.prefix_norm = nn.LayerNorm(dim)
        self.unit_embed = nn.Embedding(num_units + 1, dim)
        self.positions = nn.Embedding(max_positions, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn_dim, dropout) for _ in range(ar_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_units + 1)
        for table in (self.unit_embed, self.positions, self.prefix_positions):
            nn.init.normal_(table.weight, std=0.02)
        self.spec: dict[str, Any] = {}
        """The builder's arguments (set by `build_speech_decoder`)."""

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def part_names(self) -> dict[str, list[nn.Module]]:
        """The modules each output stage may train: the pre-net, the prefix decoder, the AR decoder."""
        prefix = [self.prefix_in, self.prefix_positions, self.prefix_blocks, self.prefix_norm]
        ar = [self.unit_embed, self.positions, self.blocks, self.norm, self.head]
        text: list[nn.Module] = [m for m in (self.prenet, self.speller, self.phoneme_embed) if m is not None]
        return {"prenet": text, "prefix": prefix, "ar": ar}

    def set_trainable(self, names: list[str]) -> int:
        """Train only the named parts (of prenet, prefix, ar); returns the trainable parameter count."""
        unknown = sorted(set(names) - set(self.part_names))
        if unknown or not names:
            raise ValueError(f"trainable must name some of {sorted(self.part_names)}, got {names}")
        self.requires_grad_(False)
        for name in names:
            for module in self.part_names[name]:
                module.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def spells(self) -> bool:
        """Whether the decoder reads the text tokens' spelling (`spelled` in `loss` and `generate`)."""
        return self.speller is not None

    @property
    def reads_phonemes(self) -> bool:
        """Whether the decoder reads the text's phonemes (`phonemes` in `loss` and `generate`)."""
        return self.phoneme_embed is not None

    def text_inputs(
        self,
        token_embeds: torch.Tensor,
        lengths: torch.Tensor,
        spelled: torch.Tensor | None = None,
        phonemes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's reading of the text, (B, T', dim) with lengths (B,): the pre-net over token_embeds
        (B, T, hidden_size) with `lengths`; where the decoder spells, plus spelled (B, T, SPELLING_BYTES) byte ids;
        where it reads phonemes, each row's phonemes (ids (B, Q), lengths (B,): TextPhonemes) after its tokens."""
        text = self.prenet(token_embeds.to(self.dtype))
        if self.speller is not None:
            if spelled is None:
                raise ValueError("this speech decoder reads the text's spelling: pass `spelled` (TokenSpelling)")
            text = text + self.speller(spelled[:, : text.shape[1]])
        if self.phoneme_embed is None:
            return text, lengths
        if phonemes is None:
            raise ValueError("this speech decoder reads the text's phonemes: pass `phonemes` (TextPhonemes)")
        sounds, sound_lengths = self.phoneme_embed(phonemes[0]), phonemes[1]
        rows = [
            torch.cat([text[b, : int(lengths[b])], sounds[b, : int(sound_lengths[b])]]) for b in range(text.shape[0])
        ]
        return nn.utils.rnn.pad_sequence(rows, batch_first=True), lengths + sound_lengths

    def prefix(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, P, hidden_size) LLM hidden states -> (B, P, dim) prefix, attending within each row's `lengths`."""
        steps = torch.arange(hidden.shape[1], device=hidden.device)
        x = self.prefix_in(hidden.to(self.dtype)) + self.prefix_positions(steps)[None]
        valid = steps[None, :] < lengths[:, None]
        mask = valid[:, None, None, :]
        for block in self.prefix_blocks:
            x, _ = block(x, mask)
        return self.prefix_norm(x)

    def loss(
        self,
        token_embeds: torch.Tensor,
        text_lengths: torch.Tensor,
        units: torch.Tensor,
        prefix: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
        spelled: torch.Tensor | None = None,
        phonemes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced cross-entropy of the units and EOS. token_embeds (B, T, hidden_size) with text_lengths;
        units (B, U) merged unit ids, IGNORE past each row's end; prefix (B, P, dim) with prefix_lengths, or None;
        spelled and phonemes where the decoder reads them (`text_inputs`). Returns loss and unit accuracy (argmax,
        units and EOS)."""
        text, text_lengths = self.text_inputs(token_embeds, text_lengths, spelled, phonemes)
        logits, targets = self._teacher_forced(text, text_lengths, units, prefix, prefix_lengths)
        keep = targets != IGNORE
        loss = F.cross_entropy(logits[keep].float(), targets[keep])
        accuracy = (logits[keep].argmax(-1) == targets[keep]).float().mean()
        return {"loss": loss, "units": loss.detach(), "accuracy": accuracy.detach()}

    def _teacher_forced(
        self,
        text: torch.Tensor,
        text_lengths: torch.Tensor,
        units: torch.Tensor,
        prefix: torch.Tensor | None,
        prefix_lengths: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, num_units + 1) over the assembled rows (text: the pre-net's output) and their targets
        (IGNORE where none)."""
        unit_lengths = (units != IGNORE).sum(1)
        rows, targets, sizes = [], [], []
        for b in range(text.shape[0]):
            p = int(prefix_lengths[b]) if prefix is not None and prefix_lengths is not None else 0
            t, n = int(text_lengths[b]), int(unit_lengths[b])
            row_units = units[b, :n]
            steps = torch.arange(t + 1 + n, device=text.device)
            body = torch.cat([text[b, :t], self.unit_embed(F.pad(row_units, (1, 0), value=self.bos))])
            body = body + self.positions(steps.clamp(max=self.max_positions - 1))
            parts = [prefix[b, :p].to(body.dtype)] if prefix is not None else []
            rows.append(torch.cat([*parts, body]))
            target = units.new_full((p + t + 1 + n,), IGNORE)
            target[p + t :] = F.pad(row_units, (0, 1), value=self.eos)
            targets.append(target)
            sizes.append(p + t + 1 + n)
        x = nn.utils.rnn.pad_sequence(rows, batch_first=True)
        length = x.shape[1]
        steps = torch.arange(length, device=x.device)
        valid = steps[None, :] < torch.tensor(sizes, device=x.device)[:, None]
        mask = (steps[None, :, None] >= steps[None, None, :]) & valid[:, None, :]
        x = self._ar(x, mask[:, None])[0]
        return self.head(self.norm(x)), nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=IGNORE)

    def _ar(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, cache[i] if cache is not None else None)
            new_cache.append(kv)
        return x, new_cache

    @torch.inference_mode()
    def generate(
        self,
        token_embeds: torch.Tensor,
        prefix: torch.Tensor | None = None,
        *,
        max_units: int,
        min_units: int = 1,
        spelled: torch.Tensor | None = None,
        phonemes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Iterator[int]:
        """Greedy merged units of one answer, one at a time (key/value cache): token_embeds (1, T, hidden_size),
        prefix (1, P, dim) or None, spelled and phonemes where the decoder reads them (`text_inputs`). Stops at EOS or
        after `max_units`; merged units never repeat the previous one."""
        lengths = torch.tensor([token_embeds.shape[1]], device=token_embeds.device)
        text, lengths = self.text_inputs(token_embeds, lengths, spelled, phonemes)
        t = int(lengths[0])
        text = text[0, :t]
        body = torch.cat([text, self.unit_embed.weight[self.bos][None]])
        x = body + self.positions(torch.arange(t + 1, device=body.device).clamp(max=self.max_positions - 1))
        if prefix is not None:
            x = torch.cat([prefix[0].to(x.dtype), x])
        mask = torch.ones(x.shape[0], x.shape[0], dtype=torch.bool, device=x.device).tril()[None, None]
        hidden, cache = self._ar(x[None], mask)
        previous, position = None, t + 1
        for count in range(max_units):
            logits = self.head(self.norm(hidden[0, -1])).float()
            if self.merged and previous is not None:
                logits[previous] = float("-inf")
            if count < min_units:
                logits[self.eos] = float("-inf")
            unit = int(logits.argmax())
            if unit == self.eos:
                return
            yield unit
            previous = unit
            step = torch.tensor([min(position, self.max_positions - 1)], device=x.device)
            x = (self.unit_embed(torch.tensor([unit], device=x.device)) + self.positions(step))[None]
            hidden, cache = self._ar(x, None, cache)
            position += 1


def build_speech_decoder(
    *,
    hidden_size: int,
    num_units: int,
    dim: int = 256,
    heads: int = 4,
    prefix_layers: int = 2,
    ar_layers: int = 4,
    ffn_dim: int | None = None,
    max_positions: int = 1024,
    dropout: float = 0.1,
    merged: bool = True,
    spelling: bool = False,
    phonemes: bool = False,
) -> SpeechDecoder:
    """A speech decoder for a backbone of `hidden_size` over `num_units` units (the k-means' k, or a codec's
    codebook size); `merged`: the units have their repeats merged (SpeechGPT units), else one per frame (codec
    codes, which a unit may follow); `spelling`: it also reads each text token's spelling; `phonemes`: it also reads
    the text's phonemes."""
    spec = {k: v for k, v in locals().items()}
    decoder = SpeechDecoder(
        hidden_size=hidden_size,
        num_units=num_units,
        dim=dim,
        heads=heads,
        prefix_layers=prefix_layers,
        ar_layers=ar_layers,
        ffn_dim=ffn_dim or 4 * dim,
        max_positions=max_positions,
        dropout=dropout,
        merged=merged,
        spelling=spelling,
        phonemes=phonemes,
    )
    decoder.spec = spec
    return decoder
