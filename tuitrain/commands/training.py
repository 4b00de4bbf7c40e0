"""The bodies of ``run`` and ``watch``: training in this process with console output, under torchrun,
or in a spawned worker behind the dashboard; and the exit code each outcome maps to (the table is in
:mod:`tuitrain.commands`). torch, textual and the run-file reader are imported inside the function that
needs them, never at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer

from tuitrain.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_STOPPED, fail, stopped_code
from tuitrain.config import ConfigError, RunConfig, is_bad_input
from tuitrain.launch import Launch

PAUSE_SIGNALS_ENV = "TUITRAIN_PAUSE_SIGNALS"  # "1": SIGUSR1 pauses and SIGUSR2 resumes a headless run


class SignalControl:
    """Ctrl-C (or SIGTERM) asks the loop to stop at the next step, so the run file is closed cleanly
    as ``stopped``; a second Ctrl-C interrupts at once. ``signum`` keeps which signal asked first, for
    the exit code (130 or 143). ``announce``: say so on stderr (only rank 0 of a data-parallel run
    does, not every rank). ``pause_signals``: SIGUSR1 pauses and SIGUSR2 resumes (the run file says
    ``paused``, then ``running``): how a sweep's dashboard pauses one variant, a ``tuitrain run
    --no-ui`` child in another process (tuitrain.sweep.control); ``kill -USR1 PID`` works the same."""

    def __init__(self, announce: bool = True, pause_signals: bool = False) -> None:
        self.requested = False
        self.signum: int | None = None
        self.announce = announce
        self.pending: list[str] = []  # "pause"/"resume" in the order the signals came
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)
        if pause_signals:
            signal.signal(signal.SIGUSR1, self._pause_handler)
            signal.signal(signal.SIGUSR2, self._pause_handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        if self.announce:
            print("\nstopping after this step (Ctrl-C again to interrupt at once)", file=sys.stderr)

    def _pause_handler(self, signum: int, frame: Any) -> None:
        self.pending.append("pause" if signum == signal.SIGUSR1 else "resume")

    def poll(self, timeout: float = 0.0) -> str | None:
        if self.requested:
            return "stop"
        if self.pending:
            return self.pending.pop(0)
        if timeout:
            time.sleep(timeout)
            if self.requested:
                return "stop"
            if self.pending:
                return self.pending.pop(0)
        return None


class Commands:
    """The dashboard's control channel to the training process. ``on_stop``: also called for "stop"
    (a user's script: SIGTERM, which ends it at once while it has started no run yet, when nothing
    reads the commands)."""

    def __init__(self, q: Any) -> None:
        self.q = q
        self.on_stop: Any = None

    def send(self, cmd: str) -> None:
        self.q.put(cmd)
        if cmd == "stop" and self.on_stop is not None:
            self.on_stop()

    def flush(self) -> None:
        """Make sure what was sent has left this process (before os._exit)."""
        self.q.close()
        self.q.join_thread()


def terminal_missing() -> str | None:
    """Which of stdin, stdout and stderr is not a terminal, or None. The dashboard reads keys from
    stdin and draws on stderr (Textual's choice), and our own messages go to stdout: without all three
    it would write escape codes into a file or wait for keys that never come."""
    for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr)):
        try:
            if stream is None or not stream.isatty():
                return name
        except (ValueError, OSError):  # closed
            return name
    return None


def start(
    cfg: RunConfig, out_path: Path, launch: Launch, on_hangup: str, dashboard: bool, say_why: bool
) -> None:
    """``run`` and ``watch`` alike: the dashboard when asked for and possible, else headless. ``say_why``:
    ``watch`` says on stderr why there is no dashboard (``run`` without ``--no-ui`` falls back quietly,
    as it always has)."""
    missing = terminal_missing() if dashboard and launch.node_rank == 0 else None
    if missing and say_why:
        typer.echo(
            f"tuitrain: {missing} is not a terminal, so there is no dashboard: training headless, "
            "as `tuitrain run --no-ui` does",
            err=True,
        )
    if dashboard and not missing and launch.node_rank == 0:
        run_watch(cfg, out_path, on_hangup, launch)
    elif launch.distributed:
        run_launched(cfg, out_path, launch)
    else:
        run_headless(cfg, out_path)


_DEVICE_CHECK = "import sys; from tuitrain.train.engine import pick_device; pick_device(sys.argv[1])"


def check_device(device: str, isolated: bool = False) -> None:
    """Bad input before anything starts: ``--device cuda`` without CUDA (or ``mps`` without MPS) is a
    :class:`ConfigError` (exit 2) from ``run`` and ``watch`` alike, asked of the one function that
    knows, :func:`tuitrain.train.engine.pick_device`. Only those two need torch to tell; ``auto`` and
    ``cpu`` always work. ``isolated``: ask in a short-lived child process, so that the dashboard's
    process never imports torch (seconds and hundreds of MB it would keep for nothing)."""
    if device not in ("cuda", "mps"):
        return
    if not isolated:
        from tuitrain.train.engine import pick_device

        pick_device(device)
        return
    p = subprocess.run(
        [sys.executable, "-c", _DEVICE_CHECK, device], capture_output=True, text=True, timeout=300
    )
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [""])[-1]
        if last.startswith("tuitrain.config") or "ConfigError: " in last:
            raise ConfigError(last.split("ConfigError: ", 1)[-1])
        # anything else (torch itself broken) the training process will meet and report


def run_watch(cfg: RunConfig, out_path: Path, on_hangup: str, launch: Launch | None = None) -> None:
    """The dashboard in front of a spawned training process that trains ``cfg`` into ``out_path``."""
    from tuitrain.config import to_toml
    from tuitrain.runfile.claim import companions
    from tuitrain.train.worker import worker_main

    try:
        check_device(cfg.train.device, isolated=True)
    except ConfigError as e:
        raise fail(str(e)) from None
    log_path = companions(out_path)["log"]  # one owner of the names beside a run

    def args(events: Any, commands: Any) -> tuple:
        return (to_toml(cfg), str(out_path), events, commands, str(log_path), os.getpid(), launch)

    exitcode, stop_signal, _ = dashboard(worker_main, args, on_hangup, lambda app: str(out_path))
    report_end(out_path, log_path, exitcode, stop_signal)


def dashboard(
    target: Any, make_args: Any, on_hangup: str, out_of: Any, stop_by_signal: bool = False
) -> tuple[int | None, int | None, Any]:
    """The dashboard in front of a spawned training process ``target(*make_args(events, commands))``,
    to the end of both; returns the process's exit code, the signal that stopped this command (or
    None) and the app. ``out_of(app)``: the run file, for the detach message. SIGTERM and SIGINT of
    this process end the dashboard as ``q`` then "stop" would: the terminal is restored, training is
    told to stop and closes its file as ``stopped``, and the exit code is 143 or 130. A second one
    leaves at once (the training process still closes its file). ``stop_by_signal``: every "stop" also
    sends the training process SIGTERM (a user's script, which reads no command before its first run)."""
    import multiprocessing as mp

    from tuitrain.ui.app import TuitrainApp
    from tuitrain.ui.source import LiveSource

    ctx = mp.get_context("spawn")
    events = ctx.Queue(maxsize=64)  # bounded: the worker coalesces or drops live rows, never blocks
    commands = Commands(ctx.Queue())
    proc = ctx.Process(target=target, name="tuitrain-train", args=make_args(events, commands.q))
    proc.start()

    def terminate() -> None:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGTERM)

    if stop_by_signal:
        commands.on_stop = terminate

    def hangup(signum: int, frame: Any) -> None:
        # The terminal is gone: nothing to restore, nobody to ask. Hand over and leave.
        commands.send(on_hangup if on_hangup == "stop" else "detach")
        commands.flush()
        os._exit(0)

    signal.signal(signal.SIGHUP, hangup)
    # 50 ms windows: the engine already batches 100 ms of steps, so the drain adds little delay
    app = TuitrainApp(LiveSource(events, batch_seconds=0.05), control=commands, proc_alive=proc.is_alive)
    stop_signal: list[int] = []

    def stop_on_signal(signum: int, frame: Any) -> None:
        if stop_signal:  # the second one: leave now; the training process has been told to stop
            with contextlib.suppress(Exception):
                commands.send("stop")
                commands.flush()
            typer.echo(
                f"leaving; the training process (pid {proc.pid}) closes {out_of(app) or 'its run file'} "
                "on its own",
                err=True,
            )
            os._exit(stopped_code(stop_signal[0]))
        stop_signal.append(signum)
        try:
            loop = asyncio.get_running_loop()  # the dashboard's, in this (the main) thread
        except RuntimeError:
            return  # no dashboard running (not yet, or no more): stop_signal is read below
        loop.call_soon_threadsafe(app.exit, "signal")  # safe from a signal handler: wakes the loop

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    result = app.run() if not stop_signal else "signal"
    if stop_signal:
        name = signal.Signals(stop_signal[0]).name
        typer.echo(f"{name}: stopping training; the run file is closed as stopped", err=True)
    out = out_of(app)
    if result == "detach" and proc.is_alive() and not stop_signal:
        commands.send("detach")
        commands.flush()
        where = f"it writes {out}\nre-attach: tuitrain replay --follow {out}; " if out else ""
        typer.echo(f"training continues in the background (pid {proc.pid}); {where}stop it: kill {proc.pid}")
        os._exit(0)  # skip multiprocessing's exit-time join: the worker must outlive us
    if (stop_signal or result not in ("stop", "done")) and proc.is_alive():
        commands.send("stop")  # the UI closed without a choice: do not leave an orphan behind
    if proc.is_alive():
        typer.echo(f"waiting for the training process to close {out or 'its run file'} ...")
    proc.join(timeout=120)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=10)
    return proc.exitcode, (stop_signal[0] if stop_signal else None), app


