"""What a run file declares it holds: its probes, its step scalars, its optional tables, where it came
from, its user config.

One owner for the translation between a run's :class:`~tuitrain.events.RunStarted` (the writer's side),
the root attributes ``probes`` / ``step_scalars`` / ``tables`` / ``source`` / ``config_json`` (schema 2,
the file's side) and the dataset paths both sides use. A reader needs no list of probes or scalars of its own: it
reads the declaration and requires only what it names. Files of schema 1 declare nothing; they get
the one translation :func:`from_attrs` gives them (the gradient probe stored directly under /probes,
the standard step scalars, source ``preset``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import tomllib

from tuitrain.events import (
    GRAD_PROBE,
    PROBE_AXES,
    SNAPSHOT_DTYPES,
    SNAPSHOT_WHEN,
    STEP_SCALARS,
    ProbeSpec,
    Quantity,
    RunStarted,
    SnapshotField,
    SnapshotSpec,
)
from tuitrain.runfile import schema as S


@dataclass(frozen=True)
class Declaration:
    """The probes and step scalars of one file, and the group each probe's rows live in."""

    probes: tuple[ProbeSpec, ...]
    step_scalars: tuple[str, ...]  # STEP_SCALARS first, then a user loop's keys
    source: str = "preset"
    config_json: str = ""
    schema_version: int = S.SCHEMA_VERSION
    tables: tuple[str, ...] = ()  # the optional tables (schema.TABLES) the file holds; () before issue 11
    snapshots: tuple[SnapshotSpec, ...] = ()  # /snapshots/<name>; () before issue 12 (no attribute)

    def has_table(self, name: str) -> bool:
        return name in self.tables

    def probe(self, name: str) -> ProbeSpec:
        for spec in self.probes:
            if spec.name == name:
                return spec
        known = ", ".join(p.name for p in self.probes) or "none"
        raise KeyError(f"this run file has no probe {name!r} (its probes: {known})")

    def probe_group(self, name: str) -> str:
        """``probes/<name>`` (schema 2); schema 1 kept its one gradient probe at ``probes``."""
        return S.PROBES if self.schema_version < 2 else S.path(S.PROBES, name)

    def probe_path(self, probe: str, quantity: str) -> str:
        return S.path(self.probe_group(probe), quantity)

    def scalar_dtype(self, name: str) -> np.dtype:
        return S.STEP_SCALAR_DTYPE if name in STEP_SCALARS else S.USER_SCALAR_DTYPE


def axis_size(axis: str, n_layers: int, n_modules: int) -> int:
    """Columns of a probe's ``(rows, n)`` datasets: one per tensor (/layers), per module (/modules, i.e.
    RunStarted.modules), or one for a per-step probe."""
    return {"tensor": n_layers, "module": n_modules, "step": 1}[axis]


def name_problem(name: object, what: str) -> str | None:
    """Why ``name`` cannot be a dataset name in the run file, or None. Used for probe, quantity and
    declared step-scalar names (a user loop's keys): one HDF5 name each, never a path."""
    if not isinstance(name, str) or not name:
        return f"{what} {name!r} is not a non-empty string"
    if name in (".", "..") or name != name.strip() or "\x00" in name:  # "/" is escaped (schema.path)
        return f"{what} {name!r} cannot be a dataset name (no NUL, surrounding spaces, '.' or '..')"
    if len(S.escape(name).encode("utf-8")) > S.NAME_MAX_BYTES:
        return f"{what} {name!r} is longer than {S.NAME_MAX_BYTES} UTF-8 bytes"
    return None


def step_scalar_problem(name: object) -> str | None:
    """Why ``name`` cannot be a declared step column (``/steps/<name>``), or None: a dataset name that
    is not one of the index columns ``step``, ``epoch``, ``time``. Undeclared keys have no such limit:
    they go to ``/metrics``."""
    problem = name_problem(name, "step scalar")
    if problem is None and name in S.STEP_INDEX_COLUMNS:
        return f"step scalar {name!r} is reserved for /steps/{name} (the index columns are step, epoch, time)"
    return problem


def from_started(ev: RunStarted) -> Declaration:
    """The declaration a new file gets from its RunStarted: STEP_SCALARS always (NaN where the run does
    not measure one), then the run's own keys in order, without repeats. Raises ValueError for a name
    that cannot be stored (:func:`step_scalar_problem`, :func:`name_problem`)."""
    scalars = tuple(dict.fromkeys((*STEP_SCALARS, *ev.step_scalars)))
    for name in scalars:
        problem = step_scalar_problem(name)
        if problem:
            raise ValueError(f"RunStarted.step_scalars: {problem}")
    seen: set[str] = set()
    for spec in ev.probes:
        check_probe(spec, seen)
    on_modules = [p.name for p in ev.probes if p.axis == "module"]
    if on_modules and not ev.modules:
        raise ValueError(
            f"RunStarted declares probe {on_modules[0]!r} on axis 'module' but lists no modules: "
            "RunStarted.modules names its columns (one ModuleInfo per probed module)"
        )
    for i, m in enumerate(ev.modules):
        if not (isinstance(m.name, str) and isinstance(m.type, str)) or m.kind not in S.MODULE_KINDS:
            raise ValueError(
                f"RunStarted.modules[{i}] = {_short(m)}: expected a ModuleInfo with a text name and type "
                f"and kind one of {', '.join(S.MODULE_KINDS)}"
            )
    if ev.config_json:
        cfg = json.loads(ev.config_json)
        if not isinstance(cfg, dict):
            raise ValueError("RunStarted.config_json must be a JSON object")
    tables = ((S.MODULES,) if ev.modules else ()) + (S.FINDINGS,)
    seen_snaps: set[str] = set()
    for snap in ev.snapshots:
        check_snapshot(snap, seen_snaps)
    return Declaration(
        tuple(ev.probes), scalars, ev.source, ev.config_json, S.SCHEMA_VERSION, tables, tuple(ev.snapshots)
    )


