"""What ``tuitrain info`` says about a run file's snapshots (issue 12): which it declares, how many rows
each holds and of which epochs, and the bytes they take against their cap, so a user sees at once
whether the report's image figures and the Images screen have something to show, and why not.

Split from :mod:`tuitrain.commands.show` to keep that module small; reads RunFile's public API only.
"""

from __future__ import annotations

from typing import Any


def snapshots_summary(rf: Any) -> list[dict[str, Any]]:
    """One entry per declared snapshot, in declaration order: name, when, rows, max_rows, the bytes
    its rows take (``row_bytes`` each: the fields plus epoch and step) and the epochs of its rows (-1:
    at init). [] for a file that declares none (older files, ``monitor.snapshot_mb = 0``)."""
    out = []
    for name, spec in rf.snapshot_specs.items():
        rows = rf.snapshot_rows(name)
        epochs = [] if rows is None else sorted({int(e) for e in rows.epoch})
        n = 0 if rows is None else len(rows)
        out.append(
            {
                "name": name,
                "when": spec.when,
                "rows": n,
                "max_rows": spec.max_rows,
                "bytes": n * spec.row_bytes,
                "max_bytes": spec.max_bytes,
                "epochs": epochs,
            }
        )
    return out


def _epochs_text(epochs: list[int]) -> str:
    """``init, 1-3, 5`` (epochs counted from 1 as the dashboard does; -1 is the row before training)."""
    parts: list[str] = ["init"] if -1 in epochs else []
    run: list[int] = []
    for e in [e + 1 for e in epochs if e >= 0]:
        if run and e == run[-1] + 1:
            run.append(e)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [e]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)


def snapshot_lines(snaps: list[dict[str, Any]] | None) -> list[str]:
    """The lines ``info`` prints: a total against the cap, then one line per snapshot."""
    if not snaps:
        return ["snapshots: none (an older file, your own loop, or monitor.snapshot_mb = 0)"]
    total = sum(s["bytes"] for s in snaps)
    cap = sum(s["max_bytes"] for s in snaps)
    lines = [
        f"snapshots: {len(snaps)}, {total / 1e6:.2f} MB ({cap / 1e6:.2f} MB declared, within monitor.snapshot_mb)"
    ]
    for s in snaps:
        when = f"epochs {_epochs_text(s['epochs'])}" if s["when"] == "epoch" else f"at the {s['when']}"
        lines.append(f"  {s['name']}: {s['rows']} rows, {when}")
    return lines
