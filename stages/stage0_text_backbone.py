"""Stage 0 of the embedded default: a tiny causal LM trained from scratch on the domain's text, standing in for a
pretrained LLM (so what speech training costs in text ability can be measured). Any HF causal LM folder or hub id
replaces it in stage 1; this stage exists because none can be downloaded here.

Text: the train split of `speechgpt build qa` as plain `question? answer.` lines, plus the transcripts of a corpus'
train split. The tokenizer (byte-level BPE) is trained on the same text; every token is trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from speechgpt.config import save_config
from speechgpt.model.tiny import SPECIAL, build_tiny_lm, train_tokenizer
from speechgpt.text.backbone_text import corpus_sentences, echo_rows, load_qa_split, qa_rows, sentence_rows
from speechgpt.text.template import SPEECHGPT_SYSTEM, marker_tokens
from speechgpt.training.batches import TokenBatches
from speechgpt.training.checkpoint import seed_everything
from speechgpt.training.config import TrainConfig
from speechgpt.training.data import tokenize_rows
from speechgpt.training.distributed import setup_process
from speechgpt.training.engine import train
from speechgpt.training.export import FINAL, export_full
from speechgpt.training.packed_attention import prepare_attention

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config:
    qa: Path
    """Folder from `speechgpt build qa` (train/dev/test.jsonl of question/answer pairs)."""
    qa_splits: list[str] = field(default_factory=lambda: ["train", "dev", "test"])
    """QA splits whose `question? answer.` lines the backbone learns. All of them by default: knowledge lives in the
    backbone (a pretrained LLM knows its facts) and speech skills come from the stages, which see only the train
    questions' speech (DESIGN.md, the demo's protocol)."""
    qa_repeats: int = 1
    """Copies of each QA line per epoch: facts need more passes than the corpus' sentences need."""
    corpus: Path | None = None
    """Optional corpus folder whose train-split transcripts are added as plain text; its other splits' sentences
    (never trained) are the held-out text the backbone is evaluated on."""
    echo_lines: bool = False
    """Also train `sentence -> sentence` for each of the corpus' train transcripts: saying again what came before,
    which a pretrained LLM can do and a model trained on single lines cannot. The frozen variant needs it: its
    adapter's speech reaches the frozen LLM's words only through a path that reads earlier input."""
    out: Path = Path("out/backbone")
    """Run folder; the model and tokenizer are exported to <out>/final."""
    base: str | None = None
    """An HF causal LM (folder or hub id) to fine-tune on the same text instead of a tiny model trained from scratch
    (`family` and the sizes below are then unused; its own tokenizer and EOS are kept)."""
    family: Literal["llama", "qwen2", "gemma3"] = "llama"
    """Architecture family of the tiny model."""
    hidden_size: int = 256
    """Model width."""
    num_layers: int = 4
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    vocab_size: int = 2000
    """Byte-level BPE vocabulary size (the speech tokens are added later, in stage 1)."""
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            max_steps=300, lr=2e-3, seq_len=512, warmup_steps=20, eval_every=100, save_every=100
        )
    )
    """Engine settings."""


def text_rows(cfg: Config, eos: str) -> tuple[list[dict], list[dict]]:
    """The training rows (QA lines of `qa_splits`, `qa_repeats` times, then the corpus' train sentences, then their
    echo lines when asked) and the evaluation rows (the corpus' held-out sentences, then the QA lines of dev/test
    splits not trained), each closed by `eos`."""

    def qa(splits: list[str]) -> list[dict]:
        return qa_rows([r for split in splits for r in load_qa_split(cfg.qa, split)], eos)

    def sentences(trained: bool) -> list[str]:
        return corpus_sentences(cfg.corpus, trained) if cfg.corpus is not None else []

    qa_lines = qa(cfg.qa_splits)
    copies = [{**row, "id": f"{row['id']}#{copy}"} for copy in range(1, cfg.qa_repeats) for row in qa_lines]
    heldout_qa = qa([s for s in ("dev", "test") if s not in cfg.qa_splits])
    trained = sentences(trained=True)
    text = sentence_rows(trained, eos, "text") + (echo_rows(trained, eos) if cfg.echo_lines else [])
    return qa_lines + copies + text, sentence_rows(sentences(trained=False), eos, "heldout-text") + heldout_qa


def base_model(cfg: Config) -> tuple[Any, Any, list[dict], list[dict]]:
    """The model and tokenizer training starts from, with the text rows closed by its EOS: `cfg.base` loaded, or a
    tiny model with a BPE trained on the rows."""
    if cfg.base is not None:
        from speechgpt.model.load import load_lm

        model, tokenizer = load_lm(cfg.base)
        if tokenizer.eos_token is None:
            raise ValueError(f"{cfg.base}: its tokenizer has no EOS token, which ends every text the stages train")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer, *text_rows(cfg, tokenizer.eos_token)
    train_rows, eval_rows = text_rows(cfg, SPECIAL["eos_token"])
    texts = [r["text"] for r in train_rows]
    tokenizer = train_tokenizer([*texts, SPEECHGPT_SYSTEM, *marker_tokens()], cfg.vocab_size)
    model = build_tiny_lm(
        cfg.family,
        tokenizer,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        seed=cfg.train.seed,
    )
    return model, tokenizer, train_rows, eval_rows


def run(cfg: Config) -> Path:
    dist = setup_process(cfg.train.num_threads)
    if dist.is_main:
        save_config(cfg, cfg.out)
    seed_everything(cfg.train.seed)
    model, tokenizer, train_rows, eval_rows = base_model(cfg)
    prepare_attention(model, packing=cfg.train.packing, shared_prefix=cfg.train.shared_prefix)
    examples, _ = tokenize_rows(train_rows, tokenizer, cfg.train.seq_len)
    evals = {"heldout": tokenize_rows(eval_rows, tokenizer, cfg.train.seq_len)[0]} if eval_rows else {}
    log.info("backbone: %d parameters, %d training texts", sum(p.numel() for p in model.parameters()), len(examples))

    train(
        cfg.train,
        model,
        TokenBatches.for_config(cfg.train, examples, tokenizer.pad_token_id, evals),
        cfg.out,
        export=lambda engine, out: export_full(engine, tokenizer, out),
        dist=dist,
        settings=cfg,
    )
    return cfg.out / FINAL
