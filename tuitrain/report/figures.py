"""Every report figure, registered by importing its module (report order: the curves first, then the
per-layer figures of :mod:`tuitrain.report.layers` where that module exists, then the snapshot
figures of :mod:`tuitrain.report.snapshots`)."""

from __future__ import annotations

import importlib.util

import tuitrain.report.curves  # noqa: F401  (registers "curves")
from tuitrain.report.figure import FIGURES

if importlib.util.find_spec("tuitrain.report.layers") is not None:
    import tuitrain.report.layers  # noqa: F401  (registers the per-layer figures)
import tuitrain.report.snapshots  # noqa: F401, E402  (kernels, token_mixing, boundary, misclassified)

# The report order, whichever figure module happened to be imported first (a test or a tool may import
# one directly): registration fills FIGURES, this fixes its order; unknown names keep theirs, after.
ORDER: tuple[str, ...] = (
    "curves",
    "gradient_flow",
    "grad_bars",
    "updates",
    "forward_signal",
    "kernels",
    "token_mixing",
    "boundary",
    "misclassified",
)
_ordered = {n: FIGURES.pop(n) for n in ORDER if n in FIGURES}
_rest = dict(FIGURES)
FIGURES.clear()
FIGURES.update({**_ordered, **_rest})

__all__ = ["FIGURES", "ORDER"]
