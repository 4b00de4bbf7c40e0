"""A run file as pandas DataFrames: ``tuitrain.load("runs/x.h5")`` (issue 12).

For analysis in a notebook with the tools people already know, without h5py. The file is read once,
through :class:`~tuitrain.runfile.reader.RunFile`'s public API only, and closed before ``load``
returns: the result holds no handle, so a live run (SWMR, still being written) can be loaded again
later to see more, and a finished one can be moved or deleted. pandas is an optional extra
(``tuitrain[pandas]``), imported only when ``load`` is called, so ``import tuitrain`` stays light.

This module is named ``frames``, not ``load``: importing a submodule ``tuitrain.load`` would replace
the function ``tuitrain.load`` with the module of the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tuitrain.runfile.reader import RunFile

__all__ = ["LoadedRun", "PandasMissing", "load"]

PANDAS_HINT = 'tuitrain.load needs pandas, which is not installed: pip install "tuitrain[pandas]"'
# The column that names a probe's columns, by the probe's axis (an axis "step" probe has one column).
AXIS_COLUMN = {"tensor": "layer", "module": "module"}
FINDING_COLUMNS = (
    "kind", "severity", "layer", "first_step", "last_step", "at_step", "message", "suggestion", "evidence"
)  # fmt: skip
EVENT_COLUMNS = ("step", "time", "level", "kind", "message")
METRIC_COLUMNS = ("scope", "key", "step", "epoch", "value")


class PandasMissing(ImportError):
    """``tuitrain.load`` was called where pandas is not installed; the message says how to get it."""


@dataclass(frozen=True)
class LoadedRun:
    """Everything a run file holds, as DataFrames and dicts, read at one moment (see :func:`load`).

    ``probes`` maps each declared probe (``grad``, ``act``, a user's own) to a long table with columns
    ``step``, ``layer`` (axis tensor) or ``module`` (axis module), ``quantity``, ``value``;
    :meth:`probe` gives one probe wide as well. ``findings`` is each finding's latest state (as
    ``tuitrain.diagnosis.current`` ranks them: worst and open first); ``finding_rows`` the stored rows
    in order (a finding opened and later closed is two rows)."""

    path: Path
    attrs: dict[str, Any]
    config: dict[str, Any]
    steps: pd.DataFrame
    epochs: pd.DataFrame
    probes: dict[str, pd.DataFrame]
    layers: pd.DataFrame
    modules: pd.DataFrame
    events: pd.DataFrame
    metrics: pd.DataFrame
    findings: pd.DataFrame
    finding_rows: pd.DataFrame
    test: dict[str, float]

    def probe(self, name: str, wide: bool = False) -> pd.DataFrame:
        """One probe's table: long (as in :attr:`probes`), or ``wide`` with one row per probed step
        and columns (quantity, layer or module). KeyError naming the probes the file has."""
        if name not in self.probes:
            raise KeyError(f"this run has no probe {name!r}; it has: {', '.join(self.probes) or 'none'}")
        long = self.probes[name]
        if not wide:
            return long
        names = [c for c in long.columns if c in AXIS_COLUMN.values()]
        return long.pivot_table(
            index="step", columns=["quantity", *names], values="value", sort=False, dropna=False
        )

    def __repr__(self) -> str:
        a = self.attrs
        return f"<LoadedRun {a['run_name']!r} {a['status']} steps={len(self.steps)} from {str(self.path)!r}>"


def load(path: str | os.PathLike[str]) -> LoadedRun:
    """Read the run file at ``path`` into a :class:`LoadedRun` and close it.

    Raises :class:`PandasMissing` (an ImportError) without pandas, and the same
    :class:`~tuitrain.runfile.RunFileError` as ``tuitrain info`` for a path that is not a readable run.
    """
    _pandas()
    from tuitrain.runfile.reader import open_run

    with open_run(path) as rf:
        return _read(rf)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise PandasMissing(PANDAS_HINT) from None
    return pandas


def _read(rf: RunFile) -> LoadedRun:
    pd = _pandas()
    rows = rf.findings()
    from tuitrain.diagnosis import current

    return LoadedRun(
        path=Path(rf.path),
        attrs=_attrs(rf),
        config=_config(rf),
        steps=_steps(pd, rf),
        epochs=_epochs(pd, rf),
        probes={p.name: _probe(pd, rf, p.name) for p in rf.probe_specs},
        layers=pd.DataFrame(
            [vars(x) for x in rf.layers], columns=["name", "shape", "numel", "kind", "module", "module_type"]
        ),
        modules=pd.DataFrame([vars(m) for m in rf.modules], columns=["name", "type", "kind"]),
        events=pd.DataFrame(rf.events(), columns=list(EVENT_COLUMNS)),
        metrics=_metrics(pd, rf),
        findings=_findings(pd, current(rows)),
        finding_rows=_findings(pd, rows),
        test={**rf.test_metrics(), **rf.test()},
    )


def _attrs(rf: RunFile) -> dict[str, Any]:
    names = (
        "run_name", "status", "source", "model_name", "dataset", "device", "params", "flops",
        "epochs_planned", "steps_per_epoch", "batch_size", "num_classes", "max_steps", "total_steps",
        "started_at", "ended_at", "error", "checkpoint", "schema_version", "tuitrain_version",
        "versions", "incomplete", "is_live",
    )  # fmt: skip
    return {"path": str(rf.path), **{n: getattr(rf, n) for n in names}}


def _config(rf: RunFile) -> dict[str, Any]:
    """A preset's resolved config as plain tables (as ``tuitrain config`` spells it), else a script's."""
    cfg = rf.config
    if cfg is None:
        return rf.user_config
    from tuitrain.config.dump import to_dict

    return to_dict(cfg)


def _steps(pd: Any, rf: RunFile) -> pd.DataFrame:
    cols = rf.steps()  # every column over the same rows, even in a live file
    df = pd.DataFrame(cols, columns=["step", "epoch", *rf.step_scalars])
    if rf.has("steps/time"):  # newer files; may be a row short in a live file: NaN there
        t = rf.scalar("time")[: len(df)]
        df["time"] = pd.Series(t, dtype="float64").reindex(range(len(df)))
    return df.set_index("step")


def _epochs(pd: Any, rf: RunFile) -> pd.DataFrame:
    """/epochs, then each EpochEnd.metrics key as one more column (NaN in epochs that lack it)."""
    df = pd.DataFrame(rf.epochs())
    extra = pd.DataFrame(rf.epoch_metrics(), index=df.index, dtype="float64")
    return pd.concat([df, extra.drop(columns=[c for c in extra.columns if c in df.columns])], axis=1)


def _probe(pd: Any, rf: RunFile, name: str) -> pd.DataFrame:
    import numpy as np

    spec = next(p for p in rf.probe_specs if p.name == name)
    steps = rf.probe_steps(probe=name)
    column = AXIS_COLUMN.get(spec.axis)
    labels: list[str] = []
    if column == "layer":
        labels = [x.name for x in rf.layers]
    elif column == "module":
        labels = [m.name for m in rf.modules]
    parts = []
    for q in spec.names:
        values = rf.probe(q, probe=name)[: len(steps)]
        width = values.shape[1]
        part = {"step": np.repeat(steps, width)}
        if column:
            part[column] = np.tile(np.asarray(labels[:width], dtype=object), len(steps))
        part["quantity"] = q
        part["value"] = values.reshape(-1)
        parts.append(pd.DataFrame(part))
    empty = pd.DataFrame(columns=["step", *([column] if column else []), "quantity", "value"])
    return pd.concat(parts, ignore_index=True) if parts else empty


def _metrics(pd: Any, rf: RunFile) -> pd.DataFrame:
    """/metrics in long form: one row per logged value (scope step, epoch or test)."""
    from tuitrain.runfile.schema import METRIC_SCOPES

    parts = [
        pd.DataFrame({"scope": scope, "key": key, "step": s, "epoch": e, "value": v})
        for scope in METRIC_SCOPES
        for key, (s, e, v) in rf.metrics(scope).items()
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(METRIC_COLUMNS))


def _findings(pd: Any, findings: list[Any]) -> pd.DataFrame:
    df = pd.DataFrame(
        [{c: getattr(f, c) for c in FINDING_COLUMNS} for f in findings], columns=list(FINDING_COLUMNS)
    )
    df["last_step"] = df["last_step"].astype("Int64")  # None (still open) as <NA>, not a float NaN
    return df
