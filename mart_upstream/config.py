"""Config dataclasses: plain-data conversion, file loading and ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

import yaml

from .errors import ConfigError  # noqa: F401  (re-exported)


def to_dict(cfg: Any) -> dict:
    """Dataclass -> nested dict of primitives (tuples become lists), safe for ``weights_only`` loads."""

    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def from_dict(cls, data: dict | None, where: str = "config", base: Any = None):
    """Build dataclass ``cls`` from a (partial) nested dict over its defaults (or over ``base``).

    Nested sections keep their own factory defaults; unknown keys are an error naming them.
    """
    base = cls() if base is None else base
    data = dict(data or {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}: expected a mapping, got {value!r}")
            kwargs[name] = from_dict(type(current), value, f"{where}.{name}", base=current)
        else:
            kwargs[name] = _checked(value, current, f"{where}.{name}")
    return dataclasses.replace(base, **kwargs)


def _checked(value: Any, default: Any, where: str) -> Any:
    """``value`` as the type of the field's ``default`` (bool, int, float, str, tuple), or ConfigError.

    Fields whose default is None take any value. YAML 1.1 reads ``3e-4`` (no dot) as a string: a float
    field accepts such strings; it reads a bare ``true``/``false`` as a boolean: a string field takes it
    as "true"/"false" (e.g. ``run.bf16_cpu``, once a boolean).
    """
    def bad(expected: str):
        return ConfigError(f"{where}: expected {expected}, got {value!r} ({type(value).__name__})")

    if default is None or value is None and default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(default, str):
        if isinstance(value, bool):  # YAML reads a bare true/false as a boolean: "true"/"false" here
            return "true" if value else "false"
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        if default:
            return tuple(_checked(v, default[0], f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    return value


CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def cpu_config_path(model: str) -> str:
    """The packaged CPU-sized settings of ``model`` (``mart-pretrain --config cpu``): the offline benchmark's
    configuration, about 1-3.5 s per step of batch 32 on 2 CPU cores (docs/offline_bench.md)."""
    return os.path.join(CONFIG_DIR, f"{model}_cpu.yaml")


def load_file(path: str) -> dict:
    """Read a YAML or JSON config file into a dict."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                          f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. mart.levels=3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        set_key(data, key.strip(), value, f"override {item!r}")
    return data


def set_key(data: dict, key: str, value: Any, source: str) -> dict:
    """Set the dotted ``key`` (``run.steps``) of a nested dict to ``value``, in place; ``source`` names
    where the value came from in the error about a key whose section is not a mapping."""
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {p} is not a section")
    node[parts[-1]] = value
    return data


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge (update wins)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
