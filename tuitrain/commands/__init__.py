"""What the ``tuitrain`` commands (:mod:`tuitrain.cli`) do, kept out of the Typer definitions:
:mod:`~tuitrain.commands.resolve` (preset and options -> config and run-file path),
:mod:`~tuitrain.commands.training` (``run`` and ``watch``) and :mod:`~tuitrain.commands.show`
(``presets`` and ``info`` output). Like the CLI, nothing here imports torch or textual at module level.

Exit codes, shared by every command: 2 for bad input (one message on stderr, never a traceback),
1 for a failed run, 130 for a run stopped by the user.
"""

from __future__ import annotations

import typer

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_STOPPED = 130


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"tuitrain: error: {message}", err=True)
    return typer.Exit(code)
