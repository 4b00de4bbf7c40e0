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
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
from typing import Any


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


def worker_main(config_toml: str, out_path: str, events: Any, commands: Any, log_path: str,
                parent_pid: int) -> None:
    """Entry point of the spawned training process."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # own process group: terminal job-control signals are for the UI

    from tuitrain.config import from_toml
    from tuitrain.runfile.writer import RunFileWriter
    from tuitrain.train.engine import train
    from tuitrain.train.sinks import QueueSink

    cfg = from_toml(config_toml)
    live = SwitchableSink(QueueSink(events))
    control = QueueControl(commands, live, parent_pid)
    writer = RunFileWriter(out_path, cfg.monitor.flush_seconds)
    try:
        finished = train(cfg, [writer, live], control=control, out_path=out_path)
        print(f"run {finished.status} after {finished.step} steps", flush=True)
    except Exception as e:  # noqa: BLE001 - a ConfigError at setup: the UI shows it from RunFinished
        print(f"error: {e}", flush=True)
