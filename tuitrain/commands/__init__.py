"""What the ``tuitrain`` commands (:mod:`tuitrain.cli`) do, kept out of the Typer definitions:
:mod:`~tuitrain.commands.resolve` (preset and options -> config and run-file path),
:mod:`~tuitrain.commands.training` (``run`` and ``watch``) and :mod:`~tuitrain.commands.show`
(``presets`` and ``info`` output). Like the CLI, nothing here imports torch or textual at module level.

Exit codes, the one table every command uses (scripts and CI read them, so each means one thing):

====  =====================================================================================
0     the run completed (or ``watch`` detached from a run that goes on in the background)
1     the run failed: an error in training, a training process that died (SIGKILL, OOM), or
      a run file that could not be completed (its final flush or close failed)
2     bad input: preset, ``--set``, option, device, run file, data; one message, no traceback
130   stopped by SIGINT: Ctrl-C, ``kill -INT``, or a stop chosen in the dashboard (128 + 2)
143   stopped by SIGTERM: ``kill PID`` of ``run`` or ``watch`` (128 + 15)
====  =====================================================================================

A stopped run's file is closed as ``stopped`` either way; the code says who stopped it.

``tuitrain sweep`` runs many runs and answers for all of them with the same codes: 0 every variant
completed; 1 any variant failed (the others still ran to their end); 2 bad input, found before any
variant started (a bad ``--grid``, preset, key or value, or two variants with the same config); 130 or
143 the sweep was stopped by SIGINT or SIGTERM (every running variant closed as ``stopped``, the queued
ones never started).
"""

from __future__ import annotations

import signal

import typer

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
EXIT_STOPPED = EXIT_INTERRUPTED  # a stop asked for by the user at the terminal


def stopped_code(signum: int | None) -> int:
    """The exit code of a run that ended ``stopped``: 143 when SIGTERM asked for it, else 130."""
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"tuitrain: error: {message}", err=True)
    return typer.Exit(code)
