"""`speechgpt corpus import`: LibriSpeech folders, Hugging Face ASR datasets and JSONL/TSV manifests as a corpus.

Readers yield `SourceItem`s whose audio is decoded only when `CorpusBuild` converts them (picklable partials), so
resume, `rejected.jsonl` and `summary.json` work as for `corpus synth`. A problem with one utterance (bad UTF-8,
unreadable, truncated or missing audio, a malformed manifest line) rejects that utterance, naming each of its defects;
only a problem with the input as a whole (missing folder, unknown column) stops the import.
"""

from __future__ import annotations

import functools
import io
import itertools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from data_builders.import_common import (
    AUDIO_SUFFIXES,
    UNKNOWN_SPEAKER,
    Columns,
    file_loader,
    require_columns,
    unusable,
)
from data_builders.import_manifest import manifest_items
from speechgpt.config import config_to_dict, save_config
from speechgpt.data.audio import Audio16k, AudioError, read_samples, to_16k_mono
from speechgpt.data.corpus import CorpusBuild, SourceItem

log = logging.getLogger(__name__)

_RUN_CONTROL = {"out", "num_workers", "limit"}  # fields that do not change the result
MANIFEST_SUFFIXES = {".jsonl", ".tsv"}


PRESETS: dict[str, Columns] = {
    "none": Columns(audio="audio", text="text", speaker="speaker", id="id"),
    "librispeech": Columns(audio="audio", text="text", speaker="speaker_id", id="id"),
    "common_voice": Columns(audio="audio", text="sentence", speaker="client_id", id="path"),
    # GigaSpeech's `speaker` column is "N/A" throughout; the recording (podcast episode, video) stands in for it.
    "gigaspeech": Columns(audio="audio", text="text", speaker="audio_id", id="segment_id"),
}


@dataclass(kw_only=True)
class Config:
    kind: Literal["librispeech", "hf", "manifest"]
    """Input: a LibriSpeech folder (root), a Hugging Face dataset (hf_path) or a JSONL/TSV manifest (manifest)."""
    out: Path = Path("out/corpus_import")
    """Output folder: audio/, dataset/ (HF save_to_disk), rejected.jsonl, summary.json, config.yaml."""
    root: Path | None = None
    """kind=librispeech: a subset folder (e.g. LibriSpeech/train-clean-100) or a folder holding several subsets."""
    hf_path: str | None = None
    """kind=hf: a folder written by Dataset.save_to_disk, or a dataset name for datasets.load_dataset."""
    hf_config: str | None = None
    """kind=hf: the dataset configuration passed to load_dataset (e.g. 'clean', 'en', 'xs')."""
    hf_split: str = "train"
    """kind=hf: the split to read (load_dataset's split, or the key of a saved DatasetDict)."""
    streaming: bool = True
    """kind=hf with a dataset name: stream rows instead of downloading the whole dataset first."""
    manifest: Path | None = None
    """kind=manifest: a .jsonl (one object per line) or .tsv (header line, tab-separated) file."""
    preset: Literal["none", "librispeech", "common_voice", "gigaspeech"] = "none"
    """Column names of a known dataset (hf and manifest); 'none' means audio/text/speaker/id."""
    audio_column: str | None = None
    """Column holding the audio (HF Audio value, file path or bytes); null takes the preset's."""
    text_column: str | None = None
    """Column holding the transcript; null takes the preset's."""
    speaker_column: str | None = None
    """Column holding the speaker; null takes the preset's. Rows without one get speaker 'unknown'."""
    id_column: str | None = None
    """Column holding the utterance id; null takes the preset's. Without one: audio file stem, or HF row number."""
    split: str | None = None
    """Split of every item; null: LibriSpeech subset folder name, hf_split, manifest 'split' column or 'train'."""
    source: str | None = None
    """Source label of every item; null derives it ('librispeech', 'hf:<hf_path>', 'manifest:<file name>')."""
    max_duration_s: float = 35.0
    """Clips longer than this are rejected (recorded in rejected.jsonl)."""
    take: int | None = None
    """Import only the first this many utterances of the input (a subset: part of the result, unlike limit)."""
    num_workers: int = 4
    """Decoding processes."""
    limit: int | None = None
    """Stop after this many new items; a rerun without it finishes the corpus (resume)."""

    def __post_init__(self) -> None:
        needs = {"librispeech": "root", "hf": "hf_path", "manifest": "manifest"}
        if self.kind not in needs:
            raise ValueError(f"kind must be one of {sorted(needs)}, got {self.kind!r}")
        for kind, name in needs.items():
            if kind == self.kind and getattr(self, name) in (None, ""):
                raise ValueError(f"kind={kind} needs {name}")
            if kind != self.kind and getattr(self, name) is not None:
                raise ValueError(f"{name} is only used with kind={kind}, not kind={self.kind}")
        if self.manifest is not None and self.manifest.suffix.lower() not in MANIFEST_SUFFIXES:
            raise ValueError(f"manifest must end in .jsonl or .tsv, got {self.manifest}")
        if self.max_duration_s <= 0:
            raise ValueError("max_duration_s must be positive")
        for name in ("take", "limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (or null)")

    @property
    def columns(self) -> Columns:
        """The preset's column names with the explicit *_column fields laid over them."""
        explicit = (self.audio_column, self.text_column, self.speaker_column, self.id_column)
        return Columns(*(own or preset for own, preset in zip(explicit, PRESETS[self.preset], strict=True)))

    @property
    def source_label(self) -> str:
        derived = {"hf": f"hf:{self.hf_path}", "manifest": f"manifest:{Path(self.manifest or '').name}"}
        return self.source or derived.get(self.kind, "librispeech")


