"""Sweep folders as arguments: ``tuitrain replay DIR`` / ``report DIR`` / ``info DIR`` take a sweep folder
where they take run files, and this module turns one into its run files (variant order).

Variants whose file does not exist yet (queued, or failed before writing one) are named on stderr, so a
partial sweep is still shown and nobody wonders where a variant went. With ``follow`` and no file at all
yet (a SLURM array still pending), it waits for the first file instead of refusing, and gives a file
that a child has only just created a few seconds to become readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tuitrain.commands import fail
from tuitrain.sweep.manifest import (
    STARTING,
    ManifestError,
    is_sweep_dir,
    load,
    status_of,
    variant_path,
)

OPEN_GRACE_S = 10.0  # a just-created run file becomes readable once its writer's first flush lands


def _say(message: str) -> None:
    print(f"tuitrain: {message}", file=sys.stderr, flush=True)


def sweep_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The sweep's existing run files in variant order, and one ``name (status)`` per missing variant."""
    manifest = load(directory)
    files, missing = [], []
    for v in manifest.variants:
        p = variant_path(v, directory)
        if p.is_file():
            files.append(p)
        else:
            why = f"{v.status}: {v.error}" if v.error else v.status
            missing.append(f"{v.name} ({why})")
    return files, missing


def expand_sweeps(
    paths: Sequence[Path],
    *,
    follow: bool = False,
    poll: float = 1.0,
) -> list[Path]:
    """``paths`` with every sweep folder replaced by its run files. A folder that is not a sweep, a broken
    manifest or a sweep without any file yet (unless ``follow``) is bad input
    (exit 2, one paragraph)."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        if not is_sweep_dir(path):
            raise fail(
                f"{path}: is a directory, not a run file (expected an .h5 file), and not a sweep folder "
                "(no sweep.json); give run files (.h5), or a folder `tuitrain sweep` made."
            )
        try:
            files, missing = sweep_files(path)
            waited = False
            while follow and not files:
                if not waited:
                    _say(f"{path}: no run file yet ({len(missing)} variants); waiting for the first one")
                    waited = True
                time.sleep(poll)
                files, missing = sweep_files(path)
        except ManifestError as e:
            raise fail(str(e)) from None
        if not files:
            raise fail(
                f"{path}: no variant has written its run file yet ({', '.join(missing)}); "
                "nothing to show. Use --follow to wait for them."
            )
        if missing:
            _say(f"{path}: not yet written: {', '.join(missing)}")
        if follow:
            _wait_readable(path, files)
        out.extend(files)
    return out


def _wait_readable(directory: Path, files: list[Path]) -> None:
    """Give files a child has just created (not readable yet) a few seconds to get their first flush."""
    variants = {variant_path(v, directory): v for v in load(directory).variants}
    end = time.monotonic() + OPEN_GRACE_S
    for f in files:
        while status_of(variants[f], directory) == STARTING and time.monotonic() < end:
            time.sleep(0.2)


def sweep_summary(directory: Path) -> dict[str, object]:
    """``tuitrain info DIR`` of a sweep folder: the manifest's facts and each variant's status (its run
    file's when there is one), file and error. Bad input (not a sweep, broken manifest): exit 2."""
    try:
        manifest = load(directory)
    except ManifestError as e:
        raise fail(str(e)) from None
    variants = []
    for v in manifest.variants:
        path = variant_path(v, directory)
        variants.append(
            {"name": v.name, "status": status_of(v, directory), "file": str(path),
             "exists": path.is_file(), "exit_code": v.exit_code, "error": v.error}
        )  # fmt: skip
    return {"sweep": manifest.name, "folder": str(directory), "created": manifest.created,
            "command": manifest.command, "parallel": manifest.parallel, "variants": variants}  # fmt: skip


def print_sweep_summary(s: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    variants: list[dict[str, object]] = s["variants"]  # type: ignore[assignment]
    console = Console()
    console.print(
        f"sweep {s['sweep']}: {len(variants)} variants, {s['parallel']} at a time, in {s['folder']}"
    )
    table = Table("Variant", "Status", "File", "Error", box=None, header_style="bold")
    for v in variants:
        file = Path(str(v["file"])).name if v["exists"] else "(not yet written)"
        table.add_row(str(v["name"]), str(v["status"]), file, str(v["error"]))
    console.print(table)
