"""Typed configs: kw_only dataclasses <-> YAML, `key=value` overrides, documented fields.

Every field of a config dataclass carries a one-line docstring (a string literal right below it); those strings
are the `--help` text and the comments of `--dump-config`. YAML maps 1:1 onto the dataclass: an unknown key or a
value of the wrong type is an error that names the key and the file it came from.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_FILENAME = "config.yaml"


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


def load_config[T](cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build `cls` from an optional YAML file, then apply `key=value` overrides (dotted keys for nested fields)."""
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        raw = loaded or {}
    if overrides:
        raw = _apply_overrides(raw, overrides)
        source = f"{source} with command-line overrides"
    return _build(cls, raw, source, prefix="")


def config_from_dict[T](cls: type[T], raw: Mapping[str, Any], source: str) -> T:
    """Build `cls` from a mapping (a stored config, say), nested configs and type checks as `load_config` does;
    `source` names where the mapping came from in errors."""
    return _build(cls, raw, source, prefix="")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML-safe dict of a config dataclass (Paths become strings, tuples lists)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def dump_config(cfg: Any) -> str:
    """YAML of a resolved config with each field's docstring as a comment above it."""
    return _dump(cfg, indent=0)


def save_config(cfg: Any, out_dir: str | Path) -> Path:
    """Write the resolved config to `<out_dir>/config.yaml` (before any work starts) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILENAME
    path.write_text(dump_config(cfg), encoding="utf-8")
    return path


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right after each field), inherited ones included."""
    return dict(_field_docs(cls))


@functools.cache
def _field_docs(cls: Any) -> tuple[tuple[str, str], ...]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not isinstance(klass, type) or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return tuple(docs.items())


def describe_fields(cls: type) -> str:
    """One line per field: name, type, default and docstring; the body of a command's `--help`."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = _default_of(f)
        shown = "(required)" if default is dataclasses.MISSING else f"= {_plain(default)!r}"
        lines.append(f"  {f.name}: {_type_name(hints[f.name])} {shown}")
        if f.name in docs:
            lines.append(f"      {docs[f.name]}")
    return "\n".join(lines)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    raw = dict(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(text) if text.strip() else ""
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, Mapping) else {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def _build[T](cls: type[T], raw: Mapping[str, Any], source: str, prefix: str) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.')}' must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' for {cls.__name__} (valid keys: {', '.join(fields)})"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        default = _default_of(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            value = {
                **config_to_dict(default),
                **value,
            }  # a partial nested mapping keeps the outer default's values
        kwargs[name] = _convert(value, hints[name], source, f"{prefix}{name}")
    missing = [n for n, f in fields.items() if _default_of(f) is dataclasses.MISSING and n not in kwargs]
    if missing:
        raise ConfigError(f"{source}: missing required key '{prefix}{missing[0]}' for {cls.__name__}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: invalid {cls.__name__}: {err}") from None


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    def fail() -> ConfigError:
        return ConfigError(f"{source}: key '{key}' expects {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, prefix=f"{key}.")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, source, key)
            except ConfigError:
                pass
        raise fail()
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise fail()
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise fail()
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise fail()
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, source, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads 3e-4 (no dot) as a string
                return float(value)
            except ValueError:
                raise fail() from None
        raise fail()
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise fail()
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise fail()
    raise ConfigError(f"{source}: key '{key}' has unsupported type {tp!r}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _dump(cfg: Any, indent: int) -> str:
    pad = " " * indent
    docs = field_docs(type(cfg))
    out = []
    for f in dataclasses.fields(cfg):
        if f.name in docs:
            out.append(f"{pad}# {docs[f.name]}")
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.append(f"{pad}{f.name}:")
            out.append(_dump(value, indent + 2).rstrip("\n"))
        else:
            text = yaml.safe_dump({f.name: _plain(value)}, default_flow_style=False, sort_keys=False, width=1000)
            out.append(textwrap.indent(text.rstrip("\n"), pad))
    return "\n".join(out) + "\n"


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return re.sub(r"\b[\w.]*\.(\w+)", r"\1", str(tp))  # typing.Literal / pathlib._local.Path -> Literal / Path
