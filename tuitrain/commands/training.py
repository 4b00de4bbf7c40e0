"""The bodies of ``run`` and ``watch``: training in this process with console output, under torchrun,
or in a spawned worker behind the dashboard; and the exit code each outcome maps to. torch, textual
and the run-file reader are imported inside the function that needs them, never at module level.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer

from tuitrain.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_STOPPED, fail
from tuitrain.config import ConfigError, RunConfig
from tuitrain.launch import Launch


class SignalControl:
    """Ctrl-C (or SIGTERM) asks the loop to stop at the next step, so the run file is closed cleanly
    as ``stopped``; a second Ctrl-C interrupts at once. ``announce``: say so on stderr (only rank 0 of
    a data-parallel run does, not every rank)."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\nstopping after this step (Ctrl-C again to interrupt at once)", file=sys.stderr)

    def poll(self, timeout: float = 0.0) -> str | None:
        if self.requested:
            return "stop"
        if timeout:
            time.sleep(timeout)
        return None


class Commands:
    """The dashboard's control channel to the training process."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def send(self, cmd: str) -> None:
        self.q.put(cmd)

    def flush(self) -> None:
        """Make sure what was sent has left this process (before os._exit)."""
        self.q.close()
        self.q.join_thread()


def run_watch(cfg: RunConfig, out_path: Path, on_hangup: str, launch: Launch | None = None) -> None:
    import multiprocessing as mp

    from tuitrain.config import to_toml
    from tuitrain.train.worker import worker_main
    from tuitrain.ui.app import run_dashboard
    from tuitrain.ui.source import LiveSource

    ctx = mp.get_context("spawn")
    events = ctx.Queue(maxsize=64)  # bounded: the worker coalesces or drops live rows, never blocks
    commands = Commands(ctx.Queue())
    log_path = out_path.with_suffix(".log")
    proc = ctx.Process(
        target=worker_main,
        name="tuitrain-train",
        args=(to_toml(cfg), str(out_path), events, commands.q, str(log_path), os.getpid(), launch),
    )
    proc.start()

    def hangup(signum: int, frame: Any) -> None:
        # The terminal is gone: nothing to restore, nobody to ask. Hand over and leave.
        commands.send(on_hangup if on_hangup == "stop" else "detach")
        commands.flush()
        os._exit(0)

    signal.signal(signal.SIGHUP, hangup)
    # 50 ms windows: the engine already batches 100 ms of steps, so the drain adds little delay
    result = run_dashboard(LiveSource(events, batch_seconds=0.05), commands, proc_alive=proc.is_alive)
    if result == "detach" and proc.is_alive():
        commands.send("detach")
        commands.flush()
        typer.echo(
            f"training continues in the background (pid {proc.pid}); it writes {out_path}\n"
            f"re-attach: tuitrain replay --follow {out_path}; stop it: kill {proc.pid}"
        )
        os._exit(0)  # skip multiprocessing's exit-time join: the worker must outlive us
    if result not in ("stop", "done") and proc.is_alive():
        commands.send("stop")  # the UI closed without a choice: do not leave an orphan behind
    if proc.is_alive():
        typer.echo(f"waiting for the training process to close {out_path} ...")
    proc.join(timeout=120)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=10)
    print_brief(out_path, log_path)


def print_brief(out_path: Path, log_path: Path) -> None:
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(out_path) as rf:
            s = rf.summary()
    except RunFileError:
        typer.echo(f"no run file was written; the training log is {log_path}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"run {s['status']} after {s['n_steps']} steps; run file {out_path}")
    if s.get("error"):
        typer.echo(f"error: {s['error']}", err=True)
        raise typer.Exit(EXIT_FAILED)


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
    codes = {"completed": 0, "stopped": EXIT_STOPPED}
    code = codes.get(s["status"], EXIT_FAILED)
    if s["status"] == "failed" and str(s.get("error") or "").startswith("ConfigError"):
        code = EXIT_BAD_INPUT
    raise typer.Exit(code)


def run_headless(cfg: RunConfig, out_path: Path) -> None:
    from rich.console import Console

    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun only rank 0 reports and writes the file
    console = Console()
    with (
        console.status(f"starting {cfg.name}: loading torch, data and model...")
        if rank == 0
        else contextlib.nullcontext()
    ):
        control = SignalControl(announce=rank == 0)
        from tuitrain.runfile.writer import RunFileWriter
        from tuitrain.train.engine import train
        from tuitrain.train.sinks import ConsoleSink
        from tuitrain.train.worker import relay_end
    relay = relay_end(control) if rank == 0 else None  # rank 0 of a data-parallel `watch`
    sinks = (
        [RunFileWriter(str(out_path), cfg.monitor.flush_seconds), relay or ConsoleSink(console)]
        if rank == 0
        else []
    )
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
        raise typer.Exit(EXIT_FAILED)
    if finished.status == "stopped":
        # Other ranks stopped because all agreed to: exiting 0 lets torchrun wait for rank 0 to close
        # the run file instead of killing it when the first rank leaves.
        raise typer.Exit(EXIT_STOPPED if rank == 0 else 0)
