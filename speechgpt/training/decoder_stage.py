"""What the frozen-LLM variant's two output stages share: the decoder's settings, spoken texts from units datasets
(text -> merged units), the engine run and the export of the decoder with everything a loader needs (the text's
tokens as the LLM writes them are speechgpt.model.frozen_speaker.spoken_text_ids, which inference uses too). Each
stage file only says which data and which loss.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechgpt.data.units import EncoderTag, load_units_rows
from speechgpt.model.frozen_speaker import FrozenSpeaker, save_speech_decoder
from speechgpt.training.config import TrainConfig
from speechgpt.training.distributed import Dist
from speechgpt.training.engine import RunResult, train
from speechgpt.training.frozen_stage import export_checked
from speechgpt.training.speech_batches import SpeechBatches

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DecoderSettings:
    dim: int = 256
    """Width of the decoder."""
    heads: int = 4
    """Attention heads."""
    prefix_layers: int = 2
    """Layers of the NAR prefix decoder (over the LLM's hidden states)."""
    ar_layers: int = 4
    """Layers of the AR decoder (over the text and the units)."""
    ffn_dim: int | None = None
    """Feed-forward width (null: 4 x dim)."""
    max_positions: int = 1024
    """Text tokens plus units of one answer at most."""
    dropout: float = 0.1
    """Dropout in the decoder."""
    spelling: bool = False
    """Whether the decoder also reads each text token's spelling (its bytes, speechgpt.model.token_spelling) beside
    the LLM's embedding of it, so that it can say words the answer voice seldom or never spoke."""
    phonemes: bool = False
    """Whether the decoder also reads the text's phonemes (espeak-ng's, speechgpt.text.phonemes) after its tokens:
    how each word sounds, where tokens and spelling leave it to learn English letter-to-sound rules."""


@dataclass(frozen=True)
class SpokenText:
    id: str
    text: str
    units: list[int]
    split: str
    """The corpus split of the clip (train: a training voice's; others held out for evaluation)."""


def plain_text(text: str) -> str:
    """Lowercase words without punctuation: how a spoken text is matched to an answer."""
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def spoken_texts(paths: Sequence[Path]) -> tuple[EncoderTag, list[SpokenText]]:
    """The clips of units datasets with their text and merged units, in id order; every dataset must come from the
    same encoder and k-means (their ids index one codebook)."""
    if not paths:
        raise ValueError("no units dataset given (units: [...])")
    tags, clips = set(), []
    for path in paths:
        tag, rows = load_units_rows(path, ["id", "text", "units", "split"])
        tags.add(tag)
        clips += [
            SpokenText(r["id"], r["text"], r["units"], r["split"]) for r in rows if r["text"].strip() and r["units"]
        ]
    if len(tags) != 1:
        raise ValueError(
            f"units datasets {list(map(str, paths))} come from different encoders: {sorted(map(str, tags))}"
        )
    return tags.pop(), clips


def held_out(text: str, fraction: float) -> bool:
    """Whether a text is held out for evaluation: a stable hash of its plain form (every rendition goes one way)."""
    return zlib.crc32(plain_text(text).encode()) % 10_000 < fraction * 10_000


def train_decoder(
    cfg: TrainConfig,
    model: FrozenSpeaker,
    fingerprint: str,
    batches: SpeechBatches,
    out: Path,
    extra: dict[str, Any],
    dist: Dist,
    objective: str,
    settings: Any,
) -> RunResult:
    """The engine on the decoder's `objective` loss (`settings`: the stage's config); the export checks the LLM
    unchanged and writes <out>/final."""
    return train(
        cfg,
        model,
        batches,
        out,
        loss=lambda engine, batch: engine(batch, objective),
        export=lambda engine, out: export_checked(engine, out, fingerprint, extra, dist, save_speech_decoder),
        dist=dist,
        settings=settings,
    )
