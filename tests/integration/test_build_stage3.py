"""Stage-3 data made the one-way route: `corpus synth qa=...` speaks the questions and answers with real TTS voices,
`units extract` turns them into MFCC units, and `build stage3` joins the questions with those units: the four
chain-of-modality layouts, held-out voices, over-long answers, a rerun that writes the same bytes, and the join's
checks on units made from other questions or other voices."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from data_builders import build_stage3, synth_corpus
from data_builders.tts import parse_voice
from speechgpt.data.corpus import load_corpus, write_dataset
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.data.units import units_features
from speechgpt.text.template import SPEECHGPT_SYSTEM, ChatTemplate
from speechgpt.text.units import SOSP, UnitFormat
from speechgpt.units import extract, fit

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
# the demo's voices (configs/tiny/qa_speech.yaml), in the order the pools are drawn from
DEMO_TRAIN_VOICES = ["flite:slt", "flite:rms", "flite:awb", "festival:kal_diphone", "espeak-ng:en-us+m3"]
DEMO_HELDOUT_VOICES = ["flite:kal16", "festival:ked_diphone"]


def write_questions(folder: Path, questions: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, records in questions.items():
        broken = "{not json\n" if split == "train" else ""  # a bad record is listed, never fatal
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + broken)
    return folder


@pytest.fixture(scope="module")
def questions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_questions(tmp_path_factory.mktemp("questions"), QUESTIONS)


@pytest.fixture(scope="module")
def qa_speech(questions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> synth_corpus.Config:
    cfg = synth_corpus.Config(
        out=tmp_path_factory.mktemp("qa_speech"),
        qa=questions_dir,
        voices=[*TRAIN_VOICES, HELDOUT_VOICE],
        heldout_voices=[HELDOUT_VOICE],
        num_workers=1,
    )
    synth_corpus.run(cfg)
    return cfg


@pytest.fixture(scope="module")
def qa_units(tiny_corpus: Path, qa_speech: synth_corpus.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Units of the spoken questions with a k-means fitted on another corpus, as the demo's stages share one."""
    kmeans = fit.run(fit.Config(corpus=tiny_corpus, out=tmp_path_factory.mktemp("km"), k=20, splits=["train", "test"]))
    return extract.run(extract.Config(corpus=qa_speech.out, kmeans=kmeans, out=tmp_path_factory.mktemp("qa_units")))


@pytest.fixture(scope="module")
def built(questions_dir: Path, qa_units: Path, tmp_path_factory: pytest.TempPathFactory) -> build_stage3.Config:
    cfg = build_stage3.Config(
        questions=questions_dir, units=qa_units, out=tmp_path_factory.mktemp("stage3"), max_answer_words=12
    )
    build_stage3.run(cfg)
    return cfg


def test_the_qa_corpus_speaks_each_question_and_answer_once(qa_speech: synth_corpus.Config) -> None:
    train_speakers = {parse_voice(key).speaker for key in TRAIN_VOICES}
    rows = {r["id"]: r for r in load_corpus(qa_speech.out).to_list()}
    expected = {
        (f"{prefix}-{r['id']}", text, split)
        for split, records in QUESTIONS.items()
        for r in records
        for prefix, text in (("q", r["instruction"]), ("a", r["output"]))
    }
    assert {(i, r["text"], r["split"]) for i, r in rows.items()} == expected
    for row in rows.values():
        voices = train_speakers if row["split"] == "train" else {parse_voice(HELDOUT_VOICE).speaker}
        assert row["speaker"] in voices and row["source"].startswith("tts:")


def test_four_modes_have_the_chain_layout(built: build_stage3.Config) -> None:
    dataset = load_instruct_dataset(built.out)
    template = ChatTemplate(UnitFormat("default", 20))
    units = {r["id"]: r["units"] for r in load_corpus(built.units).to_list()}
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


def test_direct_mode_answers_the_spoken_question_with_no_transcript(built: build_stage3.Config, tmp_path: Path) -> None:
    cfg = build_stage3.Config(
        questions=built.questions, units=built.units, out=tmp_path, modes=["direct_s2t"], max_answer_words=12
    )
    build_stage3.run(cfg)
    template = ChatTemplate(UnitFormat("default", 20))
    units = {r["id"]: r["units"] for r in load_corpus(built.units).to_list()}
    questions = {r["id"]: r for records in QUESTIONS.values() for r in records}
    dataset = load_instruct_dataset(tmp_path)
    rows = [row for split in dataset for row in dataset[split]]
    assert len(rows) == 5 and {r["task"] for r in rows} == {"direct_s2t"}
    for row in rows:
        qid = row["id"].split("-", 1)[1]
        parsed = template.parse(row["response"])
        assert parsed.complete and parsed.transcript is None and parsed.text == questions[qid]["output"]
        assert template.units.span(units[f"q-{qid}"]) in row["prompt"] and row["source_ids"] == [f"q-{qid}"]
        assert row["response"].lstrip().startswith("[ta]")


