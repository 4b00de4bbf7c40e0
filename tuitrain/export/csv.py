"""A run file as tidy CSV tables: one file per table, one row per observation (docs/export.md).

Why this shape: a spreadsheet, pandas or R reads each table with no knowledge of HDF5, and every
number survives the trip. Floats are written with ``repr`` (the shortest text that parses back to
the same float64, so float32 probe values come back bit-equal after a cast to float32); NaN (not
measured, or not logged at that step) is an empty cell; +-Inf are ``inf``/``-inf``.

Nothing in DIR is replaced unless asked: :func:`export_csv` first works out every file it will write
and refuses (:class:`ExportError` naming them) when any already exists.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tuitrain.runfile.reader import RunFile

CHUNK = 65536  # rows read from the run file at a time: a 1,000,000-step run never sits in memory twice

Rows = Callable[[], Iterator[list[Any]]]


class ExportError(Exception):
    """Bad input for an export (a file that exists, a DIR that is a file): one paragraph for the CLI."""


def cell(value: Any) -> str:
    """One CSV cell: floats by ``repr`` (exact), NaN empty, None empty, everything else ``str``."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return "" if math.isnan(f) else repr(f)
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def probe_axis_names(rf: RunFile, axis: str, width: int) -> tuple[str, list[str]]:
    """(column header, item names) of a probe's axis: layers for "tensor", modules for "module"."""
    if axis == "tensor":
        return "layer", [layer.name for layer in rf.layers][:width]
    if axis == "module":
        return "module", [m.name for m in rf.modules][:width]
    return "item", [str(i) for i in range(width)]


def chunks(n: int) -> Iterator[slice]:
    for a in range(0, n, CHUNK):
        yield slice(a, min(n, a + CHUNK))


def _steps_rows(rf: RunFile) -> Iterator[list[Any]]:
    names = ("step", "epoch", *rf.step_scalars)
    for sl in chunks(rf.n_steps):
        cols = [rf.scalar(name, sl.start, sl.stop) for name in names]
        for i in range(sl.stop - sl.start):
            yield [c[i] for c in cols]


def _probe_rows(
    rf: RunFile, probe: str, names: list[str], quantities: tuple[str, ...]
) -> Iterator[list[Any]]:
    for sl in chunks(rf.probe_rows(probe)):
        steps = rf.probe_steps(sl, probe=probe)
        values = [rf.probe(q, sl, probe=probe) for q in quantities]
        for k in range(len(steps)):
            for j, item in enumerate(names):
                yield [steps[k], item, *(v[k, j] for v in values)]


def _metrics_rows(rf: RunFile) -> Iterator[list[Any]]:
    from tuitrain.runfile import schema as S

    for scope in S.METRIC_SCOPES:
        for key, (steps, epochs, values) in rf.metrics(scope).items():
            for s, e, v in zip(steps.tolist(), epochs.tolist(), values.tolist(), strict=True):
                yield [scope, key, s, e, float(v)]


def probe_width(rf: RunFile, probe: str, axis: str) -> int:
    if axis == "tensor":
        return rf.n_layers
    if axis == "module":
        return len(rf.modules)
    q = rf.probe_specs[[p.name for p in rf.probe_specs].index(probe)].names[0]
    return int(rf.probe(q, slice(0, 1), probe=probe).shape[1]) if rf.probe_rows(probe) else 0


