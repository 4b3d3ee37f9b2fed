"""What the frozen-LLM variant's three input stages have in common: the speech encoder's settings, corpus clips
with cached features, the frozen LLM (loaded, frozen, fingerprinted), the text template around the speech, which
modules train, and the export of the speech modules with everything a loader needs. Each stage file only says
which model, which data and which loss.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from speechgpt.config import config_from_dict
from speechgpt.data.corpus import load_corpus
from speechgpt.data.io import atomic_write_text
from speechgpt.model.frozen_checkpoint import read_speech_meta, save_speech_encoder, save_speech_modules
from speechgpt.model.frozen_lm import FrozenSpeechLM, ctc_loss_parts, weights_fingerprint
from speechgpt.model.speech_encoder import SpeechEncoder
from speechgpt.training.config import TrainConfig
from speechgpt.training.distributed import Dist
from speechgpt.training.engine import RunResult, train
from speechgpt.training.export import FINAL
from speechgpt.training.feature_cache import Clip, ClipFeatures, FeatureSettings
from speechgpt.training.speech_batches import IGNORE, SpeechBatches, SpeechExample

log = logging.getLogger(__name__)
TRAINABLE = ("encoder", "adapter", "prompt", "state_head")
"""The speech modules a stage may train (the LLM never)."""
SPEECH, TARGET = "{speech}", "{target}"


@dataclass(kw_only=True)
class EncoderSettings:
    dim: int = 256
    """Encoder width."""
    num_layers: int = 6
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    ffn_dim: int | None = None
    """Feed-forward width (null: 4 x dim)."""
    subsampling: int = 4
    """Convolutional subsampling of the feature frames (a power of two)."""
    conv_channels: int | None = None
    """Channels of the subsampling convolutions (null: dim)."""
    chunk_ms: float = 160.0
    """Attention chunk (one state decision each); must be a whole number of encoder frames."""
    left_chunks: int = 8
    """Earlier chunks each chunk attends to (< 0: all)."""
    dropout: float = 0.1
    """Dropout in the encoder."""


@dataclass(frozen=True)
class SpeechTemplate:
    """How a clip sits in the LLM's text: `{speech}` (prompt embeddings, then the speech embeddings) and `{target}`
    (the trained text). Fed, not trained: the tokenizer's BOS (when it has one) and the text before {speech}
    (`prefix_ids`), and the text between {speech} and {target} less its trailing spaces (`answer_prefix_ids`).
    Trained: those spaces, {target} and the text after it (tokenized as one string, so ` seven.` gets the tokens a
    byte-level BPE LLM learned after `?`), then EOS when `eos`. Listening feeds the same two id lists."""

    text: str
    eos: bool = False

    def __post_init__(self) -> None:
        if (
            self.text.count(SPEECH) != 1
            or self.text.count(TARGET) != 1
            or self.text.index(SPEECH) > self.text.index(TARGET)
        ):
            raise ValueError(f"template {self.text!r} needs one {SPEECH} and then one {TARGET}")

    @property
    def parts(self) -> tuple[str, str, str]:
        """(before the speech, between speech and target, after the target)."""
        before, rest = self.text.split(SPEECH)
        middle, after = rest.split(TARGET)
        return before, middle, after

    def prefix_ids(self, tokenizer: Any) -> list[int]:
        bos = [int(tokenizer.bos_token_id)] if tokenizer.bos_token_id is not None else []
        return bos + token_ids(tokenizer, self.parts[0])

    def answer_prefix_ids(self, tokenizer: Any) -> list[int]:
        return token_ids(tokenizer, self.parts[1].rstrip(" "))

    def targets(self, tokenizer: Any, target: str | None) -> dict[str, list[int]]:
        """prefix_ids, text_ids and labels of a clip (target None: speech only, nothing after it, nothing trained)."""
        prefix = self.prefix_ids(tokenizer)
        if target is None:
            return {"prefix_ids": prefix, "text_ids": [], "labels": []}
        _, middle, after = self.parts
        fed = self.answer_prefix_ids(tokenizer)
        trained = token_ids(tokenizer, middle[len(middle.rstrip(" ")) :] + target + after)
        if self.eos and tokenizer.eos_token_id is not None:
            trained.append(int(tokenizer.eos_token_id))
        return {"prefix_ids": prefix, "text_ids": fed + trained, "labels": [IGNORE] * len(fed) + trained}

    def meta(self) -> dict[str, Any]:
        return {"text": self.text, "eos": self.eos}


@dataclass
class FrozenLM:
    lm: Any
    tokenizer: Any
    path: str
    """Absolute path of a local folder (the hub id as given otherwise)."""
    fingerprint: str


def token_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids of `text` as the LLM reads it inside a line (no special tokens); [] for no text."""
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]] if text else []


