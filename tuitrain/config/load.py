"""Presets in: TOML files, their ``extends`` chains and ``--set`` overrides, merged into one raw table
that remembers where each key came from (so an error names the right file or option), then validated.

Hostile input is refused before it can hurt: a preset or ``extends`` target must be a regular file
(checked before it is opened, so a FIFO cannot hang us and ``/dev/zero`` cannot fill memory) of at
most :data:`MAX_PRESET_BYTES`; parsed tables may nest at most :data:`MAX_DEPTH` levels (a config has
two: ``[section]`` and ``key = value``); ``extends`` chains are at most :data:`MAX_EXTENDS` long. Each
ends in one :class:`ConfigError`, never a RecursionError or a hang.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import Any

from tuitrain.config.schema import ConfigError, RunConfig
from tuitrain.config.validate import from_dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

MAX_PRESET_BYTES = 1 << 20  # presets are a few hundred bytes; the biggest config is under 2 KiB
MAX_DEPTH = 8  # nesting of tables and arrays; valid configs use 3 (top level, [section], a list)
MAX_EXTENDS = 32  # files in one `extends` chain

_KINDS = {
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def _kind(mode: int) -> str:
    for test, name in _KINDS.items():
        if test(mode):
            return name
    return "not a regular file"  # pragma: no cover - doors, whiteouts


def _read_text(path: Path, via: str = "") -> str:
    """The preset's text, read only if ``path`` is a regular file no bigger than MAX_PRESET_BYTES.

    ``stat`` first, so a FIFO or device is never opened; then open non-blocking and ``fstat`` again,
    so a file swapped for a FIFO in between cannot hang the read either. ``via`` (the file whose
    ``extends`` named this one) starts every message.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"{via}{path}: no such preset file. Run `tuitrain presets` to list the presets."
        ) from None
    except ValueError:  # a NUL character in the path
        raise ConfigError(f"{via}{path!r}: a preset path cannot contain a NUL character.") from None
    except OSError as e:
        raise ConfigError(f"{via}{path}: cannot read the preset: {e.strerror or e}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{via}{path}: is a directory, not a preset file (expected a .toml file).")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            f"{via}{path}: is {_kind(st.st_mode)}, not a regular file; a preset must be a regular .toml file."
        )
    if st.st_size > MAX_PRESET_BYTES:
        raise ConfigError(
            f"{via}{path}: is {st.st_size:,} bytes; a preset may be at most "
            f"{MAX_PRESET_BYTES:,} bytes (1 MiB)."
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(
                    f"{via}{path}: changed into something other than a regular file while read."
                )
            data = fh.read(MAX_PRESET_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{via}{path}: cannot read the preset: {e.strerror or e}.") from None
    if len(data) > MAX_PRESET_BYTES:
        raise ConfigError(
            f"{via}{path}: grew past {MAX_PRESET_BYTES:,} bytes (1 MiB), the most a preset may hold."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{via}{path}: is not UTF-8 text (byte {e.start}); TOML files are UTF-8.") from None


def _parse(text: str, where: str) -> dict[str, Any]:
    """TOML text -> table, with syntax errors and excessive nesting as one ConfigError naming ``where``."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: TOML syntax error: {e}.") from None
    except RecursionError:
        raise ConfigError(_too_deep(where)) from None
    _check_depth(table, where)
    return table


def _too_deep(where: str) -> str:
    return (
        f"{where}: tables or arrays are nested more than {MAX_DEPTH} levels deep; a preset holds "
        "`[section]` tables of `key = value` pairs, where a value is at most a list of numbers."
    )


def _check_depth(value: Any, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH without recursing (the point is to survive 3,000 levels)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(_too_deep(where))
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _read_toml(path: Path, via: str = "") -> dict[str, Any]:
    return _parse(_read_text(path, via), str(path))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_raw(
    path: Path, chain: tuple[Path, ...] = (), via: str = ""
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Return the merged raw table of a preset and its ``extends`` ancestors, and for each dotted key
    the file that set it (so errors name the right file)."""
    with contextlib.suppress(OSError, RuntimeError, ValueError):  # _read_text says what is wrong
        path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p.name) for p in (*chain, path))
        raise ConfigError(f"{chain[0]}: `extends` forms a cycle: {cycle}.")
    if len(chain) >= MAX_EXTENDS:
        raise ConfigError(f"{chain[0]}: the `extends` chain is longer than {MAX_EXTENDS} files.")
    raw = _read_toml(path, via)
    parent = raw.pop("extends", None)
    origin = {key: path for key in _dotted_keys(raw)}
    if parent is None:
        return raw, origin
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` must be a string path to another preset, got {parent!r}.")
    if "\0" in parent:
        raise ConfigError(f"{path}: `extends = {parent!r}` contains a NUL character, which no path can hold.")
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not os.path.exists(parent_path):  # False, not an exception, where it cannot be stat()ed
        raise ConfigError(f"{path}: `extends = {parent!r}` names a file that does not exist ({parent_path}).")
    base, base_origin = _load_raw(parent_path, (*chain, path), f"{path}: `extends = {parent!r}`: ")
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
    except RecursionError:
        raise ConfigError(_too_deep(f"--set {key}")) from None
    _check_depth(parsed, f"--set {key}")
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
    *,
    base: str | None = None,
    base_where: str = "the stored config",
) -> RunConfig:
    """Build a validated :class:`RunConfig` from a preset file, ``--set`` strings and CLI options.

    ``extra`` holds dotted keys from dedicated CLI options (``--epochs`` -> ``train.epochs``); they are
    applied after ``--set``. ``base``: TOML text to start from instead of a preset (a run's stored
    config, for ``--resume``); its keys' errors name ``base_where``.
    """
    raw: dict[str, Any] = {}
    origin: dict[str, Path | str] = {}
    if base is not None:
        raw = _parse(base, base_where)
        origin.update({key: base_where for key in _dotted_keys(raw)})
    if preset is not None:
        path = Path(preset)
        raw, file_origin = _load_raw(path)
        origin.update(file_origin)
        raw.setdefault("name", path.stem)
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(raw, key, value)
        origin[key] = f"--set {text if len(text) <= 80 else text[:75] + '...'}"
    for key, value in (extra or {}).items():
        _set_dotted(raw, key, value)
        origin[key] = "command line"
    return from_dict(raw, origin)


def from_toml(text: str, where: str = "the stored config") -> RunConfig:
    """A config from TOML text (what :func:`~tuitrain.config.to_toml` wrote): the run file's
    ``config_toml``, the config a ``watch`` worker or a data-parallel rank is handed. Any problem is a
    ConfigError naming ``where``."""
    return from_dict(_parse(text, where))
