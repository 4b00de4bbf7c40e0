"""A raw table (parsed TOML, merged overrides) -> a checked :class:`RunConfig`, or one
:class:`ConfigError` whose message names the file or option a bad key came from, the key and what is
allowed: unknown keys (with a did-you-mean), wrong types, values out of range, combinations that
cannot train."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

from tuitrain.config.dump import to_flat
from tuitrain.config.schema import CHOICES, OWN_MODEL, RANGES, ConfigError, RunConfig, is_own_model

# Every integer key fits in int32: /steps/epoch and the run file's counters are stored as int32/int64,
# and a value such as 1e20 epochs or 2**64 must be refused here, not by HDF5 halfway through a start.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
# Bounds of the integers inside a list key, as RANGES gives them for scalar keys.
LIST_ITEM_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "model.hidden": (1, None, True, True)
}


def _show(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: a bad value may be a megabyte of text."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _text(value: str, key: str, where: str) -> str:
    """A string key's value, if a run file and a path can hold it: no NUL, nothing that is not UTF-8
    (a lone surrogate is what Python makes of invalid UTF-8 bytes on the command line)."""
    if "\0" in value:
        raise ConfigError(
            f"{where}`{key}` = {_show(value)} contains a NUL character (\\0), which neither a file name nor "
            "the run file can hold; remove it."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigError(
            f"{where}`{key}` = {_show(value)} is not valid UTF-8 text (character {e.start}); use UTF-8."
        ) from None
    return value


def _int_range(key: str) -> tuple[int, int]:
    """The integers ``key`` may hold: its RANGES bounds where set, within int32 everywhere."""
    lo, hi, lo_inc, hi_inc = RANGES.get(key) or LIST_ITEM_RANGES.get(key) or (None, None, True, True)
    low = INT_MIN if lo is None else max(INT_MIN, math.ceil(lo) if lo_inc else math.floor(lo) + 1)
    high = INT_MAX if hi is None else min(INT_MAX, math.floor(hi) if hi_inc else math.ceil(hi) - 1)
    return low, high


def _where(key: str, origin: dict[str, Path | str]) -> str:
    src = origin.get(key)
    return f"{src}: " if src is not None else ""


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner).split(' ', 1)[1]}s"
    if isinstance(tp, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(tp))
    return str(tp)


def _coerce(value: Any, tp: Any, key: str, origin: dict[str, Path | str]) -> Any:
    where = _where(key, origin)
    bad = ConfigError(
        f"{where}`{key}` must be {_type_name(tp)}, got {_show(value)} ({type(value).__name__})."
    )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad
        lo, hi = _int_range(key)
        if not lo <= value <= hi:  # RANGES too, so that the message can give the integer bounds
            raise ConfigError(f"{where}`{key}` = {_show(value)} is out of range; allowed: [{lo}, {hi}].")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # no key has a use for inf or nan; ranges alone let inf through
                raise ConfigError(
                    f"{where}`{key}` = {value!r}: a finite number is required (inf and nan are not "
                    f"numbers a run can use); allowed: {_allowed_range(key)}."
                )
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return _text(value, key, where)
        raise bad
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad
        return [_coerce(v, inner, key, origin) for v in value]
    if isinstance(tp, types.UnionType):  # `int | str` (train.threads): the first type the value fits
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm, key, origin)
            except ConfigError:
                pass
        raise bad
    raise bad  # pragma: no cover


def _range_text(lo: float | None, hi: float | None, lo_inc: bool, hi_inc: bool) -> str:
    """An interval; an unbounded end is open (inf itself is never allowed)."""
    lo_s = "-inf" if lo is None else f"{lo:g}"
    hi_s = "inf" if hi is None else f"{hi:g}"
    return f"{'[' if lo_inc and lo is not None else '('}{lo_s}, {hi_s}{']' if hi_inc and hi is not None else ')'}"


def _allowed_range(key: str) -> str:
    """What a float key allows, in words: ``a finite number > 0``, ``a number in [0.01, 10]``."""
    rng = RANGES.get(key)
    if rng is None:
        return "a finite number"
    lo, hi, lo_inc, hi_inc = rng
    if hi is None and lo is not None:
        return f"a finite number {'>=' if lo_inc else '>'} {lo:g}"
    return f"a number in {_range_text(*rng)}"


def _section_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, known: list[str], where: str, section: str) -> ConfigError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
    hint = f" Did you mean `{(section + '.') if section else ''}{close[0]}`?" if close else ""
    allowed = ", ".join(known)
    return ConfigError(
        f"{where}unknown key `{key}`.{hint} Allowed {'in [' + section + ']' if section else 'at the top level'}: {allowed}."
    )


def from_dict(raw: dict[str, Any], origin: dict[str, Path | str] | None = None) -> RunConfig:
    origin = origin or {}
    top_types = _section_types(RunConfig)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in top_types:
            raise _unknown(key, list(top_types), _where(key, origin) or _first_where(key, origin), "")
        tp = top_types[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{_where(key, origin)}`{key}` must be a table ([{key}]), got {_show(value)}."
                )
            sec_types = _section_types(tp)
            # A model of the user's own takes keys of its own; the built-in ones are still checked.
            own = key == "model" and isinstance(value.get("name"), str) and is_own_model(value["name"])
            kwargs: dict[str, Any] = {}
            options: dict[str, Any] = {}
            for sk, sv in value.items():
                dotted = f"{key}.{sk}"
                if isinstance(sv, dict):
                    raise ConfigError(f"{_where(dotted, origin)}`{dotted}` must be a value, not a table.")
                if own and (sk not in sec_types or sk == "options"):
                    options[sk] = _own_value(sv, dotted, origin)
                    continue
                if sk not in sec_types or (key == "model" and sk == "options"):
                    known = [k for k in sec_types if not (key == "model" and k == "options")]
                    err = _unknown(dotted, known, _where(dotted, origin), key)
                    if key == "model":  # the way to keys of one's own
                        err = ConfigError(
                            f'{err} (A model of your own, `model.name` = "module:function", takes keys of its own.)'
                        )
                    raise err
                kwargs[sk] = _coerce(sv, sec_types[sk], dotted, origin)
            if own:
                kwargs["options"] = options
            values[key] = tp(**kwargs)
        else:
            values[key] = _coerce(value, tp, key, origin)
    cfg = RunConfig(**values)
    _check(cfg, origin)
    return cfg


def _own_value(value: Any, key: str, origin: dict[str, Path | str]) -> Any:
    """A key of the user's own model: any TOML string, number, boolean or list of them (the model's
    function decides what it means); not a date (no run file or JSON can hold one as such)."""
    if isinstance(value, list):
        return [_own_value(v, key, origin) for v in value]
    if isinstance(value, str):
        return _text(value, key, _where(key, origin))
    if isinstance(value, (bool, int, float)):
        return value
    raise ConfigError(
        f"{_where(key, origin)}`{key}` = {_show(value)} ({type(value).__name__}): a key of your own model "
        "must be a string, a number, a boolean or a list of them."
    )


def _first_where(key: str, origin: dict[str, Path | str]) -> str:
    for k, src in origin.items():
        if k == key or k.startswith(key + "."):
            return f"{src}: "
    return ""


def _check_model_name(name: str, origin: dict[str, Path | str]) -> None:
    """A model of the user's own is spelt ``module:function``; whether it imports is asked only where
    the model is built (tuitrain/train/own_model.py), so a stored config opens anywhere."""
    if is_own_model(name) and not OWN_MODEL.fullmatch(name):
        raise ConfigError(
            f"{_where('model.name', origin)}`model.name` = {_show(name)}: a model of your own is named "
            "`module:function`, a Python module path, a colon and the name of a function in it that "
            "returns a torch.nn.Module (e.g. mypkg.models:build); allowed besides: mlp, vgg, resnet18, "
            "mlp_mixer."
        )


def _check(cfg: RunConfig, origin: dict[str, Path | str]) -> None:
    flat = to_flat(cfg)
    _check_model_name(cfg.model.name, origin)
    for key, allowed in CHOICES.items():
        if key == "model.name" and is_own_model(cfg.model.name):
            continue
        if flat[key] not in allowed:
            close = difflib.get_close_matches(str(flat[key]), allowed, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            own = " or a model of your own as `module:function` (e.g. mypkg.models:build)"
            raise ConfigError(
                f"{_where(key, origin)}`{key}` = {_show(flat[key])} is not allowed.{hint} Allowed: "
                f"{', '.join(allowed)}{own if key == 'model.name' else ''}."
            )
    for key, (lo, hi, lo_inc, hi_inc) in RANGES.items():
        v = flat[key]
        ok = (lo is None or (v >= lo if lo_inc else v > lo)) and (
            hi is None or (v <= hi if hi_inc else v < hi)
        )
        if not ok:
            rng = _range_text(lo, hi, lo_inc, hi_inc)
            raise ConfigError(f"{_where(key, origin)}`{key}` = {v!r} is out of range; allowed: {rng}.")
    threads = cfg.train.threads
    if threads != "auto" and not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(
            f"{_where('train.threads', origin)}`train.threads` = {threads!r} is not allowed; allowed: "
            '"auto" (chosen by measurement while the run trains) or a number of CPU threads >= 1.'
        )
    m = cfg.model
    if m.name == "mlp" and not m.hidden:
        raise ConfigError(f"{_where('model.hidden', origin)}`model.hidden` must list at least one width.")
    if any(w < 1 for w in m.hidden):
        raise ConfigError(
            f"{_where('model.hidden', origin)}`model.hidden` widths must be >= 1, got {m.hidden}."
        )
    if len(m.mlp_ratio) != 2 or any(r <= 0 for r in m.mlp_ratio):
        raise ConfigError(
            f"{_where('model.mlp_ratio', origin)}`model.mlp_ratio` must be two positive numbers "
            f"[token, channel], got {m.mlp_ratio}."
        )
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        raise ConfigError(
            f"{_where('optim.betas', origin)}`optim.betas` must be two numbers in [0, 1), got {cfg.optim.betas}."
        )
    size = cfg.data.image_size
    if cfg.data.name != "synthetic" and size != 32:
        raise ConfigError(
            f"{_where('data.image_size', origin)}`data.image_size` = {size} applies to synthetic data only; "
            f"{cfg.data.name} images are 32x32."
        )
    if m.name == "mlp_mixer" and size % m.patch_size:
        allowed = ", ".join(str(p) for p in range(1, size + 1) if size % p == 0)
        raise ConfigError(
            f"{_where('model.patch_size', origin)}`model.patch_size` = {m.patch_size} must divide the "
            f"{size}-pixel image size; allowed: {allowed}."
        )
    if cfg.data.name == "toy2d" and m.name != "mlp" and not is_own_model(m.name):
        raise ConfigError(
            f"{_where('data.name', origin)}`data.name` = 'toy2d' gives 2-D points, which only `model.name` = "
            f"'mlp' can take (got {m.name!r})."
        )
    if m.downsample_shortcut != "none" and not m.residual:
        raise ConfigError(
            f"{_where('model.downsample_shortcut', origin)}`model.downsample_shortcut` = {m.downsample_shortcut!r} "
            "needs `model.residual` = true (it is a shortcut across the down-sampling blocks)."
        )
    if m.name == "vgg" and m.activation not in ("relu", "leaky_relu"):
        raise ConfigError(
            f"{_where('model.activation', origin)}`model.activation` = {m.activation!r} is not supported for vgg; "
            "allowed: leaky_relu, relu."
        )
