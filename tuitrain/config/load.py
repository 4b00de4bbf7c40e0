"""Presets in: TOML files, their ``extends`` chains and ``--set`` overrides, merged into one raw table
that remembers where each key came from (so an error names the right file or option), then validated.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tuitrain.config.schema import ConfigError, RunConfig
from tuitrain.config.validate import from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: no such preset file. Run `tuitrain presets` to list the presets.")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a preset file (expected a .toml file).")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the preset: {e}.") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}.") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_raw(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, Path]]:
    """Return the merged raw table of a preset and its ``extends`` ancestors, and for each dotted key
    the file that set it (so errors name the right file)."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p.name) for p in (*chain, path))
        raise ConfigError(f"{chain[0]}: `extends` forms a cycle: {cycle}.")
    raw = _read_toml(path)
    parent = raw.pop("extends", None)
    origin = {key: path for key in _dotted_keys(raw)}
    if parent is None:
        return raw, origin
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` must be a string path to another preset, got {parent!r}.")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.exists():
        raise ConfigError(f"{path}: `extends = {parent!r}` names a file that does not exist ({parent_path}).")
    base, base_origin = _load_raw(parent_path, (*chain, path))
    return _merge(base, raw), {**base_origin, **origin}


def _dotted_keys(table: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in table.items():
        if isinstance(v, dict):
            keys.extend(_dotted_keys(v, f"{prefix}{k}."))
        else:
            keys.append(f"{prefix}{k}")
    return keys


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-2"`` -> ``("optim.lr", 0.01)``. Values are TOML; a bare word is a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-2.")
    key, _, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty; expected KEY=VALUE, e.g. --set optim.lr=1e-2.")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # bare words: --set model.name=vgg
    return key, parsed


def _set_dotted(table: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = table
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {key}: `{p}` is a value, not a section.")
        node = nxt
    node[parts[-1]] = value


def load_config(
    preset: str | Path | None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunConfig:
    """Build a validated :class:`RunConfig` from a preset file, ``--set`` strings and CLI options.

    ``extra`` holds dotted keys from dedicated CLI options (``--epochs`` -> ``train.epochs``); they are
    applied after ``--set``.
    """
    raw: dict[str, Any] = {}
    origin: dict[str, Path | str] = {}
    if preset is not None:
        path = Path(preset)
        raw, file_origin = _load_raw(path)
        origin.update(file_origin)
        raw.setdefault("name", path.stem)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
        origin[key] = f"--set {text}"
    for key, value in (extra or {}).items():
        _set_dotted(raw, key, value)
        origin[key] = "command line"
    return from_dict(raw, origin)


def from_toml(text: str) -> RunConfig:
    return from_dict(tomllib.loads(text))
