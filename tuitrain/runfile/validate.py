"""Checking a run file against :mod:`tuitrain.runfile.schema` when it is opened, so that nothing read
from it later can raise: the one place where a run file's types, shapes and links are checked.

Why at open and in one place: ``info``, ``replay --print``, the replay dashboard and a user's script
all read through :class:`~tuitrain.runfile.reader.RunFile`. Once :func:`validate` has passed, their
code may trust that every root attribute has its schema type and a sane value, that every dataset is
a dataset of the right rank and kind of dtype stored in this file, and that the small tables
(/layers, /epochs, /events, /test) hold values they can format. A file that fails gets one
:class:`~tuitrain.runfile.opening.RunFileError` naming the element and what was expected (the CLI
prints it and exits 2) instead of a traceback from wherever the bad value is first used.

What is checked, and what is not:

* Links are never followed out of the file. Every group and dataset the reader uses must be a hard
  link; an external link (or a soft link) in its place is refused without being resolved, and so is a
  dataset whose data lives in other files (external raw storage, a virtual dataset). This runs
  before anything looks a path up, because ``name in group`` already resolves external links.
* What is required is what the file declares (:mod:`tuitrain.runfile.declaration`): the datasets of
  its declared probes and step scalars (a schema-1 file: the gradient probe at /probes and the
  standard scalars). A declared probe whose datasets are missing is refused; a dataset or group the
  file does not declare is ignored (never opened, never followed).
* Root attributes: the type of each is that of its default in ``schema.ROOT_ATTRS`` (and
  ``schema.OPTIONAL_ROOT_ATTRS`` where a file has those), plus the ranges, times, JSON shapes and
  status names declared beside them in the schema.
* Datasets: metadata only for /steps and /probes (which may hold millions of rows and must open in
  milliseconds); contents too for the small tables. Rows of a live file appended after opening come
  from the writer and are not checked again. Columns of one table may differ in length (a live file
  mid-flush): readers use the shortest, so a column one row short is not an error; /layers columns,
  which are written once, must agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain.runfile import schema as S
from tuitrain.runfile.declaration import (
    Declaration,
    from_attrs,
    parse_probes,
    parse_snapshots,
    parse_step_scalars,
    parse_tables,
)
from tuitrain.runfile.layout import growing_datasets
from tuitrain.runfile.opening import RunFileError, guard, one_line, read_root_attrs
from tuitrain.runfile.snapshots import check as check_snapshots
from tuitrain.runfile.tables import check_epochs, check_events, check_findings, check_layers, check_modules


@dataclass
class Checked:
    """What :func:`validate` read: the root attributes as plain Python values, the file's declaration,
    an open handle to every dataset it checked (opening one costs ~0.1-0.2 ms; the reader keeps these)
    and the tables (group -> its column paths) the reader counts rows over."""

    attrs: dict[str, Any]
    datasets: dict[str, h5py.Dataset]
    declaration: Declaration
    tables: dict[str, tuple[str, ...]]


def validate(path: Path, f: h5py.File) -> Checked:
    """The root attributes and dataset handles of ``f``, once the whole file matches the schema.

    Raises :class:`RunFileError` naming the first element that does not.
    """
    attrs = read_root_attrs(path, f)  # format, schema version, no attribute missing; no link resolved
    out = dict(attrs)
    for name, default in _declared_attrs().items():
        if name in attrs:
            out[name] = _attr(path, name, attrs[name], default)
    decl = _declaration(path, out)
    specs = _dataset_specs(decl)
    _check_links(path, f, decl, specs)  # before any `p in f`, which would follow an external link
    ds = _check_datasets(path, f, specs, decl)
    _check_test(path, f)
    with guard(path, "the small tables"):
        check_layers(path, ds)
        check_epochs(path, ds)
        check_events(path, ds)
        if decl.has_table(S.MODULES):
            check_modules(path, ds)
        if decl.has_table(S.FINDINGS):
            check_findings(path, ds)
    tables: dict[str, list[str]] = {}
    for p, (_, _, required) in specs.items():
        group = p.rpartition("/")[0]
        if required and group not in (S.LAYERS, S.MODULES):  # fixed tables: no rows to count
            tables.setdefault(group, []).append(p)
    snap_tables = check_snapshots(path, f, decl.snapshots)  # /snapshots/<name>/ (runfile/snapshots.py)
    return Checked(out, ds, decl, {**{g: tuple(ps) for g, ps in tables.items()}, **snap_tables})


def _declaration(path: Path, attrs: dict[str, Any]) -> Declaration:
    """The file's declaration; a schema-2 attribute that does not describe probes or scalars is named."""
    if int(attrs["schema_version"]) >= 2:
        for name, parse in (("probes", parse_probes), ("step_scalars", parse_step_scalars)):
            try:
                parse(attrs[name])
            except (ValueError, TypeError, RecursionError) as e:
                raise RunFileError(
                    f"{path}: attribute `{name}` does not declare {name.replace('_', ' ')}: {one_line(e)[:120]} "
                    "(a corrupt run file; docs/run-file.md says what it holds)"
                ) from None
        for name, parse, what in (
            ("tables", parse_tables, "name optional tables"),
            ("snapshots", parse_snapshots, "declare snapshots"),
        ):
            try:
                parse(attrs.get(name, "[]"))
            except (ValueError, TypeError, RecursionError) as e:
                raise RunFileError(
                    f"{path}: attribute `{name}` does not {what}: {one_line(e)[:120]} "
                    "(a corrupt run file; docs/run-file.md says what it holds)"
                ) from None
        cfg = attrs["config_json"]
        try:
            ok = cfg == "" or isinstance(json.loads(cfg), dict)
        except (ValueError, RecursionError):
            ok = False
        if not ok:
            raise RunFileError(
                f"{path}: attribute `config_json` = {_short(cfg)} is not a JSON object or '' (a corrupt run file)"
            )
    return from_attrs(attrs)


