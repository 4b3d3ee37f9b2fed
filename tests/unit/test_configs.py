"""Every shipped YAML names its command on the first line and loads into that command's config."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from speechgpt.app.demo import STEPS, command_of
from speechgpt.cli import COMMANDS
from speechgpt.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_into_its_command(path: Path) -> None:
    words = command_of(path)
    assert words in COMMANDS, f"{path}: unknown command {words}"
    assert f"--config configs/{path.parent.name}/{path.name}" in path.read_text().splitlines()[0]
    load_config(importlib.import_module(COMMANDS[words].module).Config, path)


def test_demo_has_a_config_per_step() -> None:
    tiny = {p.stem for p in CONFIGS if p.parent.name == "tiny"}
    assert set(STEPS) <= tiny
    by_hand = {"chat", "resynth"}  # used by hand on the demo's outputs, not demo steps
    assert tiny - set(STEPS) == by_hand
    assert STEPS.index("voice_units") < STEPS.index("vocoder")  # the vocoder trains on the answer voice's units
    assert STEPS.index("frozen_qa") < STEPS.index("frozen_spoken_qa")
