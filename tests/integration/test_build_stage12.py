"""`speechgpt build stage1|stage2|export|import` on real units of the tiny TTS corpus and on a synthetic units set."""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path

import pytest

from data_builders import build_stage1, build_stage2, export_jsonl, import_jsonl
from data_builders.instruct_common import TokenCounter
from data_builders.instructions import load_instructions
from speechgpt.cli import main as cli_main
from speechgpt.data.corpus import load_corpus, write_dataset
from speechgpt.data.instruct import load_instruct_dataset
from speechgpt.data.units import units_features
from speechgpt.text.conversation import parse_conversation
from speechgpt.text.template import SPEECHGPT_SYSTEM, AssistantTurn, ChatTemplate, UserTurn
from speechgpt.text.units import UnitFormat
from speechgpt.units import extract, fit
from speechgpt.units.encoders import EncoderConfig

K = 20
BUILDERS = Path(__file__).resolve().parents[2] / "data_builders"
DEFAULT = UnitFormat("default", K)
TEMPLATE = ChatTemplate(DEFAULT)
TRAIN_VOICES, HELDOUT_VOICES = ("v1", "v2"), ("h1", "h2")
LONG_ROWS = {"v1-s007", "v2-s019"}  # 400 units: over any small budget alone


@pytest.fixture(scope="module")
def units_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real units of the 2-voice tiny corpus: MFCC + k-means k=20."""
    root = tmp_path_factory.mktemp("stage12")
    kmeans = fit.run(
        fit.Config(corpus=tiny_corpus, out=root / "km", k=K, encoder=EncoderConfig(kind="mfcc"), splits=["train"])
    )
    return extract.run(extract.Config(corpus=tiny_corpus, kmeans=kmeans, out=root / "units"))


@pytest.fixture(scope="module")
def synthetic_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 voices (2 held out) x 40 sentences with random units: enough sentences for every bucket."""
    rng = random.Random(7)
    rows = []
    for voice in TRAIN_VOICES + HELDOUT_VOICES:
        for index in range(40):
            row_id = f"{voice}-s{index:03d}"
            count = 400 if row_id in LONG_ROWS else rng.randint(3, 40)
            rows.append(
                {
                    "id": row_id,
                    "audio": f"/nowhere/{row_id}.flac",
                    "text": f"Sentence number {index} is spoken here.",
                    "speaker": voice,
                    "duration_s": 1.0,
                    "source": "synthetic",
                    "split": "train" if voice in TRAIN_VOICES else "test",
                    "orig_sample_rate": 16_000,
                    "orig_channels": 1,
                    "units": [rng.randrange(K) for _ in range(count)],
                    "durations": [1] * count,
                    "encoder": f"mfcc@50Hz+km{K}:0123",
                }
            )
    root = tmp_path_factory.mktemp("synthetic")
    write_dataset(rows, root / "dataset", units_features())
    return root


def rows_of(out: Path) -> dict[str, list[dict]]:
    dataset = load_instruct_dataset(out)
    return {split: dataset[split].to_list() for split in dataset}


def sources_of(units: Path) -> dict[str, dict]:
    return {row["id"]: row for row in load_corpus(units).to_list()}


def test_stage1_rows_are_the_units(units_dir: Path, tmp_path: Path) -> None:
    source = sources_of(units_dir)
    out = build_stage1.run(build_stage1.Config(units=units_dir, out=tmp_path / "s1"))
    rows = rows_of(out)
    assert sorted(rows) == ["test", "train"] and sum(map(len, rows.values())) == len(source) == 8
    for split, split_rows in rows.items():
        for row in split_rows:
            src = source[row["source_ids"][0]]
            assert row["task"] == "unit_lm" and split == src["split"]
            assert row["text"] == "<sosp>" + "".join(f"<|u{u}|>" for u in src["units"]) + "<eosp>"
            assert row["loss_spans"] == [[0, len(row["text"])]] and row["prompt"] == ""
    assert json.loads((out / "summary.json").read_text())["k"] == K

    threshold = sorted(len(r["units"]) for r in source.values())[3]
    short = sum(len(r["units"]) < threshold for r in source.values())
    legacy = build_stage1.run(
        build_stage1.Config(units=units_dir, out=tmp_path / "legacy", unit_format="legacy", min_units=threshold)
    )
    legacy_rows = [r for split_rows in rows_of(legacy).values() for r in split_rows]
    assert short > 0 and len(legacy_rows) == len(source) - short
    assert json.loads((legacy / "summary.json").read_text())["skipped"] == {"fewer than min_units units": short}
    for row in legacy_rows:
        assert row["text"] == "<sosp>" + "".join(f"<{u}>" for u in source[row["source_ids"][0]]["units"]) + "<eosp>"