# -- links ------------------------------------------------------------------------------------------


# A dataset spec: (schema dtype, columns per row (None: 1-D; -1: one per /layers row, -2: one per
# /modules row, -3: any number), required).
Spec = tuple[np.dtype, "int | None", bool]
PER_LAYER, PER_MODULE, ANY_WIDTH = -1, -2, -3


def _dataset_specs(decl: Declaration) -> dict[str, Spec]:
    """Every dataset the reader may use, by path: /layers, /modules if declared, then the declared
    growable tables (layout's list). A module-axis probe of a file without a module table (none was
    written so, but a file can lose its ``tables`` attribute) may have any width: nothing names its
    columns, and readers then number them."""
    specs: dict[str, Spec] = {S.path(S.LAYERS, n): (dt, None, True) for n, dt in S.LAYER_FIELDS.items()}
    if decl.has_table(S.MODULES):
        specs.update({S.path(S.MODULES, n): (dt, None, True) for n, dt in S.MODULE_FIELDS.items()})
    axes = {decl.probe_group(p.name): p.axis for p in decl.probes}
    for p, g in growing_datasets(decl, -1, ANY_WIDTH).items():
        group, leaf = p.rpartition("/")[::2]
        width = g.width
        if width is not None and axes.get(group) == "tensor":
            width = PER_LAYER  # checked against /layers once it is read
        elif width is not None and axes.get(group) == "module" and decl.has_table(S.MODULES):
            width = PER_MODULE  # checked against /modules once it is read
        optional = group == S.STEPS and leaf in S.OPTIONAL_STEP_FIELDS
        specs[p] = (g.dtype, width, not optional)
    return specs


def _check_links(path: Path, f: h5py.File, decl: Declaration, specs: dict[str, Spec]) -> None:
    groups = [S.LAYERS, S.STEPS, S.PROBES, S.EPOCHS, S.TEST, S.EVENTS]
    groups += [S.METRICS] * (decl.schema_version >= 2)
    groups += list(decl.tables)
    groups += [decl.probe_group(p.name) for p in decl.probes if decl.probe_group(p.name) != S.PROBES]
    holders: dict[str, Any] = {"": f}
    for p in (*groups, *specs):
        parent, _, leaf = p.rpartition("/")
        with guard(path, f"/{p}"):
            holder = holders.get(parent)
            if holder is None:
                continue  # the group is missing or not a group: the required check or _check_datasets says so
            link = holder.get(leaf, getlink=True)
            if isinstance(link, h5py.HardLink) and p in groups:
                obj = holder[leaf]
                if isinstance(obj, h5py.Group):
                    holders[p] = obj
        if link is None or isinstance(link, h5py.HardLink):
            continue
        if isinstance(link, h5py.ExternalLink):
            raise RunFileError(
                f"{path}: /{p} is an external link to {link.filename}:{link.path}; tuitrain never follows "
                "links out of the run file (expected the data itself, stored in this file)"
            )
        target = getattr(link, "path", "")
        raise RunFileError(
            f"{path}: /{p} is a soft link to {target}; expected the data itself, stored under /{p}"
        )