def how_it_ended(exitcode: int | None) -> str:
    """A process's end in words: "killed by SIGKILL", "exited with code 3"."""
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def report_end(out_path: Path, log_path: Path, exitcode: int | None, stop_signal: int | None) -> None:
    """After the dashboard: what the run file says, said plainly, and the exit code it maps to. A file
    left without its final word means the training process died: that is a failure (exit 1), never
    "run running"."""
    from tuitrain.runfile import schema as S
    from tuitrain.runfile.reader import RunFileError, open_run

    if exitcode == EXIT_BAD_INPUT:  # the worker met bad input (CIFAR absent offline, ...): it logged why.
        # Checked first: a file at out_path is then another run's (an --out taken meanwhile), not ours.
        raise fail(_last_error(log_path) or f"bad input; see {log_path}")
    try:
        with open_run(out_path) as rf:
            s = rf.summary()
    except RunFileError:
        typer.echo(
            f"tuitrain: error: no run file was written: the training process {how_it_ended(exitcode)} "
            f"before it created {out_path}; its log is {log_path}",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED) from None
    status, n = s["status"], s["n_steps"]
    if status not in S.FINAL_STATUSES:
        typer.echo(
            f"tuitrain: error: training process died ({how_it_ended(exitcode)}) after {n} steps; the run "
            f"file {out_path} holds everything up to its last flush (status {status!r}, never closed); "
            f"its log is {log_path}",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)
    typer.echo(f"run {status} after {n} steps; run file {out_path}")
    if status == "failed" or s.get("error"):
        typer.echo(f"error: {s.get('error') or 'the run failed'}", err=True)
        raise typer.Exit(EXIT_FAILED)
    if status == "stopped":
        raise typer.Exit(stopped_code(stop_signal))


