"""Every shipped YAML names its command on the first line and loads into that command's config."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from speechgpt.app.demo import STEPS, command_of
from speechgpt.cli import COMMANDS
from speechgpt.config import load_config
from speechgpt.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "configs" / "tiny" / "quick.yaml"  # the quick demo's overrides per step, not a command's config
PRETRAINED = ROOT / "configs" / "tiny" / "pretrained.yaml"  # the same, for a demo from a pretrained backbone
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p not in (QUICK, PRETRAINED))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_into_its_command(path: Path) -> None:
    words = command_of(path)
    assert words in COMMANDS, f"{path}: unknown command {words}"
    assert f"--config configs/{path.parent.name}/{path.name}" in path.read_text().splitlines()[0]
    load_config(importlib.import_module(COMMANDS[words].module).Config, path)


def test_demo_has_a_config_per_step() -> None:
    tiny = {p.stem for p in CONFIGS if p.parent.name == "tiny"}
    assert set(STEPS) <= tiny
    by_hand = {"chat", "frozen_chat", "resynth"}  # used by hand on the demo's outputs, not demo steps
    assert tiny - set(STEPS) == by_hand
    assert STEPS.index("voice_units") < STEPS.index("vocoder")  # the vocoder trains on the answer voice's units
    assert STEPS.index("frozen_qa") < STEPS.index("frozen_spoken_qa")
    assert STEPS.index("frozen_tts") < STEPS.index("frozen_speak") < STEPS.index("frozen_spoken_qa")


@pytest.mark.parametrize("path", [QUICK, PRETRAINED], ids=lambda p: p.name)
def test_step_overrides_apply_to_their_steps(path: Path) -> None:
    from speechgpt.app.demo import read_step_overrides

    by_step = read_step_overrides(path)
    assert set(by_step) <= set(STEPS)
    for step, overrides in by_step.items():
        path = ROOT / "configs" / "tiny" / f"{step}.yaml"
        module = importlib.import_module(COMMANDS[command_of(path)].module)
        load_config(module.Config, path, overrides)


def test_a_pretrained_backbone_brings_its_learning_rates() -> None:
    from speechgpt.app.demo import Config, step_overrides

    tiny = Config(quick=True)
    assert step_overrides(tiny, "backbone") == ["train.max_steps=40", "train.eval_every=0", "train.save_every=0"]
    assert step_overrides(tiny, "stage1") == ["train.max_steps=6", "train.eval_every=6", "train.save_every=0"]
    pretrained = Config(quick=True, backbone="llm.gguf")
    assert step_overrides(pretrained, "backbone")[-2:] == ["train.lr=5.0e-5", "base=llm.gguf"]
    speech_rows = "speech_token_lr=5.0e-3"
    assert step_overrides(pretrained, "stage1") == [*step_overrides(tiny, "stage1"), "train.lr=5.0e-5", speech_rows]
    assert all(speech_rows in step_overrides(pretrained, step) for step in ("stage2", "stage3"))
    assert step_overrides(Config(backbone="llm.gguf"), "frozen_asr") == []


def test_rerooting_moves_every_demo_path() -> None:
    from speechgpt.app.demo import rerooted
    from stages.stage2_cross_modal import Config

    cfg = load_config(
        Config, ROOT / "configs" / "tiny" / "stage2.yaml", ["replay.qa=out/demo/qa", "replay.fraction=0.1"]
    )
    moved = rerooted(cfg, "out/demo", "/tmp/quick")
    assert (moved.model, moved.data, moved.out) == (
        "/tmp/quick/stage1/final",
        Path("/tmp/quick/stage2_data"),
        Path("/tmp/quick/stage2"),
    )
    assert moved.replay.qa == Path("/tmp/quick/qa")
    assert rerooted(cfg, "out/demo", "out/demo") is cfg
    assert rerooted(cfg, "out/demo", "elsewhere").train == cfg.train


def test_demo_steps_restart_changed_training_runs() -> None:
    """Every demo step that trains (the engine's settings, or the vocoder's own) retrains a changed run rather than
    stopping; the others are left as they are."""
    from speechgpt.app.demo import STEPS, command_of, restarting
    from speechgpt.cli import COMMANDS

    trained = []
    for step in STEPS:
        path = ROOT / "configs" / "tiny" / f"{step}.yaml"
        cfg = load_config(importlib.import_module(COMMANDS[command_of(path)].module).Config, path)
        owned = restarting(cfg)
        if owned is not cfg:
            trained.append(step)
            settings = owned.train if isinstance(getattr(owned, "train", None), TrainConfig) else owned
            assert settings.changed_run == "restart" and owned.out == cfg.out
    assert {"backbone", "stage1", "stage2", "stage3", "vocoder", "frozen_ctc", "frozen_tts"} <= set(trained)
    assert not {"qa", "corpus", "spoken_qa", "compare"} & set(trained)


def test_demo_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from speechgpt.cli import main

    assert main(["demo", "--quick", "--backbone", "some/llm", "out=/tmp/q", "--dump-config"]) == 0
    dumped = capsys.readouterr().out
    assert "\nquick: true\n" in dumped and "\nbackbone: some/llm\n" in dumped and "\nout: /tmp/q\n" in dumped
