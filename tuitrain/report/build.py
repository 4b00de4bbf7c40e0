"""What a report is made of, and in what order: the final table (Markdown, CSV, LaTeX), then every
registered figure (:data:`tuitrain.report.figure.FIGURES`), then README.md, which embeds the table and
each figure's PNG and says why any figure was not drawn.

The runs are open RunFiles (read through their public API only); the command
(:mod:`tuitrain.commands.report`) checks the input and the output folder before anything here writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuitrain.report.figure import FIGURES, Made, Options, ReportRun, Skipped
from tuitrain.view.file_rows import rows_from_files, unique_names
from tuitrain.view.table import FinalRow
from tuitrain.view.table_text import csv_table, latex_table, markdown_table

TABLE_FILES: tuple[str, ...] = ("table.md", "table.csv", "table.tex")
README = "README.md"
NO_MATPLOTLIB = 'matplotlib is not installed; for the figures: pip install "tuitrain[report]"'


@dataclass
class Report:
    """What a report wrote: every file, the figures drawn and the ones skipped (with why)."""

    files: list[Path] = field(default_factory=list)
    made: list[Made] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)  # a figure that raised: a bug, said, not hidden


def figure_names() -> list[str]:
    import tuitrain.report.figures  # noqa: F401  (registers every figure module)

    return list(FIGURES)


def existing_report_files(out: Path) -> list[Path]:
    """The files in ``out`` a report would replace: README.md, the tables, and any figure file (a
    figure writes ``<figure>.<ext>``, a per-run figure ``<figure>-<run>.<ext>``, in any format): what
    ``--overwrite`` protects. Files of other names in ``out`` are never touched."""
    if not out.is_dir():
        return []
    there = [out / n for n in (README, *TABLE_FILES) if (out / n).exists()]
    for fig in figure_names():
        there += sorted({*out.glob(f"{fig}.*"), *out.glob(f"{fig}-*")})
    return there


def report_runs(files: list) -> list[ReportRun]:
    """One :class:`ReportRun` per open file: unique names (as ``replay`` shows them), colours by index."""
    from tuitrain.view.colors import run_color

    names = unique_names([rf.run_name for rf in files], [str(rf.path) for rf in files])
    return [
        ReportRun(n, run_color(i), Path(rf.path), rf)
        for i, (n, rf) in enumerate(zip(names, files, strict=True))
    ]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw_figures(runs: list[ReportRun], out: Path, opts: Options, rep: Report) -> None:
    """Every registered figure in order; with no matplotlib, each is skipped with the one install hint."""
    names = figure_names()
    if not have_matplotlib():
        rep.skipped += [Skipped(n, NO_MATPLOTLIB) for n in names]
        return
    for name in names:
        try:
            got = FIGURES[name](runs, out, opts)
        except Exception as e:  # noqa: BLE001 - one broken figure must not lose the table and the others
            rep.failed.append(Skipped(name, f"failed: {type(e).__name__}: {e}"))
            continue
        if isinstance(got, Made):
            rep.made.append(got)
            rep.files += got.paths
        else:
            rep.skipped.append(got)


def readme_text(runs: list[ReportRun], rows: list[FinalRow], keys: list[str], rep: Report) -> str:
    """README.md: which runs, the final table, each figure embedded with its title, what was not drawn."""
    lines = ["# Training report", "", "Runs:", ""]
    lines += [f"- **{r.name}**: `{r.path}` ({row.status})" for r, row in zip(runs, rows, strict=True)]
    lines += ["", "## Final metrics", "", "Best value of each column in **bold**.", ""]
    lines += [markdown_table(rows, keys), "Also as [CSV](table.csv) and [LaTeX](table.tex).", ""]
    for m in rep.made:
        pngs = [p for p in m.paths if p.suffix == ".png"]
        others = [p for p in m.paths if p.suffix != ".png"]
        lines += [f"## {m.title}", ""]
        for png in pngs:
            alt = m.title if len(pngs) == 1 else f"{m.title}: {png.stem}"
            lines += [f"![{alt}]({png.name})", ""]
        if others:
            lines += ["Also: " + ", ".join(f"[{p.name}]({p.name})" for p in others), ""]
    if rep.skipped or rep.failed:
        lines += ["## Not drawn", ""]
        lines += [f"- {s.name}: {s.why}" for s in (*rep.skipped, *rep.failed)]
        lines.append("")
    return "\n".join(lines)


def make_report(files: list, out: Path, opts: Options) -> Report:
    """Write the whole report of the open run ``files`` into ``out`` (checked by the caller)."""
    runs = report_runs(files)
    rows, keys = rows_from_files(files, [r.name for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    rep = Report()
    for name, render in zip(TABLE_FILES, (markdown_table, csv_table, latex_table), strict=True):
        path = out / name
        path.write_text(render(rows, keys), encoding="utf-8")
        rep.files.append(path)
    draw_figures(runs, out, opts, rep)
    (out / README).write_text(readme_text(runs, rows, keys, rep), encoding="utf-8")
    rep.files.append(out / README)
    return rep