def check_probe(spec: ProbeSpec, seen: set[str]) -> None:
    problem = name_problem(spec.name, "probe name")
    if problem is None and spec.name in seen:
        problem = f"probe {spec.name!r} is declared twice"
    if problem is None and spec.axis not in PROBE_AXES:
        problem = f"probe {spec.name!r} has axis {spec.axis!r}; allowed: {', '.join(PROBE_AXES)}"
    if problem is None and (not isinstance(spec.every, int) or spec.every < 1):
        problem = f"probe {spec.name!r} has every = {spec.every!r}; expected an integer >= 1"
    if problem is None and not spec.quantities:
        problem = f"probe {spec.name!r} declares no quantities"
    names: set[str] = set()
    for q in spec.quantities if problem is None else ():
        problem = name_problem(q.name, f"quantity of probe {spec.name!r}")
        if problem is None and (q.name == "step" or q.name in names):
            problem = f"probe {spec.name!r}: quantity {q.name!r} is reserved or repeated"
        if problem is None and not (isinstance(q.label, str) and isinstance(q.unit, str)):
            problem = f"probe {spec.name!r}: quantity {q.name!r} needs a text label and unit"
        if problem:
            break
        names.add(q.name)
    if problem:
        raise ValueError(problem)
    seen.add(spec.name)


def probes_json(probes: tuple[ProbeSpec, ...] | list[ProbeSpec]) -> str:
    return json.dumps(
        [
            {
                "name": p.name,
                "axis": p.axis,
                "every": int(p.every),
                "quantities": [{"name": q.name, "label": q.label, "unit": q.unit} for q in p.quantities],
            }
            for p in probes
        ]
    )


