"""What ``tuitrain diagnose RUN.h5... [--json]`` prints: the findings of :mod:`tuitrain.diagnosis` for
each run file, one line each, worst first, and which rules skipped and why (a file written before the
activation probe, a script run without probes). Reads through RunFile's public API only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from tuitrain.commands import fail


def diagnose_files(run_files: list[Path], as_json: bool) -> None:
    """Diagnose every file first (any bad one is exit 2 before anything is printed), then print."""
    from tuitrain.diagnosis import diagnose, from_runfile
    from tuitrain.runfile.reader import RunFileError, open_run

    results = []
    for path in run_files:
        try:
            with open_run(path) as rf:
                data = from_runfile(rf)
        except RunFileError as e:
            raise fail(str(e)) from None
        results.append((path, diagnose(data)))
    if as_json:
        rows: list[dict[str, Any]] = [
            {"run_file": str(path), **f.to_dict()} for path, r in results for f in r.findings
        ]
        for row in rows:  # strict JSON has no NaN: a number that is not finite is null
            row["evidence"] = {k: v if math.isfinite(v) else None for k, v in row["evidence"].items()}
        typer.echo(json.dumps(rows, indent=2, allow_nan=False))
        return
    from tuitrain.diagnosis import line

    for n, (path, r) in enumerate(results):
        if n:
            typer.echo("")
        count = len(r.findings)
        typer.echo(f"{path}: {count} finding{'' if count == 1 else 's'}")
        for f in r.findings:
            typer.echo("  " + line(f))
        for reason, rules in _by_reason(r.skipped).items():
            typer.echo(f"  skipped {', '.join(rules)}: {reason}")


def _by_reason(skipped: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rule, reason in skipped.items():
        out.setdefault(reason, []).append(rule)
    return out
