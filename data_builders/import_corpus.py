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
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from speechgpt.config import config_to_dict, save_config
from speechgpt.data.audio import Audio16k, AudioError, read_audio, read_samples, to_16k_mono
from speechgpt.data.corpus import CorpusBuild, SourceItem, check_text

log = logging.getLogger(__name__)

_RUN_CONTROL = {"out", "num_workers", "limit"}  # fields that do not change the result
UNKNOWN_SPEAKER = "unknown"
AUDIO_SUFFIXES = {".flac", ".wav", ".mp3", ".ogg", ".opus", ".m4a", ".sph"}
MANIFEST_SUFFIXES = {".jsonl", ".tsv"}
_SURROGATE = re.compile("[\ud800-\udfff]")  # what surrogateescape decoding leaves for bytes that are not UTF-8


class Columns(NamedTuple):
    audio: str
    text: str
    speaker: str
    id: str


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
        yield SourceItem(item_id, speaker, text, _file_loader(path), source, split, origin=str(path))


# --- Hugging Face datasets ---------------------------------------------------------------------------------------
def hf_items(cfg: Config) -> Iterator[SourceItem]:
    """Rows of a saved or hub dataset; audio is kept encoded (decode=False) and decoded when converted."""
    import datasets

    dataset = open_hf_dataset(cfg)
    cols = cfg.columns
    names = dataset.column_names  # None for a streamed dataset that does not declare its features
    if names is not None:
        _require_columns(names, cols, f"dataset {cfg.hf_path}")
        dataset = dataset.select_columns([c for c in dict.fromkeys(cols) if c in names])
    features = dataset.features
    if features is not None and isinstance(features.get(cols.audio), datasets.Audio):
        # Encoded bytes are a fraction of the decoded samples and pickle cheaply to the worker pool.
        dataset = dataset.cast_column(cols.audio, datasets.Audio(decode=False))
    split = cfg.split or cfg.hf_split
    for index, row in enumerate(dataset):
        if index == 0 and names is None:
            _require_columns(list(row), cols, f"dataset {cfg.hf_path}")
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
        return functools.partial(_unusable, "missing audio: the row has no audio value")
    if isinstance(value, str):
        return _file_loader(Path(value))
    if hasattr(value, "get_all_samples"):
        # A decoder holds an open stream that should not travel to workers: decode here, hand over the samples.
        try:
            decoded = value.get_all_samples()
        except Exception as err:  # torchcodec raises several types for corrupt streams
            return functools.partial(_unusable, f"unreadable audio: {err}")
        return functools.partial(to_16k_mono, decoded.data.numpy().T, int(decoded.sample_rate))
    if isinstance(value, dict):
        if value.get("array") is not None and value.get("sampling_rate"):
            array = np.asarray(value["array"], dtype=np.float32)
            # datasets and torchcodec put channels first; to_16k_mono wants (samples, channels)
            return functools.partial(to_16k_mono, array.T if array.ndim == 2 else array, int(value["sampling_rate"]))
        if value.get("bytes"):
            return functools.partial(decode_audio_bytes, value["bytes"])
        if value.get("path"):
            return _file_loader(Path(value["path"]))
    return functools.partial(_unusable, f"bad audio: unsupported value of type {type(value).__name__}")


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


def _require_columns(names: list[str], cols: Columns, what: str) -> None:
    for column in (cols.audio, cols.text):
        if column not in names:
            raise ValueError(f"{what} has no column {column!r} (has {', '.join(names)}); see preset and *_column")


def _id_from_value(value: Any) -> str:
    """An id column value as an id; a file path (Common Voice's `path`) gives its stem."""
    name = str(value).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and stem and f".{suffix.lower()}" in AUDIO_SUFFIXES else name


# --- JSONL / TSV manifests ---------------------------------------------------------------------------------------
def manifest_items(cfg: Config) -> Iterator[SourceItem]:
    """One item per non-blank line; relative audio paths are resolved against the manifest's folder."""
    manifest = cfg.manifest
    assert manifest is not None
    if not manifest.is_file():
        raise FileNotFoundError(f"manifest {manifest}: no such file")
    # Bytes per line, decoded with surrogateescape: a line in a foreign encoding still parses, and its text is
    # turned back into the original bytes for check_text to reject with the offending byte.
    lines = manifest.read_bytes().splitlines()
    rows = _tsv_rows(manifest, lines, cfg.columns) if manifest.suffix.lower() == ".tsv" else _jsonl_rows(lines)
    first_line: dict[str, int] = {}  # id -> the line that used it first
    for number, row in rows:
        yield _manifest_item(cfg, number, row, first_line)


