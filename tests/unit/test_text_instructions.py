"""Readers of Alpaca and ShareGPT instruction data: pairs, ids, splits, and bad records that never abort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_builders.text_instructions import read_text_instructions


def test_alpaca_json_array_with_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.json"
    path.write_text(
        "[\n"
        '  {"instruction": "Name a colour.", "input": "", "output": "Red."},\n'
        '  {"instruction": "Add the numbers.",\n   "input": "two and three", "output": "five"},\n'
        '  {"instruction": "No answer here.", "input": ""},\n'
        '  "just a string",\n'
        '  {"instruction": "  ", "output": "x"},\n'
        '  {"id": "q7", "instruction": "Say hi.", "output": "hi", "split": "test"}\n'
        "]\n"
    )
    pairs, bad = read_text_instructions(path)
    assert [(p.id, p.question, p.answer, p.split) for p in pairs] == [
        ("alpaca-000002", "Name a colour.", "Red.", "train"),
        ("alpaca-000003", "Add the numbers. two and three", "five", "train"),
        ("q7", "Say hi.", "hi", "test"),
    ]
    assert [(b.origin.rsplit(":", 1)[1], b.reason.split(":")[0]) for b in bad] == [
        ("5", "missing output"),
        ("6", "not an object"),
        ("7", "empty instruction"),
    ]


def test_alpaca_jsonl_keeps_going_past_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "dev.jsonl"
    lines = [
        {"instruction": "What is one plus one?", "output": "two", "family": "add"},
        "{not json",
        {"instruction": "Repeat", "input": 5, "output": "x"},
        {"id": "a", "instruction": "Q", "output": "A"},
        {"id": "a", "instruction": "Q again", "output": "A"},
        {"instruction": "Q", "output": "A", "split": "valid"},
        {"question": "Q", "answer": "A"},
    ]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n\n")
    pairs, bad = read_text_instructions(path)
    assert [(p.id, p.split, p.family) for p in pairs] == [("dev-000001", "dev", "add"), ("a", "dev", "")]
    reasons = {b.origin.rsplit(":", 1)[1]: b.reason for b in bad}
    assert reasons["2"].startswith("invalid JSON")
    assert reasons["3"].startswith("bad input")
    assert reasons["5"].startswith("duplicate id")
    assert reasons["6"].startswith("bad split")
    assert reasons["7"].startswith("unknown record")
    assert len(bad) == 5


def test_sharegpt_first_pair_or_all_pairs(tmp_path: Path) -> None:
    records = [
        {
            "id": "c1",
            "conversations": [
                {"from": "system", "value": "be brief"},
                {"from": "human", "value": "hello there"},
                {"from": "gpt", "value": "hi"},
                {"from": "human", "value": "what is two plus two"},
                {"from": "gpt", "value": "four"},
            ],
        },
        {"id": "c2", "conversations": [{"from": "gpt", "value": "unprompted"}]},
        {"id": "c3", "conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]},
        {"id": "c4", "conversations": "not a list"},
        {"id": "c5", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
    ]
    path = tmp_path / "share.json"
    path.write_text(json.dumps(records, indent=1))
    pairs, bad = read_text_instructions(path)
    assert [(p.id, p.question, p.answer) for p in pairs] == [("c1", "hello there", "hi")]
    assert {b.id: b.reason.split(":")[0] for b in bad} == {
        "c2": "no pair",
        "c3": "bad turn",
        "c4": "bad conversations",
        "c5": "empty turn 2 value",
    }
    all_pairs, _ = read_text_instructions(path, all_pairs=True)
    assert [(p.id, p.answer) for p in all_pairs] == [("c1-t1", "hi"), ("c1-t2", "four")]


def test_folder_of_splits_and_broken_files(tmp_path: Path) -> None:
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"instruction": f"q {split}", "output": "a"}) + "\n")
    pairs, bad = read_text_instructions(tmp_path)
    assert [(p.id, p.split) for p in pairs] == [("train-000001", "train"), ("test-000001", "test")] and not bad
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "q", "output": "a"}, {"instruction": ')
    with pytest.raises(ValueError, match="not a valid JSON array"):
        read_text_instructions(broken)
    with pytest.raises(FileNotFoundError):
        read_text_instructions(tmp_path / "missing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no train/dev/test"):
        read_text_instructions(tmp_path / "empty")
