"""The training process behind ``tuitrain watch``: owns the run file, streams to the dashboard.

Started with the stdlib's ``multiprocessing`` "spawn" context, not ``torch.multiprocessing``: the UI
process must never import torch (it would cost it seconds and hundreds of MB), and nothing here
shares tensors across processes; events are plain numpy arrays.

Lifecycle rules, each a promise of the product:
- The run file is this process's: it keeps writing whatever happens to the UI.
- Its stdout/stderr go to a log file next to the run file, never to the terminal the UI draws on.
- It runs in its own process group and ignores SIGINT and SIGHUP: Ctrl-C belongs to the UI, which
  asks before stopping, and when the SSH session drops the UI decides (``--on-hangup``): by default it
  detaches and training goes on until the file completes. SIGTERM stops the run cleanly.
- If the UI goes away (detach, or it died), the live queue is switched off so that nothing piles up.

Data-parallel (``watch --nproc-per-node N``): this process does not train; it starts torchrun (see
:mod:`tuitrain.launch`) and relays. Rank 0 is torchrun's child, not ours, so the dashboard's queues,
which pass only to children, cannot reach it: it calls a :class:`Relay` living here over a
``multiprocessing.managers`` connection (loopback, with a random key), and everything
above (detach, UI death, SIGTERM, the live queue's back-pressure) works unchanged, here.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

RELAY_ADDRESS_ENV = "TUITRAIN_RELAY"  # set for the ranks of a data-parallel `watch`: host:port of the relay
RELAY_KEY_ENV = "TUITRAIN_RELAY_KEY"


class QueueControl:
    """Commands from the UI over a multiprocessing queue, plus a watch on the UI process itself."""

    def __init__(self, commands: Any, live_sink: Any, parent_pid: int) -> None:
        self.commands = commands
        self.live_sink = live_sink
        self.parent_pid = parent_pid
        self.terminated = False
        signal.signal(signal.SIGTERM, self._on_term)  # `kill PID` stops cleanly

    def _on_term(self, signum: int, frame: Any) -> None:
        self.terminated = True

    def poll(self, timeout: float = 0.0) -> str | None:
        if self.terminated:
            return "stop"
        if self.live_sink.enabled and os.getppid() != self.parent_pid:
            self.live_sink.enabled = False  # the UI died without a word: stop feeding its queue
        try:
            cmd = self.commands.get(timeout=timeout) if timeout else self.commands.get_nowait()
        except (queue.Empty, OSError, EOFError):
            return None
        if cmd == "detach":
            # Nobody will be able to press resume any more: a paused run carries on.
            self.live_sink.enabled = False
            return "resume"
        return cmd


class SwitchableSink:
    """The live queue sink, with an off switch for when nobody is listening any more."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.enabled = True

    def emit(self, event: Any) -> None:
        if self.enabled:
            self.sink.emit(event)

    def close(self) -> None:
        if self.enabled:
            self.sink.close()


