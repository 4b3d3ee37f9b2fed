"""`speechgpt chat` on a tiny random model, k-means and vocoder: one-shot speech and text questions, the JSON for
scripts, clear errors for bad input, and the interactive loop (typed text is never read as a file); and on a tiny
frozen-LLM variant folder: a spoken question streamed to its state head and answered in text."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from speechgpt.cli import main
from speechgpt.infer.frozen_session import NO_SPEECH_OUT
from tests.chat_fixtures import make_chat_setup, make_frozen_model
from tests.conftest import REPO, subprocess_env

JSON_KEYS = {
    "mode",
    "transcript",
    "text",
    "units",
    "audio",
    "audio_seconds",
    "seconds_to_first_audio",
    "seconds_total",
    "problems",
    "complete",
    "listening",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_chat_setup(tmp_path_factory.mktemp("chat"))


def chat_args(setup: dict[str, Path], *extra: str) -> list[str]:
    return [
        "chat",
        f"model={setup['model']}",
        f"kmeans={setup['kmeans']}",
        f"vocoder={setup['vocoder']}",
        "session.min_units=10",
        "session.sampling.max_new_tokens=60",
        "session.sampling.seed=0",
        *extra,
    ]


def test_one_shot_spoken_question_prints_one_json_object(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "answer.wav"
    args = chat_args(setup, "--audio", str(setup["wav"]), "--out", str(out), "--json")
    done = subprocess.run(
        [sys.executable, "-m", "speechgpt.cli", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # the whole of stdout is one JSON object
    assert set(summary) == JSON_KEYS
    assert summary["mode"] == "s2s" and summary["transcript"] and summary["text"]
    assert summary["units"] >= 10 and summary["audio"] == str(out) and summary["complete"]
    assert summary["listening"] is None  # the unified variant has no state head
    assert 0 < summary["seconds_to_first_audio"] <= summary["seconds_total"]
    info = sf.info(str(out))
    assert info.samplerate == 16_000 and info.frames / 16_000 == pytest.approx(summary["audio_seconds"], abs=1e-3)


def test_one_shot_text_question_speaks_when_asked(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "answer.wav"
    args = chat_args(setup, "--text", "what is two plus two", "--mode", "speech", "--out", str(out))
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "heard:" not in printed  # a typed question has no transcript
    assert printed.startswith("answer: ") and f"speech: {out} (" in printed
    assert sf.info(str(out)).frames > 0

    assert main(chat_args(setup, "--text", "what is two plus two", "--json")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "t2t" and summary["units"] == 0 and summary["audio"] is None


@pytest.mark.parametrize("bad", ["missing", "garbage", "folder"])
def test_bad_audio_fails_with_a_clear_message(
    setup: dict[str, Path],
    tmp_path: Path,
    bad: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = {"missing": tmp_path / "nope.wav", "garbage": tmp_path / "bad.wav", "folder": tmp_path}[bad]
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wave file")
    assert main(chat_args(setup, "--audio", str(path), "--json")) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    expected = {
        "missing": f"audio file not found: {path}",
        "garbage": f"{path}: unreadable audio:",
        "folder": f"not an audio file: {path} is a directory",
    }[bad]
    assert error.startswith(expected)
    assert f"chat failed: {error}" in caplog.text


def test_flags_that_need_a_question_are_refused(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(chat_args(setup, "--out", "x.wav"))
    assert stop.value.code == 2
    assert "--out and --json are for one-shot use" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(chat_args(setup, "--audio", "a.wav", "--text", "hi"))
    assert "give --audio or --text, not both" in capsys.readouterr().err


def test_interactive_reads_text_as_text_and_audio_only_by_command(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = setup["wav"]
    monkeypatch.chdir(wav.parent)  # the typed file name exists, relative to the working folder
    lines = [wav.name, f"/audio {wav}", "/audio", f"/audio {tmp_path / 'gone.wav'}", "/reset", str(wav)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    answers = tmp_path / "answers"
    assert main(chat_args(setup, f"answers_dir={answers}")) == 0
    printed = capsys.readouterr().out
    turns = printed.split("you> ")[1:]
    assert len(turns) == len(lines) + 1  # the last prompt meets the end of input
    assert "heard:" not in turns[0] and "answer: " in turns[0]  # a path typed as text is a text question
    assert "heard: " in turns[1] and f"speech: {answers / 'turn-002.wav'} (" in turns[1]
    assert "error: usage: /audio PATH.wav" in turns[2]
    assert f"error: audio file not found: {tmp_path / 'gone.wav'}" in turns[3]
    assert "(new conversation)" in turns[4] and f"error: unknown command {wav};" in turns[5]
    assert sorted(p.name for p in answers.iterdir()) == ["turn-002.wav"]


@pytest.fixture(scope="module")
def frozen_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen-variant folder whose state head keeps listening whatever it hears (so the answer comes at the end)."""
    return make_frozen_model(tmp_path_factory.mktemp("frozen-chat"), state_bias=(60.0, 0.0, 0.0))


def test_frozen_folder_hears_a_spoken_question_and_answers_in_text(
    setup: dict[str, Path], frozen_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["chat", f"model={frozen_model}", "session.sampling.max_new_tokens=8", "--audio", str(setup["wav"])]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == JSON_KEYS
    assert summary["mode"] == "s2t" and summary["text"] and summary["units"] == 0 and summary["audio"] is None
    assert summary["transcript"] is None and NO_SPEECH_OUT in summary["problems"]
    listening = summary["listening"]
    # 1.2 s of question + 0.48 s of trailing silence = 41 encoder frames: 10 whole chunks and a last partial one
    assert listening["states"] == ["keep_listening"] * 11
    assert listening["outcome"] == "answer" and listening["forced"] and listening["decision_chunk"] is None
    assert listening["latencies"]["first_token_s"] >= listening["latencies"]["decision_s"] >= 0

    assert main(args) == 0  # for people: the states per chunk and the answer
    printed = capsys.readouterr().out
    assert "states: 00000000000 (no decision: answered at the end of the audio)" in printed
    assert f"answer: {summary['text']}" in printed


def test_frozen_folder_reads_typed_questions_and_says_speech_out_is_not_there_yet(
    frozen_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["chat", f"model={frozen_model}", "variant=frozen", "session.sampling.max_new_tokens=5"]
    assert main([*args, "--text", "what is two plus two", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "t2t" and summary["text"] and summary["listening"] is None
    assert summary["problems"] == []
    assert main([*args, "--text", "what is two plus two", "--mode", "speech", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == [NO_SPEECH_OUT]


def test_variant_that_contradicts_the_folder_is_an_error(
    setup: dict[str, Path], frozen_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chat", f"model={frozen_model}", "variant=unified", "--text", "hi", "--json"]) == 1
    assert "holds frozen-variant speech modules" in json.loads(capsys.readouterr().out)["error"]
    assert main(["chat", f"model={setup['model']}", "variant=frozen", "--text", "hi", "--json"]) == 1
    assert "no frozen-variant speech_modules.json" in json.loads(capsys.readouterr().out)["error"]
