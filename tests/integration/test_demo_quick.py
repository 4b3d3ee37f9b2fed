"""`speechgpt demo --quick out=DIR`: every step of the demo on a few questions, then the comparison report."""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pytest

from speechgpt.app.compare_report import SPOKEN_FROM_TEXT

ROOT = Path(__file__).resolve().parents[2]

FILLED = [
    "backbone.text_accuracy",
    "backbone.heldout_text_loss",
    *(
        f"variants.{variant}.{key}"
        for variant in ("unified", "frozen")
        for key in (
            "s2t_accuracy.all",
            "s2t_accuracy.seen_voices",
            "s2t_accuracy.heldout_voices",
            "s2s_accuracy.seen_voices",
            "s2s_accuracy.heldout_voices",
            "s2t_accuracy.person_voice",  # a Piper voice made from a person's recordings, never trained on
            "s2s_accuracy.person_voice",
            "asr_wer.person_voice",
            "t2s_accuracy",
            "text_accuracy_after",
            "heldout_text_loss_after",
            "asr_wer.seen_voices",  # the frozen variant's: the words its adapter gave the LLM
            "asr_wer.heldout_voices",
            "asr_exact.heldout_voices",
            "asr_wer_sentences.seen_voices",
            "asr_wer_sentences.heldout_voices",
            "tts.wer",  # new sentences read aloud
            "tts.reference_wer",
            "params_trained",
            "train_seconds",
        )
    ),
    "variants.unified.direct_s2t_accuracy.seen_voices",
    "variants.unified.direct_s2t_accuracy.heldout_voices",
    "variants.unified.ttfa_s.p50",
    "variants.unified.ttfa_s.p90",
    "variants.unified.latency_s.units.p50",
    "variants.unified.latency_s.first_token.p90",
    "variants.frozen.state_accuracy",
]
# null where a quick run's untrained state head never said "answer" (latencies count from its decision)
MAY_BE_NULL = [
    "variants.frozen.ttfa_s",
    *(
        f"variants.frozen.latency_s.{component}"
        for component in ("decision", "first_token", "first_unit", "first_audio")
    ),
]


def lookup(report: dict, dotted: str) -> object:
    node: object = report
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"report.json lacks {dotted}"
        node = node[key]
    return node


def test_the_quick_demo_fills_every_number_of_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from speechgpt.app import demo

    monkeypatch.chdir(ROOT)  # the step configs name configs/tiny and out/demo relative to the repository
    out = tmp_path / "quick"
    summary = json.loads(demo.run(demo.Config(quick=True, out=out)).read_text())
    assert set(summary["seconds_per_step"]) == set(demo.STEPS)
    assert all(Path(path).is_relative_to(out) for path in summary["outputs"].values())  # nothing under out/demo

    report = json.loads((out / "report" / "report.json").read_text())
    for key in FILLED:
        value = lookup(report, key)
        assert isinstance(value, numbers.Real), f"{key} is {value!r}"
    for key in MAY_BE_NULL:
        lookup(report, key)
    # the frozen variant's LLM is never trained: its text answers and its held-out text loss stay the backbone's
    frozen, backbone = report["variants"]["frozen"], report["backbone"]
    assert frozen["text_accuracy_after"] == backbone["text_accuracy"]
    assert frozen["heldout_text_loss_after"] == backbone["heldout_text_loss"]
    assert report["variants"]["unified"]["params_trained"] > 0 and frozen["params_trained"] > 0
    # the frozen variant trained all five stages, and both variants' evals asked the questions typed too (T2S)
    assert [Path(p).name for p in frozen["stages"]] == [f"frozen_{s}" for s in ("ctc", "asr", "qa", "tts", "speak")]
    for step in ("spoken_qa", "frozen_spoken_qa"):
        qa = json.loads((out / step / "report.json").read_text())
        assert qa["typed"]["questions"] == 3 and qa["spoken_accuracy"] is not None
    assert set(json.loads((out / "spoken_qa" / "report.json").read_text())["latency"]) == {
        "units_s", "first_token_s", "first_audio_s",
    }  # fmt: skip

    for step in ("tts_unified", "tts_frozen"):  # both read the same new sentences
        tts = json.loads((out / step / "report.json").read_text())
        assert tts["sentences"] == 3 and tts["variant"] == step.removeprefix("tts_")
    sentences = [(out / step / "sentences.jsonl").read_text().splitlines() for step in ("tts_unified", "tts_frozen")]
    assert [json.loads(r)["text"] for r in sentences[0]] == [json.loads(r)["text"] for r in sentences[1]]

    text = (out / "report" / "report.md").read_text()
    assert report["variants"]["unified"]["speak_from"] == "text" and SPOKEN_FROM_TEXT in text
    assert "| answered at the question's end (state head), every voice group | - (given the whole question) | " in text
    assert "| S2T accuracy, a person's voice (Piper) |" in text and "a person asking" in text
    for name in ("loss_curves.png", "accuracy.png", "latency.png"):
        assert f"]({name})" in text and (out / "report" / name).stat().st_size > 1000
    links = [part.split(")")[0] for part in text.split("](examples/")[1:]]
    assert links and all((out / "report" / "examples" / link).is_file() for link in links)

    # a second run reuses every step, with the times they took; a changed folder runs its step and those after it
    again = json.loads(demo.run(demo.Config(quick=True, out=out)).read_text())
    assert again["reused"] == demo.STEPS and again["seconds_per_step"] == summary["seconds_per_step"]
    assert json.loads((out / "report" / "report.json").read_text()) == report
    (out / "tts_frozen" / "report.json").unlink()
    third = json.loads(demo.run(demo.Config(quick=True, out=out)).read_text())
    assert [step for step in demo.STEPS if step not in third["reused"]] == ["tts_frozen", "compare"]