def test_train_copies_repeat_a_modes_training_examples_only(built: build_stage3.Config, tmp_path: Path) -> None:
    cfg = dataclasses.replace(built, out=tmp_path, train_copies={"com_t2s": 3})
    build_stage3.run(cfg)
    dataset = load_instruct_dataset(tmp_path)
    plain = load_instruct_dataset(built.out)
    assert {s: len(dataset[s]) for s in dataset} == {"train": 12 + 2 * 3, "dev": 4, "test": 4}
    by_id = {row["id"]: row for row in dataset["train"]}
    for row in plain["train"]:
        copies = [by_id[row["id"]], *(by_id.get(f"{row['id']}-copy{n}") for n in (2, 3))]
        expected = 3 if row["task"] == "com_t2s" else 1
        assert sum(copy is not None for copy in copies) == expected
        assert all(copy["text"] == row["text"] for copy in copies if copy is not None)
    with pytest.raises(ValueError, match="train_copies"):
        dataclasses.replace(built, modes=["com_s2t"], train_copies={"com_t2s": 2})
    with pytest.raises(ValueError, match="train_copies"):
        dataclasses.replace(built, train_copies={"com_t2s": 0})


def test_the_builder_only_joins(built: build_stage3.Config) -> None:
    """No speech and no units are made inside `build stage3`: its folder holds the dataset and its reports only."""
    assert sorted(p.name for p in built.out.iterdir()) == [
        "config.yaml",
        "dataset",
        "rejected.jsonl",
        "summary.json",
        "token_lengths.png",
    ]
    summary = json.loads((built.out / "summary.json").read_text())
    tag = load_corpus(built.units)[0]["encoder"]
    assert summary["speech"] == {"clips": 10, "speakers": 3, "encoder": tag}
    assert summary["kmeans"] == {"k": 20, "fingerprint": tag.rsplit(":", 1)[1]}


def test_heldout_splits_are_spoken_by_heldout_voices_only(built: build_stage3.Config) -> None:
    speaker = {r["id"]: r["speaker"] for r in load_corpus(built.units).to_list()}
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


def test_voices_are_drawn_per_question_as_the_demo_always_drew_them(tmp_path: Path) -> None:
    """The voice of a question is `Random(f"{seed}:voice:{id}")`'s choice, first for the question, then the answer:
    the draw the builder made before speech moved to the corpus command, so the demo speaks with the same voices."""
    questions = {
        split: [{"id": f"{split}-{i}", "instruction": f"question {i}", "output": "yes"} for i in range(30)]
        for split in ("train", "dev", "test")
    }
    folder = write_questions(tmp_path / "q", questions)
    voices = [*DEMO_TRAIN_VOICES, *DEMO_HELDOUT_VOICES]
    cfg = synth_corpus.Config(qa=folder, voices=voices, heldout_voices=DEMO_HELDOUT_VOICES)
    items = {item.id: item for item in synth_corpus.qa_items(cfg, folder)}
    assert len(items) == 2 * 90
    for split, records in questions.items():
        pool = DEMO_TRAIN_VOICES if split == "train" else DEMO_HELDOUT_VOICES
        for record in records:
            rng = random.Random(f"0:voice:{record['id']}")
            for prefix in "qa":
                item = items[f"{prefix}-{record['id']}"]
                assert item.speaker == parse_voice(rng.choice(pool)).speaker and item.split == split
    assert len({i.speaker for i in items.values() if i.split == "train"}) == len(DEMO_TRAIN_VOICES)


