"""`speechgpt corpus import kind=manifest`: JSONL and TSV manifests, every defect of a line named in its rejection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from data_builders import import_corpus
from data_builders.import_corpus import Config, hf_audio_loader
from speechgpt.data.corpus import load_corpus
from tests.corpus_fixtures import RATE, noise, read_rejected, reason_kind, summary_of, tone

# --- manifests ---------------------------------------------------------------------------------------------------


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "a.wav", tone(0.2), RATE)
    sf.write(folder / "b.flac", noise(0.3), RATE)
    sf.write(folder / "c.wav", tone(0.2, rate=22_050, channels=2), 22_050)
    return folder


def test_jsonl_manifest_rows_and_malformed_lines(clips: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "rows.jsonl"
    lines = [
        json.dumps({"audio": "clips/a.wav", "text": "first clip", "speaker": "ann", "id": "utt-a"}),
        json.dumps({"audio": str(clips / "b.flac"), "text": "second clip", "split": "dev"}),
        "",
        '{"audio": "clips/c.wav", "text": ',
        json.dumps({"text": "where is my audio"}),
        '{"audio": "clips/c.wav", "text": "caf\xe9 noir", "id": "latin1"}',
        json.dumps({"audio": "clips/gone.wav", "text": "gone", "id": 7}),
        "[1, 2]",
        json.dumps({"audio": "clips/c.wav", "text": "third clip", "speaker": 12}),
    ]
    manifest.write_bytes(
        b"\n".join(line.encode("utf-8") if "\xe9" not in line else line.encode("latin-1") for line in lines) + b"\n"
    )
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="manifest", manifest=manifest, out=out, num_workers=1))
    rows = {row["id"]: row for row in load_corpus(out)}
    assert {i: (r["text"], r["speaker"], r["split"]) for i, r in rows.items()} == {
        "utt-a": ("first clip", "ann", "train"),
        "b": ("second clip", "unknown", "dev"),
        "c": ("third clip", "12", "train"),
    }
    assert (rows["c"]["orig_sample_rate"], rows["c"]["orig_channels"]) == (22_050, 2)
    assert {r["source"] for r in rows.values()} == {"manifest:rows.jsonl"}
    reasons = read_rejected(out)
    assert reasons == {
        "rows.jsonl:4": reasons["rows.jsonl:4"],
        "rows.jsonl:5": "malformed manifest row: line 5: no audio path (column 'audio')",
        "latin1": reasons["latin1"],
        "7": f"audio file missing: {tmp_path / 'clips' / 'gone.wav'}",
        "rows.jsonl:8": "malformed manifest row: line 8: expected a JSON object, got list",
    }
    assert reasons["rows.jsonl:4"].startswith("malformed manifest row: line 4: not valid JSON")
    assert reason_kind(reasons["latin1"]) == "invalid UTF-8" and "0xe9" in reasons["latin1"]


def test_tsv_manifest_rows_and_malformed_lines(clips: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "rows.tsv"
    manifest.write_bytes(
        b"audio\ttext\tspeaker\n"
        b"clips/a.wav\tfirst clip\tann\n"
        b"clips/b.flac\tonly two fields\n"
        b"clips/c.wav\tcaf\xe9\tbob\n"
        b"\n" + f"{clips / 'b.flac'}\t second  clip\t\n".encode()
    )
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="manifest", manifest=manifest, out=out, split="test", num_workers=1))
    rows = {row["id"]: row for row in load_corpus(out)}
    assert {i: (r["text"], r["speaker"], r["split"]) for i, r in rows.items()} == {
        "a": ("first clip", "ann", "test"),
        "b": ("second clip", "unknown", "test"),
    }
    reasons = read_rejected(out)
    assert reasons == {
        "rows.tsv:3": "malformed manifest row: line 3: expected 3 tab-separated fields (audio, text, speaker), got 2",
        "c": reasons["c"],
    }
    assert reason_kind(reasons["c"]) == "invalid UTF-8" and "0xe9" in reasons["c"]


def test_tsv_manifest_without_audio_column_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "rows.tsv"
    manifest.write_text("path\ttext\nclips/a.wav\thello\n")
    with pytest.raises(ValueError, match="no column 'audio'"):
        import_corpus.run(Config(kind="manifest", manifest=manifest, out=tmp_path / "corpus"))


def test_a_row_repeating_an_audio_file_is_rejected_for_every_defect_it_has(clips: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "rows.jsonl"
    rows = [
        {"audio": "clips/a.wav", "text": "first clip"},
        {"audio": "clips/a.wav", "text": ""},
        {"audio": "clips/a.wav"},
        {"audio": "clips/a.wav", "text": "caf\xe9"},  # written in Latin-1 below
        {"audio": "clips/b.flac", "text": "   "},
        {"audio": "clips/b.flac", "text": "a good transcript, but b.flac is line 5's"},
        {"audio": "clips/gone.wav", "text": "", "id": "x"},
        {"text": ""},
    ]
    lines = [json.dumps(row, ensure_ascii=False).encode("latin-1" if "\xe9" in str(row) else "utf-8") for row in rows]
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="manifest", manifest=manifest, out=out, num_workers=1))
    assert [row["id"] for row in load_corpus(out)] == ["a"]
    reasons = read_rejected(out)
    latin1 = reasons.pop("rows.jsonl:4")
    assert reasons == {
        "rows.jsonl:2": "several defects: missing transcript; duplicate id: 'a' is line 1's too",
        "rows.jsonl:3": "several defects: missing transcript; duplicate id: 'a' is line 1's too",
        "b": "missing transcript",
        "rows.jsonl:6": "duplicate id: 'b' is line 5's too",
        "x": f"several defects: missing transcript; audio file missing: {clips / 'gone.wav'}",
        "rows.jsonl:8": "several defects: malformed manifest row: line 8: no audio path (column 'audio'); "
        "missing transcript",
    }
    assert latin1.startswith("several defects: invalid UTF-8: transcript byte 0xe9")
    assert latin1.endswith("; duplicate id: 'a' is line 1's too")
    assert summary_of(out)["rejected_by_reason"] == {
        "duplicate id": 1,
        "missing transcript": 1,
        "several defects": 5,
    }


def test_tsv_row_with_an_empty_transcript_and_a_repeated_file_names_both(clips: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "rows.tsv"
    manifest.write_bytes(b"audio\ttext\nclips/c.wav\tthird clip\nclips/c.wav\t\n")
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="manifest", manifest=manifest, out=out, num_workers=1))
    assert [row["id"] for row in load_corpus(out)] == ["c"]
    assert read_rejected(out) == {
        "rows.tsv:3": "several defects: missing transcript; duplicate id: 'c' is line 2's too"
    }


def test_a_truncated_wav_in_a_manifest_is_rejected_as_truncated(clips: Path, tmp_path: Path) -> None:
    whole = (clips / "a.wav").read_bytes()
    (clips / "cut.wav").write_bytes(whole[: len(whole) // 4])
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"audio": "clips/cut.wav", "text": "cut short"}) + "\n")
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="manifest", manifest=manifest, out=out, num_workers=1))
    assert reason_kind(read_rejected(out)["cut"]) == "truncated audio"
    with pytest.raises(ValueError, match=r"^truncated audio"):  # HF bytes: no second decoder reads the rest anyway
        hf_audio_loader({"bytes": whole[: len(whole) // 4], "path": None})()
