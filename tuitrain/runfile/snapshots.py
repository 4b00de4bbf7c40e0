"""Snapshots in the run file (issue 12): ``/snapshots/<name>/`` per declared
:class:`~tuitrain.events.SnapshotSpec`, written, read back and checked.

Layout (docs/run-file.md): one group per spec (attributes ``when``, ``max_rows``, ``description``,
``meta`` as JSON text, ``dropped_rows``), holding ``epoch`` (rows,) int32, ``step`` (rows,) int64 and one
dataset per field shaped ``(rows, *field.shape)`` in the field's dtype. Every dataset is created with the
file (SWMR allows none later), shape ``(0, ...)``, growable without limit: the cap is the declared
``max_rows``, which the writer never writes past, and which a resumed run raises by its own plan's rows
(:func:`resumed_specs`: each part of a run adds at most its ``monitor.snapshot_mb``). A run without
snapshots gets no /snapshots group at all (its root attribute ``snapshots`` is ``"[]"``).

Chunks: about :data:`~tuitrain.runfile.schema.SNAPSHOT_CHUNK_BYTES` per chunk and never under one row,
spread evenly over ``max_rows``. A weight row (a 64-kernel conv, a 48x48 boundary) is one row per chunk
or close to it, so each per-epoch snapshot is a whole-chunk write; a row of a few bytes (a test point, a
misclassified sample's labels, the epoch and step columns) shares a chunk with its neighbours, else
2000 points would be 2000 chunks whose index outweighs their data. Uncompressed, like the rest of the
file (schema.py says why): a rewritten partial chunk stays where it is under SWMR.

Split from :mod:`tuitrain.runfile.reader` and :mod:`tuitrain.runfile.validate` like
:mod:`tuitrain.runfile.tables`: the reader's functions take a ``read(path, selection)`` callable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from tuitrain.events import Snapshot, SnapshotSpec
from tuitrain.runfile import schema as S
from tuitrain.runfile.opening import RunFileError, guard

if TYPE_CHECKING:
    from tuitrain.runfile.reader import RunFile

Read = Callable[[str, Any], Any]


@dataclass(frozen=True)
class SnapshotRows:
    """Every stored row of one snapshot: ``epoch`` (n,) int32 (-1: before training), ``step`` (n,)
    int64, ``arrays[field]`` (n, *field.shape) in the field's dtype. What report/ draws from."""

    spec: SnapshotSpec
    epoch: np.ndarray
    step: np.ndarray
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.epoch.shape[0])

    def latest(self) -> SnapshotRows:
        """The rows taken at the last step: a "start" or "end" snapshot is one event of many rows, and a
        resumed run's file holds one such group per part (each part's end: the last is the run's)."""
        if not len(self):
            return self
        keep = self.step == self.step[-1]
        return SnapshotRows(
            self.spec, self.epoch[keep], self.step[keep], {k: v[keep] for k, v in self.arrays.items()}
        )


def group(name: str) -> str:
    """``snapshots/<name>`` (the name escaped like every dataset name: schema.path)."""
    return S.path(S.SNAPSHOTS, name)


def columns(spec: SnapshotSpec) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """The datasets of a spec by path: epoch, step, then its fields; (dtype, shape per row)."""
    g = group(spec.name)
    out = {
        S.path(g, "epoch"): (S.SNAPSHOT_EPOCH_DTYPE, ()),
        S.path(g, "step"): (S.SNAPSHOT_STEP_DTYPE, ()),
    }
    for f in spec.fields:
        out[S.path(g, f.name)] = (np.dtype(f.dtype), tuple(f.shape))
    return out