def check_answers(rows: dict[str, list[dict]], source: dict[str, dict]) -> int:
    """Every answer equals its source row (transcript for ASR, units for TTS); loss spans are the answers."""
    turns_seen = 0
    for split_rows in rows.values():
        for row in split_rows:
            conversation = parse_conversation(row["text"], DEFAULT)
            assert len(conversation.turns) == len(row["source_ids"]) == len(row["loss_spans"])
            for (user, answer), source_id, (a, b) in zip(
                conversation.turns, row["source_ids"], row["loss_spans"], strict=True
            ):
                src = source[source_id]
                if row["task"] == "asr":
                    assert user.units == tuple(src["units"]) and answer.text == src["text"]
                    assert user.instruction in load_instructions("asr")
                    expected = TEMPLATE.answer_text(AssistantTurn(text=src["text"]))
                else:
                    assert user.text == src["text"] and answer.units == tuple(src["units"])
                    assert user.instruction in load_instructions("tts")
                    expected = TEMPLATE.answer_text(AssistantTurn(units=tuple(src["units"])))
                trained = row["text"][a:b]
                assert trained == expected and trained.endswith("<eoa>") and "[Human]:" not in trained
                assert row["text"][:a].rstrip().endswith("<eoh> [SpeechGPT]:")
                turns_seen += 1
    return turns_seen


def test_stage2_answers_equal_their_source_rows(units_dir: Path, tmp_path: Path) -> None:
    source = sources_of(units_dir)
    cfg = build_stage2.Config(
        units=units_dir, out=tmp_path / "s2", both_tasks=True, dev_fraction=0.25, test_fraction=0.25
    )
    rows = rows_of(build_stage2.run(cfg))
    turns = check_answers(rows, source)
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert turns + 2 * summary["skipped"].get("held-out voice with a training sentence", 0) == 2 * len(source)
    assert {r["task"] for split_rows in rows.values() for r in split_rows} == {"asr", "tts"}


def test_stage2_tts_from_one_answer_voice(units_dir: Path, synthetic_units: Path, tmp_path: Path) -> None:
    """tts_units: the TTS examples say sentences in that one voice (its rows), the ASR ones listen to `units`; a
    units set from another k-means is refused."""
    source = sources_of(units_dir)
    voice = sorted({r["speaker"] for r in source.values()})[0]
    voice_rows = [r for r in source.values() if r["speaker"] == voice]
    write_dataset(voice_rows, tmp_path / "voice" / "dataset", units_features())
    cfg = build_stage2.Config(
        units=units_dir, tts_units=tmp_path / "voice", out=tmp_path / "s2", dev_fraction=0.25, test_fraction=0.25
    )
    rows = rows_of(build_stage2.run(cfg))
    check_answers(rows, source)
    by_task: dict[str, list[str]] = {"asr": [], "tts": []}
    for split_rows in rows.values():
        for row in split_rows:
            by_task[row["task"]] += row["source_ids"]
    assert sorted(by_task["tts"]) == sorted(r["id"] for r in voice_rows)
    heldout_skipped = json.loads((cfg.out / "summary.json").read_text())["skipped"].get(
        "held-out voice with a training sentence", 0
    )
    assert len(by_task["asr"]) + heldout_skipped == len(source)

    with pytest.raises(ValueError, match="extract both with the same k-means"):
        build_stage2.run(build_stage2.Config(units=units_dir, tts_units=synthetic_units, out=tmp_path / "x"))


