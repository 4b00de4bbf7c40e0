"""What a comparison of runs shows: the metric names ``--metric`` accepts, one name and one colour per
run, and the final table of the course reports (Train Loss, Val Loss, Train Acc, Val Acc, Test Loss,
Test Acc, Params) plus the config keys that differ between the runs.

Pure: numpy, the config module and rich. The dashboard's final-table widget and ``tuitrain replay
--print`` both build their rows here, from live histories or from run files; the cells themselves are
formatted by :mod:`tuitrain.view.table`, as for the headless console and ``tuitrain info``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tuitrain.events import STEP_SCALARS
from tuitrain.view.colors import PALETTE, run_color  # noqa: F401 - re-exported for the UI
from tuitrain.view.file_rows import (  # noqa: F401  (re-exported: their home is tuitrain.view.file_rows)
    EPOCH_METRICS,
    config_diff,
    extras_of_file,
    file_config,
    file_divergence,
    flat_dict,
    fmt_config,
    own_metric,
    rows_from_files,
    run_config_diff,
    unique_names,
    user_config_diff,
)
from tuitrain.view.table import (  # noqa: F401  (re-exported: the table's home is tuitrain.view.table)
    BEST_HIGH,
    BEST_LOW,
    COLUMNS,
    FinalRow,
    best_rows,
    extra_metrics,
    fmt_cell,
    fmt_count,
    rich_table,
    table_cells,
    table_header,
    unmeasured_missing,
)

if TYPE_CHECKING:
    from rich.table import Table

    from tuitrain.events import EpochEnd
    from tuitrain.runfile.reader import RunFile
    from tuitrain.ui.history import History

# -- metrics ---------------------------------------------------------------------------------------

METRICS: dict[str, str] = {
    "loss": "training loss, per step",
    "acc": "training accuracy, per step",
    "lr": "learning rate, per step",
    "samples_per_s": "throughput, per step",
    "step_time": "seconds per step",
    "train_loss": "training loss, per epoch",
    "train_acc": "training accuracy, per epoch",
    "val_loss": "validation loss, per epoch",
    "val_acc": "validation accuracy, per epoch",
}
STEP_METRICS: tuple[str, ...] = STEP_SCALARS
PERCENT: tuple[str, ...] = ("acc", "train_acc", "val_acc")
LABELS: dict[str, str] = {
    "loss": "Loss",
    "acc": "Accuracy %",
    "lr": "Learning rate",
    "samples_per_s": "Samples/s",
    "step_time": "Step time s",
    "train_loss": "Train loss (epochs)",
    "train_acc": "Train acc % (epochs)",
    "val_loss": "Val loss (epochs)",
    "val_acc": "Val acc % (epochs)",
}


def check_metric(name: str, declared: Sequence[str] = ()) -> str:
    """``name`` if it is a metric (a standard one, or a per-step scalar the run files ``declared``: a
    user loop's own key), else ValueError naming the allowed ones (and the closest)."""
    if name in METRICS or name in declared:
        return name
    known = [*METRICS, *(k for k in dict.fromkeys(declared) if k not in METRICS)]
    close = difflib.get_close_matches(name, known, 1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"--metric {name!r}: unknown metric; allowed: {', '.join(known)}.{hint}")


def higher_is_better(metric: str) -> bool:
    return metric in PERCENT


# -- runs: names and colours -----------------------------------------------------------------------

# One colour per run, in order (tuitrain.view.colors owns them: the report's figures use them too).


def hex_rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


# -- the final table: formatted in tuitrain.view.table, rows built here from histories and files -----


def metrics_of_history(h: History) -> dict[str, float | None]:
    """A history's row: the last epoch's train/val numbers, the test result and the parameter count;
    None where missing (no epoch yet, no test; a user loop's unmeasured numbers), NaN where the run
    produced NaN."""
    last = h.epochs.rows[-1] if h.epochs.rows else None
    return unmeasured_missing(
        _history_metrics(h, last), h.run.source if h.run else "preset", h.nan_step is not None
    )


def _history_metrics(h: History, last: EpochEnd | None) -> dict[str, float | None]:
    return {
        "train_loss": last.train_loss if last else None,
        "val_loss": last.val_loss if last else None,
        "train_acc": last.train_acc if last else None,
        "val_acc": last.val_acc if last else None,
        "test_loss": h.test.loss if h.test else None,
        "test_acc": h.test.acc if h.test else None,
        "params": float(h.run.params) if h.run else None,
    }


def extras_of_history(h: History) -> dict[str, float]:
    """A user loop's own final metrics: each epoch key's last logged value, and the test's extras."""
    epoch: dict[str, float] = {}
    for row in h.epochs.rows:
        epoch.update(row.metrics)
    return extra_metrics(epoch, h.test.metrics if h.test else {})


def rows_from_histories(
    histories: Sequence[History], names: Sequence[str], colors: Sequence[str] = ()
) -> tuple[list[FinalRow], list[str]]:
    """Final-table rows of the runs the dashboard holds, and the differing config keys."""
    # A run without its RunStarted yet (a sweep's queued variant) has no config: it takes no part in
    # the diff (an empty config would "differ" in every key) and shows no values.
    started = [i for i, h in enumerate(histories) if h.run is not None]
    keys, known = run_config_diff(
        [(histories[i].run.config_toml, histories[i].run.config_json) for i in started]  # type: ignore[union-attr]
    )
    configs: list[dict[str, str]] = [{} for _ in histories]
    for i, cfg in zip(started, known, strict=True):
        configs[i] = cfg
    rows = [
        FinalRow(
            name,
            metrics_of_history(h),
            h.status,
            cfg,
            colors[i] if i < len(colors) else "",
            extras_of_history(h),
        )
        for i, (h, name, cfg) in enumerate(zip(histories, names, configs, strict=True))
    ]
    return rows, keys


def declared_metrics(runs: Sequence[RunFile]) -> list[str]:
    """What ``--metric`` may name for these files besides :data:`METRICS`: their declared per-step
    scalars, the per-step keys first logged later and their own epoch metrics (a user loop's keys),
    in first-seen order."""
    names = [k for rf in runs for k in rf.step_scalars]
    names += [k for rf in runs for scope in ("step", "epoch") for k in rf.metrics(scope)]
    return list(dict.fromkeys(names))


def rich_config_table(rows: Sequence[FinalRow], keys: Sequence[str]) -> Table:
    """The differing config keys as their own table, a row per key and a column per run (when they do
    not fit beside the metrics)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Config keys that differ", title_justify="left")
    table.add_column("key", no_wrap=True)
    for r in rows:
        table.add_column(Text.assemble(("■ ", r.color or ""), r.name), overflow="fold")
    for k in keys:
        table.add_row(k, *(r.config.get(k, "") for r in rows))
    return table
