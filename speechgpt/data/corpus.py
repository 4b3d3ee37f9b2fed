"""The corpus contract (DESIGN.md) and a resumable, deterministic corpus build.

A corpus folder holds `audio/<speaker>/<id>.flac` (16 kHz mono), `dataset/` (HF `save_to_disk`), `rejected.jsonl`
(one row per input that could not be used, with the reason), `summary.json` and `config.yaml`. Progress is journaled
to `journal.jsonl` as each item finishes, so a killed or limited build resumes where it stopped and ends with the
same bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from speechgpt.data.audio import SAMPLE_RATE, Audio16k, AudioError, write_audio
from speechgpt.data.audio_paths import absolute_audio_paths, relative_audio_paths
from speechgpt.data.io import append_jsonl, atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

CORPUS_COLUMNS = (
    "id",
    "audio",
    "text",
    "speaker",
    "duration_s",
    "source",
    "split",
    "orig_sample_rate",
    "orig_channels",
)
DATASET_DIR = "dataset"
_CHUNK = 512  # items handed to the worker pool at a time: bounds memory on streamed inputs
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str) -> str:
    """A file-system- and id-safe form of a voice or speaker name."""
    return _SAFE.sub("_", text).strip("_") or "x"


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One utterance as a reader found it, before its audio is decoded."""

    id: str
    speaker: str
    text: str | bytes | None
    """Transcript; bytes when the reader could not yet vouch for its encoding."""
    load_audio: Callable[[], Audio16k]
    """Picklable callable that decodes (or synthesizes) the clip; raises AudioError for unusable audio."""
    source: str
    split: str
    origin: str = ""
    """Where the item came from (file path, dataset row), quoted in rejection reasons."""
    problem: str | None = None
    """Set by a reader that already knows the item is unusable (`kind: detail`); it becomes the rejection."""


@dataclass(frozen=True, slots=True)
class Rejection:
    id: str
    origin: str
    reason: str
    """`kind: detail`; the kind (text before the colon) is what summaries count."""