def test_stage2_splits_keep_sentences_and_voices_apart(synthetic_units: Path, tmp_path: Path) -> None:
    source = sources_of(synthetic_units)
    cfg = build_stage2.Config(
        units=synthetic_units, out=tmp_path / "s2", max_tokens=10_000, dev_fraction=0.2, test_fraction=0.2
    )
    rows = rows_of(build_stage2.run(cfg))
    assert sorted(rows) == ["dev", "dev_seen_voices", "test", "train"]
    used = {split: [source[i] for r in split_rows for i in r["source_ids"]] for split, split_rows in rows.items()}
    sentences = {split: {s["text"] for s in srcs} for split, srcs in used.items()}
    voices = {split: {s["speaker"] for s in srcs} for split, srcs in used.items()}
    for other in ("dev", "test", "dev_seen_voices"):
        assert not sentences["train"] & sentences[other]
    assert not sentences["dev"] & sentences["test"]
    assert voices["train"] == voices["dev_seen_voices"] == set(TRAIN_VOICES)
    assert voices["dev"] <= set(HELDOUT_VOICES) and voices["test"] <= set(HELDOUT_VOICES)
    # nothing is lost silently: every row is used once or counted as a held-out voice with a training sentence
    ids = [s["id"] for srcs in used.values() for s in srcs]
    assert len(ids) == len(set(ids))
    heldout_with_train_sentence = [
        r for r in source.values() if r["speaker"] in HELDOUT_VOICES and r["text"] in sentences["train"]
    ]
    skipped = json.loads((cfg.out / "summary.json").read_text())["skipped"]
    assert skipped == {"held-out voice with a training sentence": len(heldout_with_train_sentence)}
    assert len(ids) + len(heldout_with_train_sentence) == len(source)
    check_answers(rows, source)


def test_stage2_packs_turns_within_max_tokens(synthetic_units: Path, tmp_path: Path) -> None:
    source = sources_of(synthetic_units)
    cfg = build_stage2.Config(units=synthetic_units, out=tmp_path / "s2", both_tasks=True, max_tokens=300)
    rows = rows_of(build_stage2.run(cfg))
    count = TokenCounter(DEFAULT)
    for split, split_rows in rows.items():
        for row in split_rows:
            assert row["num_tokens"] == count(row["text"]) <= cfg.max_tokens
            assert len(row["source_ids"]) <= (cfg.turns_per_example if split == "train" else 1)
            assert not LONG_ROWS & set(row["source_ids"])
    assert max(len(r["source_ids"]) for r in rows["train"]) > 1, "training examples should be packed"
    summary = json.loads((cfg.out / "summary.json").read_text())
    assert summary["skipped"]["over max_tokens"] == 2 * len(LONG_ROWS)
    turns = sum(len(r["source_ids"]) for split_rows in rows.values() for r in split_rows)
    heldout_skipped = summary["skipped"]["held-out voice with a training sentence"]
    assert turns == 2 * (len(source) - heldout_skipped - len(LONG_ROWS))
    check_answers(rows, source)


def dataset_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "dataset").rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(synthetic_units: Path, tmp_path: Path) -> None:
    def build(name: str, seed: int) -> dict[str, bytes]:
        cfg = build_stage2.Config(units=synthetic_units, out=tmp_path / name, seed=seed, max_tokens=300)
        return dataset_bytes(build_stage2.run(cfg))

    first = build("a", 0)
    assert first == build("b", 0)
    assert first != build("c", 1)


def test_loss_on_after_system_trains_everything_after_the_system_prompt(synthetic_units: Path, tmp_path: Path):
    cfg = build_stage2.Config(units=synthetic_units, out=tmp_path / "s2", loss_on="after_system", splits=["train"])
    rows = rows_of(build_stage2.run(cfg))
    assert list(rows) == ["train"]
    for row in rows["train"]:
        assert row["loss_spans"] == [[len(SPEECHGPT_SYSTEM), len(row["text"])]]


