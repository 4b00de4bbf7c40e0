"""The final table of the course reports, formatted once for every place that prints it.

One row per run: Train Loss, Val Loss, Train Acc, Val Acc, Test Loss, Test Acc, Params, then the metrics
a user's own loop logged itself (``run.log_epoch`` / ``run.log_test`` keys beyond the standard ones:
:func:`extra_metrics`), then the config keys that differ between the runs and the status when a run is
not completed. The headless console
(``tuitrain run --no-ui``), ``tuitrain info``, ``tuitrain replay --print`` and the dashboard's final-table
widget all build their cells with :func:`metric_cell` and :func:`table_cells`, so the same file reads the
same everywhere.

Values: ``None`` means *missing* (no epoch yet, test never ran) and prints ``-``; a NaN or infinite value
is a real result of a diverged run and prints ``nan`` / ``inf`` in red, never ``-`` and never a number.
Cells never truncate: every printer sizes its columns from the finished cells (:func:`column_widths`),
so ``332.97K`` cannot become ``332.97`` nor a run name ``■ v``.

Plain data and rich only: no torch, no textual.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console, ConsoleOptions
    from rich.measure import Measurement
    from rich.table import Table

COLUMNS: dict[str, str] = {
    "train_loss": "Train Loss",
    "val_loss": "Val Loss",
    "train_acc": "Train Acc",
    "val_acc": "Val Acc",
    "test_loss": "Test Loss",
    "test_acc": "Test Acc",
    "params": "Params",
}
BEST_LOW: tuple[str, ...] = ("train_loss", "val_loss", "test_loss")
BEST_HIGH: tuple[str, ...] = ("train_acc", "val_acc", "test_acc")
MISSING = "-"
NONFINITE_STYLE = "bold red"
CHIP = "■ "  # the run's colour chip before its name
NAME_MIN = 20  # the wide layout folds run names down to this many cells; narrower, the table turns tall

Justify = Literal["left", "right"]


@dataclass(frozen=True)
class Cell:
    """One formatted table cell: its text, a rich style ("" for none) and its alignment."""

    text: str
    style: str = ""
    justify: Justify = "left"


@dataclass
class FinalRow:
    name: str
    metrics: Mapping[str, float | None]  # the COLUMNS keys; None where missing, NaN where diverged
    status: str = "completed"
    config: dict[str, str] = field(default_factory=dict)  # differing config keys -> shown value
    color: str = ""
    extra: Mapping[str, float | None] = field(default_factory=dict)  # a user's own metrics (extra_metrics)


def extra_metrics(epoch: Mapping[str, float], test: Mapping[str, float]) -> dict[str, float]:
    """A user loop's own final metrics as table columns: its last epoch metrics under their own keys,
    its test metrics as ``test_<key>`` (kept as they are when already named ``test...``)."""
    out = {str(k): float(v) for k, v in epoch.items()}
    for k, v in test.items():
        out[str(k) if str(k).startswith("test") else f"test_{k}"] = float(v)
    return out


def unmeasured_missing(
    metrics: Mapping[str, float | None], source: str, diverged: bool
) -> dict[str, float | None]:
    """A user loop's row: a standard number it did not measure (NaN) is missing (None), not a
    divergence; only its training loss, when its step loss diverged, stays NaN; a parameter count of
    0 is unknown. Presets unchanged."""
    if source == "preset":
        return dict(metrics)
    keep = ("train_loss",) if diverged else ()
    out = {k: None if v is not None and math.isnan(v) and k not in keep else v for k, v in metrics.items()}
    if out.get("params") == 0:  # a loop that never called run.watch: no parameter count, not zero
        out["params"] = None
    return out


def extra_keys(rows: Sequence[FinalRow]) -> list[str]:
    """The user-metric columns of ``rows``: every row's keys, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r.extra))


def extra_cell(value: float | None) -> Cell:
    """A user metric: 4 decimals in the usual range, else 3 significant digits in e-notation (a
    grad scale of 65536, a perplexity of 1.2e+04); ``-`` missing, ``nan``/``inf`` in red."""
    if value is None:
        return Cell(MISSING, "", "right")
    v = float(value)
    if not math.isfinite(v):
        return Cell(_nonfinite(v), NONFINITE_STYLE, "right")
    text = f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
    return Cell(text, "", "right")


