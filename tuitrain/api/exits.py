"""How a script's runs end when the script does not say: an exception that escapes, Ctrl-C, SIGTERM,
or the interpreter exiting without ``run.finish()``.

Every run that :func:`tuitrain.init` opens is registered here until it finishes. Three process-wide
hooks, installed once and chained to what was there before, end the open runs:

* ``sys.excepthook`` (an exception escaped the script): ``failed`` with the error and traceback, or
  ``stopped`` for Ctrl-C (``KeyboardInterrupt``) and the dashboard's :class:`~tuitrain.hosted.StopRun`;
  then the previous hook prints the traceback as always (a StopRun gets one line instead).
* ``atexit`` (the interpreter is exiting): ``completed``, or ``stopped`` after a SIGTERM. It is moved
  to the end of the atexit list at every ``init``, so it runs before the other handlers registered
  since (the default name's reservation among them).
* SIGTERM, only where its handler is still the default and only from the main thread: it raises
  :class:`Terminated` (a ``SystemExit(143)``) so that the script's ``finally`` blocks and ``with``
  blocks run and the process exits 143, as an unhandled SIGTERM would. Hosted scripts keep the host's
  handler (the worker's).
* SIGINT keeps Python's behaviour (``KeyboardInterrupt``), where Python's own handler is installed.
* ``sys.exit``, wrapped to remember the code it was called with: a script that ends with
  ``sys.exit(1)`` has failed, and the interpreter's exit status is the only other trace of it, which no
  atexit handler can read (a ``raise SystemExit(1)`` of its own is not seen: it ends ``completed``).

Either signal arriving while tuitrain's own code runs (a flush writing the run file) waits until that
code is done (:data:`guard`), a few milliseconds: the run file's columns are never left half-appended.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import sys
import threading
import traceback as tb
from typing import Any, Protocol

from tuitrain.config import error_text
from tuitrain.hosted import StopRun


class Terminated(SystemExit):  # noqa: N818 - a SystemExit, named for what happened
    """SIGTERM, as this module raises it: the run ends ``stopped`` and the process exits 143."""

    def __init__(self) -> None:
        super().__init__(143)


class _Ending(Protocol):
    def finish(self, status: str = "completed", error: str = "", traceback: str = "") -> None: ...


_open: list[_Ending] = []
_installed = False
_terminated = False  # a SIGTERM arrived: the runs that end now were stopped
_previous_hook: Any = None
_exit_code: list[Any] = []  # the code of the last sys.exit() call, if any
_original_exit: Any = None


def outcome(exc: BaseException | None) -> tuple[str, str, str]:
    """(status, error, traceback) of a run that ends because of ``exc`` (None: it ended normally)."""
    if exc is None:
        return ("stopped" if _terminated else "completed"), "", ""
    if isinstance(exc, (KeyboardInterrupt, StopRun, Terminated)):
        return "stopped", "", ""
    if isinstance(exc, SystemExit):
        if exc.code in (None, 0):
            return "completed", "", ""
        return "failed", f"SystemExit: the script exited with {exc.code!r}", ""
    text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
    return "failed", error_text(exc), text


def end_runs(exc: BaseException | None = None) -> None:
    """End every run still open as ``exc`` says (:func:`outcome`). For hosts that run a script and
    catch what escapes it themselves (no excepthook sees it then)."""
    status, error, text = outcome(exc)
    for run in list(_open):
        with contextlib.suppress(Exception):
            run.finish(status, error, text)


def register(run: _Ending) -> None:
    _install()
    _open.append(run)
    atexit.unregister(_at_exit)  # to the end of the list: it runs first of those registered so far
    atexit.register(_at_exit)


def unregister(run: _Ending) -> None:
    with contextlib.suppress(ValueError):
        _open.remove(run)


class _Guard:
    """Counts tuitrain's own code on the stack; a SIGTERM meanwhile is raised when it leaves."""

    __slots__ = ("depth", "pending")

    def __init__(self) -> None:
        self.depth = 0
        self.pending: type[BaseException] | None = None  # what a signal meanwhile asked to raise

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.pending is not None and self.depth == 0:
            pending, self.pending = self.pending, None
            raise pending


guard = _Guard()


def _install() -> None:
    global _installed, _previous_hook
    if _installed:
        return
    _installed = True
    _previous_hook = sys.excepthook
    sys.excepthook = _excepthook
    _wrap_sys_exit()
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                signal.signal(signal.SIGINT, _on_sigint)


def _excepthook(exc_type: type[BaseException], exc: BaseException, trace: Any) -> None:
    with contextlib.suppress(Exception):
        end_runs(exc)
    if isinstance(exc, StopRun):
        print(f"tuitrain: the run was stopped{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return
    (_previous_hook or sys.__excepthook__)(exc_type, exc, trace)


def _wrap_sys_exit() -> None:
    global _original_exit
    _original_exit = sys.exit

    def exit_remembering_the_code(code: Any = None) -> None:  # what sys.exit is while tuitrain runs
        _exit_code[:] = [code]
        _original_exit(code)

    sys.exit = exit_remembering_the_code


def _at_exit() -> None:
    code = _exit_code[0] if _exit_code else None
    end_runs(SystemExit(code) if code not in (None, 0) else None)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminated
    _terminated = True
    _raise(Terminated)


def _on_sigint(signum: int, frame: Any) -> None:
    _raise(KeyboardInterrupt)


def _raise(exc: type[BaseException]) -> None:
    if guard.depth:
        guard.pending = guard.pending or exc
        return
    raise exc