def run(cfg: Config) -> Path:
    """Import every utterance not yet done, then write the corpus dataset. Returns cfg.out."""
    save_config(cfg, cfg.out)
    settings = {k: v for k, v in config_to_dict(cfg).items() if k not in _RUN_CONTROL}
    build = CorpusBuild(cfg.out, settings, cfg.max_duration_s, num_workers=cfg.num_workers, max_items=cfg.limit)
    readers = {"librispeech": librispeech_items, "hf": hf_items, "manifest": manifest_items}
    items = itertools.islice(readers[cfg.kind](cfg), cfg.take)
    summary = build.run(items, desc=f"import {cfg.kind}")
    log.info("corpus %s: %s", cfg.out, summary)
    return cfg.out


# --- LibriSpeech -------------------------------------------------------------------------------------------------
def librispeech_items(cfg: Config) -> Iterator[SourceItem]:
    """Items of `<subset>/<speaker>/<chapter>/`, in id order; the speaker is the speaker folder's name."""
    assert cfg.root is not None
    if not cfg.root.is_dir():
        raise FileNotFoundError(f"root {cfg.root}: no such folder")
    for subset in librispeech_subsets(cfg.root):
        split = cfg.split or subset.name
        for chapter_dir in sorted(p for p in subset.glob("*/*") if p.is_dir()):
            yield from _chapter_items(chapter_dir, split, cfg.source_label)


def librispeech_subsets(root: Path) -> list[Path]:
    """[root] when root is a subset (train-clean-100), else the subsets inside it (LibriSpeech/)."""
    if any(root.glob("*/*/*.trans.txt")):
        return [root]
    subsets = sorted({p.parents[2] for p in root.glob("*/*/*/*.trans.txt")})
    if not subsets:
        raise FileNotFoundError(f"root {root}: no LibriSpeech transcripts (<speaker>/<chapter>/*.trans.txt)")
    return subsets


def _chapter_items(chapter_dir: Path, split: str, source: str) -> Iterator[SourceItem]:
    # Transcripts stay bytes until check_text, so one line in a foreign encoding rejects one utterance only.
    transcripts: dict[str, bytes] = {}
    for trans in sorted(chapter_dir.glob("*.trans.txt")):
        for line in trans.read_bytes().splitlines():
            utt_id, _, transcript = line.strip().partition(b" ")
            if utt_id:
                transcripts[utt_id.decode("utf-8", "backslashreplace")] = transcript
    audio = {p.stem: p for p in chapter_dir.glob("*.flac")}
    speaker = chapter_dir.parent.name
    for item_id in sorted(transcripts.keys() | audio.keys()):
        path = audio.get(item_id, chapter_dir / f"{item_id}.flac")
        text = transcripts.get(item_id)
        yield SourceItem(item_id, speaker, text, file_loader(path), source, split, origin=str(path))


# --- Hugging Face datasets ---------------------------------------------------------------------------------------
def hf_items(cfg: Config) -> Iterator[SourceItem]:
    """Rows of a saved or hub dataset; audio is kept encoded (decode=False) and decoded when converted."""
    import datasets

    dataset = open_hf_dataset(cfg)
    cols = cfg.columns
    names = dataset.column_names  # None for a streamed dataset that does not declare its features
    if names is not None:
        require_columns(names, cols, f"dataset {cfg.hf_path}")
        dataset = dataset.select_columns([c for c in dict.fromkeys(cols) if c in names])
    features = dataset.features
    if features is not None and isinstance(features.get(cols.audio), datasets.Audio):
        # Encoded bytes are a fraction of the decoded samples and pickle cheaply to the worker pool.
        dataset = dataset.cast_column(cols.audio, datasets.Audio(decode=False))
    split = cfg.split or cfg.hf_split
    for index, row in enumerate(dataset):
        if index == 0 and names is None:
            require_columns(list(row), cols, f"dataset {cfg.hf_path}")
        text = row.get(cols.text)
        if cfg.preset == "gigaspeech" and isinstance(text, str):
            text = clean_gigaspeech_text(text)
        raw_id, speaker = row.get(cols.id), row.get(cols.speaker)
        yield SourceItem(
            id=_id_from_value(raw_id) if raw_id not in (None, "") else f"row{index:08d}",
            speaker=str(speaker) if speaker not in (None, "") else UNKNOWN_SPEAKER,
            text=text if text is None or isinstance(text, str | bytes) else str(text),
            load_audio=hf_audio_loader(row.get(cols.audio)),
            source=cfg.source_label,
            split=split,
            origin=f"{cfg.hf_path} row {index}",
        )