def numbered_questions(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """`count` train and `count` test questions "q <i>" (answer "y"), and the demo's voices."""
    questions = {
        split: [{"id": f"{split}-{i}", "instruction": f"q {i}", "output": "y"} for i in range(count)]
        for split in ("train", "test")
    }
    return write_questions(tmp_path / "q", questions), [*DEMO_TRAIN_VOICES, *DEMO_HELDOUT_VOICES]


def test_one_answer_voice_speaks_every_answer_and_questions_keep_their_voices(tmp_path: Path) -> None:
    """qa_answer_voice: every answer clip in that voice, so an answer's units follow from its text; the questions are
    spoken by the same drawn voices as without it."""
    folder, voices = numbered_questions(tmp_path, 10)
    drawn = synth_corpus.qa_items(
        synth_corpus.Config(qa=folder, voices=voices, heldout_voices=DEMO_HELDOUT_VOICES), folder
    )
    cfg = synth_corpus.Config(
        qa=folder, voices=voices, heldout_voices=DEMO_HELDOUT_VOICES, qa_answer_voice="espeak-ng:en-us"
    )
    items = synth_corpus.qa_items(cfg, folder)
    answer_speaker = parse_voice("espeak-ng:en-us").speaker
    assert {i.speaker for i in items if i.id.startswith("a-")} == {answer_speaker}
    assert [(i.id, i.speaker) for i in items if i.id.startswith("q-")] == [
        (i.id, i.speaker) for i in drawn if i.id.startswith("q-")
    ]
    with pytest.raises(ValueError, match="qa_answer_voice applies only with qa"):
        synth_corpus.Config(voices=voices, heldout_voices=DEMO_HELDOUT_VOICES, qa_answer_voice="espeak-ng:en-us")


def test_test_questions_in_new_renditions_by_training_voices(tmp_path: Path) -> None:
    """qa_splits + qa_heldout_speakers=training_voices: only the test questions, each spoken by a training voice (the
    eval set of known voices on questions no training clip speaks)."""
    folder, voices = numbered_questions(tmp_path, 20)
    cfg = synth_corpus.Config(
        qa=folder,
        voices=voices,
        heldout_voices=DEMO_HELDOUT_VOICES,
        qa_splits=["test"],
        qa_heldout_speakers="training_voices",
    )
    items = synth_corpus.qa_items(cfg, folder)
    assert len(items) == 2 * 20 and {i.split for i in items} == {"test"}
    train_speakers = {parse_voice(v).speaker for v in DEMO_TRAIN_VOICES}
    assert {i.speaker for i in items} <= train_speakers and len({i.speaker for i in items}) > 1


def test_overlong_answers_and_bad_records_are_counted_and_listed(built: build_stage3.Config) -> None:
    summary = json.loads((built.out / "summary.json").read_text())
    assert summary["answers_too_long"] == 1 and summary["skipped"] == {"answer too long": 1, "bad record": 1}
    assert summary["questions"] == 6 and summary["rejected"] == 2
    rejected = [json.loads(line) for line in (built.out / "rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejected] == ["long", "train-000005"]
    assert rejected[1]["reason"].startswith("invalid JSON")
    assert rejected[0]["reason"] == "answer too long: 20 words over the limit of 12"
    assert rejected[0]["origin"] == f"{built.questions / 'train.jsonl'}:4"


def test_rerun_synthesizes_nothing_and_writes_the_same_bytes(
    built: build_stage3.Config, qa_speech: synth_corpus.Config
) -> None:
    def snapshot() -> dict[str, bytes]:
        files = [built.out / "summary.json", built.out / "rejected.jsonl", built.out / "token_lengths.png"]
        files += sorted((built.out / "dataset").rglob("*"))
        return {str(p): p.read_bytes() for p in files if p.is_file()}

    before = snapshot()
    build_stage3.run(built)
    assert snapshot() == before
    synth_corpus.run(qa_speech)
    speech = json.loads((qa_speech.out / "summary.json").read_text())
    assert speech["new_items"] == 0 and speech["resumed_items"] == 12


def test_a_subset_of_modes_per_question(built: build_stage3.Config) -> None:
    cfg = build_stage3.Config(questions=built.questions, units=built.units, modes_per_question=2, seed=3)
    chosen = {qid: build_stage3.modes_for(cfg, qid) for qid in ("a", "b", "c", "d", "e", "f")}
    assert all(len(modes) == 2 and modes == sorted(modes) for modes in chosen.values())
    assert len({tuple(m) for m in chosen.values()}) > 1
    assert chosen == {qid: build_stage3.modes_for(cfg, qid) for qid in chosen}
    with pytest.raises(ValueError, match="qa needs heldout_voices and at least one other"):
        synth_corpus.Config(qa=built.questions, voices=["flite:slt"], heldout_voices=["flite:slt"])


def fake_units(folder: Path, clips: list[tuple[str, str, str, str]]) -> Path:
    """A units dataset of (id, text, speaker, split) clips with made-up units, and one extraction rejection."""
    rows = [
        {
            "id": clip_id,
            "audio": f"/nowhere/{clip_id}.flac",
            "text": text,
            "speaker": speaker,
            "duration_s": 1.0,
            "source": "test",
            "split": split,
            "orig_sample_rate": 16_000,
            "orig_channels": 1,
            "units": [1, 2, 3],
            "durations": [1, 1, 1],
            "encoder": "mfcc@50Hz+km20:0123",
        }
        for clip_id, text, speaker, split in clips
    ]
    write_dataset(rows, folder / "dataset", units_features())
    rejection = {"id": "a-sub-9-2", "origin": "a.flac", "reason": "unreadable audio: cut short"}
    (folder / "rejected.jsonl").write_text(json.dumps(rejection) + "\n")
    return folder


def test_the_join_lists_clips_without_units_and_refuses_other_questions_or_shared_voices(
    questions_dir: Path, tmp_path: Path
) -> None:
    clips = [
        ("q-add-3-4", "what is three plus four", "v1", "train"),
        ("a-add-3-4", "seven", "v1", "train"),
        ("q-sub-9-2", "what is nine minus two", "h1", "dev"),
    ]
    cfg = build_stage3.Config(questions=questions_dir, units=fake_units(tmp_path / "u", clips), out=tmp_path / "s3")
    dataset = load_instruct_dataset(build_stage3.run(cfg))
    assert sorted(r["id"] for s in dataset for r in dataset[s]) == sorted(
        [f"com_{m}-add-3-4" for m in ("s2s", "s2t", "t2s", "t2t")]
        + ["com_s2t-sub-9-2", "com_t2t-sub-9-2"]
        + [f"com_t2t-{q}" for q in ("add-5-1", "after-12", "letters-cat", "long")]
    )
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (cfg.out / "rejected.jsonl").read_text().splitlines())}
    assert reasons["com_t2s-sub-9-2"] == "no speech units: a-sub-9-2: units rejected: unreadable audio: cut short"
    assert reasons["com_s2t-add-5-1"].startswith(f"no speech units: q-add-5-1: not in {cfg.units}")

    other = [("q-add-3-4", "what is three plus five", "v1", "train")]
    other_cfg = build_stage3.Config(
        questions=questions_dir, units=fake_units(tmp_path / "o", other), out=tmp_path / "o3"
    )
    with pytest.raises(ValueError, match="clip q-add-3-4 speaks 'what is three plus five', not 'what is three plus"):
        build_stage3.run(other_cfg)

    shared = [*clips[:2], ("q-sub-9-2", "what is nine minus two", "v1", "dev")]
    shared_cfg = build_stage3.Config(
        questions=questions_dir, units=fake_units(tmp_path / "s", shared), out=tmp_path / "x"
    )
    with pytest.raises(ValueError, match=r"voices \['v1'\] speak both train and dev/test questions"):
        build_stage3.run(shared_cfg)

    answer_voice = [*clips, ("a-sub-9-2", "seven", "v1", "dev")]
    answer_voice_cfg = build_stage3.Config(
        questions=questions_dir, units=fake_units(tmp_path / "a", answer_voice), out=tmp_path / "a3"
    )
    summary = json.loads((build_stage3.run(answer_voice_cfg) / "summary.json").read_text())
    assert summary["speech"]["clips"] == 4, "one answer voice may speak the answers of every split"


def test_a_short_system_text_starts_every_example_and_is_recorded(built: build_stage3.Config, tmp_path: Path) -> None:
    """system: the text every example starts with (a tiny model spends half its compute on SpeechGPT's); the
    summary records it for the training stage to write into the model."""
    cfg = dataclasses.replace(built, out=tmp_path / "short", system="You are SpeechGPT.")
    rows = load_instruct_dataset(build_stage3.run(cfg))["train"].to_list()
    assert rows and all(r["text"].startswith("You are SpeechGPT.\n[Human]: ") for r in rows)
    assert json.loads((cfg.out / "summary.json").read_text())["system"] == "You are SpeechGPT.\n"
    default = json.loads((built.out / "summary.json").read_text())["system"]
    assert default == SPEECHGPT_SYSTEM
