"""`speechgpt build stage3` on real TTS voices and MFCC units: the four chain-of-modality layouts, held-out voices,
over-long answers, and a rerun that redoes nothing and writes the same bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_builders import build_stage3
from data_builders.tts import parse_voice
from speechgpt.data.corpus import load_corpus
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.text.template import ChatTemplate
from speechgpt.text.units import SOSP, UnitFormat
from speechgpt.units import fit

TRAIN_VOICES = ["flite:slt", "espeak-ng:en-us+m3"]
HELDOUT_VOICE = "flite:kal16"
QUESTIONS = {
    "train": [
        {"id": "add-3-4", "instruction": "what is three plus four", "output": "seven"},
        {"id": "after-12", "instruction": "what number comes after twelve", "output": "thirteen"},
        {"id": "letters-cat", "instruction": "how many letters are in the word cat", "output": "three"},
        {"id": "long", "instruction": "tell me a story", "output": " ".join(["and then it rained"] * 5)},
    ],
    "dev": [{"id": "sub-9-2", "instruction": "what is nine minus two", "output": "seven"}],
    "test": [{"id": "add-5-1", "instruction": "what is five plus one", "output": "six"}],
}


@pytest.fixture(scope="module")
def kmeans_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit.run(fit.Config(corpus=tiny_corpus, out=tmp_path_factory.mktemp("km"), k=20, splits=["train", "test"]))


@pytest.fixture(scope="module")
def questions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("questions")
    for split, records in QUESTIONS.items():
        broken = "{not json\n" if split == "train" else ""  # a bad record is listed, never fatal
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + broken)
    return folder


@pytest.fixture(scope="module")
def built(kmeans_dir: Path, questions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> build_stage3.Config:
    cfg = build_stage3.Config(
        questions=questions_dir,
        kmeans=kmeans_dir,
        out=tmp_path_factory.mktemp("stage3"),
        voices=TRAIN_VOICES,
        heldout_voices=[HELDOUT_VOICE],
        max_answer_words=12,
        num_workers=1,
    )
    build_stage3.run(cfg)
    return cfg


def test_four_modes_have_the_chain_layout(built: build_stage3.Config) -> None:
    dataset = load_instruct_dataset(built.out)
    template = ChatTemplate(UnitFormat("default", 20))
    units = {r["id"]: r["units"] for r in load_corpus(built.out / "units").to_list()}
    questions = {r["id"]: r for records in QUESTIONS.values() for r in records}
    assert {s: len(dataset[s]) for s in dataset} == {"train": 12, "dev": 4, "test": 4}
    for split in dataset:
        for row in dataset[split]:
            mode, qid = row["task"], row["id"].split("-", 1)[1]
            assert row["id"] == f"{mode}-{qid}" and row["split"] == split
            question = questions[qid]
            parsed = template.parse(row["response"])
            assert parsed.complete and not parsed.problems, parsed.problems
            assert parsed.text == question["output"]
            speech_in, speech_out = mode in ("com_s2s", "com_s2t"), mode in ("com_s2s", "com_t2s")
            assert parsed.transcript == (question["instruction"] if speech_in else None)
            assert parsed.units == (units[f"a-{qid}"] if speech_out else [])
            assert (SOSP in row["prompt"]) == speech_in and (question["instruction"] in row["prompt"]) != speech_in
            if speech_in:
                assert template.units.span(units[f"q-{qid}"]) in row["prompt"]
            expected_sources = [f"q-{qid}"] * speech_in + [f"a-{qid}"] * speech_out
            assert row["source_ids"] == expected_sources
            assert row["response"] in row["text"] and row["loss_spans"]


def test_heldout_splits_are_spoken_by_heldout_voices_only(built: build_stage3.Config) -> None:
    speaker = {r["id"]: r["speaker"] for r in load_corpus(built.out / "speech").to_list()}
    heldout_speaker = parse_voice(HELDOUT_VOICE).speaker
    train_speakers = {parse_voice(key).speaker for key in TRAIN_VOICES}
    dataset = load_instruct_dataset(built.out)
    for split in dataset:
        for row in dataset[split]:
            for source in row["source_ids"]:
                if split == "train":
                    assert speaker[source] in train_speakers
                else:
                    assert speaker[source] == heldout_speaker
    assert {speaker[f"{p}-add-5-1"] for p in "qa"} == {heldout_speaker}
    assert {speaker[i] for i in speaker if i.endswith(("add-3-4", "after-12", "letters-cat"))} <= train_speakers


def test_overlong_answers_and_bad_records_are_counted_and_listed(built: build_stage3.Config) -> None:
    summary = json.loads((built.out / "summary.json").read_text())
    assert summary["answers_too_long"] == 1 and summary["skipped"] == {"answer too long": 1, "bad record": 1}
    assert summary["questions"] == 6 and summary["rejected"] == 2
    rejected = [json.loads(line) for line in (built.out / "rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejected] == ["long", "train-000005"]
    assert rejected[1]["reason"].startswith("invalid JSON")
    assert rejected[0]["reason"] == "answer too long: 20 words over the limit of 12"
    assert rejected[0]["origin"] == f"{built.questions / 'train.jsonl'}:4"
    speech_ids = set(load_corpus(built.out / "speech")["id"])
    assert len(speech_ids) == 10 and "a-long" not in speech_ids


def test_rerun_synthesizes_nothing_and_writes_the_same_bytes(built: build_stage3.Config) -> None:
    def snapshot() -> dict[str, bytes]:
        files = [built.out / "summary.json", built.out / "rejected.jsonl", built.out / "token_lengths.png"]
        files += sorted((built.out / "dataset").rglob("*"))
        return {str(p): p.read_bytes() for p in files if p.is_file()}

    before = snapshot()
    units = built.out / "units"
    extracted = {p.name: p.stat().st_mtime_ns for p in [*(units / "shards").iterdir(), units / "dataset"]}
    build_stage3.run(built)
    speech = json.loads((built.out / "speech" / "summary.json").read_text())
    assert speech["new_items"] == 0 and speech["resumed_items"] == 10
    assert {p.name: p.stat().st_mtime_ns for p in [*(units / "shards").iterdir(), units / "dataset"]} == extracted
    assert snapshot() == before


def test_a_subset_of_modes_per_question(built: build_stage3.Config) -> None:
    cfg = build_stage3.Config(questions=built.questions, kmeans=built.kmeans, modes_per_question=2, seed=3)
    chosen = {qid: build_stage3.modes_for(cfg, qid) for qid in ("a", "b", "c", "d", "e", "f")}
    assert all(len(modes) == 2 and modes == sorted(modes) for modes in chosen.values())
    assert len({tuple(m) for m in chosen.values()}) > 1
    assert chosen == {qid: build_stage3.modes_for(cfg, qid) for qid in chosen}
    with pytest.raises(ValueError, match="held-out voices must stay unseen"):
        build_stage3.Config(
            questions=built.questions, kmeans=built.kmeans, voices=["flite:slt"], heldout_voices=["flite:slt"]
        )
