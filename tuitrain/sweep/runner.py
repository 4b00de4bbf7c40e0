"""The sweep's runner: every variant a ``tuitrain run ... --no-ui`` child process (its output in
``DIR/<name>.out``, never the terminal), at most ``parallel`` at a time, the rest queued; the manifest
rewritten on every change (the runner is its only writer). One child failing never stops the others.

Ctrl-C or SIGTERM: SIGINT to every running child (each closes its file as ``stopped``), the queued ones
marked ``stopped`` without starting, then the runner waits for the children; a second signal is
forwarded too (the children then interrupt at once). Children run in their own process group, so a
Ctrl-C at the terminal reaches them once, through the runner, never twice.

No torch here: :func:`plan_parallel` imports it only to count GPUs where CUDA may be present.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tuitrain.commands import EXIT_COMPLETED, EXIT_FAILED, stopped_code
from tuitrain.sweep.manifest import QUEUED, STARTING, Manifest, Variant, save, status_of, variant_path

POLL_S = 0.2  # how often children are polled; the display refreshes itself ~1/s from these ticks
FINAL = ("completed", "stopped", "failed")


def program() -> list[str]:
    """How a child is started: ``tuitrain`` when that name on PATH is this install's entry point (the
    printed commands read as a user types them), else this interpreter's ``python -m tuitrain``."""
    found = shutil.which("tuitrain")
    here = Path(sys.executable).parent / "tuitrain"
    if found and here.exists() and Path(found).resolve() == here.resolve():
        return ["tuitrain"]
    return [sys.executable, "-m", "tuitrain"]


def child_command(
    name: str, preset: str, sets: list[str], args: list[str], file: Path, overwrite: bool = False
) -> list[str]:
    """The one ``tuitrain run`` command of a variant: the runner runs it and ``--print-commands`` prints
    it. ``--overwrite`` only when the sweep was given it: a printed script run twice is then refused
    per variant (exit 2) instead of replacing the runs it made, as ``run`` refuses an existing
    ``--out``. (The runner's own record of a child's output is ``<name>.out``, not the run's
    ``<name>.log``, so it never stands in the child's way.)"""
    sets_args = [a for s in sets for a in ("--set", s)]
    return [
        *program(), "run", preset, "--no-ui", *sets_args, *args,
        "--name", name, "--out", str(file), *(["--overwrite"] if overwrite else []),
    ]  # fmt: skip


def console_path(v: Variant, directory: Path) -> Path:
    """Where the runner keeps a child's stdout and stderr: ``DIR/<name>.out``."""
    return variant_path(v, directory).with_suffix(".out")


def _cuda_possible() -> bool:
    """Whether an NVIDIA driver is there at all (cheap: no torch), before asking torch how many GPUs."""
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def plan_parallel(parallel: str, n_variants: int, device: str) -> tuple[int, list[int]]:
    """``--parallel`` -> (children at a time, GPU indices to spread them over; empty on CPU).
    ``auto``: one variant per GPU on CUDA, else as many as the CPUs (each child's ``train.threads``
    auto then shares the cores between them). A number forces that many (round-robin over the GPUs)."""
    from tuitrain.config import ConfigError
    from tuitrain.train.cpuload import available_cpus

    gpus: list[int] = []
    if device in ("cuda", "auto") and _cuda_possible():
        import torch

        gpus = list(range(torch.cuda.device_count()))
    if parallel == "auto":
        n = len(gpus) if gpus else available_cpus()
    else:
        try:
            n = int(parallel)
        except ValueError:
            n = 0
        if n < 1:
            raise ConfigError(f"--parallel {parallel!r}: a number of variants at a time (>= 1), or auto.")
    return max(1, min(n, n_variants)), gpus


