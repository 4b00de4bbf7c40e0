"""The optional tables of a run file (issue 11), read and checked: ``/modules`` (the probed modules, the
columns of every probe on axis "module") and ``/findings`` (one row per Finding event: when a finding
opened and when it closed). A file holds those its root attribute ``tables`` names
(:mod:`tuitrain.runfile.declaration`); older files hold neither.

Split from :mod:`tuitrain.runfile.reader` (which exposes these as thin properties) and
:mod:`tuitrain.runfile.validate` (which calls the checks at open), to keep each small. Also /layers
back to LayerInfo and /events to dicts, and the content checks of /layers, /epochs and /events, for
the same reason. The functions take a ``read(path, selection)`` callable instead of the reader's handles, so nothing here reaches
into the reader. Row rules (what each column means) are :mod:`tuitrain.runfile.schema`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain.events import SEVERITIES, Finding, LayerInfo, ModuleInfo
from tuitrain.runfile import schema as S
from tuitrain.runfile.opening import RunFileError

Read = Callable[[str, Any], Any]
_SHAPE = re.compile(r"(\d+(x\d+)*)?")  # a /layers/shape value: sizes joined by "x"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def layers(read: Read) -> list[LayerInfo]:
    """Every /layers row as a LayerInfo, in model order (the reader's ``layers``)."""
    cols = {n: read(S.path(S.LAYERS, n), None) for n in S.LAYER_FIELDS}
    return [
        LayerInfo(
            name=_text(cols["name"][i]),
            shape=tuple(int(d) for d in _text(cols["shape"][i]).split("x") if d),
            numel=int(cols["numel"][i]),
            kind=_text(cols["kind"][i]),
            module=_text(cols["module"][i]),
            module_type=_text(cols["module_type"][i]),
        )
        for i in range(len(cols["name"]))
    ]


def events(read: Read, n: int) -> list[dict[str, Any]]:
    """The first ``n`` /events rows (alerts and status changes) as dicts: step, time, level, kind, message."""
    cols = {k: read(S.path(S.EVENTS, k), slice(0, n)) for k in S.EVENT_FIELDS}
    return [
        {
            "step": int(cols["step"][i]),
            "time": float(cols["time"][i]),
            "level": _text(cols["level"][i]),
            "kind": _text(cols["kind"][i]),
            "message": _text(cols["message"][i]),
        }
        for i in range(n)
    ]


def modules(read: Read) -> list[ModuleInfo]:
    """Every /modules row as a ModuleInfo, in model order."""
    cols = {name: read(S.path(S.MODULES, name), None) for name in S.MODULE_FIELDS}
    n = min(len(c) for c in cols.values())
    return [
        ModuleInfo(_text(cols["name"][i]), _text(cols["type"][i]), _text(cols["kind"][i])) for i in range(n)
    ]


def parse_evidence(raw: Any) -> dict[str, float]:
    """A /findings/evidence value back to ``{name: number}``; ValueError for anything else."""
    data = json.loads(_text(raw) or "{}")
    if not isinstance(data, dict):
        raise ValueError("evidence is not a JSON object")
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"evidence {k!r} = {v!r} is not a number")
        out[k] = float(v)
    return out


def findings(read: Read, start: int, stop: int) -> list[Finding]:
    """/findings rows ``[start, stop)`` as Finding events, in file order (openings and closings both;
    ``last_step`` None for a row that says it still held). ValueError naming the row for a row that
    is not a finding (rows of a live file appended after it was opened were not checked at open)."""
    if stop <= start:
        return []
    cols = {name: read(S.path(S.FINDINGS, name), slice(start, stop)) for name in S.FINDING_FIELDS}
    out = []
    for i in range(stop - start):
        last = int(cols["last_step"][i])
        try:
            out.append(
                Finding(
                    kind=_text(cols["kind"][i]),
                    severity=_text(cols["severity"][i]),
                    layer=_text(cols["layer"][i]),
                    first_step=int(cols["first_step"][i]),
                    last_step=None if last == S.FINDING_OPEN else last,
                    evidence=parse_evidence(cols["evidence"][i]),
                    message=_text(cols["message"][i]),
                    suggestion=_text(cols["suggestion"][i]),
                    at_step=int(cols["at_step"][i]),
                )
            )
        except (ValueError, RecursionError) as e:
            raise ValueError(f"row {start + i}: {e}") from None
    return out


# -- checks at open (tuitrain.runfile.validate) -------------------------------------------------------


def check_modules(path: Path, ds: dict[str, h5py.Dataset]) -> None:
    kinds = ds[S.path(S.MODULES, "kind")][()]
    for i, k in enumerate(kinds):
        if _text(k) not in S.MODULE_KINDS:
            raise RunFileError(
                f"{path}: /modules/kind row {i} = {_text(k)[:40]!r} is not a module kind; expected one of "
                f"{', '.join(S.MODULE_KINDS)}"
            )


