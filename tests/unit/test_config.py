from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from speechgpt.cli import COMMANDS
from speechgpt.config import ConfigError, dump_config, field_docs, load_config, save_config


@dataclass(kw_only=True)
class Inner:
    rate: float = 0.5
    """A rate."""
    names: list[str] = field(default_factory=lambda: ["a"])
    """Some names."""


@dataclass(kw_only=True)
class Outer:
    out: Path
    """Where things go."""
    steps: int = 3
    """How many steps."""
    mode: str | None = None
    """Optional mode."""
    inner: Inner = field(default_factory=lambda: Inner(rate=0.25))
    """Nested part."""

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_yaml_and_dotted_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "out: x\nsteps: 5\ninner:\n  names: [b, c]\n")
    cfg = load_config(Outer, path, ["inner.rate=2", "mode=fast", "steps=7"])
    assert cfg == Outer(out=Path("x"), steps=7, mode="fast", inner=Inner(rate=2.0, names=["b", "c"]))


def test_partial_nested_mapping_keeps_outer_default(tmp_path: Path) -> None:
    cfg = load_config(Outer, write(tmp_path, "out: x\ninner:\n  names: [z]\n"))
    assert cfg.inner.rate == 0.25


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("out: x\nstesp: 4\n", [], "unknown key 'stesp'"),
        ("out: x\ninner:\n  rat: 1\n", [], "unknown key 'inner.rat'"),
        ("out: x\nsteps: many\n", [], "key 'steps' expects int"),
        ("steps: 1\n", [], "missing required key 'out'"),
        ("out: x\nsteps: -1\n", [], "steps must be >= 0"),
        ("out: x\n", ["steps"], "not of the form key=value"),
        ("out: x\n", ["inner.names=3"], r"with command-line overrides: key 'inner.names' expects list\[str\]"),
        ("- a\n- b\n", [], "expected a mapping"),
    ],
)
def test_errors_name_key_and_file(tmp_path: Path, text: str, overrides: list[str], message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(Outer, path, overrides)
    assert str(path) in str(info.value) or "override" in str(info.value)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_dump_round_trips_and_is_saved(tmp_path: Path) -> None:
    cfg = Outer(out=Path("o"), steps=2, mode=None, inner=Inner(rate=1.5, names=["p", "q"]))
    text = dump_config(cfg)
    assert "# How many steps." in text and "# A rate." in text
    assert load_config(Outer, write(tmp_path, text)) == cfg
    saved = save_config(cfg, tmp_path / "run")
    assert saved.read_text() == text


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_command_config_field_is_documented(words: tuple[str, ...]) -> None:
    config_cls = importlib.import_module(COMMANDS[words].module).Config
    names = {f.name for f in dataclasses.fields(config_cls)}
    assert names <= set(field_docs(config_cls)), f"{words}: undocumented fields {names - set(field_docs(config_cls))}"