def fmt_count(n: float | None) -> str:
    """Parameter and FLOP counts: 60.06K, 3.71M, 11.17M; ``-`` when unknown."""
    if n is None or not math.isfinite(n):
        return MISSING
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _nonfinite(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def metric_cell(key: str, value: float | None) -> Cell:
    """The cell of metric ``key`` (a :data:`COLUMNS` key): losses to 4 places, accuracies in percent
    to 2, the parameter count short (``332.97K``); right-aligned."""
    if value is None:
        return Cell(MISSING, "", "right")
    v = float(value)
    if not math.isfinite(v):
        return Cell(_nonfinite(v), NONFINITE_STYLE, "right")
    if key == "params":
        return Cell(fmt_count(v), "", "right")
    return Cell(f"{100 * v:.2f}" if key in BEST_HIGH else f"{v:.4f}", "", "right")


def fmt_cell(key: str, value: float | None) -> str:
    """Just the text of :func:`metric_cell`."""
    return metric_cell(key, value).text


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def best_rows(rows: Sequence[FinalRow]) -> dict[str, int]:
    """Per metric column, the index of the best run (lowest loss, highest accuracy); only with 2+ runs."""
    best: dict[str, int] = {}
    if len(rows) < 2:
        return best
    for key in (*BEST_LOW, *BEST_HIGH):
        vals = [(r.metrics.get(key), i) for i, r in enumerate(rows)]
        vals = [(float(v), i) for v, i in vals if _finite(v)]  # type: ignore[arg-type]
        if len(vals) >= 2:
            best[key] = (max if key in BEST_HIGH else min)(vals)[1]
    return best


def _has_status(rows: Sequence[FinalRow]) -> bool:
    return any(r.status != "completed" for r in rows)


def table_header(rows: Sequence[FinalRow], keys: Sequence[str]) -> list[str]:
    return ["Run", *COLUMNS.values(), *extra_keys(rows), *keys, *(["Status"] if _has_status(rows) else [])]


def header_justify(rows: Sequence[FinalRow], keys: Sequence[str]) -> list[Justify]:
    """Per column of :func:`table_header`: metrics right-aligned, names, config values and status left."""
    return [
        "left",
        *(["right"] * (len(COLUMNS) + len(extra_keys(rows)))),
        *(["left"] * len(keys)),
        *(["left"] if _has_status(rows) else []),
    ]


def styled_cells(rows: Sequence[FinalRow], keys: Sequence[str]) -> list[list[Cell]]:
    """The table as :class:`Cell` lists, one per run, in :func:`table_header`'s order. The run name
    cell is the bare name (printers add the colour chip); the best metric of each column is bold."""
    status = _has_status(rows)
    best = best_rows(rows)
    extras = extra_keys(rows)
    out = []
    for i, r in enumerate(rows):
        cells = [Cell(r.name)]
        for k in COLUMNS:
            c = metric_cell(k, r.metrics.get(k))
            if best.get(k) == i:
                c = Cell(c.text, (c.style + " bold").strip(), c.justify)
            cells.append(c)
        cells += [extra_cell(r.extra.get(k)) for k in extras]
        cells += [Cell(r.config.get(k, "")) for k in keys]
        if status:
            cells.append(Cell(r.status, "" if r.status in ("completed", "running") else "yellow"))
        out.append(cells)
    return out


def table_cells(rows: Sequence[FinalRow], keys: Sequence[str]) -> list[list[str]]:
    """The table as text cells, one list per run, in :func:`table_header`'s order."""
    return [[c.text for c in row] for row in styled_cells(rows, keys)]


def column_widths(header: Sequence[str], cells: Sequence[Sequence[str]], chip: int = len(CHIP)) -> list[int]:
    """The width of every column once every cell is known: the widest of its header and its cells (the
    run column counts the colour chip). Computed from the finished cells, never from the header alone."""
    widths = [len(h) for h in header]
    for row in cells:
        for j, text in enumerate(row):
            widths[j] = max(widths[j], len(text) + (chip if j == 0 else 0))
    return widths


def rich_wide_table(
    rows: Sequence[FinalRow], keys: Sequence[str] = (), title: str = "Final metrics"
) -> Table:
    """A row per run, a column per metric: the layout of the course reports. Light borders and one space
    between columns, so a run with a short name fits 80 columns; a long run name folds inside its cell
    (never cut); metric cells never shrink below their text. The colour chip has a column of its own,
    so a folded name never leaves it alone on a line."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=0,
    )
    chips = any(r.color for r in rows)
    if chips:
        table.add_column("", no_wrap=True, width=1)
    header = table_header(rows, keys)
    styled = styled_cells(rows, keys)
    widths = column_widths(header, [[c.text for c in row] for row in styled], 0)
    for j, (col, just) in enumerate(zip(header, header_justify(rows, keys), strict=True)):
        if j == 0:
            table.add_column(col, overflow="fold", min_width=min(widths[0], NAME_MIN))
        elif col in keys:
            table.add_column(col, no_wrap=True, max_width=24, overflow="ellipsis")
        else:
            table.add_column(col, justify=just, no_wrap=True, min_width=widths[j])
    for r, cells in zip(rows, styled, strict=True):
        chip = [Text(CHIP.strip(), style=r.color)] if chips else []
        table.add_row(*chip, *(Text(c.text, style=c.style) for c in cells))
    return table


def rich_tall_table(
    rows: Sequence[FinalRow], keys: Sequence[str] = (), title: str = "Final metrics"
) -> Table:
    """The same cells transposed, a row per metric and a column per run: for terminals too narrow for
    the wide layout (60 columns), so no number is ever cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    for r in rows:
        head = Text.assemble((CHIP.strip(), r.color), "\n", r.name) if r.color else Text(r.name)
        table.add_column(head, justify="right", overflow="fold")
    header = table_header(rows, keys)
    styled = styled_cells(rows, keys)
    for j, label in enumerate(header[1:], start=1):
        table.add_row(label, *(Text(row[j].text, style=row[j].style) for row in styled))
    return table


class FinalTableRenderable:
    """The final table as a rich renderable that picks its layout when printed: wide when it fits the
    console without folding a metric, else tall. Every printer (headless run, ``info``, ``replay --print``)
    prints this, so the same file reads the same everywhere."""

    def __init__(self, rows: Sequence[FinalRow], keys: Sequence[str] = (), title: str = "Final metrics"):
        self.rows, self.keys, self.title = list(rows), list(keys), title
        self.wide = rich_wide_table(self.rows, self.keys, title)

    def _fits(self, console: Console, width: int) -> bool:
        """Wide when every metric keeps its width and the run names get at least NAME_MIN cells."""
        from rich.measure import Measurement

        full = Measurement.get(console, console.options.update_width(10**6), self.wide).maximum
        names = max((len(r.name) for r in self.rows), default=3)
        return full - max(0, names - NAME_MIN) <= width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Table]:
        if self._fits(console, options.max_width):
            yield self.wide
        else:
            yield rich_tall_table(self.rows, self.keys, self.title)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        return Measurement.get(console, options, self.wide)


def rich_table(
    rows: Sequence[FinalRow], keys: Sequence[str] = (), title: str = "Final metrics"
) -> FinalTableRenderable:
    """The final table as a rich renderable: a colour chip per run, the best value of each column in
    bold, non-finite values in red; wide or tall as the console allows (:class:`FinalTableRenderable`)."""
    return FinalTableRenderable(rows, keys, title)


def row_from_dict(d: Mapping[str, object], name: str = "", color: str = "") -> FinalRow:
    """A row from a plain ``{"run": ..., "train_loss": ..., ...}`` mapping (the console sink, ``info``);
    an ``"extra"`` mapping holds a user's own metrics (:func:`extra_metrics`)."""
    metrics: dict[str, float | None] = {}
    for k in COLUMNS:
        v = d.get(k)
        metrics[k] = None if v is None else float(v)  # type: ignore[arg-type]
    extra = d.get("extra") or {}
    assert isinstance(extra, Mapping)
    return FinalRow(
        name or str(d.get("run", "")),
        metrics,
        color=color,
        extra={str(k): None if v is None else float(v) for k, v in extra.items()},
    )