def test_export_writes_speechgpt_jsonl_and_import_gives_back_the_texts(units_dir: Path, tmp_path: Path) -> None:
    stage2 = build_stage2.run(
        build_stage2.Config(
            units=units_dir, out=tmp_path / "s2", both_tasks=True, dev_fraction=0.25, test_fraction=0.25
        )
    )
    source_rows = rows_of(stage2)
    exported = export_jsonl.run(export_jsonl.Config(dataset=stage2, out=tmp_path / "jsonl", legacy=True))
    assert sorted(p.name for p in exported.glob("*.jsonl")) == sorted(f"{s}.jsonl" for s in source_rows)
    for split, split_rows in source_rows.items():
        lines = (exported / f"{split}.jsonl").read_text().splitlines()
        assert len(lines) == len(split_rows)
        for record in map(json.loads, lines):
            assert set(record) == {"prefix", "plain_text"} and record["plain_text"].startswith(record["prefix"])
            assert record["prefix"].startswith(SPEECHGPT_SYSTEM + "[Human]: ")
            assert record["prefix"].rstrip().endswith("<eoh> [SpeechGPT]:") and record["plain_text"].endswith("<eoa>")
            assert re.search(r"<sosp>(<\d+>)+<eosp>", record["plain_text"]) and "<|u" not in record["plain_text"]
        imported = import_jsonl.run(
            import_jsonl.Config(jsonl=exported / f"{split}.jsonl", out=tmp_path / f"imp-{split}", k=K, split=split)
        )
        back = rows_of(imported)[split]
        key = lambda r: r["text"]  # noqa: E731
        assert [(r["text"], r["task"], r["loss_spans"]) for r in sorted(back, key=key)] == [
            (r["text"], r["task"], r["loss_spans"]) for r in sorted(split_rows, key=key)
        ]
    same = export_jsonl.run(export_jsonl.Config(dataset=stage2, out=tmp_path / "same", splits=["train"]))
    records = [json.loads(line) for line in (same / "train.jsonl").read_text().splitlines()]
    assert [r["plain_text"] for r in records] == [r["text"] for r in source_rows["train"]]


def test_unit_sequences_export_as_bare_spans_and_import_as_unit_lm(units_dir: Path, tmp_path: Path) -> None:
    stage1 = build_stage1.run(build_stage1.Config(units=units_dir, out=tmp_path / "s1"))
    exported = export_jsonl.run(export_jsonl.Config(dataset=stage1, out=tmp_path / "jsonl", legacy=True))
    records = [json.loads(line) for line in (exported / "train.jsonl").read_text().splitlines()]
    assert records and all(
        r["prefix"] == "" and re.fullmatch(r"<sosp>(<\d+>)+<eosp>", r["plain_text"]) for r in records
    )
    imported = import_jsonl.run(import_jsonl.Config(jsonl=exported / "train.jsonl", out=tmp_path / "imp", k=K))
    back = rows_of(imported)["train"]
    assert {r["task"] for r in back} == {"unit_lm"}
    assert sorted(r["text"] for r in back) == sorted(r["text"] for r in rows_of(stage1)["train"])


