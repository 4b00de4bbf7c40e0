"""What ``tuitrain report RUN.h5... --out DIR`` does: checks every input before anything is written
(a sweep folder stands for its run files, in variant order; each run file opens, the options parse,
DIR is a folder and holds no file this report would replace unless ``--overwrite``), then writes the
report (:mod:`tuitrain.report.build`). Bad input is one paragraph and exit 2. Without matplotlib the
tables and README are still written and the figures are skipped with one install hint: exit 0
(docs/report.md); a figure that raised is exit 1."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from tuitrain.commands import EXIT_FAILED, fail


def parse_ints(option: str, text: str | None) -> tuple[int, ...] | None:
    """``--epochs 1,5`` -> (1, 5); None when not given; bad input -> exit 2 naming what is allowed."""
    if text is None:
        return None
    try:
        got = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        got = ()
    if not got or any(v < 0 for v in got):
        raise fail(
            f"{option} {text!r}: expected non-negative whole numbers separated by commas, e.g. {option} 1,5."
        )
    return got


def check_out(out: Path, there: list[Path], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise fail(
            f"--out {out}: is a file, not a folder; give a folder for the report (it is created if missing)."
        )
    if there and not overwrite:
        raise fail(
            f"--out {out} already holds a report: {', '.join(p.name for p in there)}; nothing was written. "
            "Pass --overwrite to replace those files, or choose another --out folder."
        )


def report_files(
    run_files: list[Path],
    out: Path,
    fmt: str,
    epochs: str | None,
    steps: str | None,
    exclude: list[str],
    overwrite: bool,
) -> None:
    from tuitrain.report.build import NO_MATPLOTLIB, existing_report_files, make_report
    from tuitrain.report.figure import FORMATS, Options
    from tuitrain.runfile.reader import RunFileError, open_run
    from tuitrain.sweep.paths import expand_sweeps

    run_files = expand_sweeps(run_files)  # a sweep folder: its run files, in variant order
    if fmt not in FORMATS:
        raise fail(
            f"--format {fmt!r}: unknown image format; allowed: {', '.join(FORMATS)} (PNG is always written too)."
        )
    opts = Options(fmt, parse_ints("--epochs", epochs), parse_ints("--steps", steps), tuple(exclude))
    check_out(out, existing_report_files(out), overwrite)
    with contextlib.ExitStack() as stack:
        try:
            files = [stack.enter_context(open_run(p)) for p in run_files]
        except RunFileError as e:
            raise fail(str(e)) from None
        try:
            rep = make_report(files, out, opts)
        except OSError as e:
            raise fail(f"cannot write the report: {e.strerror or e} ({e.filename or ''})") from None
    typer.echo(f"wrote {len(rep.files)} files to {out}: {', '.join(p.name for p in rep.files)}")
    if any(s.why == NO_MATPLOTLIB for s in rep.skipped):
        typer.echo(f"figures skipped: {NO_MATPLOTLIB}", err=True)
    for s in rep.skipped:
        if s.why != NO_MATPLOTLIB:
            typer.echo(f"figure {s.name} not drawn: {s.why}", err=True)
    for s in rep.failed:
        typer.echo(f"tuitrain: error: figure {s.name} {s.why}", err=True)
    if rep.failed:
        raise typer.Exit(EXIT_FAILED)
