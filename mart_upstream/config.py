"""Config dataclasses: plain-data conversion, file loading and ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the config."""


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
        elif isinstance(current, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return dataclasses.replace(base, **kwargs)


CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def cpu_config_path(model: str) -> str:
    """The packaged CPU-sized settings of ``model`` (``mart-pretrain --config cpu``): the offline benchmark's
    configuration, about 1-3.5 s per step of batch 32 on 2 CPU cores (docs/offline_bench.md)."""
    return os.path.join(CONFIG_DIR, f"{model}_cpu.yaml")


def load_file(path: str) -> dict:
    """Read a YAML or JSON config file into a dict."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. mart.levels=3)")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge (update wins)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