def test_import_reports_bad_lines_and_keeps_the_good_ones(tmp_path: Path) -> None:
    legacy = ChatTemplate(UnitFormat("legacy", K))
    good = legacy.format([(UserTurn("Transcribe the speech.", units=(3, 4, 5)), AssistantTurn(text="hello there"))])
    text_only = legacy.format([(UserTurn("Say hi."), AssistantTurn(text="hi"))]).text
    lines = [
        json.dumps({"prefix": good.prompt, "plain_text": good.text}),
        "this is not json {",
        json.dumps({"prefix": "only a prefix"}),
        json.dumps({"plain_text": good.text.removesuffix("<eoa>")}),
        json.dumps({"plain_text": good.text.replace("<4>", "<25>")}),
        json.dumps({"plain_text": text_only}),
        "",
        "[1, 2]",
        json.dumps({"prefix": "", "plain_text": "<sosp><1><2><3><eosp>"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = import_jsonl.run(import_jsonl.Config(jsonl=path, out=tmp_path / "imp", k=K))
    rejected = {r["id"]: r for r in map(json.loads, (out / "rejected.jsonl").read_text().splitlines())}
    expected = {2: "not JSON", 3: "plain_text", 4: "<eoa>", 5: "unknown unit id 25", 6: "cannot infer the task"}
    expected[8] = "not a JSON object"
    assert sorted(rejected) == [f"line-{n:06d}" for n in sorted(expected)]
    for number, reason in expected.items():
        record = rejected[f"line-{number:06d}"]
        assert reason in record["reason"] and record["origin"] == f"mixed.jsonl:{number}"
    rows = rows_of(out)["train"]
    assert [(r["task"], r["source_ids"]) for r in rows] == [
        ("asr", ["mixed.jsonl:1"]),
        ("unit_lm", ["mixed.jsonl:9"]),
    ]
    assert rows[0]["text"] == ChatTemplate(DEFAULT).format(parse_conversation(good.text, legacy.units).turns).text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"] == 6 and summary["skipped"] == {"blank line": 1}


def test_cli_builds_stage2_with_overrides(synthetic_units: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    code = cli_main(
        [
            "build",
            "stage2",
            f"units={synthetic_units}",
            f"out={out}",
            "splits=[train, dev]",
            "seed=3",
            "dev_fraction=0.2",
        ]
    )
    assert code == 0 and sorted(rows_of(out)) == ["dev", "train"]
    assert "seed: 3" in (out / "config.yaml").read_text()


def test_legacy_export_skips_text_that_would_read_as_units(tmp_path: Path) -> None:
    template = ChatTemplate(DEFAULT)
    clash = template.format([(UserTurn("Transcribe it.", units=(1, 2)), AssistantTurn(text="I have <5> apples"))])
    fine = template.format([(UserTurn("Transcribe it.", units=(3,)), AssistantTurn(text="I have five apples"))])
    path = tmp_path / "default.jsonl"
    path.write_text("".join(json.dumps({"plain_text": f.text}) + "\n" for f in (clash, fine)))
    imported = import_jsonl.run(import_jsonl.Config(jsonl=path, out=tmp_path / "imp", unit_format="default", k=K))
    assert len(rows_of(imported)["train"]) == 2
    exported = export_jsonl.run(export_jsonl.Config(dataset=imported, out=tmp_path / "jsonl", legacy=True))
    lines = (exported / "train.jsonl").read_text().splitlines()
    answers = [json.loads(line)["plain_text"].rsplit("[SpeechGPT]:", 1)[1].strip() for line in lines]
    assert answers == ["I have five apples<eoa>"]
    summary = json.loads((exported / "summary.json").read_text())
    assert summary["skipped"] == {export_jsonl.NOT_LEGACY: 1} and summary["lines"] == {"train": 1}


def test_builders_read_units_through_the_contract(synthetic_units: Path, tmp_path: Path) -> None:
    """k comes from the units' encoder tag; a malformed tag or a k below the ids is an error naming the problem."""
    rows = load_corpus(synthetic_units).to_list()
    summary = json.loads(
        (build_stage1.run(build_stage1.Config(units=synthetic_units, out=tmp_path / "s1")) / "summary.json").read_text()
    )
    assert summary["k"] == K and summary["encoder"] == f"mfcc@50Hz+km{K}:0123"
    with pytest.raises(ValueError, match=f"k=8 allows unit ids below 8, but the units use ids up to {K - 1}"):
        build_stage2.run(build_stage2.Config(units=synthetic_units, out=tmp_path / "s2", k=8))
    untagged = tmp_path / "untagged"
    write_dataset([{**row, "encoder": "mfcc@50Hz+km20"} for row in rows], untagged / "dataset", units_features())
    for builder in (build_stage1, build_stage2):
        with pytest.raises(ValueError, match=f"{untagged}.*encoder tag 'mfcc@50Hz\\+km20' is not of the form"):
            builder.run(builder.Config(units=untagged, out=tmp_path / builder.__name__))


def test_no_builder_imports_another_builder() -> None:
    """Builders (modules with a `run`) share code through the library or helper modules, never through each other."""
    modules = {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(BUILDERS.glob("*.py"))}
    builders = {
        name
        for name, tree in modules.items()
        if any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in tree.body)
    }
    assert {"build_stage1", "build_stage2", "build_stage3", "synth_corpus"} <= builders
    imported = {
        (name, node.module.removeprefix("data_builders.") if node.module != "data_builders" else alias.name)
        for name, tree in modules.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("data_builders")
        for alias in node.names
    }
    assert sorted((name, other) for name, other in imported if name in builders and other in builders) == []