def open_hf_dataset(cfg: Config) -> Any:
    """A save_to_disk folder via load_from_disk (picking hf_split of a DatasetDict), otherwise load_dataset
    (a hub name, or a local folder of data files such as a cloned hub repository)."""
    import datasets

    assert cfg.hf_path is not None
    saved = Path(cfg.hf_path)
    if (saved / "state.json").is_file() or (saved / "dataset_dict.json").is_file():
        dataset = datasets.load_from_disk(cfg.hf_path)
        if isinstance(dataset, datasets.DatasetDict):
            if cfg.hf_split not in dataset:
                raise ValueError(f"hf_split {cfg.hf_split!r} not in {cfg.hf_path} (splits: {sorted(dataset)})")
            dataset = dataset[cfg.hf_split]
        return dataset
    return datasets.load_dataset(cfg.hf_path, cfg.hf_config, split=cfg.hf_split, streaming=cfg.streaming)


def hf_audio_loader(value: Any) -> Callable[[], Audio16k]:
    """A picklable loader for whatever an audio column holds: encoded {bytes, path}, a path, a decoded
    {array, sampling_rate} or a torchcodec AudioDecoder (what datasets 5 gives for a decoding Audio feature)."""
    if value is None:
        return functools.partial(unusable, "missing audio: the row has no audio value")
    if isinstance(value, str):
        return file_loader(Path(value))
    if hasattr(value, "get_all_samples"):
        # A decoder holds an open stream that should not travel to workers: decode here, hand over the samples.
        try:
            decoded = value.get_all_samples()
        except Exception as err:  # torchcodec raises several types for corrupt streams
            return functools.partial(unusable, f"unreadable audio: {err}")
        return functools.partial(to_16k_mono, decoded.data.numpy().T, int(decoded.sample_rate))
    if isinstance(value, dict):
        if value.get("array") is not None and value.get("sampling_rate"):
            array = np.asarray(value["array"], dtype=np.float32)
            # datasets and torchcodec put channels first; to_16k_mono wants (samples, channels)
            return functools.partial(to_16k_mono, array.T if array.ndim == 2 else array, int(value["sampling_rate"]))
        if value.get("bytes"):
            return functools.partial(decode_audio_bytes, value["bytes"])
        if value.get("path"):
            return file_loader(Path(value["path"]))
    return functools.partial(unusable, f"bad audio: unsupported value of type {type(value).__name__}")


def decode_audio_bytes(data: bytes) -> Audio16k:
    """Decode an encoded clip held in memory: libsndfile first, torchcodec (ffmpeg) for what it cannot read."""
    try:
        samples, rate = read_samples(io.BytesIO(data))
    except AudioError:  # truncated: another decoder would read the part that is there just the same
        raise
    except Exception as sf_err:  # libsndfile raises several types for corrupt or unknown formats
        try:
            from torchcodec.decoders import AudioDecoder

            decoded = AudioDecoder(data).get_all_samples()
        except Exception:
            raise AudioError(f"unreadable audio: {sf_err}") from None
        samples, rate = decoded.data.numpy().T, decoded.sample_rate
    return to_16k_mono(samples, int(rate))


_GIGASPEECH_PUNCTUATION = {"COMMA": ",", "PERIOD": ".", "QUESTIONMARK": "?", "EXCLAMATIONPOINT": "!"}
_GIGASPEECH_PUNCTUATION_TAG = re.compile(r"\s*<(COMMA|PERIOD|QUESTIONMARK|EXCLAMATIONPOINT)>")
_GIGASPEECH_GARBAGE_TAG = re.compile(r"<(?:SIL|NOISE|MUSIC|OTHER)>")


def clean_gigaspeech_text(text: str) -> str:
    """'HI <COMMA> THERE <PERIOD>' -> 'HI, THERE.'; <SIL>/<NOISE>/<MUSIC>/<OTHER> vanish, so a segment holding
    only those ends up empty (rejected as 'missing transcript')."""
    text = _GIGASPEECH_GARBAGE_TAG.sub(" ", text)
    text = _GIGASPEECH_PUNCTUATION_TAG.sub(lambda m: _GIGASPEECH_PUNCTUATION[m.group(1)], text)
    return " ".join(text.split()).lstrip(",.?! ")


def _id_from_value(value: Any) -> str:
    """An id column value as an id; a file path (Common Voice's `path`) gives its stem."""
    name = str(value).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and stem and f".{suffix.lower()}" in AUDIO_SUFFIXES else name
