"""`speechgpt eval chat` on a tiny frozen-LLM variant folder and a tiny spoken QA set: S2T accuracy for training and
held-out voices, the state head's decisions and the latencies, in report.json and printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speechgpt.cli import main
from speechgpt.data.audio import read_audio, write_audio
from speechgpt.data.corpus import write_corpus_dataset
from speechgpt.infer.frozen_loading import load_frozen_model
from speechgpt.infer.listening import FrozenListener
from tests.chat_fixtures import chirp, make_frozen_model, make_speech_decoder, make_vocoder

MAX_NEW_TOKENS = 4


def corpus(root: Path, clips: dict[str, tuple[str, str, np.ndarray]]) -> Path:
    """A corpus of clip id -> (speaker, split, samples)."""
    rows = []
    for clip_id, (speaker, split, samples) in clips.items():
        path = root / "audio" / f"{clip_id}-{speaker}.wav"
        write_audio(path, samples)
        rows.append(
            {"id": clip_id, "audio": str(path), "text": clip_id, "speaker": speaker, "duration_s": len(samples) / 16e3,
             "source": "test", "split": split, "orig_sample_rate": 16_000, "orig_channels": 1}
        )  # fmt: skip
    return write_corpus_dataset(rows, root / "dataset")


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A keep-listening frozen folder (answers come at the end of the audio), two test questions spoken by a
    held-out voice (`speech`, which also holds a training voice's train clip) and by that training voice."""
    root = tmp_path_factory.mktemp("frozen-eval")
    model = make_frozen_model(root / "model", state_bias=(60.0, 0.0, 0.0))
    noise = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    held = {"q-a1": chirp(1.0), "q-a2": chirp(0.7)[::-1].copy()}
    seen = {"q-a1": 0.2 * noise, "q-a2": chirp(1.3)}
    speech = corpus(root / "speech", {"t-1": ("v-train", "train", chirp(0.5)),
                                      **{k: ("v-held", "test", v) for k, v in held.items()}})  # fmt: skip
    seen_speech = corpus(root / "seen", {k: ("v-train", "test", v) for k, v in seen.items()})
    listener = FrozenListener(load_frozen_model(model, device="cpu"))
    texts = {}  # the answer to each clip as written (16-bit), as the eval hears it
    for voice, folder, speaker in (("held", "speech", "v-held"), ("seen", "seen", "v-train")):
        for clip_id in held:
            samples = read_audio(root / folder / "audio" / f"{clip_id}-{speaker}.wav").samples
            texts[f"{voice}-{clip_id}"] = listener.listen(samples, MAX_NEW_TOKENS).text
    qa = root / "qa"
    qa.mkdir()
    questions = [
        {"id": "a1", "family": "echo", "instruction": "say a1", "input": "", "output": texts["held-q-a1"]},
        {"id": "a2", "family": "echo", "instruction": "say a2", "input": "", "output": "not what it says"},
    ]
    (qa / "test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    seen_a1_right = float(texts["seen-q-a1"] == texts["held-q-a1"])  # a training voice's answer to a1 may match
    return {"model": model, "qa": qa, "speech": speech, "seen": seen_speech, "seen_a1_right": seen_a1_right}


def eval_args(qa_set: dict[str, Any], model: Path, out: Path) -> list[str]:
    return [
        "eval", "chat", f"model={model}", f"qa={qa_set['qa']}", f"speech={qa_set['speech']}",
        f"seen_voices_speech={qa_set['seen']}", f"out={out}", f"session.sampling.max_new_tokens={MAX_NEW_TOKENS}",
    ]  # fmt: skip


def test_frozen_eval_scores_answers_by_voices_decisions_and_latencies(
    qa_set: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(eval_args(qa_set, qa_set["model"], tmp_path / "keep")) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "keep" / "report.json").read_text())
    seen_right = qa_set["seen_a1_right"]
    assert report["variant"] == "frozen" and report["questions"] == 4
    assert report["by_voices"]["held_out"] == {"questions": 2, "s2t_correct": 0.5, "state_correct": 0.0}
    assert report["by_voices"]["training"] == {"questions": 2, "s2t_correct": seen_right / 2, "state_correct": 0.0}
    assert report["s2t_accuracy"] == (1 + seen_right) / 4
    # a head that never says "answer": every question is answered at the end of the audio, undecided
    assert report["state"] == {"accuracy": 0.0, "premature": 0.0, "ignored": 0.0, "undecided": 1.0}
    assert report["latency"]["decision_s"] is None
    assert "S2T accuracy: " in printed and "held-out voices 50.0% of 2" in printed
    assert "no decision 100.0%" in printed and "end of speech -> decision: -" in printed
    rows = [json.loads(line) for line in (tmp_path / "keep" / "answers.jsonl").read_text().splitlines()]
    assert [(r["id"], r["voices"], r["speaker"]) for r in rows] == [
        ("a1", "held_out", "v-held"), ("a2", "held_out", "v-held"), ("a1", "training", "v-train"),
        ("a2", "training", "v-train"),
    ]  # fmt: skip
    assert rows[0]["speech_end_s"] == pytest.approx(1.0, abs=0.011) and set(rows[0]["states"]) == {"0"}