def _last_error(log_path: Path) -> str:
    """The worker's last ``error: ...`` line (how it reports bad input met after the spawn)."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return next((ln[len("error: ") :] for ln in reversed(lines) if ln.startswith("error: ")), "")


def run_launched(cfg: RunConfig, out_path: Path, launch: Launch) -> None:
    """``run --no-ui --nproc-per-node N``: torchrun starts the ranks (see :mod:`tuitrain.launch`); this
    process forwards Ctrl-C and exits as a single-process run would, from rank 0's run file."""
    import tempfile

    from tuitrain.config import to_toml
    from tuitrain.launch import run_launcher

    here = f"{launch.nproc_per_node} on this machine, node {launch.node_rank} of {launch.nnodes}"
    where = f"rank 0 writes {out_path}" if launch.node_rank == 0 else "rank 0, on node 0, writes the run file"
    typer.echo(f"data-parallel with torchrun: {launch.world_size} processes ({here}); {where}", err=True)
    with tempfile.TemporaryDirectory(prefix="tuitrain-") as tmp:
        config_path = Path(tmp) / "config.toml"  # every local rank trains exactly what was resolved here
        config_path.write_text(to_toml(cfg))
        rc = run_launcher(launch.command(config_path, out_path), launch.env())
    if launch.node_rank != 0:
        raise typer.Exit(0 if rc == 0 else EXIT_FAILED)
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(out_path) as rf:
            s = rf.summary()
    except RunFileError:  # rank 0 failed before it started the file: its exit code says why
        if rc != EXIT_BAD_INPUT:
            typer.echo(f"tuitrain: error: no run file was written (torchrun exited with code {rc})", err=True)
        raise typer.Exit(rc if rc in (EXIT_BAD_INPUT, EXIT_STOPPED) else EXIT_FAILED) from None
    stopped = rc if rc in (stopped_code(signal.SIGINT), stopped_code(signal.SIGTERM)) else EXIT_STOPPED
    codes = {"completed": 0, "stopped": stopped}
    code = codes.get(s["status"], EXIT_FAILED)
    if s["status"] == "failed" and is_bad_input(str(s.get("error") or "")):
        code = EXIT_BAD_INPUT
    raise typer.Exit(code)


