"""`speechgpt units fit` and `units extract` on a real TTS corpus: contract, determinism, resume, bad audio, ranks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speechgpt.data.corpus import load_corpus, write_corpus_dataset
from speechgpt.units import extract, fit
from speechgpt.units.encoders import EncoderConfig, build_encoder
from speechgpt.units.kmeans import KMeansModel
from speechgpt.units.runs import expand_runs
from tests.conftest import subprocess_env


@pytest.fixture(scope="module")
def kmeans_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("km")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "speechgpt.cli",
            "units",
            "fit",
            f"corpus={tiny_corpus}",
            f"out={out}",
            "k=20",
            "encoder.kind=mfcc",
            "splits=[train, test]",
        ],
        check=True,
        capture_output=True,
    )
    return out


def extract_cfg(corpus: Path, kmeans: Path, out: Path, **kw) -> extract.Config:
    return extract.Config(corpus=corpus, kmeans=kmeans, out=out, shard_size=3, **kw)


def test_fit_is_deterministic_and_records_the_encoder(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    meta = json.loads((kmeans_dir / "kmeans.json").read_text())
    assert meta["k"] == 20 and meta["encoder"] == "mfcc@50Hz" and meta["encoder_config"]["kind"] == "mfcc"
    again = fit.run(fit.Config(corpus=tiny_corpus, out=tmp_path, k=20, splits=["train", "test"]))
    assert KMeansModel.load(again).fingerprint == meta["fingerprint"]


def test_extract_writes_units_that_expand_to_the_frame_ids(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path):
    out = extract.run(extract_cfg(tiny_corpus, kmeans_dir, tmp_path / "units"))
    units = load_corpus(out).to_list()
    corpus = load_corpus(tiny_corpus).to_list()
    assert [r["id"] for r in units] == [r["id"] for r in corpus]
    kmeans = KMeansModel.load(kmeans_dir)
    encoder = build_encoder(EncoderConfig(kind="mfcc"))
    for row in units[:3]:
        wave = torch.from_numpy(sf.read(row["audio"], dtype="float32")[0])
        frame_ids = kmeans.predict(encoder.encode([wave])[0]).tolist()
        assert expand_runs(row["units"], row["durations"]) == frame_ids
        assert all(a != b for a, b in zip(row["units"], row["units"][1:], strict=False))
        assert row["encoder"] == f"mfcc@50Hz+km20:{kmeans.fingerprint}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["utterances"] == 8 and summary["rejected"] == 0 and 5 < summary["merged_units_per_second"] < 50


def test_killed_extraction_resumes_to_the_same_units(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    reference = load_corpus(extract.run(extract_cfg(tiny_corpus, kmeans_dir, tmp_path / "ref"))).to_list()
    out = tmp_path / "killed"
    extract.run(extract_cfg(tiny_corpus, kmeans_dir, out))
    shards = sorted((out / "shards").iterdir())
    kept = shards[0]
    kept_mtime = kept.stat().st_mtime_ns
    # what a kill leaves behind: later shards missing, one half-written temporary shard, no joined dataset
    shutil.rmtree(shards[1])
    shards[2].rename(shards[2].with_name(shards[2].name + ".tmp"))
    shutil.rmtree(out / "dataset")
    extract.run(extract_cfg(tiny_corpus, kmeans_dir, out))
    assert load_corpus(out).to_list() == reference
    assert kept.stat().st_mtime_ns == kept_mtime, "a finished shard must not be redone"


def test_bad_audio_becomes_rejected_rows(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    rows = load_corpus(tiny_corpus).to_list()
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"not audio at all" * 10)
    silent = tmp_path / "silent.wav"
    sf.write(silent, [0.0] * 8000, 16_000)
    rows[1] = {**rows[1], "audio": str(corrupt)}
    rows[4] = {**rows[4], "audio": str(silent)}
    rows[6] = {**rows[6], "audio": str(tmp_path / "gone.flac")}
    corpus = tmp_path / "corpus"
    write_corpus_dataset(rows, corpus / "dataset")
    out = extract.run(extract_cfg(corpus, kmeans_dir, tmp_path / "units"))
    rejected = {r["id"]: r["reason"] for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    assert set(rejected) == {rows[1]["id"], rows[4]["id"], rows[6]["id"]}
    assert rejected[rows[1]["id"]].startswith("unreadable audio")
    assert rejected[rows[4]["id"]].startswith("silent audio")
    assert rejected[rows[6]["id"]].startswith("unreadable audio")
    assert len(load_corpus(out)) == 5
    assert json.loads((out / "summary.json").read_text())["rejected"] == 3


def test_two_ranks_under_torchrun_split_the_shards(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    single = load_corpus(extract.run(extract_cfg(tiny_corpus, kmeans_dir, tmp_path / "one"))).to_list()
    out = tmp_path / "two"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = subprocess_env()
    result = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29533",
            "-m",
            "speechgpt.cli",
            "units",
            "extract",
            f"corpus={tiny_corpus}",
            f"kmeans={kmeans_dir}",
            f"out={out}",
            "shard_size=3",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=240,
        text=True,
    )
    assert "rank 0/2: 2 shards" in result.stderr and "rank 1/2: 1 shards" in result.stderr
    assert load_corpus(out).to_list() == single
    assert len(list((out / "shards").iterdir())) == 3


def test_resume_with_other_kmeans_is_refused(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    out = extract.run(extract_cfg(tiny_corpus, kmeans_dir, tmp_path / "units"))
    other = fit.run(fit.Config(corpus=tiny_corpus, out=tmp_path / "km7", k=7, splits=["train", "test"]))
    with pytest.raises(ValueError, match="other settings"):
        extract.run(extract_cfg(tiny_corpus, other, out))


def test_a_moved_output_folder_still_finds_its_audio(tiny_corpus: Path, kmeans_dir: Path, tmp_path: Path) -> None:
    import datasets

    from speechgpt.data.units import load_units_dataset

    first = tmp_path / "first"
    shutil.copytree(tiny_corpus, first / "corpus")
    extract.run(extract_cfg(first / "corpus", kmeans_dir, first / "units"))
    moved = tmp_path / "moved"
    first.rename(moved)
    stored = datasets.load_from_disk(str(moved / "units" / "dataset"))["audio"]
    assert all(path.startswith("../../corpus/audio/") for path in stored), stored
    for dataset in (load_corpus(moved / "corpus"), load_units_dataset(moved / "units")):
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in dataset["audio"])
        assert all(Path(p).is_relative_to(moved / "corpus" / "audio") for p in dataset["audio"])
