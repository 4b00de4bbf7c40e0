"""tuitrain: a terminal-first live monitor for PyTorch training.

``import tuitrain`` stays light (no torch): the API for a user's own loop (``tuitrain.init``,
``tuitrain.Run``; :mod:`tuitrain.api`) is imported the first time one of its names is used.
``tuitrain.StopRun`` comes from :mod:`tuitrain.hosted`, which needs no torch either.
``tuitrain.load`` (a run file as pandas DataFrames) is :mod:`tuitrain.frames`'s, imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "StopRun", "__version__", "init", "load"]

if TYPE_CHECKING:
    from tuitrain.api import Run, init
    from tuitrain.frames import load
    from tuitrain.hosted import StopRun


def __getattr__(name: str) -> Any:
    if name == "StopRun":
        from tuitrain.hosted import StopRun

        return StopRun
    if name == "load":
        from tuitrain.frames import load

        return load
    if name in ("init", "Run"):
        from tuitrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuitrain' has no attribute {name!r}")
