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
            child_command(p.name, p.preset, p.sets, p.args, directory / f"{p.name}.h5", overwrite),
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
    from tuitrain.commands.training import terminal_missing

    if no_ui or terminal_missing() is not None:
        raise typer.Exit(run_here(manifest, directory, n, gpus))
    manifest.gpus = gpus
    save(manifest, directory)
    raise typer.Exit(detach(manifest, directory, n, gpus))


def announce(manifest: Any, directory: Path, parallel: int, gpus: list[int]) -> None:
    where = f" over GPUs {','.join(map(str, gpus))}" if gpus else ""
    typer.echo(
        f"tuitrain: sweep {manifest.name}: {len(manifest.variants)} variants, {parallel} at a time{where}; "
        f"files and logs in {directory}/",
        err=True,
    )


def run_here(manifest: Any, directory: Path, parallel: int, gpus: list[int]) -> int:
    """Run the variants in this process (``--no-ui``, no terminal, or the detached runner) with the
    headless display; the final table; the exit code."""
    from tuitrain.sweep.display import SweepDisplay, print_final
    from tuitrain.sweep.runner import Runner

    announce(manifest, directory, parallel, gpus)
    with SweepDisplay(manifest, directory) as display:
        code = Runner(manifest, directory, parallel, gpus, display.changed, display.tick).run()
    print_final(manifest, directory)
    return code


def run_folder_command(directory: Path) -> None:
    """The hidden ``sweep --_run-folder DIR``: the detached runner of the sweep whose manifest is in DIR
    (its own session, its output in ``DIR/sweep.log``)."""
    from tuitrain.sweep.manifest import ManifestError, load

    try:
        manifest = load(directory)
    except ManifestError as e:
        raise fail(str(e)) from None
    raise typer.Exit(run_here(manifest, directory, manifest.parallel, manifest.gpus))


def detach(manifest: Any, directory: Path, parallel: int, gpus: list[int]) -> int:
    """Start the runner as a process of its own (its own session: closing this terminal or quitting the
    dashboard does not end it), then open the dashboard on the folder."""
    import subprocess

    from tuitrain.sweep.control import SweepControl
    from tuitrain.sweep.runner import last_paragraph

    announce(manifest, directory, parallel, gpus)
    log_path = directory / "sweep.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuitrain", "sweep", "--_run-folder", str(directory)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    control = SweepControl(directory)
    deadline = time.monotonic() + 30
    while not control.runner_alive() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is not None and not control.runner_alive() and proc.returncode != 0:
        why = last_paragraph(log_path) or f"it exited with code {proc.returncode}"
        typer.echo(f"tuitrain: error: the sweep's runner did not start: {why} (see {log_path})", err=True)
        return proc.returncode
    typer.echo(f"tuitrain: the sweep runs detached (pid {proc.pid}, its output in {log_path})", err=True)
    return open_dashboard(directory, control, started_here=True)


def attach_command(directory: Path, extra: bool) -> None:
    """``tuitrain sweep --attach DIR``: the dashboard on a running or finished sweep folder."""
    from tuitrain.sweep.control import SweepControl
    from tuitrain.sweep.manifest import ManifestError

    if extra:
        raise fail(f"--attach {directory}: opens an existing sweep; it takes no presets, --grid or --set.")
    try:
        control = SweepControl(directory)
    except ManifestError as e:
        raise fail(str(e)) from None
    raise typer.Exit(open_dashboard(directory, control, started_here=False))


def dashboard_function() -> Any:
    """The live sweep dashboard's entry point (``run_sweep_dashboard(folder, control)``), or None when
    this install has none; imported only here, when a terminal is there to show it."""
    import importlib

    for module in ("tuitrain.ui.sweep", "tuitrain.ui.replay.sweep"):
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and module.startswith(e.name):
                continue
            raise
        if callable(fn := getattr(found, "run_sweep_dashboard", None)):
            return fn
    return None


def open_dashboard(directory: Path, control: Any, started_here: bool) -> int:
    """The dashboard (or, without one, the headless rows followed from the files) until the user quits
    it: "detach" leaves the runner going, "stop" stops every variant and waits (exit 130), "done" (the
    sweep is over) exits with the sweep's code."""
    import signal

    from tuitrain.commands.training import terminal_missing
    from tuitrain.sweep.display import print_final
    from tuitrain.sweep.manifest import load
    from tuitrain.sweep.runner import exit_code

    fn = dashboard_function() if terminal_missing() is None else None
    choice = fn(directory, control) if fn is not None else follow(directory, control, started_here)
    if choice == "stop":
        if control.runner_alive():
            typer.echo("tuitrain: stopping every variant...", err=True)
            control.stop_all()
            control.wait()
        print_final(load(directory), directory)
        return exit_code(load(directory), signal.SIGINT)
    if control.runner_alive():
        typer.echo(f"still running: tuitrain sweep --attach {directory}", err=True)
        return 0
    manifest = load(directory)
    if fn is not None:
        print_final(manifest, directory)
    return exit_code(manifest, None)


def follow(directory: Path, control: Any, started_here: bool) -> str:
    """The headless rows of a sweep another process runs, from its manifest and files, until the runner
    ends ("done"); Ctrl-C: "stop" for a sweep started here (as Ctrl-C of a foreground sweep), "detach"
    when attached."""
    from tuitrain.sweep.display import SweepDisplay, print_final
    from tuitrain.sweep.manifest import load

    manifest = load(directory)
    seen = {v.name: v.status for v in manifest.variants}
    try:
        with SweepDisplay(manifest, directory) as display:
            while True:
                alive = control.runner_alive()
                display.manifest = manifest = load(directory)
                for v in manifest.variants:
                    if seen.get(v.name) != v.status:
                        seen[v.name] = v.status
                        display.changed(v)
                display.tick()
                if not alive:
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        return "stop" if started_here else "detach"
    print_final(manifest, directory)
    return "done"