def parse_probes(text: str) -> tuple[ProbeSpec, ...]:
    """The ``probes`` attribute back to ProbeSpecs; ValueError (with the reason) for anything else."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    out: list[ProbeSpec] = []
    seen: set[str] = set()
    for row in data:
        if not isinstance(row, dict) or not isinstance(row.get("quantities"), list):
            raise ValueError(f"probe {_short(row)} is not an object with a quantities list")
        qs = []
        for q in row["quantities"]:
            if not isinstance(q, dict):
                raise ValueError(f"quantity {_short(q)} is not an object")
            qs.append(Quantity(q.get("name"), q.get("label", ""), q.get("unit", "")))  # type: ignore[arg-type]
        every = row.get("every", 1)
        if isinstance(every, bool):
            every = None
        spec = ProbeSpec(row.get("name"), row.get("axis"), tuple(qs), every)  # type: ignore[arg-type]
        check_probe(spec, seen)
        out.append(spec)
    return tuple(out)


def parse_step_scalars(text: str) -> tuple[str, ...]:
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    for name in data:
        problem = step_scalar_problem(name)
        if problem:
            raise ValueError(problem)
    if len(set(data)) != len(data):
        raise ValueError("a name is listed twice")
    return tuple(data)


def parse_tables(text: str) -> tuple[str, ...]:
    """The ``tables`` attribute: the optional tables this tuitrain knows (:data:`schema.TABLES`) that
    the file names, in schema order. A name this version does not know is left out (a newer writer's
    table: never required, never read); anything but a list of distinct names is a ValueError."""
    data = json.loads(text or "[]")
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    for name in data:
        if not isinstance(name, str) or not name:
            raise ValueError(f"table {_short(name)} is not a non-empty name")
    if len(set(data)) != len(data):
        raise ValueError("a table is listed twice")
    return tuple(t for t in S.TABLES if t in data)


def from_attrs(attrs: dict[str, Any]) -> Declaration:
    """The declaration of an opened file whose attributes ``validate`` has checked. Schema 1: the
    gradient probe (``every`` from the stored config's ``monitor.every``, else 1), STEP_SCALARS. No
    ``tables`` attribute (every file from before issue 11): no optional tables."""
    version = int(attrs["schema_version"])
    if version >= 2:
        return Declaration(
            parse_probes(attrs["probes"]),
            parse_step_scalars(attrs["step_scalars"]),
            str(attrs["source"]),
            str(attrs["config_json"]),
            version,
            parse_tables(str(attrs.get("tables", "[]"))),
            parse_snapshots(str(attrs.get("snapshots", "[]"))),
        )
    every = 1
    try:
        got = tomllib.loads(str(attrs.get("config_toml", ""))).get("monitor", {}).get("every", 1)
        if isinstance(got, int) and not isinstance(got, bool) and got >= 1:
            every = got
    except (tomllib.TOMLDecodeError, AttributeError):
        pass
    grad = ProbeSpec(GRAD_PROBE.name, GRAD_PROBE.axis, GRAD_PROBE.quantities, every)
    return Declaration((grad,), STEP_SCALARS, "preset", "", version)


# -- snapshots (issue 12): the root attribute ``snapshots`` -----------------------------------------


def check_snapshot(spec: SnapshotSpec, seen: set[str]) -> None:
    """ValueError unless ``spec`` can be stored: a dataset name not declared before, ``when`` in
    SNAPSHOT_WHEN, ``max_rows`` >= 1, fields with distinct dataset names other than ``epoch`` and
    ``step``, dtypes in SNAPSHOT_DTYPES, shapes of integers >= 1 (HDF5 cannot chunk a zero-length
    axis), meta a JSON object."""
    problem = name_problem(spec.name, "snapshot name")
    if problem is None and spec.name in seen:
        problem = f"snapshot {spec.name!r} is declared twice"
    if problem is None and spec.when not in SNAPSHOT_WHEN:
        problem = f"snapshot {spec.name!r} has when = {spec.when!r}; allowed: {', '.join(SNAPSHOT_WHEN)}"
    mr = spec.max_rows
    if problem is None and (not isinstance(mr, int) or isinstance(mr, bool) or mr < 1):
        problem = f"snapshot {spec.name!r} has max_rows = {mr!r}; expected an integer >= 1"
    if problem is None and not spec.fields:
        problem = f"snapshot {spec.name!r} declares no fields"
    if problem is None and not (isinstance(spec.meta, dict) and isinstance(spec.description, str)):
        problem = f"snapshot {spec.name!r}: meta must be a dict and description text"
    names: set[str] = set()
    for fd in spec.fields if problem is None else ():
        problem = name_problem(fd.name, f"field of snapshot {spec.name!r}")
        if problem is None and (fd.name in ("epoch", "step") or fd.name in names):
            problem = f"snapshot {spec.name!r}: field {fd.name!r} is reserved or repeated"
        if problem is None and fd.dtype not in SNAPSHOT_DTYPES:
            problem = (
                f"snapshot {spec.name!r} field {fd.name!r}: dtype {fd.dtype!r}; "
                f"allowed: {', '.join(SNAPSHOT_DTYPES)}"
            )
        if problem is None and not (
            isinstance(fd.shape, tuple)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in fd.shape)
        ):
            problem = f"snapshot {spec.name!r} field {fd.name!r}: shape {fd.shape!r} is not a tuple of integers >= 1"
        if problem:
            break
        names.add(fd.name)
    if problem:
        raise ValueError(problem)
    seen.add(spec.name)


def snapshots_json(specs: tuple[SnapshotSpec, ...] | list[SnapshotSpec]) -> str:
    """The root attribute ``snapshots``: ``[{name, when, max_rows, description, fields: [{name, shape,
    dtype}], meta}]``; "[]" for a run that takes none."""
    return json.dumps(
        [
            {
                "name": s.name,
                "when": s.when,
                "max_rows": int(s.max_rows),
                "description": s.description,
                "fields": [{"name": f.name, "shape": list(f.shape), "dtype": f.dtype} for f in s.fields],
                "meta": s.meta,
            }
            for s in specs
        ],
        default=lambda o: o.item() if isinstance(o, np.generic) else str(o),
    )


def parse_snapshots(text: str) -> tuple[SnapshotSpec, ...]:
    """The ``snapshots`` attribute back to SnapshotSpecs; ValueError (with the reason) for anything else."""
    data = json.loads(text or "[]")
    if not isinstance(data, list):
        raise ValueError("not a JSON list")
    out: list[SnapshotSpec] = []
    seen: set[str] = set()
    for row in data:
        if not isinstance(row, dict) or not isinstance(row.get("fields"), list):
            raise ValueError(f"snapshot {_short(row)} is not an object with a fields list")
        fields = []
        for fd in row["fields"]:
            if not isinstance(fd, dict) or not isinstance(fd.get("shape"), list):
                raise ValueError(f"snapshot field {_short(fd)} is not an object with a shape list")
            fields.append(SnapshotField(fd.get("name"), tuple(fd["shape"]), fd.get("dtype")))  # type: ignore[arg-type]
        try:
            spec = SnapshotSpec(
                row.get("name"),  # type: ignore[arg-type]
                tuple(fields),
                row.get("when"),  # type: ignore[arg-type]
                row.get("max_rows"),  # type: ignore[arg-type]
                row.get("meta", {}),
                row.get("description", ""),
            )
        except (TypeError, ValueError) as e:  # SnapshotSpec checks when and dtypes itself
            raise ValueError(str(e)) from None
        check_snapshot(spec, seen)
        out.append(spec)
    return tuple(out)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "..." + text[-2:]