def test_a_head_that_answers_at_once_is_premature_with_latencies(
    qa_set: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    eager = tmp_path / "eager"
    shutil.copytree(qa_set["model"], eager)
    weights = load_file(str(eager / "speech_modules.safetensors"))
    weights["state_head.bias"][:] = weights["state_head.bias"].new_tensor([0.0, 60.0, 0.0])
    save_file(weights, str(eager / "speech_modules.safetensors"))
    assert main(eval_args(qa_set, eager, tmp_path / "eager-out")) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "eager-out" / "report.json").read_text())
    assert report["state"] == {"accuracy": 0.0, "premature": 1.0, "ignored": 0.0, "undecided": 0.0}
    latency = report["latency"]
    for key in ("decision_s", "first_token_s"):
        assert latency[key]["count"] == 4 and 0 <= latency[key]["p50"] <= latency[key]["p90"]
    assert latency["decision_s"]["p90"] <= latency["first_token_s"]["p90"]
    assert latency["decision_delay_audio_s"]["p90"] < 0  # decided inside the question
    assert "inside it 100.0%" in printed and "end of speech -> first text token: p50 " in printed


def test_with_a_speech_decoder_the_answers_are_spoken_and_judged(
    qa_set: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decoder = make_speech_decoder(qa_set["model"], tmp_path / "decoder")
    vocoder = make_vocoder(tmp_path / "vocoder")
    args = [*eval_args(qa_set, qa_set["model"], tmp_path / "speak"), f"speech_decoder={decoder}", f"vocoder={vocoder}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "speak"
    report = json.loads((out / "report.json").read_text())
    assert report["spoken_accuracy"] is not None and set(report["by_voices"]["held_out"]) >= {"spoken_correct"}
    for key in ("first_unit_s", "first_audio_s"):  # every question answered (at the end of its audio), spoken
        assert report["latency"][key] is None  # measured from a decision this head never made
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert all(r["units"] > 0 and isinstance(r["heard"], str) for r in rows)
    assert (out / "answer.wav").is_file()
    typed = report["typed"]
    assert typed["questions"] == 2 and 0 <= typed["t2s_accuracy"] <= 1 and typed["t2t_accuracy"] in (0.0, 0.5, 1.0)
    assert len((out / "typed_answers.jsonl").read_text().splitlines()) == 2
    assert "answered in text and speech" in printed and "S2S accuracy: " in printed and "(T2S)" in printed


def test_frozen_eval_asr_transcribes_the_examples_clips(
    qa_set: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`eval asr` on a frozen folder: each ASR example's clip (by source id) heard whole, the state head ignored
    (this one would answer at once), the transcript scored against the example's reference."""
    from datasets import Dataset, DatasetDict
    from safetensors.torch import load_file, save_file

    eager = tmp_path / "eager"
    shutil.copytree(qa_set["model"], eager)
    weights = load_file(str(eager / "speech_modules.safetensors"))
    weights["state_head.bias"][:] = weights["state_head.bias"].new_tensor([0.0, 60.0, 0.0])
    save_file(weights, str(eager / "speech_modules.safetensors"))
    listener = FrozenListener(load_frozen_model(qa_set["model"], device="cpu"))  # hears every clip whole
    speech_root = Path(qa_set["speech"]).parent
    said = listener.listen(read_audio(speech_root / "audio" / "q-a1-v-held.wav").samples, MAX_NEW_TOKENS).text
    rows = [
        {
            "id": "asr-1",
            "task": "asr",
            "split": "dev",
            "prompt": "",
            "response": f"{said}<eoa>",
            "source_ids": ["q-a1"],
        },
        {"id": "asr-2", "task": "asr", "split": "dev", "prompt": "", "response": "zz qq<eoa>", "source_ids": ["q-a2"]},
    ]
    DatasetDict({"dev": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "data" / "dataset"))
    args = ["eval", "asr", f"model={eager}", f"data={tmp_path / 'data'}", f"corpus={qa_set['speech']}",
            "splits=[dev]", f"max_new_tokens={MAX_NEW_TOKENS}", f"out={tmp_path / 'asr'}"]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "asr" / "report.json").read_text())
    transcripts = [json.loads(line) for line in (tmp_path / "asr" / "transcripts.jsonl").read_text().splitlines()]
    assert report["variant"] == "frozen" and transcripts[0]["hyp"] == said.strip() and said.strip()
    assert 0 < report["splits"]["dev"]["wer"] <= 1.0  # the first is right, the second cannot be
    assert main([a for a in args if not a.startswith("corpus=")]) != 0
    assert "give corpus=" in caplog.text


def test_the_question_end_is_found_in_the_conditioned_clip_the_listener_heard(
    qa_set: dict[str, Any], tmp_path: Path
) -> None:
    """A recording's noisy lead is cut before the listener hears it, so the end of its speech, against which a
    decision counts as premature, is measured in the clip as cut (0.15 s kept before the speech), not as recorded."""
    faint = np.random.default_rng(1).standard_normal(8_000).astype(np.float32) * 1e-3  # 0.5 s at -60 dBFS
    padded = {k: np.concatenate([faint, chirp(1.0), faint]) for k in ("q-a1", "q-a2")}
    speech = corpus(tmp_path / "padded", {k: ("v-held", "test", v) for k, v in padded.items()})
    args = [*eval_args(qa_set, qa_set["model"], tmp_path / "out"), f"speech={speech.parent}", "seen_voices_speech=null"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert [r["speech_end_s"] for r in rows] == pytest.approx([1.15, 1.15], abs=0.021)


def test_a_persons_voice_is_a_voice_group_of_its_own(
    qa_set: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`person_speech` (a voice made from a person's recordings, spoken by a voice of the training corpus here) is
    asked after the other groups and reported as `person`, whoever its speaker is."""
    args = [*eval_args(qa_set, qa_set["model"], tmp_path / "out"), "seen_voices_speech=null"]
    assert main([*args, f"person_speech={qa_set['seen']}"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    seen_right = qa_set["seen_a1_right"]
    assert list(report["by_voices"]) == ["held_out", "person"] and report["questions"] == 4
    assert report["by_voices"]["person"] == {"questions": 2, "s2t_correct": seen_right / 2, "state_correct": 0.0}
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert [(r["voices"], r["speaker"]) for r in rows[2:]] == [("person", "v-train")] * 2
    assert "a person's voice" in capsys.readouterr().out
