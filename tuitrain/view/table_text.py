"""The final table as text files: Markdown, CSV and LaTeX (booktabs), for ``tuitrain report``.

One implementation of the cells (:func:`tuitrain.view.table.table_cells`: the same numbers the console,
``info`` and ``replay --print`` show), several renderings. The best value of each metric column
(:func:`tuitrain.view.table.best_rows`) is bold in Markdown (``**0.1234**``) and LaTeX
(``\\textbf{0.1234}``); CSV keeps every cell a plain value and adds a last column ``best`` listing the
columns in which that row is best (``;``-separated header names), so a spreadsheet still reads numbers.
Pure: no torch, no textual."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from tuitrain.view.table import COLUMNS, FinalRow, best_rows, table_cells, table_header

BEST_COLUMN = "best"


def _best_cells(rows: Sequence[FinalRow]) -> set[tuple[int, int]]:
    """(row, column) of every best cell, columns indexed as in :func:`table_header` (Run is 0)."""
    index = {k: 1 + j for j, k in enumerate(COLUMNS)}
    return {(i, index[k]) for k, i in best_rows(rows).items()}


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(rows: Sequence[FinalRow], keys: Sequence[str] = ()) -> str:
    """A GitHub-flavoured Markdown table; metrics right-aligned, best per column in bold."""
    header = table_header(rows, keys)
    cells = table_cells(rows, keys)
    best = _best_cells(rows)
    metric_cols = set(range(1, 1 + len(header) - 1 - len(keys) - (1 if "Status" in header else 0)))
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |"]
    lines.append("|" + "|".join("---:" if j in metric_cols else "---" for j in range(len(header))) + "|")
    for i, row in enumerate(cells):
        out = [_md_escape(t) if (i, j) not in best else f"**{_md_escape(t)}**" for j, t in enumerate(row)]
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[FinalRow], keys: Sequence[str] = ()) -> str:
    """CSV: the header, one row per run with the cells as printed, and a last ``best`` column naming
    the columns this run is best in (``Val Loss;Val Acc``; empty when none)."""
    header = table_header(rows, keys)
    best = _best_cells(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*header, BEST_COLUMN])
    for i, row in enumerate(table_cells(rows, keys)):
        marks = ";".join(header[j] for j in range(len(header)) if (i, j) in best)
        w.writerow([*row, marks])
    return buf.getvalue()


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX table cell (run names and config values hold ``_`` and ``%``)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex_table(rows: Sequence[FinalRow], keys: Sequence[str] = ()) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``): metrics right-aligned, best in bold."""
    header = table_header(rows, keys)
    cells = table_cells(rows, keys)
    best = _best_cells(rows)
    n_metric = len(header) - 1 - len(keys) - (1 if "Status" in header else 0)
    spec = "l" + "r" * n_metric + "l" * (len(header) - 1 - n_metric)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join(tex_escape(h) for h in header) + r" \\")
    lines.append("\\midrule")
    for i, row in enumerate(cells):
        out = [f"\\textbf{{{tex_escape(t)}}}" if (i, j) in best else tex_escape(t) for j, t in enumerate(row)]
        lines.append(" & ".join(out) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
