"""The JSONL / TSV manifest reader of `speechgpt corpus import`: one utterance per line, every defect of a line named
in its rejection."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_builders.import_common import UNKNOWN_SPEAKER, Columns, file_loader, no_audio, require_columns
from speechgpt.data.corpus import SourceItem, check_text

if TYPE_CHECKING:
    from data_builders.import_corpus import Config

_SURROGATE = re.compile("[\ud800-\udfff]")  # what surrogateescape decoding leaves for bytes that are not UTF-8


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
    require_columns(header, cols, f"manifest {manifest} (header line {numbered[0][0]})")
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
    return SourceItem(item_id, speaker, text, file_loader(path), cfg.source_label, split, origin)


def _rejected(cfg: Config, item_id: str, origin: str, defects: list[str]) -> SourceItem:
    """One defect reads `kind: detail`; several are listed after 'several defects:', so none hides behind another."""
    reason = defects[0] if len(defects) == 1 else f"several defects: {'; '.join(defects)}"
    return SourceItem(item_id, UNKNOWN_SPEAKER, None, no_audio, cfg.source_label, "", origin, problem=reason)


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