def _jsonl_rows(lines: list[bytes]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row or what is wrong with the line)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError as err:
            yield number, f"not valid JSON ({err.msg} at column {err.colno})"
            continue
        yield number, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}"


def _tsv_rows(manifest: Path, lines: list[bytes], cols: Columns) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Like _jsonl_rows; the first non-blank line names the columns (no quoting: fields hold no tabs)."""
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        return
    header = [name.strip() for name in numbered[0][1].decode("utf-8", "replace").split("\t")]
    _require_columns(header, cols, f"manifest {manifest} (header line {numbered[0][0]})")
    for number, line in numbered[1:]:
        fields = line.decode("utf-8", "surrogateescape").rstrip("\r").split("\t")
        if len(fields) != len(header):
            yield number, f"expected {len(header)} tab-separated fields ({', '.join(header)}), got {len(fields)}"
            continue
        yield number, dict(zip(header, fields, strict=True))


def _manifest_item(cfg: Config, number: int, row: dict[str, Any] | str, first_line: dict[str, int]) -> SourceItem:
    """The row as an item, or rejected naming every defect seen before decoding: malformed fields, the transcript, a
    missing audio file, an id that an earlier line has (`first_line`: id -> line)."""
    assert cfg.manifest is not None
    own_id, origin = f"{cfg.manifest.name}:{number}", f"{cfg.manifest}:{number}"
    if isinstance(row, str):
        return _rejected(cfg, own_id, origin, [f"malformed manifest row: line {number}: {row}"])
    cols = cfg.columns
    fields = {name: _optional_str(row.get(column)) for name, column in cols._asdict().items()}
    fields["split"] = _optional_str(row.get("split"))
    text, audio = _checkable_text(row.get(cols.text)), fields["audio"]
    path = None if audio is None else Path(audio) if Path(audio).is_absolute() else cfg.manifest.parent / audio
    malformed = _malformed_fields(fields, cols)
    defects = [f"malformed manifest row: line {number}: {'; '.join(malformed)}"] if malformed else []
    defects += _content_defects(text, path)
    item_id = own_id if malformed or path is None else fields["id"] or path.stem
    if first_line.setdefault(item_id, number) != number:
        # Rejected under its own line: under the shared id the build would say only "duplicate id".
        defects.append(f"duplicate id: {item_id!r} is line {first_line[item_id]}'s too")
        item_id = own_id
    if defects or path is None:
        return _rejected(cfg, item_id, origin, defects)
    speaker, split = fields["speaker"] or UNKNOWN_SPEAKER, cfg.split or fields["split"] or "train"
    return SourceItem(item_id, speaker, text, _file_loader(path), cfg.source_label, split, origin)


def _rejected(cfg: Config, item_id: str, origin: str, defects: list[str]) -> SourceItem:
    """One defect reads `kind: detail`; several are listed after 'several defects:', so none hides behind another."""
    reason = defects[0] if len(defects) == 1 else f"several defects: {'; '.join(defects)}"
    return SourceItem(item_id, UNKNOWN_SPEAKER, None, _no_audio, cfg.source_label, "", origin, problem=reason)


def _malformed_fields(fields: dict[str, str | None], cols: Columns) -> list[str]:
    found = [] if fields["audio"] is not None else [f"no audio path (column {cols.audio!r})"]
    bad_utf8 = [name for name, value in fields.items() if name != "text" and value and _SURROGATE.search(value)]
    return found + [f"{name} is not valid UTF-8" for name in bad_utf8]


def _content_defects(text: str | bytes | None, path: Path | None) -> list[str]:
    defects = []
    try:
        check_text(text)
    except ValueError as err:
        defects.append(str(err))
    if path is not None and not path.is_file():
        defects.append(f"audio file missing: {path}")
    return defects


def _optional_str(value: Any) -> str | None:
    """A manifest field as a string; absent, null and blank fields are None."""
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _checkable_text(value: Any) -> str | bytes | None:
    """Text for check_text; undecodable input goes back to bytes so check_text names the bad byte."""
    if value is None or isinstance(value, bytes):
        return value
    text = str(value)
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape")  # the line's own bytes
    except UnicodeEncodeError:  # a lone surrogate from a JSON \\ud800 escape
        return text.encode("utf-8", "surrogatepass")


# --- loaders shared by the readers -------------------------------------------------------------------------------
def _file_loader(path: Path) -> Callable[[], Audio16k]:
    if path.is_file():
        return functools.partial(read_audio, str(path))
    return functools.partial(_unusable, f"audio file missing: {path}")


def _no_audio() -> Audio16k:
    raise AudioError("bad audio: the item has no audio")


def _unusable(reason: str) -> Audio16k:
    raise AudioError(reason)