def check_text(text: str | bytes | None) -> str:
    """Return the stripped transcript, or raise ValueError naming what is wrong with it."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"invalid UTF-8: transcript byte {text[err.start]:#04x} at offset {err.start}") from None
    if text is None or not text.strip():
        raise ValueError("missing transcript")
    return " ".join(text.split())


def convert_item(item: SourceItem, audio_dir: Path, max_duration_s: float) -> dict[str, Any]:
    """Validate one item and write its audio; returns a corpus row or a rejection, as a journal record."""
    if item.problem is not None:
        return {"rejected": asdict(Rejection(item.id, item.origin, item.problem))}
    try:
        text = check_text(item.text)
        audio = item.load_audio()
    except (ValueError, AudioError, OSError) as err:
        return {"rejected": asdict(Rejection(item.id, item.origin, str(err)))}
    if audio.duration_s > max_duration_s:
        reason = f"too long: {audio.duration_s:.2f}s over the limit of {max_duration_s:g}s"
        return {"rejected": asdict(Rejection(item.id, item.origin, reason))}
    path = audio_dir / safe_name(item.speaker) / f"{safe_name(item.id)}.flac"
    write_audio(path, audio.samples, SAMPLE_RATE)
    row = {
        "id": item.id,
        "audio": os.path.relpath(path, audio_dir.parent / DATASET_DIR),  # as the dataset stores it: audio_paths.py
        "text": text,
        "speaker": item.speaker,
        "duration_s": round(audio.duration_s, 4),
        "source": item.source,
        "split": item.split,
        "orig_sample_rate": audio.orig_sample_rate,
        "orig_channels": audio.orig_channels,
    }
    return {"row": row}


@dataclass
class CorpusBuild:
    """Runs `convert_item` over a stream of items with resume, rejection log and a deterministic dataset."""

    out_dir: Path
    settings: dict[str, Any]
    """What defines the result; a resume with different settings is refused."""
    max_duration_s: float
    num_workers: int = 1
    max_items: int | None = None
    """Stop after this many new items (the rest is done by a rerun)."""
    _done: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_settings()
        for record in read_jsonl(self.journal_path, skip_truncated_tail=True):
            self._done[_record_id(record)] = record

    @property
    def journal_path(self) -> Path:
        return self.out_dir / "journal.jsonl"

    def run(self, items: Iterable[SourceItem], desc: str = "corpus") -> dict[str, Any]:
        """Convert what is not done yet, then write the dataset if every item is done. Returns the summary.

        Items are consumed as a stream, a chunk at a time, so a large import never holds the whole input in memory.
        """
        seen: dict[str, None] = {}  # ordered set of ids
        duplicates: list[Rejection] = []
        counts = {"resumed_items": 0, "new_items": 0}

        def pending() -> Iterator[SourceItem]:
            for item in items:
                if item.id in seen:
                    duplicates.append(Rejection(item.id, item.origin, "duplicate id"))
                    continue
                seen[item.id] = None
                if item.id in self._done:
                    counts["resumed_items"] += 1
                elif self.max_items is None or counts["new_items"] < self.max_items:
                    counts["new_items"] += 1
                    yield item

        total = len(items) if isinstance(items, Sized) else None
        for record in self._convert(pending(), desc, total):
            append_jsonl(self.journal_path, record)
            self._done[_record_id(record)] = record
        complete = all(i in self._done for i in seen)
        summary = self._finish(list(seen), duplicates, complete)
        summary.update(counts)
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary

    def _convert(self, todo: Iterator[SourceItem], desc: str, total: int | None) -> Iterator[dict[str, Any]]:
        audio_dir = self.out_dir / "audio"
        bar = tqdm(total=total, desc=desc, unit="utt")
        try:
            if self.num_workers <= 1:
                for item in todo:
                    yield convert_item(item, audio_dir, self.max_duration_s)
                    bar.update()
                return
            with get_context("spawn").Pool(self.num_workers) as pool:
                while chunk := list(itertools.islice(todo, _CHUNK)):
                    jobs = [(item, audio_dir, self.max_duration_s) for item in chunk]
                    for record in pool.imap_unordered(_convert_star, jobs, chunksize=4):
                        yield record
                        bar.update()
        finally:
            bar.close()

    def _finish(self, ids: list[str], duplicates: list[Rejection], complete: bool) -> dict[str, Any]:
        records = [self._done[i] for i in ids if i in self._done]
        rows = sorted((r["row"] for r in records if "row" in r), key=lambda r: r["id"])
        rejected = sorted(
            [r["rejected"] for r in records if "rejected" in r] + [asdict(d) for d in duplicates],
            key=lambda r: (r["id"], r["reason"]),
        )
        lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rejected)
        atomic_write_text(self.out_dir / "rejected.jsonl", lines)
        summary: dict[str, Any] = {
            "complete": complete,
            "items": len(ids) + len(duplicates),
            "utterances": len(rows),
            "rejected": len(rejected),
            "rejected_by_reason": dict(sorted(Counter(r["reason"].split(":")[0] for r in rejected).items())),
            "hours": round(sum(r["duration_s"] for r in rows) / 3600, 4),
            "speakers": len({r["speaker"] for r in rows}),
        }
        if complete:
            summary["dataset"] = str(write_corpus_dataset(rows, self.out_dir / DATASET_DIR))
        else:
            log.warning(
                "%s: %d of %d items done; rerun the same command to finish",
                self.out_dir,
                len(records),
                len(ids),
            )
        return summary

    def _check_settings(self) -> None:
        check_build_settings(self.out_dir, self.settings)


def check_build_settings(out_dir: Path, settings: dict[str, Any], write: bool = True) -> None:
    """Refuse to resume a build in a folder made with other settings; record the settings otherwise."""
    path = out_dir / "build.json"
    current = json.dumps(settings, sort_keys=True, default=str)
    if path.exists() and path.read_text(encoding="utf-8").strip() != current:
        raise ValueError(
            f"{out_dir} holds a build made with other settings ({path}); choose a new output folder or delete this one"
        )
    if write:
        atomic_write_text(path, current + "\n")


def write_corpus_dataset(rows: list[dict[str, Any]], path: Path) -> Path:
    """Save corpus rows as a HF dataset with the corpus features."""
    return write_dataset(rows, path, corpus_features())


def write_dataset(rows: list[dict[str, Any]], path: Path, features: Any) -> Path:
    """Save rows as a HF dataset; same rows give the same bytes (content fingerprint). Atomic via rename. The
    fingerprint hashes the rows as given: a corpus journal's rows hold audio paths relative to the dataset, so the
    same corpus built in two folders gets the same one, and a journal written with absolute paths keeps the one it
    had (the resume checks downstream compare it); `save_dataset` stores the paths relative either way."""
    import datasets
    import pyarrow as pa

    table = pa.Table.from_pylist(rows, schema=features.arrow_schema) if rows else features.arrow_schema.empty_table()
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    dataset = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=digest)
    return save_dataset(dataset, path)


def save_dataset(dataset: Any, path: Path) -> Path:
    """`save_to_disk` into a temporary folder (clearing one a killed run left), then swap it in by rename. Audio paths
    are stored relative to `path` (speechgpt/data/audio_paths.py)."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    relative_audio_paths(dataset, path).save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def corpus_features() -> Any:
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "audio": datasets.Value("string"),
            "text": datasets.Value("string"),
            "speaker": datasets.Value("string"),
            "duration_s": datasets.Value("float32"),
            "source": datasets.Value("string"),
            "split": datasets.Value("string"),
            "orig_sample_rate": datasets.Value("int32"),
            "orig_channels": datasets.Value("int32"),
        }
    )


def load_corpus(path: str | Path) -> Any:
    """Load a corpus dataset from its build folder or its `dataset/` folder, checking the columns; audio paths come
    back absolute."""
    import datasets

    path = Path(path)
    target = path / DATASET_DIR if (path / DATASET_DIR).is_dir() else path
    if not (target / "state.json").exists():
        raise FileNotFoundError(f"{path}: no corpus dataset here (expected {target}/state.json)")
    dataset = datasets.load_from_disk(str(target))
    missing = [c for c in CORPUS_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{target}: not a corpus dataset, missing columns {missing}")
    return absolute_audio_paths(dataset, target)


def _convert_star(args: tuple[SourceItem, Path, float]) -> dict[str, Any]:
    return convert_item(*args)


def _record_id(record: dict[str, Any]) -> str:
    return str((record.get("row") or record["rejected"])["id"])