def last_paragraph(log: Path, limit: int = 600) -> str:
    """The last paragraph a child wrote (its ``tuitrain: error: ...`` for bad input), one line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    blocks = [b.strip() for b in text.replace("\r", "\n").split("\n\n") if b.strip()]
    if not blocks:
        return ""
    last = " ".join(blocks[-1].split())
    last = last.split("tuitrain: error: ", 1)[-1]
    return last if len(last) <= limit else last[: limit - 3] + "..."


def how_it_ended(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Child:
    variant: Variant
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    gpu: int | None


class Runner:
    """Runs a manifest's queued variants in ``directory``. ``on_change(variant)``: a status changed;
    ``tick()``: called every poll (the display decides when to redraw)."""

    def __init__(
        self,
        manifest: Manifest,
        directory: Path,
        parallel: int,
        gpus: list[int] | None = None,
        on_change: Callable[[Variant], None] | None = None,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.directory = directory
        self.parallel = max(1, parallel)
        self.gpus = gpus or []
        self.on_change = on_change or (lambda v: None)
        self.tick = tick or (lambda: None)
        self.running: list[Child] = []
        self.signals: list[int] = []
        self._handled = 0
        self.stopping: set[str] = set()  # variants stopped on request before their file existed
        self.queue: list[Variant] = []

    def _signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _save(self) -> None:
        save(self.manifest, self.directory)

    def _set(self, v: Variant, status: str) -> None:
        v.status = status
        self._save()
        self.on_change(v)

    def _free_gpu(self) -> int | None:
        if not self.gpus:
            return None
        load = {g: 0 for g in self.gpus}
        for c in self.running:
            if c.gpu is not None:
                load[c.gpu] += 1
        return min(self.gpus, key=lambda g: (load[g], g))

    def _start(self, v: Variant) -> None:
        log_path = console_path(v, self.directory)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TUITRAIN_PAUSE_SIGNALS="1")  # SweepControl's pause
        gpu = self._free_gpu()
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        log = open(log_path, "wb")  # noqa: SIM115 - closed when the child ends
        try:
            proc = subprocess.Popen(
                v.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            log.close()
            v.exit_code, v.started, v.ended = None, time.time(), time.time()
            v.error = f"could not start {v.command[0]}: {e.strerror or e}"
            self._set(v, "failed")
            return
        v.started, v.pid = time.time(), proc.pid
        self.running.append(Child(v, proc, log, gpu))
        self._set(v, STARTING)

    def _finish(self, c: Child, code: int) -> None:
        c.log.close()
        v = c.variant
        v.exit_code, v.ended, v.pid = code, time.time(), None
        path = variant_path(v, self.directory)
        status = status_of(v, self.directory) if path.is_file() else None
        if status in FINAL:
            v.error = _file_error(path) if status == "failed" else ""
        elif v.name in self.stopping and (status is None or status == STARTING):
            status = "stopped"
            v.error = "stopped on request before it started training"
        elif status is None:  # no file: bad input (exit 2) or a child that died at start
            status = "failed"
            v.error = last_paragraph(console_path(v, self.directory)) or f"the child {how_it_ended(code)}"
        else:  # a file its writer never finished: the child died
            status = "failed"
            v.error = f"the training process {how_it_ended(code)} before it closed {v.file}"
        self._set(v, status)

    def _stop_all(self, signum: int) -> None:
        for c in self.running:
            with contextlib.suppress(OSError):
                os.kill(c.proc.pid, signal.SIGINT)
        if self._handled == 0:
            now = time.time()
            for v in self.manifest.variants:
                if v.status == QUEUED:
                    v.ended = now
                    v.error = f"not started: the sweep was stopped ({signal.Signals(signum).name})"
                    self._set(v, "stopped")
        self._handled += 1

    def _requests(self) -> None:
        """Stop requests from :class:`tuitrain.sweep.control.SweepControl` (``DIR/.requests``): a queued
        variant is marked stopped without starting, a running one gets SIGINT."""
        from tuitrain.sweep.control import read_requests

        for cmd, names in read_requests(self.directory):
            if cmd != "stop":
                continue
            for v in [q for q in self.queue if q.name in names]:
                self.queue.remove(v)
                v.ended, v.error = time.time(), "not started: stopped on request"
                self._set(v, "stopped")
            for c in self.running:
                if c.variant.name in names:
                    self.stopping.add(c.variant.name)
                    with contextlib.suppress(OSError):
                        os.kill(c.proc.pid, signal.SIGINT)

    def run(self) -> int:
        """Run to the end (or the stop); returns the sweep's exit code (:func:`exit_code`)."""
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGINT, signal.SIGTERM)}
        from tuitrain.sweep.control import read_requests

        read_requests(self.directory)  # requests left from an earlier sweep in this folder are not ours
        self.manifest.runner_pid = os.getpid()
        try:
            self._save()
            queue = self.queue = [v for v in self.manifest.variants if v.status == QUEUED]
            while True:
                while len(self.signals) > self._handled:
                    self._stop_all(self.signals[self._handled])
                self._requests()
                while queue and not self.signals and len(self.running) < self.parallel:
                    self._start(queue.pop(0))
                for c in list(self.running):
                    code = c.proc.poll()
                    if code is not None:
                        self.running.remove(c)
                        self._finish(c, code)
                if not self.running and (not queue or self.signals):
                    break
                self.tick()
                time.sleep(POLL_S)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.manifest.runner_pid = None
            with contextlib.suppress(OSError):
                self._save()
        return exit_code(self.manifest, self.signals[0] if self.signals else None)


def _file_error(path: Path) -> str:
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(path) as rf:
            return str(rf.error or "the run failed")
    except (RunFileError, OSError):
        return "the run failed"


def exit_code(manifest: Manifest, stop_signal: int | None) -> int:
    """0 when every variant completed; 130/143 when the sweep was stopped by SIGINT/SIGTERM; else 1 if
    any failed, 130 if any was stopped by someone else (a child's own Ctrl-C)."""
    if stop_signal is not None:
        return stopped_code(stop_signal)
    statuses = [v.status for v in manifest.variants]
    if "failed" in statuses:
        return EXIT_FAILED
    if "stopped" in statuses:
        return stopped_code(signal.SIGINT)
    return EXIT_COMPLETED