def worker_main(
    config_toml: str,
    out_path: str,
    events: Any,
    commands: Any,
    log_path: str,
    parent_pid: int,
    launch: Any = None,
) -> None:
    """Entry point of the spawned training process. ``launch`` (a :class:`tuitrain.launch.Launch`)
    makes it start torchrun and relay rank 0 instead of training itself."""
    from tuitrain.train.resume import continued_log

    # --resume into the same run file: its log goes on too (a new file otherwise, as always)
    _take_log_and_signals(events, log_path, continued=continued_log(config_toml, out_path, log_path))

    from tuitrain.config import ConfigError, from_toml
    from tuitrain.runfile.writer import RunFileWriter
    from tuitrain.train.engine import train
    from tuitrain.train.sinks import QueueSink

    cfg = from_toml(config_toml)
    live = SwitchableSink(QueueSink(events))
    control = QueueControl(commands, live, parent_pid)
    if launch is not None and launch.distributed:
        _launch_and_relay(launch, config_toml, out_path, log_path, live, control)
        return
    writer = RunFileWriter(out_path, cfg.monitor.flush_seconds)
    try:
        finished = train(cfg, [writer, live], control=control, out_path=out_path)
        print(f"run {finished.status} after {finished.step} steps", flush=True)
    except ConfigError as e:  # bad input met at setup: the UI shows it from RunFinished; `watch` exits 2
        print(f"error: {e}", flush=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - the UI shows it from RunFinished; the exit code says failed
        print(f"error: {e}", flush=True)
        sys.exit(1)
    finally:
        _drain(events, live, parent_pid)


def _take_log_and_signals(
    events: Any, log_path: str, overwrite: bool | None = None, continued: int | None = None
) -> None:
    """The lifecycle rules above, for this process: output to the log, SIGINT and SIGHUP ignored, an own
    process group. ``overwrite``: whether the log may replace one (default: ``--overwrite``);
    ``continued``: the open log of the run this one resumes, appended to instead."""
    from tuitrain.runfile.claim import create_exclusive, overwrite_asked

    try:  # a new file, never appended to through a link planted at <out>.log (see runfile/claim.py)
        fd = continued
        if fd is None:
            fd = create_exclusive(Path(log_path), overwrite_asked() if overwrite is None else overwrite)
    except (OSError, ValueError) as e:  # it appeared since `watch` checked: bad input, said on the dashboard
        _refuse(events, f"{log_path}: cannot create the training log: {e}")
        sys.exit(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: terminal job-control signals are for the UI


def script_worker_main(
    script: str,
    args: list[str],
    out: str | None,
    events: Any,
    commands: Any,
    log_path: str,
    parent_pid: int,
    results: Any,
) -> None:
    """Entry point of the training process behind ``tuitrain watch train.py -- ARGS``: the user's
    script runs here (see :mod:`tuitrain.train.script`) under the same rules as a preset, with the live
    queue and the dashboard's control handed to its ``tuitrain.init``. If the script records nothing
    (it never calls ``tuitrain.init``, or fails or exits before), the dashboard is told why; the
    command hears how the script ended through ``results`` (a pipe's sending end) and the exit code."""
    from tuitrain.runfile.claim import overwrite_asked

    default_log = out is None  # a name of its own in runs/, never another run's to replace
    _take_log_and_signals(events, log_path, overwrite=False if default_log else None)
    if default_log:  # the log holds the name now: the command's reservation of it can go
        _drop_reservation(Path(log_path))

    from tuitrain.events import RunFinished
    from tuitrain.hosted import Host
    from tuitrain.train.script import Outcomes, on_signal_before_start, run_script
    from tuitrain.train.sinks import QueueSink

    print(f"tuitrain: running {script} {' '.join(args)}".rstrip(), flush=True)
    live = SwitchableSink(QueueSink(events))
    outcomes = Outcomes()
    host = Host(sinks=[outcomes, live], control=None, out=out, overwrite=overwrite_asked())
    control = QueueControl(commands, live, parent_pid)
    host.control = control
    signal.signal(signal.SIGTERM, on_signal_before_start(host, control._on_term))
    end = run_script(Path(script), args, host, outcomes)
    why = end.without_run(log_path)
    if why:  # the dashboard waits in 'starting' for a run that will never come
        print(f"error: {why}", flush=True)
        status = "stopped" if end.interrupted else "failed"
        live.emit(RunFinished(status, 0, error=why, traceback="" if end.interrupted else end.traceback))
    live.close()
    _drain(events, live, parent_pid)
    with contextlib.suppress(OSError, ValueError):
        results.send(end.summary())
    print(f"tuitrain: {script} exited with code {end.code}", flush=True)
    sys.exit(end.code)


def _drain(events: Any, live: SwitchableSink, parent_pid: int, seconds: float = 2.0) -> None:
    """Stay until the dashboard has read the last events (at most ``seconds``): were this process gone
    first, the dashboard, on a busy machine, could take it for dead before they arrive and say
    "training process died" of a run that ended well (a short script's run ends within a second)."""
    if not live.enabled or os.getppid() != parent_pid:  # nobody reads the queue any more
        return
    with contextlib.suppress(Exception):
        events.close()
        events.join_thread()  # everything put is in the pipe now
        deadline = time.monotonic() + seconds
        while not events.empty() and time.monotonic() < deadline and os.getppid() == parent_pid:
            time.sleep(0.02)


def _drop_reservation(log_path: Path) -> None:
    """Remove the empty lock file that reserved the default log name (``claim_default_out``); it
    would outlive a ``watch`` that detaches (which skips the exit-time handler that removes it)."""
    from tuitrain.runfile.claim import lock_path

    lock = lock_path(log_path)
    with contextlib.suppress(OSError):
        if lock.is_file() and not lock.is_symlink() and lock.stat().st_size == 0:
            lock.unlink()


def _refuse(events: Any, error: str) -> None:
    """End the dashboard's wait with ``error`` when this process cannot even start its log."""
    from tuitrain.events import RunFinished
    from tuitrain.train.sinks import QueueSink

    sink = QueueSink(events)
    sink.emit(RunFinished("failed", 0, error=error))
    sink.close()


# ---- data-parallel watch -------------------------------------------------------------------------


class Relay:
    """Rank 0's sink and control, served from this process (see the module docstring).

    Calls are few: a step batch every ``monitor.emit_seconds`` and a command poll every few steps.
    """

    def __init__(self, live: SwitchableSink, control: QueueControl) -> None:
        self.live = live
        self.control = control
        self.finished = False

    def emit(self, event: Any) -> None:
        from tuitrain.events import RunFinished

        self.finished = self.finished or isinstance(event, RunFinished)
        self.live.emit(event)

    def close(self) -> None:
        self.live.close()

    def poll(self, timeout: float = 0.0) -> str | None:
        return self.control.poll(timeout)


def _launch_and_relay(
    launch: Any, config_toml: str, out_path: str, log_path: str, live: SwitchableSink, control: QueueControl
) -> None:
    """Serve the relay, run torchrun to its end, and make sure the dashboard hears how it ended."""
    from tuitrain.events import RunFinished

    with tempfile.TemporaryDirectory(prefix="tuitrain-") as tmp:
        config_path = Path(tmp) / "config.toml"
        config_path.write_text(config_toml)
        relay = Relay(live, control)

        class Manager(BaseManager):
            pass

        Manager.register("relay", callable=lambda: relay)
        # Loopback TCP on a free port (rank 0 is on this machine) rather than a socket file, which the
        # listener would try to unlink at exit after the temporary directory is gone. The random key
        # authenticates rank 0 (HMAC challenge), so other local users cannot connect.
        key = os.urandom(32)
        server = Manager(address=("127.0.0.1", 0), authkey=key).get_server()
        threading.Thread(target=server.serve_forever, name="tuitrain-relay", daemon=True).start()
        host, port = server.address
        env = {**launch.env(), RELAY_ADDRESS_ENV: f"{host}:{port}", RELAY_KEY_ENV: key.hex()}
        cmd = launch.command(config_path, Path(out_path))
        print("launching:", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=env)
        signalled = False
        while proc.poll() is None:
            time.sleep(0.2)
            if control.terminated and not signalled:  # `kill WORKER`: every rank stops cleanly
                proc.terminate()
                signalled = True
        print(f"torchrun exited with code {proc.returncode}", flush=True)
        if not relay.finished:  # rank 0 never got going (or died): the dashboard must not wait forever
            live.emit(
                RunFinished(
                    "failed",
                    0,
                    error=f"torchrun exited with code {proc.returncode} before "
                    f"rank 0 finished the run; see {log_path}",
                )
            )
            live.close()


class RelayEnd:
    """Rank 0's end of the relay: its sink (after the run file) and its control.

    Signals still count (torchrun forwards SIGTERM / SIGINT to every rank). If the worker is gone, rank 0
    trains on and completes its run file: only the live view is lost, and a pause is lifted, since
    nobody is left to resume it.
    """

    def __init__(self, proxy: Any, signals: Any) -> None:
        self.proxy = proxy
        self.signals = signals
        self.alive = True

    def emit(self, event: Any) -> None:
        if self.alive:
            try:
                self.proxy.emit(event)
            except (OSError, EOFError):
                self.alive = False

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError, EOFError):
                self.proxy.close()

    def poll(self, timeout: float = 0.0) -> str | None:
        if self.signals.poll() == "stop":
            return "stop"
        if not self.alive:
            return self.signals.poll(timeout) or "resume"
        try:
            return self.proxy.poll(timeout)
        except (OSError, EOFError):
            self.alive = False
            return "resume"


def relay_end(signals: Any) -> RelayEnd | None:
    """On rank 0 of a data-parallel ``watch``, connect to the dashboard's worker; otherwise None."""
    address = os.environ.get(RELAY_ADDRESS_ENV)
    if not address:
        return None

    class Manager(BaseManager):
        pass

    Manager.register("relay")
    host, _, port = address.rpartition(":")
    manager = Manager(address=(host, int(port)), authkey=bytes.fromhex(os.environ.get(RELAY_KEY_ENV, "")))
    manager.connect()
    return RelayEnd(manager.relay(), signals)  # type: ignore[attr-defined]