def engine_bf16(cfg: TrainConfig, dist: Dist) -> bool:
    """Whether the engine runs in DeepSpeed's bf16 mode (as `engine.build_engine` decides)."""
    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and dist.device != "cpu")


def load_frozen_lm(backbone: str | Path, bf16: bool) -> FrozenLM:
    """The LLM and tokenizer, frozen, in the dtype the engine will hold it in (bf16 mode casts the model: a float32
    LLM would change bytes), with its weights fingerprint taken before any training."""
    from speechgpt.model.load import load_lm

    path = Path(backbone).resolve() if Path(backbone).is_dir() else backbone
    lm, tokenizer = load_lm(path, dtype="bfloat16" if bf16 else "float32")
    lm.requires_grad_(False).eval()
    return FrozenLM(lm, tokenizer, str(path), weights_fingerprint(lm))


def set_trainable(model: FrozenSpeechLM, names: Sequence[str]) -> int:
    """Train only the named speech modules (the encoder's CTC head stays as stage 1 left it); returns the count of
    trainable parameters."""
    unknown = sorted(set(names) - set(TRAINABLE))
    if unknown or not names:
        raise ValueError(f"trainable must name some of {list(TRAINABLE)}, got {list(names)}")
    model.requires_grad_(False)
    for name in names:
        getattr(model, name).requires_grad_(True)
    if model.encoder.ctc_head is not None:
        model.encoder.ctc_head.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class CTCRecognizer(nn.Module):
    """Input stage 1's model: the encoder alone; `forward(batch)` gives its CTC loss parts. Its state dict names the
    encoder's weights `encoder.*`, as the speech-modules files do."""

    def __init__(self, encoder: SpeechEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return ctc_loss_parts(self.encoder, batch)


def with_feature_dtype(engine: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with its features in the encoder's dtype, or its precomputed encoder frames in the adapter's
    (DeepSpeed's bf16 mode casts the weights, not inputs)."""
    module = getattr(engine, "module", engine)
    key, reader = ("frames", module.adapter) if "frames" in batch else ("features", module.encoder)
    return {**batch, key: batch[key].to(next(reader.parameters()).dtype)}


def corpus_rows(corpus: Path, splits: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per split (in `splits`), the corpus rows (id, audio, text, speaker, split) in id order."""
    dataset = load_corpus(corpus).select_columns(["id", "audio", "text", "speaker", "split"])
    wanted = {split: [] for split in splits}  # type: dict[str, list[dict[str, Any]]]
    for row in dataset:
        if row["split"] in wanted:
            wanted[row["split"]].append(row)
    return {split: sorted(rows, key=lambda r: r["id"]) for split, rows in wanted.items()}


def instruct_asr_clip_ids(data: Path, split: str = "train") -> set[str]:
    """The corpus clips whose speech an instruct dataset (`speechgpt build stage2`) trains ASR on: the source ids of
    its `split` ASR examples. The frozen stages train on exactly these when told to (`same_clips_as`), so that both
    variants learn from the same clips and neither sees the sentences the unified eval holds out."""
    from speechgpt.data.instruct import load_instruct_dataset

    dataset = load_instruct_dataset(data)
    if split not in dataset:
        raise ValueError(f"{data}: no split {split!r} (splits: {list(dataset)})")
    rows = dataset[split].select_columns(["task", "source_ids"])
    ids = {
        clip
        for task, sources in zip(rows["task"], rows["source_ids"], strict=True)
        if task == "asr"
        for clip in sources
    }
    if not ids:
        raise ValueError(f"{data}: its {split!r} split has no ASR example")
    return ids


def only_clips(rows: list[dict[str, Any]], data: Path | None) -> list[dict[str, Any]]:
    """`rows` restricted to the clips `data` trains ASR on (all of them when `data` is None)."""
    if data is None:
        return rows
    keep = instruct_asr_clip_ids(data)
    return [row for row in rows if row["id"] in keep]


TargetsOf = Callable[[dict[str, Any], torch.Tensor], "dict[str, list[int]] | str"]
"""A clip's targets from its row and features, or why it cannot be used."""


def speech_examples(
    rows: Sequence[dict[str, Any]], feats: ClipFeatures, targets_of: TargetsOf, group: str = "asr"
) -> tuple[list[SpeechExample], Counter[str]]:
    """The examples of `rows` (group: the row's `group`, else `group`), and the clips left out by reason: no
    features (unreadable audio, too short) or what `targets_of` says."""
    examples, skipped = [], Counter[str]()
    for row in rows:
        reason = feats.rejected.get(row["id"])
        targets = reason.split(":")[0] if reason is not None else targets_of(row, feats.features[row["id"]])
        if isinstance(targets, str):
            skipped[targets] += 1
        else:
            examples.append(SpeechExample(row["id"], row.get("group", group), feats.features[row["id"]], targets))
    return examples, skipped


def clips_of(*row_lists: Sequence[dict[str, Any]]) -> list[Clip]:
    """The clips of the rows (id and audio), each once."""
    return list({r["id"]: Clip(r["id"], r["audio"]) for rows in row_lists for r in rows}.values())


def capped(items: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """At most `limit` of `items`, drawn with `seed`, in their original order."""
    if limit is None or len(items) <= limit:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def features_meta(settings: FeatureSettings, encoder: SpeechEncoder) -> dict[str, Any]:
    """What the export says about the features: the settings, frame rate and width, and the encoder's CMVN."""
    return {
        "features": {**asdict(settings), "frame_rate": settings.frame_rate, "dim": encoder.input_dim},
        "cmvn": {"mean": encoder.cmvn_mean.float().tolist(), "std": encoder.cmvn_std.float().tolist()},
    }


def report_skipped(out: Path, skipped: Mapping[str, Counter[str]], dist: Dist) -> None:
    """Log and write <out>/skipped.json: per split, how many clips were left out and why."""
    counts = {split: dict(sorted(c.items())) for split, c in skipped.items() if c}
    if not dist.is_main:
        return
    atomic_write_text(out / "skipped.json", json.dumps(counts, indent=2, sort_keys=True) + "\n")
    if counts:
        log.warning("clips skipped: %s (%s)", counts, out / "skipped.json")


def gathered(engine: Any) -> Any:
    """A context in which every weight is whole (ZeRO-3 partitions them; every rank must enter it)."""
    import contextlib

    if engine.zero_optimization_stage() != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)


def check_unchanged(lm: Any, fingerprint: str) -> None:
    """Raise when the frozen LLM's weights differ from the fingerprint taken before training."""
    now = weights_fingerprint(lm)
    if now != fingerprint:
        raise RuntimeError(f"the frozen LLM's weights changed during training (fingerprint {fingerprint} -> {now})")


def export_checked(
    engine: Any, out: Path, fingerprint: str, extra: dict[str, Any], dist: Dist, save: Callable[..., Any]
) -> None:
    """Check the frozen LLM (`engine.module.lm`) unchanged, then `save(module, <out>/final, **extra)` on rank 0:
    the export of every stage that trains around the frozen LLM (speech modules, or the speech decoder)."""
    with gathered(engine):
        check_unchanged(engine.module.lm, fingerprint)
        if dist.is_main:
            save(engine.module, out / FINAL, **extra)
            log.info("exported %s", out / FINAL)


def export_encoder(engine: Any, out: Path, extra: dict[str, Any], dist: Dist) -> None:
    with gathered(engine):
        if dist.is_main:
            save_speech_encoder(engine.module.encoder, out / FINAL, **extra)
            log.info("exported %s", out / FINAL)


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name in TRAINABLE if any(p.requires_grad for p in getattr(model, name, nn.Module()).parameters())]


def speech_lm_meta(
    stage: str, frozen: FrozenLM, model: FrozenSpeechLM, init: Path, template: SpeechTemplate
) -> dict[str, Any]:
    """The export's meta beyond save_speech_modules' own: the stage, the backbone, the features, CMVN and CTC
    vocabulary the encoder came with (from `init`), the text template, what trained and where it started."""
    before = read_speech_meta(init)
    return {
        "stage": stage,
        "backbone": frozen.path,
        **{key: before[key] for key in ("features", "cmvn", "ctc_vocab")},
        "template": template.meta(),
        "trainable": trainable_names(model),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "init": str(init.resolve()),
    }


def train_speech_lm(
    cfg: TrainConfig,
    model: FrozenSpeechLM,
    frozen: FrozenLM,
    batches: SpeechBatches,
    out: Path,
    extra: dict[str, Any],
    dist: Dist,
    objective: str,
    settings: Any,
    **options: Any,
) -> RunResult:
    """The engine on `model`'s `objective` loss (`settings`: the stage's config); the export checks the LLM unchanged
    and writes <out>/final."""
    return train(
        cfg,
        model,
        batches,
        out,
        loss=lambda engine, batch: engine(with_feature_dtype(engine, batch), objective, **options),
        export=lambda engine, out: export_checked(engine, out, frozen.fingerprint, extra, dist, save_speech_modules),
        dist=dist,
        settings=settings,
    )


def init_feature_settings(init: Path) -> FeatureSettings:
    """The feature settings a previous stage's export was trained on (the encoder only reads those)."""
    stored = read_speech_meta(init)["features"]
    known = {f.name: stored[f.name] for f in fields(FeatureSettings) if f.name in stored}
    return config_from_dict(FeatureSettings, known, source=f"{init} (its features)")
