"""Configs out: plain and flat (dotted-key) dicts, the resolved TOML stored in every run file, and
the keys in which configs differ."""

from __future__ import annotations

import dataclasses
from typing import Any

import tomli_w

from tuitrain.config.schema import RunConfig


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain tables, as a preset spells it: a model of the user's own has its own keys
    (``ModelConfig.options``) in the [model] table itself, after the built-in ones."""
    out = dataclasses.asdict(cfg)
    model = out["model"]
    model.update(model.pop("options"))
    return out


def to_flat(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            for sk, sv in v.items():
                out[f"{k}.{sk}"] = sv
        else:
            out[k] = v
    return out


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML: stored in every run file, handed to a ``watch`` worker and to every
    data-parallel rank, loadable again as a preset. Written by ``tomli_w``, a real TOML writer, so any
    string (quotes, backslashes, newlines, control characters, any Unicode) comes back unchanged:
    ``from_toml(to_toml(cfg)) == cfg`` for every valid config (tests/faults/test_config_properties.py)."""
    return tomli_w.dumps(to_dict(cfg))


def diff_flat(configs: list[RunConfig]) -> list[str]:
    """Dotted keys whose values differ between configs (for comparison tables)."""
    flats = [to_flat(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f if k not in ("name", "description", "out")))
    missing = object()  # a key of one own model's that another config lacks differs too
    return [k for k in keys if len({repr(f.get(k, missing)) for f in flats}) > 1]
