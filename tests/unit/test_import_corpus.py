from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_builders import import_corpus
from data_builders.import_corpus import Config, clean_gigaspeech_text, hf_audio_loader
from speechgpt.config import ConfigError, load_config
from speechgpt.data.corpus import CORPUS_COLUMNS, load_corpus
from tests.corpus_fixtures import RATE, folder_bytes, noise, read_rejected, reason_kind, summary_of, tone

# --- LibriSpeech layout ------------------------------------------------------------------------------------------

LIBRI_REJECTED = {  # id: (reason kind, a detail the reason must quote)
    "19-198-0002": ("invalid UTF-8", "0xe9"),
    "19-198-0003": ("unreadable audio", ""),  # zero-byte file
    "19-198-0004": ("unreadable audio", ""),  # random bytes
    "19-198-0005": ("too long", "1.50s"),
    "26-496-0001": ("audio file missing", "26-496-0001.flac"),
    "26-496-0002": ("missing transcript", ""),
    "26-496-0003": ("silent audio", ""),
}


@pytest.fixture
def libri_root(tmp_path: Path) -> Path:
    root = tmp_path / "train-clean-5"
    first, second = root / "19" / "198", root / "26" / "496"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    sf.write(first / "19-198-0000.flac", tone(0.3), RATE)
    sf.write(first / "19-198-0001.flac", noise(0.2), RATE)
    sf.write(first / "19-198-0002.flac", tone(0.2, freq=330), RATE)
    (first / "19-198-0003.flac").write_bytes(b"")
    (first / "19-198-0004.flac").write_bytes(np.random.default_rng(1).bytes(600))
    sf.write(first / "19-198-0005.flac", tone(1.5), RATE)
    (first / "19-198.trans.txt").write_bytes(
        b"19-198-0000 NORTHANGER ABBEY\n"
        b"19-198-0001 CHAPTER  ONE \r\n"
        b"19-198-0002 CAF\xe9 AU LAIT\n"
        b"19-198-0003 ZERO BYTES\n"
        b"19-198-0004 RANDOM BYTES\n"
        b"19-198-0005 TOO LONG\n"
    )
    sf.write(second / "26-496-0000.flac", tone(0.5, rate=44_100, channels=2), 44_100)
    sf.write(second / "26-496-0002.flac", noise(0.2, seed=2), RATE)
    sf.write(second / "26-496-0003.flac", np.zeros(1600, dtype=np.float32), RATE)
    (second / "26-496.trans.txt").write_text(
        "26-496-0000 A STEREO CLIP\n26-496-0001 NO AUDIO FOR THIS LINE\n26-496-0003 ALL ZERO\n"
    )
    return root


def libri_config(root: Path, out: Path, **kw) -> Config:
    return Config(**{"kind": "librispeech", "root": root, "out": out, "max_duration_s": 1.0, "num_workers": 1, **kw})


