"""The units contract (DESIGN.md): a corpus whose rows also carry `units` (merged unit ids), `durations` (their run
lengths in 50 Hz frames) and `encoder`, the tag `<encoder name>+km<k>:<fingerprint>` that names the features and
the k-means codebook the ids index. `speechgpt units extract` writes it; builders, the vocoder and the evaluations
read it through `load_units_dataset`, and the tag only through `EncoderTag`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechgpt.data.audio_paths import absolute_audio_paths
from speechgpt.data.corpus import CORPUS_COLUMNS, DATASET_DIR, corpus_features

log = logging.getLogger(__name__)

UNITS_COLUMNS = (*CORPUS_COLUMNS, "units", "durations", "encoder")
_TAG = re.compile(r"(?P<name>.+)\+km(?P<k>[1-9][0-9]*):(?P<fingerprint>[0-9a-f]+)")
_TAG_FORM = "<encoder name>+km<k>:<fingerprint>"


@dataclass(frozen=True)
class EncoderTag:
    """Which features and which codebook made a units dataset; `str(tag)` is the `encoder` column's value."""

    name: str
    """The feature encoder (backend, weights, layer), e.g. `mfcc@50Hz` or `hubert:facebook/hubert-base-ls960@L6`."""
    k: int
    """Codebook size of the k-means: unit ids are in 0..k-1."""
    fingerprint: str
    """Hex digest of the k-means centroids (`speechgpt.units.kmeans.centroid_fingerprint`)."""

    def __post_init__(self) -> None:
        match = _TAG.fullmatch(str(self))
        parts = (self.name, str(self.k), self.fingerprint)
        if match is None or (match["name"], match["k"], match["fingerprint"]) != parts:
            raise ValueError(
                f"name {self.name!r}, k {self.k!r} and fingerprint {self.fingerprint!r} do not make an encoder tag "
                f"{_TAG_FORM} (k >= 1, the fingerprint lowercase hex)"
            )

    def __str__(self) -> str:
        return f"{self.name}+km{self.k}:{self.fingerprint}"


def parse_encoder_tag(tag: str) -> EncoderTag:
    """The parts of `<encoder name>+km<k>:<fingerprint>`; ValueError naming the tag when it is not of that form."""
    match = _TAG.fullmatch(tag)
    if match is None:
        raise ValueError(f"encoder tag {tag!r} is not of the form {_TAG_FORM} (as `speechgpt units extract` writes)")
    return EncoderTag(match["name"], int(match["k"]), match["fingerprint"])


def units_features() -> Any:
    """HF features of a units dataset: the corpus features plus units, durations and encoder."""
    import datasets

    features = corpus_features()
    features["units"] = datasets.List(datasets.Value("int32"))
    features["durations"] = datasets.List(datasets.Value("int32"))
    features["encoder"] = datasets.Value("string")
    return features


def load_units_dataset(path: str | Path) -> Any:
    """A units dataset from its build folder or its `dataset/` folder, checked: the contract's columns, at least one
    row, one well-formed encoder tag. Errors name the folder and what is wrong. Audio paths come back absolute."""
    import datasets

    path = Path(path)
    target = path / DATASET_DIR if (path / DATASET_DIR).is_dir() else path
    if not (target / "state.json").exists():
        raise FileNotFoundError(
            f"{path}: no units dataset here (expected {target}/state.json; make one with `speechgpt units extract`)"
        )
    # datasets cannot load a saved dataset of no rows (no data files); say what it is instead
    empty = not json.loads((target / "state.json").read_text(encoding="utf-8")).get("_data_files")
    dataset = None if empty else datasets.load_from_disk(str(target))
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"{target}: the units dataset has no rows (see rejected.jsonl beside it)")
    missing = [c for c in UNITS_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{target}: not a units dataset, missing columns {missing} (run `speechgpt units extract`)")
    encoder_tag(dataset, where=target)
    return absolute_audio_paths(dataset, target)


def encoder_tag(dataset: Any, where: str | Path | None = None) -> EncoderTag:
    """The one encoder tag of a units dataset's rows. ValueError when rows disagree (ids of two codebooks cannot be
    mixed), a tag is malformed or there is no row; `where` names the dataset in the message."""
    place = f"{where}: " if where is not None else ""
    tags = sorted(set(dataset["encoder"])) if "encoder" in dataset.column_names else []
    if len(tags) != 1:
        found = f"several encoder tags {tags}" if tags else "no encoder tag"
        raise ValueError(f"{place}{found}; a units dataset comes from one encoder and one k-means")
    try:
        return parse_encoder_tag(tags[0])
    except ValueError as err:
        raise ValueError(f"{place}{err}") from None


def load_units_rows(path: str | Path, columns: Sequence[str]) -> tuple[EncoderTag, list[dict[str, Any]]]:
    """A units dataset's tag and its rows with only `columns` (id among them), sorted by id: what builders read."""
    dataset = load_units_dataset(path)
    rows = sorted(dataset.select_columns(list(columns)).to_list(), key=lambda r: r["id"])
    return encoder_tag(dataset), rows


def codebook_size(tag: EncoderTag, rows: Sequence[dict[str, Any]], k: int | None = None) -> int:
    """Unit vocabulary size: `k` when given, else the tag's. ValueError when a row's unit ids do not fit in it."""
    largest = max((max(r["units"]) for r in rows if r["units"]), default=-1)
    size = tag.k if k is None else k
    if largest >= size:
        source = f"k={k}" if k is not None else f"encoder tag {str(tag)!r}"
        raise ValueError(f"{source} allows unit ids below {size}, but the units use ids up to {largest}")
    if k is not None and k != tag.k:
        log.warning("k=%d differs from the codebook of the units' encoder tag (km%d)", k, tag.k)
    return size
