"""The body of ``tuitrain sweep``: the variants expanded and validated (bad input refused before anything
is created), the sweep folder checked, the manifest written, then either the commands printed for a
scheduler (``--print-commands``) or the variants run here (:mod:`tuitrain.sweep.runner`) with the
headless rows and the final table (:mod:`tuitrain.sweep.display`). No torch at module level.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import typer

from tuitrain.commands import fail
from tuitrain.config import ConfigError

FORMATS = ("shell", "slurm")


def default_dir(first_preset: str) -> Path:
    from tuitrain.sweep.variants import preset_label, safe_name

    return Path("runs") / f"sweep-{safe_name(preset_label(first_preset))}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_dir(directory: Path, overwrite: bool) -> None:
    """Refuse (bad input, nothing created) a sweep folder that is a file, or one that already holds a
    sweep or anything else, unless ``overwrite`` (then only the new variants' files are replaced)."""
    from tuitrain.sweep.manifest import is_sweep_dir

    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory}: is a file; a sweep's --out is a folder (runs/sweep-x/).")
    if overwrite or not directory.is_dir() or not any(directory.iterdir()):
        return
    what = "holds a sweep already (sweep.json)" if is_sweep_dir(directory) else "is not empty"
    raise ConfigError(
        f"--out {directory}: {what}; tuitrain never replaces runs without being asked: choose another "
        "--out, or add --overwrite to replace the variants' files in it."
    )


def script(commands: list[list[str]], name: str, fmt: str) -> str:
    """The bash script of the variants' commands: run one after another (``shell``), or a SLURM job
    array with one task per variant (``slurm``). Each command is quoted twice: once as a command line
    (shlex.join), once as an element of the bash array that ``eval`` runs."""
    lines = ["#!/usr/bin/env bash", f"# tuitrain sweep {name}: {len(commands)} variants (docs/sweeps.md)"]
    if fmt == "slurm":
        lines += [
            f"#SBATCH --job-name={shlex.quote(name) if name.isprintable() else 'tuitrain-sweep'}",
            f"#SBATCH --array=0-{len(commands) - 1}",
            "# add what your cluster needs: #SBATCH --time=..., --gres=gpu:1, --cpus-per-task=..., --partition=...",
        ]
    lines.append("cmds=(")
    lines += [f"  {shlex.quote(shlex.join(c))}" for c in commands]
    lines.append(")")
    if fmt == "slurm":
        lines.append('eval "${cmds[$SLURM_ARRAY_TASK_ID]}"')
    else:
        lines += ["rc=0", 'for c in "${cmds[@]}"; do eval "$c" || rc=1; done', 'exit "$rc"']
    return "\n".join(lines) + "\n"


def sweep_command(
    presets: list[str],
    grids: list[str],
    sets: list[str],
    options: dict[str, Any],
    out: Path | None,
    parallel: str,
    no_ui: bool,
    print_commands: bool,
    fmt: str | None,
    overwrite: bool,
) -> None:
    """``tuitrain sweep``; exits with the sweep's code (the table in :mod:`tuitrain.commands`)."""
    from tuitrain.sweep.manifest import Manifest, Variant, save
    from tuitrain.sweep.runner import child_command, plan_parallel
    from tuitrain.sweep.variants import expand

    if fmt is not None and not print_commands:
        raise fail(f"--format {fmt}: is the format of --print-commands; add --print-commands.")
    fmt = fmt or "shell"
    if fmt not in FORMATS:
        raise fail(f"--format {fmt!r}: allowed: {', '.join(FORMATS)}.")
    try:
        planned = expand(presets, grids, sets, options)
        directory = out if out is not None else default_dir(presets[0])
        check_dir(directory, overwrite)
        if print_commands:  # the scheduler decides; nothing here needs to know about GPUs
            n, gpus = plan_parallel(parallel, len(planned), "cpu")
        else:
            n, gpus = plan_parallel(parallel, len(planned), planned[0].cfg.train.device)
    except ConfigError as e:
        raise fail(str(e)) from None
    variants = [
        Variant(
            p.name,
            p.preset,
            p.sets,
            p.args,
            f"{p.name}.h5",
            child_command(p.name, p.preset, p.sets, p.args, directory / f"{p.name}.h5"),
        )  # fmt: skip
        for p in planned
    ]
    manifest = Manifest(directory.name, time.time(), ["tuitrain", "sweep", *sys.argv[2:]], n, variants)
    try:
        save(manifest, directory)
    except OSError as e:
        raise fail(f"--out {directory}: cannot write the sweep manifest: {e.strerror or e}.") from None
    if print_commands:
        sys.stdout.write(script([v.command for v in variants], manifest.name, fmt))
        typer.echo(f"tuitrain: wrote {directory / 'sweep.json'} ({len(variants)} variants, queued)", err=True)
        return
    raise typer.Exit(run_here(manifest, directory, n, gpus, no_ui))


def run_here(manifest: Any, directory: Path, parallel: int, gpus: list[int], no_ui: bool) -> int:
    """Run the variants on this machine with the headless display; the final table; the exit code."""
    from tuitrain.commands.training import terminal_missing
    from tuitrain.sweep.display import SweepDisplay, print_final
    from tuitrain.sweep.runner import Runner

    where = f" over GPUs {','.join(map(str, gpus))}" if gpus else ""
    typer.echo(
        f"tuitrain: sweep {manifest.name}: {len(manifest.variants)} variants, {parallel} at a time{where}; "
        f"files and logs in {directory}/",
        err=True,
    )
    if not no_ui and terminal_missing() is None:
        typer.echo(
            "tuitrain: the live compare dashboard for sweeps is not there yet: showing the headless rows "
            f"(compare the files with `tuitrain replay {directory}`)",
            err=True,
        )
    with SweepDisplay(manifest, directory) as display:
        code = Runner(manifest, directory, parallel, gpus, display.changed, display.tick).run()
    print_final(manifest, directory)
    return code
