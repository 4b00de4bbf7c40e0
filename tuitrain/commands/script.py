"""``tuitrain run/watch train.py [-- ARGS]``: a user's own training script where a preset is expected.

The script is run as :mod:`tuitrain.train.script` describes (``python train.py ARGS``, with a
:class:`tuitrain.hosted.Host` installed first): headless in this process with the console sink and
Ctrl-C/SIGTERM as a clean stop (``run --no-ui``), or in the background training process behind the
dashboard (``watch``, and ``run`` on a terminal), which owns the run file, logs to a file and obeys the
same signal rules as a preset's. Exit codes follow the table in :mod:`tuitrain.commands`; a script that
records nothing (it never calls ``tuitrain.init``) is a failure, said in one paragraph.
No torch here, and no textual at module level.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import typer

from tuitrain.commands import EXIT_BAD_INPUT, EXIT_FAILED, fail, stopped_code
from tuitrain.config import ConfigError, is_bad_input

SCRIPT_SUFFIX = ".py"


def is_script(target: str | None) -> bool:
    """Whether a preset argument names a training script (``*.py``) rather than a preset."""
    return bool(target) and str(target).endswith(SCRIPT_SUFFIX)


def preset_options_given(**values: object) -> dict[str, bool]:
    """Which preset-only options were given (not at their defaults), by their command-line names."""
    defaults = {"nproc_per_node": 1, "nnodes": 1, "node_rank": 0}
    return {
        f"--{key.replace('_', '-')}": (bool(v) if key == "set" else v != defaults.get(key))
        for key, v in values.items()
    }


def refuse_options(given: dict[str, bool]) -> None:
    """Bad input (exit 2): preset options given with a script, which takes its own after ``--``."""
    names = [name for name, was_given in given.items() if was_given]
    if names:
        raise ConfigError(
            f"{', '.join(names)}: {'an option' if len(names) == 1 else 'options'} of presets; a training "
            "script takes its own arguments after --, as in `tuitrain watch train.py -- --epochs 2`. "
            "With a script tuitrain takes --out, --overwrite, --no-ui (run) and --on-hangup (watch)."
        )


def refuse_args(args: list[str] | None, preset: str) -> None:
    """Bad input (exit 2): arguments after a preset, which takes options only."""
    if args:
        raise ConfigError(
            f"{preset}: a preset takes no arguments (got {' '.join(args)!r}); only a training script "
            "(a .py file) takes arguments after --. Override a preset's keys with --set KEY=VALUE."
        )


def script_log(script: Path, out: Path | None) -> Path:
    """Where the training process behind ``watch train.py`` logs the script's output: beside the run
    file when ``--out`` is given (its ``.log``), else ``runs/<script stem>-<time>.log``, a name no run
    has (the script's own run file is named only when its ``tuitrain.init`` runs)."""
    from tuitrain.runfile.claim import claim_default_out, companions

    return companions(out if out is not None else claim_default_out(script.stem))["log"]


def prepare(script: str, out: Path | None, overwrite: bool) -> Path:
    """Check the script and ``--out`` before anything starts (bad input: exit 2), and hand
    ``--overwrite`` on to the processes the command starts, as a preset's run does."""
    from tuitrain.commands.resolve import check_out
    from tuitrain.runfile.claim import OVERWRITE_ENV
    from tuitrain.train.script import check_script

    path = check_script(script)
    if out is not None:
        check_out(out, overwrite)
    os.environ[OVERWRITE_ENV] = "1" if overwrite else "0"
    return path


def run_script_headless(script: Path, args: list[str], out: Path | None, overwrite: bool) -> None:
    """``tuitrain run train.py --no-ui -- ARGS``: the script in this process, its runs shown by the
    console sink; Ctrl-C or SIGTERM stop a run cleanly at its next ``run.log`` (before any run, at
    once)."""
    from tuitrain.commands.training import SignalControl
    from tuitrain.hosted import Host
    from tuitrain.train.script import Outcomes, on_signal_before_start, run_script
    from tuitrain.train.sinks import ConsoleSink, PipeSafeConsole

    console = PipeSafeConsole()
    outcomes = Outcomes()
    host = Host(sinks=[outcomes, ConsoleSink(console)], out=str(out) if out else None, overwrite=overwrite)
    control = SignalControl()
    host.control = control
    guard = on_signal_before_start(host, control._handler)
    signal.signal(signal.SIGINT, guard)
    signal.signal(signal.SIGTERM, guard)
    end = run_script(script, args, host, outcomes)
    signum = control.signum if control.signum is not None else _signal_of(end)
    report_script(end.summary(), signum, log_path=None, said=True)


def _signal_of(end: Any) -> int | None:
    if not end.interrupted:
        return None
    return signal.SIGTERM if end.error.startswith("Terminated") else signal.SIGINT


def report_script(
    summary: dict[str, Any] | None, stop_signal: int | None, log_path: Path | None, said: bool
) -> None:
    """After the script: the exit code its end maps to, and what the console (``said``: it printed
    each run's end) or the dashboard has not said already. Nothing recorded: the reason, exit 1 (2 for
    an exit code of 2, the usual answer to bad arguments, or bad input met by ``tuitrain.init``;
    130/143 when stopped). Otherwise the worst of its runs: failed 1, stopped 130/143, a run never
    ended 1, and a script that failed after its runs ended 1."""
    from tuitrain.train.script import ScriptEnd

    if summary is None:
        typer.echo("tuitrain: error: the training process ended without saying how the script did", err=True)
        raise typer.Exit(EXIT_FAILED)
    end = ScriptEnd.from_summary(summary)
    why = end.without_run(str(log_path) if log_path else "")
    if why:
        if end.interrupted:
            typer.echo(f"tuitrain: {why}", err=True)
            raise typer.Exit(stopped_code(stop_signal))
        bad = end.code == EXIT_BAD_INPUT or is_bad_input(end.error)
        raise fail(why.replace("ConfigError: ", ""), EXIT_BAD_INPUT if bad else EXIT_FAILED)
    unannounced = [r for r in end.runs if not r.path and r.status == "failed"]  # no run file was made
    for r in unannounced:
        if not said or is_bad_input(r.error):  # the console is quiet about bad input: said here, once
            typer.echo(f"tuitrain: error: {r.error.replace('ConfigError: ', '')}", err=True)
    if unannounced and len(unannounced) == len(end.runs) and all(is_bad_input(r.error) for r in unannounced):
        raise typer.Exit(EXIT_BAD_INPUT)
    statuses = [r.status for r in end.runs]
    if "running" in statuses:
        r = next(r for r in end.runs if r.status == "running")
        typer.echo(f"tuitrain: error: the run {r.path} was never ended (its file was not closed)", err=True)
        raise typer.Exit(EXIT_FAILED)
    if "failed" in statuses:
        raise typer.Exit(EXIT_FAILED)
    if "stopped" in statuses or end.interrupted:
        raise typer.Exit(stopped_code(stop_signal))
    if end.error:  # its runs ended well, then the script failed (after run.finish())
        raise fail(f"{end.script} failed after its run ended: {end.error}", EXIT_FAILED)
    if end.code:
        typer.echo(f"tuitrain: {end.script} exited with code {end.code}", err=True)
        raise typer.Exit(end.code if 0 < end.code < 256 else EXIT_FAILED)


def start_script(
    script: str,
    args: list[str] | None,
    out: Path | None,
    overwrite: bool,
    on_hangup: str,
    dashboard: bool,
    say_why: bool,
) -> None:
    """``run``/``watch`` of a script: the dashboard when asked for and possible, else headless (as
    :func:`tuitrain.commands.training.start` decides for a preset)."""
    from tuitrain.commands.training import terminal_missing

    try:
        path = prepare(script, out, overwrite)
    except ConfigError as e:
        raise fail(str(e)) from None
    missing = terminal_missing() if dashboard else None
    if missing and say_why:
        typer.echo(
            f"tuitrain: {missing} is not a terminal, so there is no dashboard: running the script "
            "headless, as `tuitrain run train.py --no-ui` does",
            err=True,
        )
    if dashboard and not missing:
        run_script_watch(path, list(args or []), out, on_hangup)
    else:
        run_script_headless(path, list(args or []), out, overwrite)


def run_script_watch(script: Path, args: list[str], out: Path | None, on_hangup: str) -> None:
    """The dashboard in front of the training process that runs the script
    (:func:`tuitrain.train.worker.script_worker_main`), then the end said as for a preset, naming the
    script's log."""
    import multiprocessing as mp

    from tuitrain.commands.training import dashboard, report_end
    from tuitrain.train.worker import script_worker_main

    try:
        log_path = script_log(script, out)
    except ConfigError as e:
        raise fail(str(e)) from None
    results, sender = mp.Pipe(duplex=False)

    def make_args(events: Any, commands: Any) -> tuple:
        where = str(out) if out is not None else None
        return (str(script), args, where, events, commands, str(log_path), os.getpid(), sender)

    def out_of(app: Any) -> str:
        if out is not None:
            return str(out)
        started = app.history.run  # its RunStarted, once the script's tuitrain.init announced it
        return started.out_path if started is not None else ""

    exitcode, stop_signal, app = dashboard(
        script_worker_main, make_args, on_hangup, out_of, stop_by_signal=True
    )
    summary = results.recv() if results.poll() else None
    typer.echo(f"the script's output: {log_path}")
    ran = summary["runs"] if summary else []
    path = ran[-1]["path"] if ran and ran[-1]["path"] else out_of(app)
    if summary is None or (ran and path):
        if not path:
            typer.echo(
                f"tuitrain: error: the training process {_how(exitcode)} before the script started "
                f"a run; its output is in {log_path}",
                err=True,
            )
            raise typer.Exit(EXIT_FAILED)
        report_end(Path(path), log_path, None if exitcode == EXIT_BAD_INPUT else exitcode, stop_signal)
    report_script(summary, stop_signal, log_path, said=False)


def _how(exitcode: int | None) -> str:
    from tuitrain.commands.training import how_it_ended

    return how_it_ended(exitcode)
