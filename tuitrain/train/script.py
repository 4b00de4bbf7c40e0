"""A user's own training script run by a tuitrain command: ``tuitrain watch train.py -- ARGS`` (in the
background training process) and ``tuitrain run train.py --no-ui -- ARGS`` (in the command's process).

The script runs as ``python train.py ARGS`` would run it: ``sys.argv = [train.py, *ARGS]``, its folder
first on ``sys.path``, as ``__main__``. Before it starts, a :class:`tuitrain.hosted.Host` is installed,
so that ``tuitrain.init`` inside it sends its events to the command's sinks (the live queue or the
console), takes the command's pause/stop control and its ``--out``; the script needs no change to be
watched. The runs it leaves open are ended here, as its end says (:func:`tuitrain.api.exits.end_runs`:
completed, failed with the error and traceback, stopped), before the command reports: at the
interpreter's exit would be too late for a spawned process, whose live queue multiprocessing closes
ahead of the atexit handlers. An exception is printed as Python prints it, with the frames of
tuitrain's own runner (and runpy's) cut off, so the traceback is the script's.

Nothing here imports torch: the script does, itself.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tuitrain.config import is_bad_input
from tuitrain.events import Event, RunFinished, RunStarted


class Terminated(BaseException):
    """SIGTERM before the script started a run: nothing to close, so the script is ended at once."""


@dataclass
class RunOutcome:
    """One run the script recorded, as its events said: where, and how it ended (``running`` until its
    RunFinished: a run that never ended)."""

    path: str
    status: str = "running"
    step: int = 0
    error: str = ""


class Outcomes:
    """A sink that notes each run's path and ending as the events pass by (the host's first sink): the
    command reports from it, whatever the script did with its runs."""

    def __init__(self) -> None:
        self.runs: list[RunOutcome] = []

    def emit(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.runs.append(RunOutcome(event.out_path))
        elif isinstance(event, RunFinished):
            if not self.runs or self.runs[-1].status != "running":
                self.runs.append(RunOutcome(""))  # ended before it was announced (run file not created)
            run = self.runs[-1]
            run.status, run.step, run.error = event.status, event.step, event.error

    def close(self) -> None:
        """Nothing to release: the records outlive every run."""


@dataclass
class ScriptEnd:
    """How the script itself ended. ``code``: its exit status as ``python train.py`` would give it
    (0 normal end, ``SystemExit``'s code, 1 for an exception); ``error``: the exception in one line;
    ``interrupted``: Ctrl-C, SIGTERM or a stop that escaped the script."""

    script: str
    code: int = 0
    error: str = ""
    traceback: str = ""  # the script's own frames
    interrupted: bool = False
    started: bool = False  # whether tuitrain.init was called (a run was started or its file created)
    runs: list[RunOutcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain data, for the pipe from the training process to the command."""
        return {
            "script": self.script,
            "code": self.code,
            "error": self.error,
            "traceback": self.traceback,
            "interrupted": self.interrupted,
            "started": self.started,
            "runs": [vars(r) for r in self.runs],
        }

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> ScriptEnd:
        runs = [RunOutcome(**r) for r in d.get("runs", [])]
        return cls(d["script"], d["code"], d["error"], d["traceback"], d["interrupted"], d["started"], runs)

    def without_run(self, log: str = "") -> str:
        """Why nothing was recorded, in one paragraph, or "" when the script did start a run."""
        if self.started or self.runs:
            return ""
        where = f"; its output is in {log}" if log else ""
        if self.interrupted:
            return f"{self.script} was stopped before it called tuitrain.init(){where}"
        if is_bad_input(self.error):  # met by tuitrain.init (an --out that holds a run): exit 2
            return f"{self.script}: {self.error.removeprefix('ConfigError: ')}{where}"
        if self.error:
            return f"{self.script} failed before tuitrain.init() started a run: {self.error}{where}"
        if self.code:
            hint = " (bad arguments? a script's own go after --: tuitrain watch train.py -- --lr 0.1)"
            return f"{self.script} exited with code {self.code}{hint if self.code == 2 else ''}{where}"
        return (
            f"{self.script} ended without calling tuitrain.init(): nothing was recorded. A script run by "
            "tuitrain records its training with `run = tuitrain.init(...)`, `run.watch(model, optimizer)` "
            f"and `run.log({{'loss': loss}})`{where}"
        )


def check_script(script: str) -> Path:
    """The script to run, or :class:`~tuitrain.config.ConfigError` (exit 2) naming what is wrong."""
    from tuitrain.config import ConfigError

    path = Path(script)
    if not path.exists():
        raise ConfigError(
            f"{script}: no such script. A training script is an existing .py file "
            "(tuitrain watch path/to/train.py -- ARGS); a preset is a .toml file or a preset name."
        )
    if not path.is_file():
        raise ConfigError(f"{script}: not a file; give a training script (.py) or a preset.")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{script}: cannot be read (permission denied).")
    return path


def run_script(script: Path, args: list[str], host: Any, outcomes: Outcomes) -> ScriptEnd:
    """Run ``script`` with ``args`` under ``host`` (a :class:`tuitrain.hosted.Host`, installed here)
    to its end, and end whatever runs it left open, as its end says (completed, failed with the
    script's traceback, stopped). ``outcomes`` must be one of ``host.sinks``."""
    from tuitrain import hosted

    end = ScriptEnd(str(script))
    saved_argv, saved_path = sys.argv, list(sys.path)
    hosted.install(host)
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.resolve().parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
        _end_runs(None)
    except SystemExit as e:
        end.code = _exit_status(e.code)
        _end_runs(e)
    except BaseException as e:  # noqa: BLE001 - the script's own end, reported like Python's
        end.code = 1
        end.error = _one_line(e)  # ConfigError: ... (bad input met by tuitrain.init) is exit 2
        end.interrupted = not isinstance(e, Exception)  # KeyboardInterrupt, StopRun, Terminated
        tb = _script_frames(e.__traceback__, script)
        e = e.with_traceback(tb)
        started = bool(host.runs or outcomes.runs)
        _end_runs(e)
        quiet = (end.interrupted and not started) or is_bad_input(end.error)  # said in one line instead
        if not quiet:  # (a Ctrl-C before any run: nothing to say; bad input: no traceback)
            end.traceback = "".join(traceback.format_exception(type(e), e, tb))
            sys.excepthook(type(e), e, tb)  # prints it, as the interpreter would
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        hosted.install(None)
    end.started = bool(host.runs or outcomes.runs)
    end.runs = outcomes.runs
    return end


def _end_runs(exc: BaseException | None) -> None:
    """End the runs the script left open, as ``exc`` (its end) says: what ``tuitrain.init``'s own
    exit hooks would do at the interpreter's exit, done now, so that it happens before the command
    reports and before a spawned process's queues close (multiprocessing's exit function runs ahead
    of atexit handlers there). Nothing is open unless the script imported tuitrain's API."""
    exits = sys.modules.get("tuitrain.api.exits")
    if exits is not None:
        with contextlib.suppress(Exception):
            exits.end_runs(exc)


def _exit_status(code: object) -> int:
    """``SystemExit.code`` as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _one_line(e: BaseException) -> str:
    """``Type: first line``, every kind of bad input as ``ConfigError: ...`` (see config.error_text)."""
    from tuitrain.config import error_text

    return error_text(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _script_frames(tb: TracebackType | None, script: Path) -> TracebackType | None:
    """The traceback from the script's first frame on: tuitrain's runner and runpy are not the
    user's business (``python train.py`` would not show them either)."""
    target = os.path.realpath(script)
    t = tb
    while t is not None:
        if os.path.realpath(t.tb_frame.f_code.co_filename) == target:
            return t
        t = t.tb_next
    return tb  # failed before its first line ran (a syntax error): keep everything


def on_signal_before_start(host: Any, handler: Any) -> Any:
    """A signal handler that ends the script at once while it has started no run (it may be importing
    torch or building its data: nothing to close), and calls ``handler`` (the control's clean stop)
    once it has. It ends the script once: a second signal meanwhile (the dashboard's stop, then its
    quit) must not interrupt the end being reported."""
    ended: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if ended:
            return
        if host.runs:
            try:
                handler(signum, frame)
            except KeyboardInterrupt:  # the second Ctrl-C: at once, yet never inside a run-file write
                exits = sys.modules.get("tuitrain.api.exits")
                if exits is None or not exits.guard.depth:
                    raise
                exits.guard.pending = exits.guard.pending or KeyboardInterrupt
        else:
            ended.append(signum)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Terminated(f"stopped by {signal.Signals(signum).name}")

    return on_signal