def run_headless(cfg: RunConfig, out_path: Path) -> None:
    from tuitrain.train.sinks import PipeSafeConsole  # torch-free: rich and numpy

    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun only rank 0 reports and writes the file
    console = PipeSafeConsole()  # a reader that goes away (`| head`) does not end the run
    with (
        console.status(f"starting {cfg.name}: loading torch, data and model...")
        if rank == 0
        else contextlib.nullcontext()
    ):
        alone = int(os.environ.get("WORLD_SIZE", "1") or 1) == 1  # a pause must reach every rank: not here
        # SIGUSR1/2 pause and resume only a sweep's children (the runner sets PAUSE_SIGNALS_ENV): a
        # scheduler's own use of SIGUSR1 (SLURM's --signal, a warning before the time limit) must not
        # pause a plain run, which keeps its default reaction.
        asked = os.environ.get(PAUSE_SIGNALS_ENV) == "1"
        control = SignalControl(announce=rank == 0, pause_signals=alone and asked)
        from tuitrain.runfile.writer import RunFileWriter
        from tuitrain.train.engine import train
        from tuitrain.train.sinks import ConsoleSink
        from tuitrain.train.worker import relay_end
    relay = relay_end(control) if rank == 0 else None  # rank 0 of a data-parallel `watch`
    try:
        check_device(cfg.train.device)  # before the run file exists: bad input leaves nothing behind
    except ConfigError as e:
        raise fail(str(e) if rank == 0 else f"(rank {rank}) {e}") from None
    shown = ConsoleSink(console)
    sinks = [RunFileWriter(str(out_path), cfg.monitor.flush_seconds), relay or shown] if rank == 0 else []
    try:
        finished = train(cfg, sinks, control=relay or control, out_path=str(out_path))
    except ConfigError as e:
        from tuitrain.train.distributed import PeerFailed

        if isinstance(e, PeerFailed):
            raise typer.Exit(0) from None  # rank 0 failed first, said why, and its exit code counts
        raise fail(str(e) if rank == 0 else f"(rank {rank}) {e}") from None
    if finished.status == "failed":
        if finished.traceback:
            console.print(finished.traceback, markup=False, highlight=False)
        if rank == 0 and shown.started is None:  # failed before the run was announced (OOM building it)
            where = (
                f"the error and traceback are in the run file {out_path}"
                if out_path.exists()
                else f"no run file was written ({out_path} could not be created)"
            )
            typer.echo(f"tuitrain: {where}", err=True)
        raise typer.Exit(EXIT_FAILED)
    if finished.status == "stopped":
        # Other ranks stopped because all agreed to: exiting 0 lets torchrun wait for rank 0 to close
        # the run file instead of killing it when the first rank leaves.
        raise typer.Exit(stopped_code(control.signum) if rank == 0 else 0)