# -- root attributes --------------------------------------------------------------------------------


def _declared_attrs() -> dict[str, object]:
    """Every root attribute with a declared type: schema 1's, plus the ones newer files add."""
    return {**S.ROOT_ATTRS, **S.OPTIONAL_ROOT_ATTRS}


def _plain(value: Any) -> Any:
    """An attribute as a Python value: numpy scalars unwrapped, bytes decoded (None if not UTF-8)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value


def _attr(path: Path, name: str, raw: Any, default: object) -> Any:
    """One root attribute checked against its declared type and range, as a plain Python value."""
    kind = float if default is None or isinstance(default, float) else type(default)
    value = _plain(raw)
    shown = _short(value if value is not None else raw)

    def bad(expected: str) -> RunFileError:
        return RunFileError(f"{path}: attribute `{name}` = {shown} is not {expected} (a corrupt run file)")

    if isinstance(raw, np.ndarray) and raw.shape != ():
        raise bad(f"one value (it is an array of shape {raw.shape}); expected {_kind_text(kind)}")
    if kind is str:
        if not isinstance(value, str):
            raise bad("UTF-8 text")
        if name == "status" and value not in S.STATUSES:
            raise bad(f"a run status ({', '.join(S.STATUSES)})")
        if name in S.JSON_ATTRS:
            _json_attr(path, name, value, bad)
        return value
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        lo, hi = S.INT_ATTR_RANGES.get(name, (-(2**63), 2**63 - 1))
        if not lo <= value <= hi:
            raise bad(f"in range: expected an integer in [{lo}, {hi}]")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise bad("a number")
    value = float(value)
    if name in S.TIME_ATTRS:
        nan_ok = name in S.TIME_ATTRS_UNSET_NAN
        if not _time_ok(value, nan_ok):
            raise bad(f"a time: expected Unix seconds in [{_time_range()}]" + (" or NaN" if nan_ok else ""))
    return value


def _json_attr(path: Path, name: str, text: str, bad: Any) -> None:
    try:
        data = json.loads(text or S.ROOT_ATTRS[name])
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise bad(f"valid JSON ({one_line(e)[:80]})") from None
    want = S.JSON_ATTRS[name]
    if not isinstance(data, want):
        raise bad(f"a JSON {'object' if want is dict else 'list'}")
    if name == "module_summary":
        for row in data:
            ok = isinstance(row, dict) and all(
                isinstance(row.get(k), t) and not isinstance(row.get(k), bool)
                for k, t in S.MODULE_SUMMARY_FIELDS.items()
            )
            flops = row.get("flops", 0) if isinstance(row, dict) else 0
            if not ok or not isinstance(flops, int) or isinstance(flops, bool):
                fields = ", ".join(f"{k} ({t.__name__})" for k, t in S.MODULE_SUMMARY_FIELDS.items())
                raise bad(f"a list of modules: row {_short(row)} lacks {fields} or an integer flops")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "..." + text[-2:]


def _kind_text(kind: type) -> str:
    return {str: "text", int: "an integer", float: "a number"}[kind]


def _time_range() -> str:
    lo, hi = S.TIME_RANGE
    return f"{lo:g}, {hi:g}"


def _time_ok(t: float, nan_ok: bool = True) -> bool:
    if math.isnan(t):
        return nan_ok
    lo, hi = S.TIME_RANGE
    return lo <= t <= hi


# -- datasets ---------------------------------------------------------------------------------------


def _dtype_kind(dt: np.dtype) -> str:
    if dt == S.STR or dt.kind == "S":
        return "text"
    return "integer" if dt.kind in "iu" else "float"


def _matches(dt: np.dtype, want: str) -> bool:
    if want == "text":
        return h5py.check_string_dtype(dt) is not None
    if want == "integer":
        return dt.kind in "iu"
    return dt.kind == "f"


def _check_datasets(
    path: Path, f: h5py.File, specs: dict[str, Spec], decl: Declaration
) -> dict[str, h5py.Dataset]:
    n_layers: int | None = None
    n_mods: int | None = None
    handles: dict[str, h5py.Dataset] = {}
    missing: list[str] = []
    for p, (dt, width, required) in specs.items():
        rank = 1 if width is None else 2
        with guard(path, f"/{p}"):
            obj = f.get(p)  # links were checked: hard links only
            if obj is None:  # an optional column an older file lacks is fine; a required one is not
                if required:
                    missing.append(f"/{p}")
                continue
            want = _dtype_kind(dt)
            expected = f"a {rank}-D dataset of {want} values"
            if not isinstance(obj, h5py.Dataset):
                what = "a group" if isinstance(obj, h5py.Group) else type(obj).__name__
                raise RunFileError(f"{path}: /{p} is {what}; expected {expected}")
            if obj.is_virtual or obj.external:
                how = "a virtual dataset" if obj.is_virtual else "external storage"
                raise RunFileError(
                    f"{path}: /{p} keeps its data in other files ({how}); tuitrain never reads outside "
                    "the run file (expected the data stored in this file)"
                )
            if obj.ndim != rank:
                raise RunFileError(f"{path}: /{p} has shape {obj.shape}; expected {expected}")
            if not _matches(obj.dtype, want):
                held = "text" if h5py.check_string_dtype(obj.dtype) is not None else f"dtype {obj.dtype}"
                raise RunFileError(f"{path}: /{p} holds {held}; expected {expected}")
            if p.startswith(S.LAYERS + "/"):
                if n_layers is None:
                    n_layers = int(obj.shape[0])
                elif obj.shape[0] != n_layers:
                    raise RunFileError(
                        f"{path}: /{p} has {obj.shape[0]} rows, /layers/name {n_layers}; expected one row "
                        "per parameter tensor in every /layers column"
                    )
            if p.startswith(S.MODULES + "/"):
                if n_mods is None:
                    n_mods = int(obj.shape[0])
                elif obj.shape[0] != n_mods:
                    raise RunFileError(
                        f"{path}: /{p} has {obj.shape[0]} rows, /modules/name {n_mods}; expected one row "
                        "per probed module in every /modules column"
                    )
            if width == PER_LAYER and n_layers is not None and obj.shape[1] != n_layers:
                raise RunFileError(
                    f"{path}: /{p} has shape {obj.shape}; expected (rows, {n_layers}), a column per layer"
                )
            if width == PER_MODULE and n_mods is not None and obj.shape[1] != n_mods:
                raise RunFileError(
                    f"{path}: /{p} has shape {obj.shape}; expected (rows, {n_mods}), a column per module"
                )
            if width is not None and width >= 0 and obj.shape[1] != width:
                raise RunFileError(f"{path}: /{p} has shape {obj.shape}; expected (rows, {width})")
            handles[p] = obj
    if missing:
        declared = [t for t in decl.tables if any(m.startswith(f"/{t}/") for m in missing)]
        if declared:
            raise RunFileError(
                f"{path}: the file declares the table /{declared[0]} (root attribute `tables`) but lacks "
                f"{', '.join(m for m in missing if m.startswith(f'/{declared[0]}/'))[:200]}; "
                "an incomplete or corrupt run file"
            )
        raise RunFileError(f"{path}: incomplete or corrupt run file, missing {', '.join(missing[:4])}")
    return handles


def _check_test(path: Path, f: h5py.File) -> None:
    with guard(path, f"/{S.TEST}"):
        g = f.get(S.TEST)
        if not isinstance(g, h5py.Group):
            raise RunFileError(f"{path}: /{S.TEST} is missing or not a group; expected a group of attributes")
        for key in S.TEST_ATTRS:
            if key not in g.attrs:
                continue  # the test never ran: NaN
            value = _plain(g.attrs[key])
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and key == "time":
                ok = _time_ok(float(value))
            if not ok:
                raise RunFileError(
                    f"{path}: /{S.TEST} attribute `{key}` = {_short(value)} is not "
                    + ("a time (Unix seconds, or NaN)" if key == "time" else "a number")
                )
