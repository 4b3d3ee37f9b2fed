"""The demo's step ledger: a finished step is reused only while its code, config, inputs and outputs are unchanged."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from speechgpt.app.demo_ledger import StepLedger, code_fingerprint, folder_state


@dataclass
class StepConfig:
    out: Path
    steps: int = 10


def finished(ledger: StepLedger, cfg: StepConfig, upstream: str = "") -> str:
    """Run a fake step: write its output, record it; return its key."""
    key = ledger.key("train", ("train", "stage3"), cfg, upstream)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "final.txt").write_text("model")
    ledger.finish("train", key, cfg, str(cfg.out / "final.txt"), 12.5)
    return key


def test_a_finished_step_is_reused_under_the_same_key_and_read_back_from_disk(tmp_path: Path) -> None:
    cfg = StepConfig(out=tmp_path / "stage3")
    ledger = StepLedger(tmp_path, code="c1")
    key = ledger.key("train", ("train", "stage3"), cfg, "")
    assert ledger.reusable("train", key) is None  # never ran
    assert finished(ledger, cfg) == key
    again = StepLedger(tmp_path, code="c1")  # a later `make demo`
    record = again.reusable("train", again.key("train", ("train", "stage3"), cfg, ""))
    assert record is not None and record.seconds == 12.5 and record.output == str(cfg.out / "final.txt")
    assert record.folder == str(cfg.out)


def test_code_config_and_upstream_changes_each_make_a_new_key(tmp_path: Path) -> None:
    cfg = StepConfig(out=tmp_path / "stage3")
    ledger = StepLedger(tmp_path, code="c1")
    key = finished(ledger, cfg)
    assert ledger.reusable("train", ledger.key("train", ("train", "stage3"), StepConfig(cfg.out, steps=20), "")) is None
    assert ledger.reusable("train", ledger.key("train", ("train", "stage3"), cfg, "another upstream")) is None
    assert ledger.reusable("train", key) is not None
    changed_code = StepLedger(tmp_path, code="c2")
    assert changed_code.reusable("train", changed_code.key("train", ("train", "stage3"), cfg, "")) is None


def test_a_changed_output_folder_makes_the_step_run_again_and_changes_what_follows(tmp_path: Path) -> None:
    cfg = StepConfig(out=tmp_path / "stage3")
    ledger = StepLedger(tmp_path, code="c1")
    key = finished(ledger, cfg)
    before = ledger.records["train"].chained
    (cfg.out / "checkpoints").mkdir()  # or deleted: anything the folder holds
    assert ledger.reusable("train", key) is None
    finished(ledger, cfg)
    assert ledger.records["train"].chained != before  # the steps after it get new keys


def test_folder_state_sees_entries_added_removed_and_rewritten(tmp_path: Path) -> None:
    assert folder_state(tmp_path / "absent") == "missing"
    (tmp_path / "a.json").write_text("1")
    first = folder_state(tmp_path)
    (tmp_path / "b.json").write_text("2")
    second = folder_state(tmp_path)
    (tmp_path / "b.json").write_text("22")
    assert len({first, second, folder_state(tmp_path)}) == 3
    (tmp_path / "b.json").unlink()
    assert folder_state(tmp_path) == first
    os.utime(tmp_path / "a.json", ns=(1, 1))  # the same bytes, written again
    assert folder_state(tmp_path) != first


def test_the_code_fingerprint_follows_every_python_file_of_the_packages(tmp_path: Path) -> None:
    for package in ("speechgpt", "data_builders", "stages", "vocoder"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "speechgpt" / "app").mkdir()
    module = tmp_path / "speechgpt" / "app" / "step.py"
    module.write_text("x = 1\n")
    first = code_fingerprint(tmp_path)
    assert code_fingerprint(tmp_path) == first
    module.write_text("x = 2\n")
    assert code_fingerprint(tmp_path) != first
    second = code_fingerprint(tmp_path)
    (tmp_path / "speechgpt" / "notes.txt").write_text("not code")
    assert code_fingerprint(tmp_path) == second


def test_another_steps_folder_inside_a_steps_folder_is_not_its_output(tmp_path: Path) -> None:
    corpus = StepConfig(out=tmp_path / "corpus")
    ledger = StepLedger(tmp_path, code="c1")
    key = finished(ledger, corpus)
    stats = corpus.out / "stats"  # corpus_stats writes here, after the corpus step finished
    stats.mkdir()
    ledger.finish("stats", "k", StepConfig(out=stats), str(stats), 0.1)
    assert ledger.reusable("train", key) is not None
    (corpus.out / "more.txt").write_text("the step's own file")
    assert ledger.reusable("train", key) is None
