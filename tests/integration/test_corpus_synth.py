from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_builders import corpus_stats, synth_corpus
from speechgpt.data.corpus import CORPUS_COLUMNS, load_corpus
from tests.conftest import SENTENCES, TWO_VOICES

SPEECHGPT = [sys.executable, "-m", "speechgpt.cli"]


def relative_rows(corpus: Path) -> list[dict]:
    """Rows with the audio path made relative to the corpus folder, to compare builds in different folders."""
    rows = load_corpus(corpus).to_list()
    for row in rows:
        row["audio"] = str(Path(row["audio"]).relative_to(corpus.resolve()))
    return rows


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def synth_config(out: Path, sentences_file: Path, **kw) -> synth_corpus.Config:
    return synth_corpus.Config(
        out=out,
        text_source=str(sentences_file),
        voices=TWO_VOICES,
        heldout_voices=["espeak-ng:en-us+f3"],
        max_sentences=None,
        **kw,
    )


def test_tiny_corpus_follows_the_contract(tiny_corpus: Path) -> None:
    dataset = load_corpus(tiny_corpus)
    assert tuple(dataset.column_names) == CORPUS_COLUMNS
    assert len(dataset) == len(SENTENCES) * 2
    assert set(dataset["speaker"]) == {"flite-slt", "espeak-ng-en-us+f3"}
    assert set(dataset["text"]) == set(SENTENCES)
    for row in dataset:
        samples, rate = sf.read(row["audio"])
        assert rate == 16_000 and samples.ndim == 1
        assert abs(len(samples) / rate - row["duration_s"]) < 1e-3
        assert row["split"] == ("test" if row["speaker"].startswith("espeak") else "train")
        assert row["orig_sample_rate"] == (16_000 if row["speaker"] == "flite-slt" else 22_050)
        assert row["orig_channels"] == 1
    summary = json.loads((tiny_corpus / "summary.json").read_text())
    assert summary["complete"] and summary["utterances"] == 8 and summary["rejected"] == 0
    assert (tiny_corpus / "config.yaml").exists()


def test_rerun_is_byte_identical_and_does_no_work(tiny_corpus: Path, sentences_file: Path) -> None:
    before = folder_bytes(tiny_corpus / "dataset")
    rejected_before = (tiny_corpus / "rejected.jsonl").read_bytes()
    synth_corpus.run(synth_config(tiny_corpus, sentences_file, num_workers=1))
    assert folder_bytes(tiny_corpus / "dataset") == before
    assert (tiny_corpus / "rejected.jsonl").read_bytes() == rejected_before
    summary = json.loads((tiny_corpus / "summary.json").read_text())
    assert summary["new_items"] == 0 and summary["resumed_items"] == 8


def test_limit_then_resume_equals_one_shot(tmp_path: Path, tiny_corpus: Path, sentences_file: Path) -> None:
    out = tmp_path / "limited"
    synth_corpus.run(synth_config(out, sentences_file, limit=3, num_workers=1))
    partial = json.loads((out / "summary.json").read_text())
    assert not partial["complete"] and partial["new_items"] == 3
    assert not (out / "dataset").exists()
    synth_corpus.run(synth_config(out, sentences_file, num_workers=1))
    assert relative_rows(out) == relative_rows(tiny_corpus)
    assert folder_bytes(out / "dataset") == folder_bytes(tiny_corpus / "dataset"), "the folder is not in the bytes"
    for row in relative_rows(out):
        assert (out / row["audio"]).read_bytes() == (tiny_corpus / row["audio"]).read_bytes()