def test_librispeech_import_converts_and_rejects_per_utterance(libri_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    assert import_corpus.run(libri_config(libri_root, out, num_workers=2)) == out
    dataset = load_corpus(out)
    assert tuple(dataset.column_names) == CORPUS_COLUMNS
    rows = {row["id"]: row for row in dataset}
    assert {i: (r["text"], r["speaker"]) for i, r in rows.items()} == {
        "19-198-0000": ("NORTHANGER ABBEY", "19"),
        "19-198-0001": ("CHAPTER ONE", "19"),  # whitespace and the \r of a CRLF line normalized
        "26-496-0000": ("A STEREO CLIP", "26"),
    }
    assert {r["split"] for r in rows.values()} == {"train-clean-5"}
    assert {r["source"] for r in rows.values()} == {"librispeech"}
    for row in rows.values():
        samples, rate = sf.read(row["audio"])
        assert rate == RATE and samples.ndim == 1
        assert Path(row["audio"]).is_relative_to((out / "audio").resolve())
        assert abs(len(samples) / rate - row["duration_s"]) < 1e-3
    stereo = rows["26-496-0000"]
    assert (stereo["orig_sample_rate"], stereo["orig_channels"]) == (44_100, 2)
    assert abs(stereo["duration_s"] - 0.5) < 1e-3
    assert (rows["19-198-0000"]["orig_sample_rate"], rows["19-198-0000"]["orig_channels"]) == (RATE, 1)

    reasons = read_rejected(out)
    assert set(reasons) == set(LIBRI_REJECTED)
    for utt_id, (kind, detail) in LIBRI_REJECTED.items():
        assert reason_kind(reasons[utt_id]) == kind and detail in reasons[utt_id], (utt_id, reasons[utt_id])
    summary = summary_of(out)
    assert summary["complete"] and summary["items"] == 10
    assert (summary["utterances"], summary["rejected"], summary["speakers"]) == (3, 7, 2)
    assert summary["rejected_by_reason"]["unreadable audio"] == 2


def test_librispeech_root_may_hold_several_subsets_and_split_overrides(libri_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    import_corpus.run(libri_config(libri_root.parent, out))
    assert set(load_corpus(out)["split"]) == {"train-clean-5"}
    forced = tmp_path / "forced"
    import_corpus.run(libri_config(libri_root, forced, split="dev", source="libri-mini"))
    dataset = load_corpus(forced)
    assert set(dataset["split"]) == {"dev"} and set(dataset["source"]) == {"libri-mini"}


def test_rerun_is_byte_identical_and_limit_then_resume_equals_one_shot(libri_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    import_corpus.run(libri_config(libri_root, out))
    one_shot = folder_bytes(out / "dataset") | folder_bytes(out / "audio")
    rejected = (out / "rejected.jsonl").read_bytes()
    import_corpus.run(libri_config(libri_root, out))
    assert folder_bytes(out / "dataset") | folder_bytes(out / "audio") == one_shot
    assert (out / "rejected.jsonl").read_bytes() == rejected
    assert summary_of(out)["new_items"] == 0

    shutil.rmtree(out)  # same folder again, so the absolute audio paths in the dataset match too
    import_corpus.run(libri_config(libri_root, out, limit=2))
    partial = summary_of(out)
    assert not partial["complete"] and partial["new_items"] == 2
    assert not (out / "dataset").exists()
    import_corpus.run(libri_config(libri_root, out, num_workers=2))
    assert summary_of(out)["complete"] and summary_of(out)["resumed_items"] == 2
    assert folder_bytes(out / "dataset") | folder_bytes(out / "audio") == one_shot
    assert (out / "rejected.jsonl").read_bytes() == rejected


def test_resume_with_other_settings_is_refused(libri_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    import_corpus.run(libri_config(libri_root, out, limit=1))
    with pytest.raises(ValueError, match="other settings"):
        import_corpus.run(libri_config(libri_root, out, split="dev"))


# --- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "librispeech"}, "kind=librispeech needs root"),
        ({"kind": "hf"}, "kind=hf needs hf_path"),
        ({"kind": "manifest", "manifest": Path("rows.csv")}, "manifest must end in .jsonl or .tsv"),
        ({"kind": "hf", "hf_path": "x", "root": Path("/data")}, "root is only used with kind=librispeech"),
        ({"kind": "hf", "hf_path": "x", "limit": 0}, "limit must be at least 1"),
        ({"kind": "zip"}, "kind must be one of"),
    ],
)
def test_config_validation_names_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**fields)


def test_config_from_yaml_with_preset_columns_and_derived_source(tmp_path: Path) -> None:
    path = tmp_path / "import.yaml"
    path.write_text("kind: manifest\nmanifest: data/rows.tsv\npreset: common_voice\nspeaker_column: age\n")
    cfg = load_config(Config, path)
    assert cfg.columns == ("audio", "sentence", "age", "path") and cfg.source_label == "manifest:rows.tsv"
    assert Config(kind="hf", hf_path="org/cv", source="cv").source_label == "cv"
    path.write_text("kind: zip\n")
    with pytest.raises(ConfigError, match="kind"):
        load_config(Config, path)


# --- Hugging Face datasets ---------------------------------------------------------------------------------------


def test_hf_saved_dataset_with_librispeech_columns(tmp_path: Path) -> None:
    import datasets

    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, tone(0.4, rate=44_100, channels=2), 44_100)
    narrowband = tmp_path / "narrowband.wav"
    sf.write(narrowband, tone(0.25, rate=8_000), 8_000)
    table = {
        "audio": [str(stereo), str(narrowband), str(stereo)],
        "text": ["HELLO WORLD", "  GOOD   MORNING ", ""],
        "speaker_id": [103, 1034, 103],
        "id": ["103-1240-0000", "1034-121119-0049", "103-1240-0001"],
        "chapter_id": [1240, 121119, 1240],
    }
    dataset = datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio(sampling_rate=None))
    datasets.DatasetDict({"validation": dataset}).save_to_disk(str(tmp_path / "hf"))

    out = tmp_path / "corpus"
    cfg = Config(
        kind="hf", hf_path=str(tmp_path / "hf"), hf_split="validation", preset="librispeech", out=out, num_workers=1
    )
    import_corpus.run(cfg)
    rows = {row["id"]: row for row in load_corpus(out)}
    assert {i: (r["text"], r["speaker"]) for i, r in rows.items()} == {
        "103-1240-0000": ("HELLO WORLD", "103"),
        "1034-121119-0049": ("GOOD MORNING", "1034"),
    }
    assert (rows["103-1240-0000"]["orig_sample_rate"], rows["103-1240-0000"]["orig_channels"]) == (44_100, 2)
    assert rows["1034-121119-0049"]["orig_sample_rate"] == 8_000
    assert {r["split"] for r in rows.values()} == {"validation"}
    assert {r["source"] for r in rows.values()} == {f"hf:{tmp_path / 'hf'}"}
    assert read_rejected(out) == {"103-1240-0001": "missing transcript"}

    with pytest.raises(ValueError, match="hf_split 'train' not in"):
        import_corpus.run(Config(kind="hf", hf_path=str(tmp_path / "hf"), out=tmp_path / "other"))


