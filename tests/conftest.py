"""Shared fixtures. Tests run one torch thread per process (the machine's two cores act like one)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The cat sat on the warm mat.",
    "She choked with emotion when she spoke.",
    "The mountain climber started to breathe fast.",
    "I can breathe better when the air is clean.",
]
TWO_VOICES = ["flite:slt", "espeak-ng:en-us+f3"]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sentences_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("text") / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory, sentences_file: Path) -> Path:
    """A 2-voice, 4-sentence corpus synthesized with real TTS engines (8 clips)."""
    from data_builders import synth_corpus

    if not (shutil.which("flite") and shutil.which("espeak-ng")):
        pytest.fail("flite and espeak-ng are required (make test installs them)")
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    cfg = synth_corpus.Config(
        out=out,
        text_source=str(sentences_file),
        voices=TWO_VOICES,
        heldout_voices=["espeak-ng:en-us+f3"],
        max_sentences=None,
        num_workers=2,
    )
    return synth_corpus.run(cfg)


def subprocess_env() -> dict[str, str]:
    """This process's environment without the distributed variables an in-process training run set, so a child
    process starts as its own single rank instead of joining (or colliding with) this one's process group."""
    dist_vars = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    return {k: v for k, v in os.environ.items() if k not in dist_vars} | {"OMP_NUM_THREADS": "1"}
