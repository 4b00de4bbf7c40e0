"""Every report figure, registered by importing its module (report order: the curves first, then the
per-layer figures of :mod:`tuitrain.report.layers` where that module exists)."""

from __future__ import annotations

import importlib.util

import tuitrain.report.curves  # noqa: F401  (registers "curves")
from tuitrain.report.figure import FIGURES

if importlib.util.find_spec("tuitrain.report.layers") is not None:
    import tuitrain.report.layers  # noqa: F401  (registers the per-layer figures)

__all__ = ["FIGURES"]
