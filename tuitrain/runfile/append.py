"""Continuing a finished run file (``RunFileWriter(path, append=True)``; ``tuitrain run --resume``).

A resumed run writes into the file it resumes, after its last step, so that one file keeps the whole
history. Only a file that is safe to continue is opened: a schema-2 run file, closed by its writer
(``completed``, ``stopped`` or ``failed``; not a live run nor one whose writer was killed, which HDF5
still marks open for write), with the same parameter tensors and probes as the new run's RunStarted.
Anything else is :class:`AppendRefused`, bad input (exit 2) that names the file and what differs.
The claim rules are the writer's as ever: the run's lock (:class:`~tuitrain.runfile.claim.RunLock`)
is taken before the file is opened, so two resumes of one file cannot both write it.

The file keeps its identity (``started_at``, its rows, its old ``finished`` event); the root
attributes that describe the run's plan (config, epochs, max_steps, device, versions, ...) become the
resumed run's, the status becomes ``running`` (and a ``status`` row says so, for live readers), and
``ended_at``/``error``/``traceback`` are cleared until the run ends again. Step columns the new run
declares that the file lacks cannot be added under SWMR alignment rules: their values go to
``/metrics`` (scope ``step``), as any undeclared key does. A probe the file lacks (the activation
probe, resuming a file from before issue 11) is added, its rows from the resumed step on, with the
``/modules`` table it needs; a file without ``/findings`` gets an empty one. Each is a table of its own
(nothing to align), created before the switch to SWMR, and declared. A probe of the file must stay
as it was (same quantities and ``every``), and so must the probed modules. Snapshots (issue 12) continue
when the resumed run declares the ones the file holds (same names, ``when`` and fields; each cap
``max_rows`` grows by the rows the resumed run's plan gives it, so a part adds at most its own
``monitor.snapshot_mb``); otherwise the resumed part takes none (:mod:`tuitrain.runfile.snapshots`),
never an error: a file from before issue 12 gets no /snapshots.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import h5py

from tuitrain.config import ConfigError
from tuitrain.events import RunStarted
from tuitrain.runfile import schema as S
from tuitrain.runfile import snapshots as snaps
from tuitrain.runfile.columns import Column
from tuitrain.runfile.declaration import Declaration, from_attrs, from_started, probes_json, snapshots_json
from tuitrain.runfile.layout import create_growing, create_modules, growing_datasets, open_columns, run_attrs
from tuitrain.runfile.opening import RunFileError, one_line
from tuitrain.runfile.validate import validate


class AppendRefused(ConfigError):
    """The run file cannot be continued: bad input (exit 2); the file was not changed."""


def check_appendable(path: str | Path) -> None:
    """Refuse (as :class:`AppendRefused`) a ``path`` that :func:`reopen` would refuse before looking at
    the new run: missing, not a readable run file, schema 1, or not finished. Opens read-only; a
    command calls it before training starts (the layers and probes are compared at RunStarted)."""
    p = Path(path)
    f = _open(p, "r")
    try:
        _finished_v2(p, f)
    finally:
        f.close()


def reopen(path: Path, ev: RunStarted) -> tuple[h5py.File, Declaration, dict[str, Column], int]:
    """Open ``path`` for appending the run ``ev`` starts: (file, its declaration, its columns
    positioned after its rows, its last step), switched to SWMR mode."""
    f = _open(path, "r+")
    try:
        decl, attrs = _finished_v2(path, f)
        _same_run(path, f, decl, ev)
        new = from_started(ev)
        decl = _extend(f, decl, ev)
        cols = open_columns(f, decl, int(f["layers/name"].shape[0]), n_modules(f, decl))
        n = cols["steps/step"].n_file
        last = int(f["steps/step"][n - 1]) if n else int(attrs["last_step"])
        # the file's own: what it holds stays what it declared
        keep = {"started_at", "out_path", "probes", "step_scalars", "tables", "module_summary", "snapshots"}
        snaps.cut(f, decl.snapshots)
        grown = snaps.resumed_specs(f, decl.snapshots, tuple(ev.snapshots))  # more epochs: more rows
        if grown != decl.snapshots:
            decl = replace(decl, snapshots=grown)
            f.attrs["snapshots"] = snapshots_json(grown)
        for key, value in run_attrs(
            ev, Declaration(decl.probes, decl.step_scalars, new.source, new.config_json)
        ).items():
            if key not in keep:
                f.attrs[key] = value
        for key, value in (("ended_at", math.nan), ("error", ""), ("traceback", ""), ("last_step", last)):
            f.attrs[key] = value
        f.swmr_mode = True
        return f, decl, cols, last
    except BaseException:
        f.close()
        raise


def _extend(f: h5py.File, decl: Declaration, ev: RunStarted) -> Declaration:
    """What the resumed run adds to the file, declared and created before the switch to SWMR (while
    the file can still get datasets): the probes the file lacks (their rows begin at the resumed step:
    each probe has its own step column) with /modules for a new module-axis probe, and an empty
    /findings table for a file from before issue 11. New tables of their own have no rows to align
    with. Returns the file's declaration from then on; the file's own probes come first."""
    have = {p.name for p in decl.probes}
    added = tuple(p for p in ev.probes if p.name not in have)
    tables = {*decl.tables, S.FINDINGS}
    if any(p.axis == "module" for p in added) and not decl.has_table(S.MODULES):
        create_modules(f, ev.modules)
        tables.add(S.MODULES)
    ext = replace(decl, probes=decl.probes + added, tables=tuple(t for t in S.TABLES if t in tables))
    if ext == decl:
        return decl
    plan = growing_datasets(ext, int(f["layers/name"].shape[0]), n_modules(f, ext))
    create_growing(f, {p: g for p, g in plan.items() if p not in f})
    f.attrs["probes"] = probes_json(ext.probes)
    f.attrs["tables"] = json.dumps(list(ext.tables))
    return ext


def n_modules(f: h5py.File, decl: Declaration) -> int:
    """Columns of the file's module-axis probes: its /modules rows, or (no module table) the width
    their datasets have."""
    if decl.has_table(S.MODULES):
        return int(f[S.path(S.MODULES, "name")].shape[0])
    for p in decl.probes:
        if p.axis == "module":
            return int(f[decl.probe_path(p.name, p.names[0])].shape[1])
    return 0


def _open(path: Path, mode: str) -> h5py.File:
    if not path.is_file():
        raise AppendRefused(f"{path}: no run file to continue (resume appends to an existing run file)")
    try:
        return h5py.File(path, mode, libver="latest") if mode != "r" else h5py.File(path, "r")
    except OSError as e:
        raise AppendRefused(f"{path}: cannot open the run file to continue it: {_why(e)}") from None


def _why(e: OSError) -> str:
    reason = one_line(e)
    if "already open for write" in reason:
        return (
            "it is still marked open by its writer (a run still going, or one whose writer was killed: "
            "continue only a run that ended; `tuitrain info` says which)"
        )
    return reason


def _finished_v2(path: Path, f: h5py.File) -> tuple[Declaration, dict]:
    try:
        attrs = validate(path, f).attrs
    except RunFileError as e:
        raise AppendRefused(str(e)) from None
    version = int(attrs["schema_version"])
    if version < 2:
        raise AppendRefused(
            f"{path}: a run file of schema {version} cannot be continued (its layout is older); "
            "resume into a new --out instead"
        )
    status = str(attrs["status"])
    if status not in S.FINAL_STATUSES:
        raise AppendRefused(
            f"{path}: its status is {status!r}; only a run that ended ({', '.join(S.FINAL_STATUSES)}) "
            "can be continued"
        )
    return from_attrs(attrs), attrs


def _same_run(path: Path, f: h5py.File, decl: Declaration, ev: RunStarted) -> None:
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in f["layers/name"][()]]
    shapes = [x.decode() if isinstance(x, bytes) else str(x) for x in f["layers/shape"][()]]
    want = [(x.name, "x".join(str(d) for d in x.shape)) for x in ev.layers]
    have = list(zip(names, shapes, strict=True))
    if have != want:
        diff = next(
            (
                f"tensor {i}: {h} in the file, {w} now"
                for i, (h, w) in enumerate(zip(have, want, strict=False))
                if h != w
            ),
            f"{len(have)} tensors in the file, {len(want)} now",
        )
        raise AppendRefused(
            f"{path}: the model's parameter tensors differ from the run file's ({diff}); a run file holds "
            "one model: resume with the same model, or into a new --out"
        )
    new = {p.name: p for p in ev.probes}
    if any(new.get(p.name) != p for p in decl.probes):
        have_p = ", ".join(f"{p.name} (every {p.every})" for p in decl.probes) or "none"
        want_p = ", ".join(f"{p.name} (every {p.every})" for p in ev.probes) or "none"
        raise AppendRefused(
            f"{path}: the run's probes ({want_p}) differ from the run file's ({have_p}); resume with the "
            "file's probes (monitor.every and monitor.activations_every included; a probe the file "
            "lacks may be added), or into a new --out"
        )
    if decl.has_table(S.MODULES) and any(p.axis == "module" for p in ev.probes):
        stored = [
            tuple(x.decode() if isinstance(x, bytes) else str(x) for x in f[S.path(S.MODULES, n)][()])
            for n in S.MODULE_FIELDS
        ]
        if list(zip(*stored, strict=True)) != [(m.name, m.type, m.kind) for m in ev.modules]:
            raise AppendRefused(
                f"{path}: the model's probed modules differ from the run file's /modules "
                f"({len(ev.modules)} now, {len(stored[0])} in the file); resume with the same model and "
                "tuitrain version, or into a new --out"
            )