def test_hf_gigaspeech_preset_cleans_tags_and_rejects_garbage(tmp_path: Path) -> None:
    import datasets

    table = {
        "segment_id": ["POD0000000001_S0000001", "POD0000000001_S0000002"],
        "speaker": ["N/A", "N/A"],
        "text": ["AS THEY'RE LEAVING <COMMA> CAN KASH PULL ZAHRA ASIDE <QUESTIONMARK>", "<MUSIC> <NOISE>"],
        "audio": [{"array": noise(0.2), "sampling_rate": RATE}] * 2,
        "audio_id": ["POD0000000001"] * 2,
    }
    datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio()).save_to_disk(str(tmp_path / "gs"))
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="hf", hf_path=str(tmp_path / "gs"), preset="gigaspeech", out=out, num_workers=1))
    (row,) = load_corpus(out).to_list()
    assert row["id"] == "POD0000000001_S0000001" and row["speaker"] == "POD0000000001"
    assert row["text"] == "AS THEY'RE LEAVING, CAN KASH PULL ZAHRA ASIDE?"
    assert read_rejected(out) == {"POD0000000001_S0000002": "missing transcript"}


def test_hf_local_data_files_are_streamed_with_load_dataset(tmp_path: Path) -> None:
    import datasets

    clip = tmp_path / "clip.flac"
    sf.write(clip, tone(0.3, rate=24_000), 24_000)
    table = {
        "audio": [{"bytes": clip.read_bytes(), "path": "clip.flac"}, {"bytes": b"not audio", "path": "bad.flac"}],
        "sentence": ["hello there", "broken clip"],
        "client_id": ["c0ffee", "c0ffee"],
        "path": ["en/common_voice_en_1.mp3", "en/common_voice_en_2.mp3"],
    }
    (tmp_path / "repo" / "data").mkdir(parents=True)
    dataset = datasets.Dataset.from_dict(table).cast_column("audio", datasets.Audio())
    dataset.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "corpus"
    import_corpus.run(Config(kind="hf", hf_path=str(tmp_path / "repo"), preset="common_voice", out=out, num_workers=1))
    (row,) = load_corpus(out).to_list()
    assert (row["id"], row["speaker"], row["text"], row["orig_sample_rate"]) == (
        "common_voice_en_1",
        "c0ffee",
        "hello there",
        24_000,
    )
    assert reason_kind(read_rejected(out)["common_voice_en_2"]) == "unreadable audio"


def test_hf_missing_text_column_is_an_error_naming_it(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"audio": ["a.wav"], "transcript": ["x"]}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="no column 'text'"):
        import_corpus.run(Config(kind="hf", hf_path=str(tmp_path / "hf"), out=tmp_path / "corpus"))


def test_gigaspeech_text_cleanup() -> None:
    assert clean_gigaspeech_text("HELLO <COMMA> WORLD <PERIOD>") == "HELLO, WORLD."
    assert clean_gigaspeech_text("<SIL> WHAT <EXCLAMATIONPOINT> <OTHER>") == "WHAT!"
    assert clean_gigaspeech_text("<NOISE> <PERIOD>") == ""


def test_hf_audio_loader_accepts_decoders_arrays_and_bytes(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "stereo.wav"
    sf.write(path, tone(0.2, rate=22_050, channels=2), 22_050)
    decoded = datasets.Dataset.from_dict({"audio": [str(path)]}).cast_column("audio", datasets.Audio())[0]["audio"]
    assert hasattr(decoded, "get_all_samples")  # datasets 5 hands out torchcodec decoders
    values = [decoded, {"array": tone(0.2, rate=22_050, channels=2).T, "sampling_rate": 22_050}]
    values += [{"bytes": path.read_bytes(), "path": None}, str(path)]
    for value in values:
        audio = hf_audio_loader(value)()
        assert (audio.orig_sample_rate, audio.orig_channels) == (22_050, 2)
        assert abs(audio.duration_s - 0.2) < 1e-3
    for value, reason in [
        (None, "missing audio"),
        ({"bytes": b"junk", "path": None}, "unreadable audio"),
        (3, "bad audio"),
    ]:
        with pytest.raises(ValueError, match=reason):
            hf_audio_loader(value)()