def test_killed_build_resumes_to_the_same_result(tmp_path: Path, tiny_corpus: Path, sentences_file: Path) -> None:
    out = tmp_path / "killed"
    args = [
        *SPEECHGPT,
        "corpus",
        "synth",
        f"out={out}",
        f"text_source={sentences_file}",
        f"voices=[{','.join(TWO_VOICES)}]",
        "heldout_voices=[espeak-ng:en-us+f3]",
        "max_sentences=null",
        "num_workers=1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    journal = out / "journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(journal.read_text().splitlines())
    assert 2 <= done < 8, "the build should have been stopped part-way"
    subprocess.run(args, check=True, capture_output=True)
    assert relative_rows(out) == relative_rows(tiny_corpus)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_items"] >= done


def test_resume_with_other_settings_is_refused(tiny_corpus: Path, sentences_file: Path) -> None:
    with pytest.raises(ValueError, match="other settings"):
        synth_corpus.run(synth_config(tiny_corpus, sentences_file, seed=5))


def test_too_long_clips_are_rejected_not_dropped(tmp_path: Path, sentences_file: Path) -> None:
    out = synth_corpus.run(synth_config(tmp_path / "short", sentences_file, max_duration_s=2.2, num_workers=1))
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    kept = load_corpus(out)
    assert rejected and len(rejected) + len(kept) == 8
    assert all("over the limit of 2.2s" in r["reason"] for r in rejected)
    assert max(kept["duration_s"]) <= 2.2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"] == len(rejected) and summary["rejected_by_reason"] == {"too long": len(rejected)}


def test_stats_counts_and_histogram(tiny_corpus: Path, tmp_path: Path) -> None:
    out = corpus_stats.run(corpus_stats.Config(corpus=tiny_corpus, out=tmp_path / "stats"))
    stats = json.loads((out / "stats.json").read_text())
    durations = load_corpus(tiny_corpus)["duration_s"]
    assert stats["utterances"] == 8 and stats["speakers"] == 2
    assert stats["hours"] == pytest.approx(sum(durations) / 3600, abs=1e-4)
    assert stats["splits"]["test"]["utterances"] == 4 and stats["splits"]["train"]["speakers"] == 1
    png = (out / "duration_histogram.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000


def test_cli_errors_and_dump(tmp_path: Path) -> None:
    bad = subprocess.run([*SPEECHGPT, "corpus", "synth", "voicse=[flite:slt]"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key 'voicse'" in bad.stderr
    missing = subprocess.run(
        [*SPEECHGPT, "corpus", "synth", f"out={tmp_path}", "voices=[flite:nobody]", "heldout_voices=[]"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and "flite:nobody is not installed" in missing.stderr
    dump = subprocess.run([*SPEECHGPT, "corpus", "synth", "--dump-config", "seed=3"], capture_output=True, text=True)
    assert dump.returncode == 0 and "seed: 3" in dump.stdout and "# Seed of sentence" in dump.stdout
    listed = subprocess.run([*SPEECHGPT, "corpus", "voices"], capture_output=True, text=True, check=True)
    assert "flite:slt" in listed.stdout and "festival:kal_diphone" in listed.stdout


def test_parallel_and_serial_give_identical_audio(tiny_corpus: Path, tmp_path: Path, sentences_file: Path) -> None:
    serial = synth_corpus.run(synth_config(tmp_path / "serial", sentences_file, num_workers=1))
    for a, b in zip(relative_rows(serial), relative_rows(tiny_corpus), strict=True):
        assert a == b
        assert np.array_equal(sf.read(serial / a["audio"])[0], sf.read(tiny_corpus / b["audio"])[0])


def test_a_moved_build_resumes_in_its_new_place(tmp_path: Path, tiny_corpus: Path, sentences_file: Path) -> None:
    first, moved = tmp_path / "first" / "corpus", tmp_path / "moved" / "corpus"
    synth_corpus.run(synth_config(first, sentences_file, limit=3, num_workers=1))
    first.parent.rename(moved.parent)
    synth_corpus.run(synth_config(moved, sentences_file, num_workers=1))
    assert all(Path(p).is_relative_to(moved / "audio") and Path(p).is_file() for p in load_corpus(moved)["audio"])
    assert folder_bytes(moved / "dataset") == folder_bytes(tiny_corpus / "dataset")
