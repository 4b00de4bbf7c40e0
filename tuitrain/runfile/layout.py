"""The layout of a new run file: root attributes, the fixed ``/layers`` table and every growable
dataset, all created at once when :class:`~tuitrain.events.RunStarted` arrives (SWMR allows no new
datasets later). Names, dtypes and chunk sizes are :mod:`tuitrain.runfile.schema`'s; the meaning of
each is in docs/run-file.md. Split from the writer, which owns when and how rows are written."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import h5py
import numpy as np

from tuitrain import __version__
from tuitrain.events import PROBE_NAMES, RunStarted
from tuitrain.runfile import schema as S
from tuitrain.runfile.columns import Column, h5dtype
from tuitrain.runfile.opening import start_ticks


def create_layout(f: h5py.File, ev: RunStarted) -> dict[str, Column]:
    """Write the root attributes and layers of ``ev`` into the empty file ``f``; create every table and
    return its columns by path (``"steps/loss"``), ready for rows."""
    cols: dict[str, Column] = {}
    attrs: dict[str, Any] = dict(S.ROOT_ATTRS)
    attrs.update(
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
        status="running",
        writer_pid=os.getpid(),
        writer_host=socket.gethostname(),
        writer_start_ticks=start_ticks("self") or 0,
    )
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

    def table(group: str, fields: dict[str, np.dtype], chunk: int) -> None:
        grp = f.create_group(group)
        for name, dt in fields.items():
            ds = grp.create_dataset(name, (0,), dtype=h5dtype(dt), maxshape=(None,), chunks=(chunk,))
            cols[S.path(group, name)] = Column(ds, ds.dtype)  # keeps the UTF-8 tag

    table(S.STEPS, {**S.STEP_FIELDS, **S.OPTIONAL_STEP_FIELDS}, S.STEP_CHUNK)
    table(S.EPOCHS, S.EPOCH_FIELDS, S.EPOCH_CHUNK)
    table(S.EVENTS, S.EVENT_FIELDS, S.EVENT_CHUNK)

    pg = f.create_group(S.PROBES)
    ds = pg.create_dataset("step", (0,), dtype=S.PROBE_STEP_DTYPE, maxshape=(None,), chunks=(S.STEP_CHUNK,))
    cols[S.path(S.PROBES, "step")] = Column(ds, S.PROBE_STEP_DTYPE)
    rows = S.probe_chunk_rows(n_layers)
    for name in PROBE_NAMES:
        ds = pg.create_dataset(
            name,
            (0, n_layers),
            dtype=S.PROBE_DTYPE,
            maxshape=(None, n_layers if n_layers else None),
            chunks=(rows, max(n_layers, 1)),
        )
        cols[S.path(S.PROBES, name)] = Column(ds, S.PROBE_DTYPE, (n_layers,), cap=rows)

    tg = f.create_group(S.TEST)
    for key, value in S.TEST_ATTRS.items():
        tg.attrs[key] = value
    return cols


def _jsonable(o: Any) -> Any:
    """numpy scalars (params, flops counted with numpy) as numbers, anything else as its text."""
    return o.item() if isinstance(o, np.generic) else str(o)