def check_findings(path: Path, ds: dict[str, h5py.Dataset]) -> None:
    """Every row a reader could turn into a Finding: a known severity, evidence a JSON object of numbers,
    steps in order (``first_step`` >= 0; ``last_step`` -1 or >= ``first_step``; ``at_step`` >= -1), a time."""
    cols = {name: ds[S.path(S.FINDINGS, name)] for name in S.FINDING_FIELDS}
    n = min(int(c.shape[0]) for c in cols.values())
    if not n:
        return
    t = np.asarray(cols["time"][:n], np.float64)
    lo, hi = S.TIME_RANGE
    bad_t = ~np.isnan(t) & ~((t >= lo) & (t <= hi))
    if bad_t.any():
        i = int(np.argmax(bad_t))
        raise RunFileError(f"{path}: /findings/time row {i} = {t[i]:g} is not a time; expected Unix seconds")
    first = cols["first_step"][:n]
    last = cols["last_step"][:n]
    at = cols["at_step"][:n]
    for i in range(n):
        f0, f1 = int(first[i]), int(last[i])
        if f0 < 0 or int(at[i]) < -1 or not (f1 == S.FINDING_OPEN or f1 >= f0):
            raise RunFileError(
                f"{path}: /findings row {i} has first_step {f0}, last_step {f1}, at_step {int(at[i])}; "
                "expected first_step >= 0, last_step -1 (open) or >= first_step, at_step >= -1"
            )
    for i, sev in enumerate(cols["severity"][:n]):
        if _text(sev) not in SEVERITIES:
            raise RunFileError(
                f"{path}: /findings/severity row {i} = {_text(sev)[:20]!r} is not a severity; expected one "
                f"of {', '.join(SEVERITIES)}"
            )
    for i, raw in enumerate(cols["evidence"][:n]):
        try:
            parse_evidence(raw)
        except (ValueError, RecursionError) as e:
            raise RunFileError(
                f"{path}: /findings/evidence row {i} is not a JSON object of numbers ({str(e)[:80]})"
            ) from None


def _rows(ds: dict[str, h5py.Dataset], group: str, names: Any) -> int:
    return min(int(ds[S.path(group, n)].shape[0]) for n in names)


def check_layers(path: Path, f: dict[str, h5py.Dataset]) -> None:
    n = _rows(f, S.LAYERS, S.LAYER_FIELDS)
    shapes = f[S.path(S.LAYERS, "shape")][:n]
    for i, s in enumerate(shapes):
        if not _SHAPE.fullmatch(_text(s)):
            raise RunFileError(
                f"{path}: /layers/shape row {i} = {_short(_text(s))} is not a shape; expected sizes "
                "joined by 'x' such as '32x3x3x3' ('' for a scalar)"
            )
    numel = f[S.path(S.LAYERS, "numel")][:n]
    if n and int(np.min(numel)) < 0:
        raise RunFileError(f"{path}: /layers/numel holds a negative count; expected element counts >= 0")


def _check_times(path: Path, p: str, times: np.ndarray) -> None:
    t = np.asarray(times, np.float64)
    lo, hi = S.TIME_RANGE
    bad = ~np.isnan(t) & ~((t >= lo) & (t <= hi))
    if bad.any():
        i = int(np.argmax(bad))
        raise RunFileError(
            f"{path}: /{p} row {i} = {t[i]:g} is not a time; expected Unix seconds in [{_time_range()}]"
        )


def check_epochs(path: Path, f: dict[str, h5py.Dataset]) -> None:
    n = _rows(f, S.EPOCHS, S.EPOCH_FIELDS)
    _check_times(path, S.path(S.EPOCHS, "time"), f[S.path(S.EPOCHS, "time")][:n])


def check_events(path: Path, f: dict[str, h5py.Dataset]) -> None:
    n = _rows(f, S.EVENTS, S.EVENT_FIELDS)
    _check_times(path, S.path(S.EVENTS, "time"), f[S.path(S.EVENTS, "time")][:n])
    kinds = f[S.path(S.EVENTS, "kind")][:n]
    messages = f[S.path(S.EVENTS, "message")][:n]
    for i, (kind, message) in enumerate(zip(kinds, messages, strict=True)):
        if _text(kind) in (S.KIND_STATUS, S.KIND_FINISHED) and _text(message) not in S.STATUSES:
            raise RunFileError(
                f"{path}: /events/message row {i} = {_short(_text(message))} is not a run status; expected "
                f"one of {', '.join(S.STATUSES)} in a `{_text(kind)}` row"
            )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "..." + text[-2:]


def _time_range() -> str:
    lo, hi = S.TIME_RANGE
    return f"{lo:g}, {hi:g}"
