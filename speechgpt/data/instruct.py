"""The SpeechInstruct dataset contract shared by the builders (writers) and the training stages (readers).

Rows: `id, task, split, prompt, response, text, loss_spans, num_tokens, source_ids`; `loss_spans` are character
ranges of `text` that are trained on. A dataset folder holds one split per sub-folder plus `dataset_dict.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

TASKS = ("unit_lm", "asr", "tts", "com_s2s", "com_s2t", "com_t2s", "com_t2t", "direct_s2t")
Task = Literal["unit_lm", "asr", "tts", "com_s2s", "com_s2t", "com_t2s", "com_t2t", "direct_s2t"]


def instruct_features() -> Any:
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "task": datasets.Value("string"),
            "split": datasets.Value("string"),
            "prompt": datasets.Value("string"),
            "response": datasets.Value("string"),
            "text": datasets.Value("string"),
            "loss_spans": datasets.List(datasets.List(datasets.Value("int32"))),
            "num_tokens": datasets.Value("int32"),
            "source_ids": datasets.List(datasets.Value("string")),
        }
    )


def load_instruct_dataset(path: str | Path) -> Any:
    """A `DatasetDict` from a builder's output folder or its `dataset/` folder."""
    import datasets

    path = Path(path)
    target = path / "dataset" if (path / "dataset").is_dir() else path
    if not (target / "dataset_dict.json").exists():
        raise FileNotFoundError(f"{path}: no instruct dataset here (expected {target}/dataset_dict.json)")
    return datasets.load_from_disk(str(target))
