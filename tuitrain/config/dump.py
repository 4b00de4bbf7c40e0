"""Configs out: plain and flat (dotted-key) dicts, the resolved TOML stored in every run file, and
the keys in which configs differ."""

from __future__ import annotations

import dataclasses
from typing import Any

from tuitrain.config.schema import RunConfig


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_flat(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            for sk, sv in v.items():
                out[f"{k}.{sk}"] = sv
        else:
            out[k] = v
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))  # pragma: no cover


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML: stored in every run file, loadable again with ``load_config``."""
    lines: list[str] = []
    sections: list[tuple[str, dict[str, Any]]] = []
    for k, v in to_dict(cfg).items():
        if isinstance(v, dict):
            sections.append((k, v))
        else:
            lines.append(f"{k} = {_toml_value(v)}")
    for name, table in sections:
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def diff_flat(configs: list[RunConfig]) -> list[str]:
    """Dotted keys whose values differ between configs (for comparison tables)."""
    flats = [to_flat(c) for c in configs]
    keys = [k for k in flats[0] if k not in ("name", "description", "out")]
    return [k for k in keys if len({repr(f[k]) for f in flats}) > 1]
