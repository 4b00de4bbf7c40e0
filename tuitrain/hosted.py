"""The host a user's script runs under: what ``tuitrain watch script.py`` / ``run script.py --no-ui``
hand to the ``tuitrain.init`` inside the script.

A script is the user's code; tuitrain's command only starts it. The command's training process
installs a :class:`Host` before it runs the script, and ``tuitrain.init`` reads it: the live queue
(``watch``) or the console (``run --no-ui``) join the run's sinks, the command's ``--out`` and
``--overwrite`` win over the script's own, and the dashboard's pause and stop reach the script inside
``run.log``. A script started on its own (``python train.py``) has no host and writes its run file
alone. No torch here (and no textual): the worker imports this before it knows what the script needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tuitrain.events import Sink

__all__ = ["Control", "Host", "StopRun", "current", "install"]


class StopRun(BaseException):  # noqa: N818 - the public name of the issue's API
    """Raised inside ``run.log`` when whoever watches the run asked it to stop (the dashboard's ``s``).

    A ``BaseException``, like ``KeyboardInterrupt``: a loop's ``except Exception`` does not swallow it.
    The run ends ``stopped``; a ``with tuitrain.init(...)`` block ends quietly on it (the script goes
    on after the block), elsewhere it ends the script like Ctrl-C does."""


class Control(Protocol):
    """Commands from whoever watches the run: ``"pause"``, ``"resume"``, ``"stop"`` or None.
    ``poll(timeout)`` waits up to ``timeout`` seconds for one (0: just look)."""

    def poll(self, timeout: float = 0.0) -> str | None: ...


@dataclass
class Host:
    """What a tuitrain command gives the runs of the script it hosts."""

    sinks: list[Sink]  # the live queue (watch) or the console (run --no-ui), after the run file
    control: Control | None = None  # pause / resume / stop from the dashboard
    out: str | None = None  # the command's --out: wins over init(out=...) for the script's first run
    overwrite: bool = False  # the command's --overwrite (for the run at `out`)
    runs: list[str] = field(default_factory=list)  # run files the script's init() created, in order


_current: Host | None = None


def install(host: Host | None) -> None:
    """Make ``host`` the one the next ``tuitrain.init`` calls join (None: no host)."""
    global _current
    _current = host


def current() -> Host | None:
    """The installed host, or None for a script started on its own."""
    return _current
