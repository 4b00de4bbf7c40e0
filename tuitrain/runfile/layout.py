"""The layout of a new run file: root attributes, the fixed ``/layers`` (and ``/modules``) tables and
every growable dataset, all created at once when :class:`~tuitrain.events.RunStarted` arrives (SWMR
allows no new datasets later). Names, dtypes and chunk sizes are :mod:`tuitrain.runfile.schema`'s; which
probes, step columns and optional tables exist is the file's declaration
(:mod:`tuitrain.runfile.declaration`); the meaning of each is in docs/run-file.md. Split from the
writer, which owns when and how rows are written.

:func:`growing_datasets` is the one list of appendable datasets: :func:`create_layout` creates them,
and :func:`open_columns` reopens them to append to a finished file (``RunFileWriter(append=True)``).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain import __version__
from tuitrain.events import ModuleInfo, RunStarted
from tuitrain.runfile import schema as S
from tuitrain.runfile import snapshots as snaps
from tuitrain.runfile.claim import drop_replaced_checkpoint, place, private_temp
from tuitrain.runfile.columns import Column, h5dtype
from tuitrain.runfile.declaration import Declaration, axis_size, from_started, probes_json, snapshots_json
from tuitrain.runfile.diskfull import close_h5
from tuitrain.runfile.opening import start_ticks


@dataclass(frozen=True)
class Growing:
    """One appendable dataset: dtype, columns per row (None: 1-D) and chunk rows."""

    dtype: np.dtype
    width: int | None
    chunk: int


def growing_datasets(decl: Declaration, n_layers: int, n_modules: int) -> dict[str, Growing]:
    """Every appendable dataset of a file with this declaration, by path, in table order (a table is
    the datasets of one group). Schema 1 (``decl.schema_version``): the gradient probe at /probes, no
    /metrics. The writer creates these; the reader and validation require exactly these."""
    out: dict[str, Growing] = {}
    steps = {**S.STEP_INDEX, **S.OPTIONAL_STEP_FIELDS}
    steps.update({name: decl.scalar_dtype(name) for name in decl.step_scalars})
    tables = [
        (S.STEPS, steps, S.STEP_CHUNK),
        (S.EPOCHS, S.EPOCH_FIELDS, S.EPOCH_CHUNK),
        (S.EVENTS, S.EVENT_FIELDS, S.EVENT_CHUNK),
    ]
    if decl.schema_version >= 2:
        tables.append((S.METRICS, S.METRIC_FIELDS, S.METRIC_CHUNK))
    if decl.has_table(S.FINDINGS):
        tables.append((S.FINDINGS, S.FINDING_FIELDS, S.FINDING_CHUNK))
    for group, fields, chunk in tables:
        for name, dt in fields.items():
            out[S.path(group, name)] = Growing(dt, None, chunk)
    for spec in decl.probes:
        out[decl.probe_path(spec.name, "step")] = Growing(S.PROBE_STEP_DTYPE, None, S.STEP_CHUNK)
        width = axis_size(spec.axis, n_layers, n_modules)
        for name in spec.names:
            out[decl.probe_path(spec.name, name)] = Growing(S.PROBE_DTYPE, width, S.probe_chunk_rows(width))
    return out


def run_attrs(ev: RunStarted, decl: Declaration) -> dict[str, Any]:
    """The root attributes a RunStarted sets (and a resumed run sets again, but for ``started_at``)."""
    return dict(
        tuitrain_version=__version__,
        versions=json.dumps(ev.versions, sort_keys=True, default=_jsonable),
        run_name=ev.run_name,
        model_name=ev.model_name,
        dataset=ev.dataset,
        device=ev.device,
        params=int(ev.params),
        flops=int(ev.flops),
        config_toml=ev.config_toml,
        module_summary=json.dumps(ev.module_summary, default=_jsonable),
        epochs=int(ev.epochs),
        steps_per_epoch=int(ev.steps_per_epoch),
        batch_size=int(ev.batch_size),
        num_classes=int(ev.num_classes),
        started_at=float(ev.started_at),
        max_steps=int(ev.max_steps),
        out_path=str(ev.out_path),
        vanishing=float(ev.vanishing),
        exploding=float(ev.exploding),
        source=decl.source,
        probes=probes_json(decl.probes),
        step_scalars=json.dumps(list(decl.step_scalars)),
        tables=json.dumps(list(decl.tables)),
        snapshots=snapshots_json(decl.snapshots),
        config_json=decl.config_json,
        status="running",
        writer_pid=os.getpid(),
        writer_host=socket.gethostname(),
        writer_start_ticks=start_ticks("self") or 0,
    )


def create_file(
    path: Path, ev: RunStarted, overwrite: bool
) -> tuple[h5py.File, Declaration, dict[str, Column]]:
    """Build the file of ``ev`` under a fresh private name beside ``path``, lay it out, switch to SWMR,
    then put it in place (never replacing a file unless ``overwrite``); (file, declaration, columns).
    Any failure leaves no file. ValueError for a declared name that cannot be stored."""
    decl = from_started(ev)
    with private_temp(path) as tmp:
        f = h5py.File(tmp, "w", libver="latest")
        try:
            cols = create_layout(f, ev, decl)
            f.swmr_mode = True  # flushes everything created so far
            place(tmp, path, overwrite)
            if overwrite:
                drop_replaced_checkpoint(path)
        except BaseException:
            close_h5(f, flushed=False)
            raise
    return f, decl, cols


def create_layout(f: h5py.File, ev: RunStarted, decl: Declaration) -> dict[str, Column]:
    """Write the root attributes and layers of ``ev`` into the empty file ``f``; create every table the
    declaration ``decl`` names (:func:`tuitrain.runfile.declaration.from_started`) and return its columns
    by path (``"steps/loss"``, ``"probes/grad/grad_norm"``), ready for rows."""
    attrs: dict[str, Any] = dict(S.ROOT_ATTRS)
    attrs.update(run_attrs(ev, decl))
    for key, value in attrs.items():
        f.attrs[key] = value

    n_layers = len(ev.layers)
    g = f.create_group(S.LAYERS)
    layer_values: dict[str, list[Any]] = {
        "name": [x.name for x in ev.layers],
        "shape": ["x".join(str(d) for d in x.shape) for x in ev.layers],
        "numel": [int(x.numel) for x in ev.layers],
        "kind": [x.kind for x in ev.layers],
        "module": [x.module for x in ev.layers],
        "module_type": [x.module_type for x in ev.layers],
    }
    for name, dt in S.LAYER_FIELDS.items():
        g.create_dataset(
            name, data=np.array(layer_values[name], dtype=dt).reshape(n_layers), dtype=h5dtype(dt)
        )
    if decl.has_table(S.MODULES):
        create_modules(f, ev.modules)
    f.create_group(S.PROBES)  # one group per declared probe inside; none when nothing is watched

    cols = create_growing(f, growing_datasets(decl, n_layers, len(ev.modules)))
    snaps.create(f, decl.snapshots)  # /snapshots/<name>/: not columns, the writer's SnapshotStore fills them
    tg = f.create_group(S.TEST)
    for key, value in S.TEST_ATTRS.items():
        tg.attrs[key] = value
    return cols


def create_modules(f: h5py.File, modules: list[ModuleInfo]) -> None:
    """The fixed /modules table (before SWMR), one row per module."""
    g = f.create_group(S.MODULES)
    for name, dt in S.MODULE_FIELDS.items():
        g.create_dataset(
            name, data=np.array([getattr(m, name) for m in modules], dtype=dt), dtype=h5dtype(dt)
        )


def create_growing(f: h5py.File, plan: dict[str, Growing]) -> dict[str, Column]:
    """Create the appendable datasets of ``plan`` (empty; before SWMR) and return their columns."""
    cols: dict[str, Column] = {}
    for p, spec in plan.items():
        parent = p.rpartition("/")[0]
        grp = f.require_group(parent)
        if spec.width is None:
            ds = grp.create_dataset(
                p.rpartition("/")[2], (0,), dtype=h5dtype(spec.dtype), maxshape=(None,), chunks=(spec.chunk,)
            )
            cols[p] = Column(ds, ds.dtype if spec.dtype.kind == "S" else spec.dtype)  # keeps the UTF-8 tag
        else:
            w = spec.width
            ds = grp.create_dataset(
                p.rpartition("/")[2],
                (0, w),
                dtype=spec.dtype,
                maxshape=(None, w if w else None),
                chunks=(spec.chunk, max(w, 1)),
            )
            cols[p] = Column(ds, spec.dtype, (w,), cap=spec.chunk)
    return cols


def open_columns(f: h5py.File, decl: Declaration, n_layers: int, n_modules: int) -> dict[str, Column]:
    """The columns of an existing schema-2 file, positioned after its rows. Each table is first cut to
    its shortest column, so that a file whose last flush was cut short (a full disk) appends aligned."""
    plan = growing_datasets(decl, n_layers, n_modules)
    cols: dict[str, Column] = {}
    for p, spec in plan.items():
        ds = f[p]
        col = Column(
            ds,
            ds.dtype if spec.dtype.kind == "S" else spec.dtype,
            () if spec.width is None else (spec.width,),
        )
        cols[p] = col
    tables: dict[str, list[str]] = {}
    for p in plan:
        tables.setdefault(p.rpartition("/")[0], []).append(p)
    for paths in tables.values():
        n = min(int(f[p].shape[0]) for p in paths)
        for p in paths:
            ds = f[p]
            if ds.shape[0] != n:
                ds.resize(n, axis=0)
            cols[p].n_file = n
    return cols


def _jsonable(o: Any) -> Any:
    """numpy scalars (params, flops counted with numpy) as numbers, anything else as its text."""
    return o.item() if isinstance(o, np.generic) else str(o)