def csv_tables(rf: RunFile) -> dict[str, tuple[list[str], Rows]]:
    """Every table this file has, by file name: (header, a function yielding its rows). Tables that
    the file does not have are left out (findings for older files, test for an untested run)."""
    out: dict[str, tuple[list[str], Rows]] = {}
    out["steps.csv"] = (["step", "epoch", *rf.step_scalars], lambda: _steps_rows(rf))
    ep = rf.epochs()
    ep_cols = list(ep)
    out["epochs.csv"] = (
        ep_cols,
        lambda: iter([[ep[c][i] for c in ep_cols] for i in range(len(ep["epoch"]))]),
    )
    for spec in rf.probe_specs:
        header, names = probe_axis_names(rf, spec.axis, probe_width(rf, spec.name, spec.axis))
        out[f"probe_{spec.name}.csv"] = (
            ["step", header, *spec.names],
            lambda spec=spec, names=names: _probe_rows(rf, spec.name, names, spec.names),
        )
    out["metrics.csv"] = (["scope", "key", "step", "epoch", "value"], lambda: _metrics_rows(rf))
    events = rf.events()
    ev_cols = ["step", "time", "level", "kind", "message"]
    out["events.csv"] = (ev_cols, lambda: iter([[e[c] for c in ev_cols] for e in events]))
    if rf.has_findings:
        out["findings.csv"] = (FINDING_COLUMNS, lambda: iter([_finding_row(f) for f in rf.findings()]))
    test = rf.test()
    if math.isfinite(test["time"]):
        rows = [[k, v] for k, v in test.items()] + [[k, v] for k, v in rf.test_metrics().items()]
        out["test.csv"] = (["key", "value"], lambda: iter(rows))
    layers = rf.layers
    out["layers.csv"] = (
        ["index", "name", "shape", "numel", "kind", "module", "module_type"],
        lambda: iter(
            [
                [i, la.name, "x".join(str(d) for d in la.shape), la.numel, la.kind, la.module, la.module_type]
                for i, la in enumerate(layers)
            ]
        ),
    )
    modules = rf.modules
    out["modules.csv"] = (
        ["index", "name", "type", "kind"],
        lambda: iter([[i, m.name, m.type, m.kind] for i, m in enumerate(modules)]),
    )
    return out


FINDING_COLUMNS = [
    "at_step", "kind", "severity", "layer", "first_step", "last_step", "message", "suggestion", "evidence",
]  # fmt: skip


def _finding_row(f: Any) -> list[Any]:
    evidence = {k: (v if math.isfinite(v) else None) for k, v in f.evidence.items()}
    return [
        f.at_step, f.kind, f.severity, f.layer, f.first_step, f.last_step, f.message, f.suggestion,
        json.dumps(evidence, allow_nan=False),
    ]  # fmt: skip


def run_json(rf: RunFile) -> dict[str, Any]:
    """``run.json``: the attributes ``tuitrain info --json`` shows, plus the stored config (TOML for a
    preset, the user's dict for their own loop), the declared step columns and probes. Strict JSON:
    numbers that are not finite are null."""
    s = rf.summary()
    s.update(
        {
            "config_toml": rf.config_toml,
            "user_config": rf.user_config,
            "step_scalars": list(rf.step_scalars),
            "probe_specs": [
                {"name": p.name, "axis": p.axis, "every": p.every, "quantities": list(p.names)}
                for p in rf.probe_specs
            ],
            "tables": list(rf.tables),
        }
    )
    return _strict(s)


def _strict(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if hasattr(o, "tolist"):
        return _strict(o.tolist())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if o is None or isinstance(o, (bool, int, str)):
        return o
    return str(o)


def planned_files(rf: RunFile) -> list[str]:
    """The names :func:`export_csv` writes for this file, in order."""
    return [*csv_tables(rf), "run.json"]


def check_dir(out_dir: Path, names: Iterable[str], overwrite: bool) -> None:
    """Refuse a DIR that is not a folder, or (without ``overwrite``) one that holds any of ``names``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(
            f"{out_dir} exists and is not a folder; give a folder to write the CSV tables into."
        )
    taken = [n for n in names if (out_dir / n).exists()]
    if taken and not overwrite:
        raise ExportError(
            f"{out_dir} already holds {', '.join(taken)}; nothing was written. Export into another "
            "folder, or pass --overwrite to replace these files."
        )


def export_csv(rf: RunFile, out_dir: Path, overwrite: bool = False) -> list[Path]:
    """Write every table of ``rf`` into ``out_dir`` (created); returns the paths written."""
    tables = csv_tables(rf)
    check_dir(out_dir, [*tables, "run.json"], overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (header, rows) in tables.items():
        path = out_dir / name
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows([cell(v) for v in row] for row in rows())
        written.append(path)
    path = out_dir / "run.json"
    path.write_text(json.dumps(run_json(rf), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written.append(path)
    return written