def chunk_rows(row_bytes: int, max_rows: int) -> int:
    """Rows per chunk for rows of ``row_bytes`` (see the module docstring), balanced so that the last
    chunk is about as full as the others (the allocated rows exceed ``max_rows`` by < one per chunk)."""
    c = max(1, min(max_rows, S.SNAPSHOT_CHUNK_BYTES // max(row_bytes, 1)))
    n_chunks = -(-max_rows // c)
    return -(-max_rows // n_chunks)


# -- writing ------------------------------------------------------------------------------------------


def create(f: h5py.File, specs: tuple[SnapshotSpec, ...]) -> None:
    """The groups and empty datasets of ``specs`` (before SWMR); nothing at all for no specs."""
    if not specs:
        return
    root = f.require_group(S.SNAPSHOTS)
    for spec in specs:
        g = root.create_group(S.escape(spec.name))
        g.attrs["when"] = spec.when
        g.attrs["max_rows"] = int(spec.max_rows)
        g.attrs["description"] = spec.description
        g.attrs["meta"] = json.dumps(
            spec.meta, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)
        )
        g.attrs["dropped_rows"] = np.int64(0)  # created now: SWMR may change an attribute, not add one
        for p, (dt, tail) in columns(spec).items():
            per_row = int(np.prod(tail, dtype=np.int64)) * dt.itemsize
            g.create_dataset(
                p.rpartition("/")[2],
                (0, *tail),
                dtype=dt,
                maxshape=(None, *tail),  # the cap is max_rows, raised by a resumed run's plan
                chunks=(chunk_rows(per_row, spec.max_rows), *tail),
            )


def same_specs(have: tuple[SnapshotSpec, ...], new: tuple[SnapshotSpec, ...]) -> bool:
    """Whether a resumed run (``new``) takes the snapshots a file (``have``) holds: the same names,
    ``when`` and fields (name, shape, dtype). Meta and max_rows may differ: the file keeps its own."""

    def key(specs: tuple[SnapshotSpec, ...]) -> set[tuple[Any, ...]]:
        return {(s.name, s.when, tuple((f.name, tuple(f.shape), f.dtype) for f in s.fields)) for s in specs}

    return bool(have) and key(have) == key(new)


def resumed_specs(
    f: h5py.File, have: tuple[SnapshotSpec, ...], new: tuple[SnapshotSpec, ...]
) -> tuple[SnapshotSpec, ...]:
    """The file's specs once a resumed run (``new``) continues them (before SWMR): each keeps its
    fields and meta, and its ``max_rows`` becomes the rows it holds plus the rows the resumed run's
    plan gives it (more epochs: more rows; the end snapshot: a second group of rows, the resumed
    end's). Group attributes are updated here; the caller writes the root attribute. Unchanged when
    the resumed run takes other snapshots (then it takes none: :class:`SnapshotStore`)."""
    if not same_specs(have, new):
        return have
    planned = {s.name: s.max_rows for s in new}
    out = []
    for spec in have:
        rows = int(f[S.path(group(spec.name), "epoch")].shape[0])
        cap = rows + planned[spec.name]
        f[group(spec.name)].attrs["max_rows"] = cap
        out.append(replace(spec, max_rows=cap))
    return tuple(out)


def cut(f: h5py.File, specs: tuple[SnapshotSpec, ...]) -> None:
    """Cut each spec's datasets to the shortest (a flush cut short by a full disk), before SWMR, so a
    resumed run appends aligned rows."""
    for spec in specs:
        paths = list(columns(spec))
        n = min(int(f[p].shape[0]) for p in paths)
        for p in paths:
            if f[p].shape[0] != n:
                f[p].resize(n, axis=0)


class SnapshotStore:
    """The writer's side: checks each Snapshot event against what the run declared (``declared``,
    RunStarted.snapshots) and appends its rows to the file's datasets (``in_file``: the file's
    declaration; a new file's is ``declared``, a resumed file keeps its own and records the run's
    snapshots only when they are the same: :func:`same_specs`). Rows past a spec's ``max_rows`` are
    dropped and counted in the group attribute ``dropped_rows``, written with the event that dropped
    them (the event is flushed at once anyway, so no attribute write waits for a later flush).

    A Snapshot the run did not declare, or whose arrays do not fit its spec, is a ValueError and
    nothing of it is written: the events come from tuitrain's own engine (or a user's code calling
    ``emit``), so such an event is a bug to surface, not data to store half of or skip quietly."""

    def __init__(
        self, f: h5py.File, declared: tuple[SnapshotSpec, ...], in_file: tuple[SnapshotSpec, ...], where: str
    ) -> None:
        self.where = where
        self.specs = {s.name: s for s in declared}
        recorded = in_file if same_specs(in_file, declared) else ()
        self.groups = {s.name: f[group(s.name)] for s in recorded}
        # Every dataset stays open for the writer's life, as the columns do: a dataset object dropped
        # after each write is closed by HDF5 there and then, which writes its cached chunk from a
        # destructor; on a full disk that error is swallowed ("Exception ignored in __dealloc__") and
        # the library is left broken (SIGSEGV at exit, seen in tests/faults/test_exit_codes.py).
        self.datasets = {
            s.name: {leaf: self.groups[s.name][leaf] for leaf in (p.rpartition("/")[2] for p in columns(s))}
            for s in recorded
        }
        self.rows = {name: int(g["epoch"].shape[0]) for name, g in self.groups.items()}
        self.cap = {  # the declared cap (files of the first day of issue 12 also had it as their maxshape)
            s.name: min(s.max_rows, g["epoch"].maxshape[0] or s.max_rows)
            for s in recorded
            for g in (self.groups[s.name],)
        }
        self.dropped = {name: int(g.attrs.get("dropped_rows", 0)) for name, g in self.groups.items()}

    def put(self, ev: Snapshot) -> int:
        """Write the rows of ``ev`` (not flushed); returns the bytes written. ValueError, before anything
        is written, for a snapshot the run did not declare or arrays that do not fit its spec: a bug in
        the code that made the event, not something to record half of."""
        spec = self.specs.get(ev.name)
        if spec is None:
            known = ", ".join(self.specs) or "none"
            raise ValueError(
                f"{self.where}: a Snapshot {ev.name!r} that RunStarted.snapshots did not declare (declared: {known})"
            )
        data = checked_arrays(spec, ev)
        g = self.groups.get(ev.name)
        if g is None:  # a resumed run whose snapshots differ from the file's: documented, not recorded
            return 0
        m = int(data["epoch"].shape[0])
        n = self.rows[ev.name]
        keep = max(0, min(m, self.cap[ev.name] - n))
        if keep < m:
            self.dropped[ev.name] += m - keep
            g.attrs["dropped_rows"] = np.int64(self.dropped[ev.name])
        if not keep:
            return 0
        for leaf, a in data.items():
            ds = self.datasets[ev.name][S.escape(leaf)]
            ds.resize(n + keep, axis=0)
            ds[n : n + keep] = a[:keep]
        self.rows[ev.name] = n + keep
        return keep * spec.row_bytes


def checked_arrays(spec: SnapshotSpec, ev: Snapshot) -> dict[str, np.ndarray]:
    """``ev``'s rows as the file stores them: ``epoch``, ``step`` and each field cast to its declared
    dtype (a same-kind cast: float64 to float16 is fine, float to int is a ValueError)."""
    want = {f.name for f in spec.fields}
    got = set(ev.arrays)
    if got != want:
        raise ValueError(
            f"Snapshot {ev.name!r} has arrays {sorted(got)}; its spec declares the fields {sorted(want)}"
        )
    out: dict[str, np.ndarray] = {}
    m: int | None = None
    for f in spec.fields:
        a = np.asarray(ev.arrays[f.name])
        dt = np.dtype(f.dtype)
        if (
            a.ndim != len(f.shape) + 1
            or tuple(a.shape[1:]) != tuple(f.shape)
            or (m is not None and a.shape[0] != m)
        ):
            raise ValueError(
                f"Snapshot {ev.name!r} field {f.name!r} has shape {a.shape}; expected (rows, "
                f"{', '.join(map(str, f.shape))}) with the same rows in every field"
            )
        if not np.can_cast(a.dtype, dt, "same_kind"):
            raise ValueError(
                f"Snapshot {ev.name!r} field {f.name!r} is {a.dtype}; it cannot be stored as {dt}"
            )
        m = int(a.shape[0])
        out[f.name] = np.ascontiguousarray(a, dt)
    rows = m or 0
    return {
        "epoch": np.full(rows, int(ev.epoch), S.SNAPSHOT_EPOCH_DTYPE),
        "step": np.full(rows, int(ev.step), S.SNAPSHOT_STEP_DTYPE),
        **out,
    }


# -- reading (tuitrain.runfile.reader) -----------------------------------------------------------------


def read_rows(read: Read, spec: SnapshotSpec, start: int, stop: int) -> SnapshotRows:
    """Rows ``[start, stop)`` of ``spec`` (``stop``: the rows every column has)."""
    sel = slice(start, max(start, stop))
    cols = {p.rpartition("/")[2]: read(p, sel) for p in columns(spec)}
    arrays = {f.name: cols[S.escape(f.name)] for f in spec.fields}
    return SnapshotRows(spec, cols["epoch"], cols["step"], arrays)


def events(rf: RunFile, name: str, start: int, t: float) -> list[Snapshot]:
    """The Snapshot events of ``name`` for rows from ``start`` on (FileSource, to_events): a per-epoch
    spec gives one event per row (m = 1, that row's epoch and step); a "start"/"end" spec gives one
    event with ALL its rows (so the latest such event is the whole snapshot, also when a live file is
    read mid-write), or none when no row is new. ``t``: the events' time (not stored per row)."""
    n = rf.n_snapshot_rows(name)
    if n <= start:
        return []
    spec = rf.snapshot_specs[name]
    if spec.when != "epoch":  # its last group of rows (a resumed run's end replaces the first part's)
        ev = rf.snapshot(name)
        return [] if ev is None else [Snapshot(ev.name, ev.epoch, ev.step, ev.arrays, t)]
    r = rf.snapshot_rows(name, start)
    assert r is not None
    return [
        Snapshot(name, int(r.epoch[i]), int(r.step[i]), {k: v[i : i + 1] for k, v in r.arrays.items()}, t)
        for i in range(len(r))
    ]


# -- checks at open (tuitrain.runfile.validate) --------------------------------------------------------


def check(path: Path, f: h5py.File, specs: tuple[SnapshotSpec, ...]) -> dict[str, tuple[str, ...]]:
    """Every declared snapshot dataset exists in this file (hard links only, never followed out of it)
    with the declared per-row shape and dtype and no more rows than ``max_rows``; its columns are of
    one length (a live file, read mid-write, may differ: readers use the shortest). Returns each
    spec's group -> its dataset paths (the reader counts rows over them). RunFileError otherwise."""
    out: dict[str, tuple[str, ...]] = {}
    if not specs:
        return out
    live = f.swmr_mode
    root = _hard(path, f, S.SNAPSHOTS, h5py.Group, "a group")
    for spec in specs:
        g = _hard(path, root, S.escape(spec.name), h5py.Group, "a group", f"/{group(spec.name)}")
        lengths = {}
        for p, (dt, tail) in columns(spec).items():
            leaf = p.rpartition("/")[2]
            expected = f"(rows, {', '.join(map(str, tail))}) {dt}" if tail else f"(rows,) {dt}"
            why = f"expected {expected} as the root attribute `snapshots` declares"
            ds = _hard(path, g, leaf, h5py.Dataset, f"a dataset: {why}", f"/{p}")
            with guard(path, f"/{p}"):
                if ds.is_virtual or ds.external:
                    raise RunFileError(f"{path}: /{p} keeps its data in other files; expected it stored here")
                if ds.ndim != len(tail) + 1 or tuple(ds.shape[1:]) != tail:
                    raise RunFileError(f"{path}: /{p} has shape {ds.shape}; {why}")
                if ds.dtype != dt:
                    raise RunFileError(f"{path}: /{p} holds {ds.dtype}; {why}")
                if ds.shape[0] > spec.max_rows:
                    raise RunFileError(
                        f"{path}: /{p} has {ds.shape[0]} rows, over the max_rows {spec.max_rows} its spec declares"
                    )
            lengths[p] = int(ds.shape[0])
        if not live and len(set(lengths.values())) > 1:
            raise RunFileError(
                f"{path}: the columns of /{group(spec.name)} differ in length ("
                + ", ".join(f"{p.rpartition('/')[2]} {n}" for p, n in lengths.items())
                + "); expected one row per snapshot in every column"
            )
        out[group(spec.name)] = tuple(lengths)
    return out


def _hard(path: Path, holder: h5py.Group, leaf: str, kind: type, what: str, shown: str = "") -> Any:
    shown = shown or f"/{leaf}"
    with guard(path, shown):
        link = holder.get(leaf, getlink=True)
        if link is None:
            raise RunFileError(
                f"{path}: the file declares snapshots (root attribute `snapshots`) but lacks {shown}; "
                "an incomplete or corrupt run file"
            )
        if not isinstance(link, h5py.HardLink):
            raise RunFileError(f"{path}: {shown} is a link; expected the data itself, stored under {shown}")
        obj = holder[leaf]
    if not isinstance(obj, kind):
        raise RunFileError(f"{path}: {shown} is not {what}")
    return obj
