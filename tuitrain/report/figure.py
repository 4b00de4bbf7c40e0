"""What a report figure is: a function from the runs of a report to the files it wrote, with the facts a
test or the report's README can check (lines drawn, rows of a heatmap, tiles of a grid).

Every figure module registers its functions in :data:`FIGURES` (in report order); ``tuitrain report``
calls each one with the same :class:`ReportRun` list (the same colours in every figure) and
:class:`Options`. A figure whose data the runs lack returns :class:`Skipped` with the reason (an old
file without the activation probe has no forward-signal figure), never an empty picture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


@dataclass(frozen=True)
class ReportRun:
    """One run of a report: its display name, its colour (tuitrain.view.colors.run_color of its index),
    its path, and the open RunFile (read through its public API only)."""

    name: str
    color: str
    path: Path
    rf: Any  # tuitrain.runfile.RunFile


@dataclass(frozen=True)
class Options:
    """What the command line chose: the image format (PNG is always written too, for the README),
    epochs / steps to show where a figure shows chosen moments (None: the figure's own default), and
    fnmatch patterns of layer or module names to leave out (biases, norm layers)."""

    fmt: str = "png"
    epochs: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    exclude: tuple[str, ...] = ()
    dpi: int = 120


@dataclass(frozen=True)
class Made:
    """A figure written: its name (file stem), the files (the PNG first), a title for the README and
    facts about what was drawn, by name (e.g. ``{"lines": 3}``, ``{"rows": 38}``, ``{"tiles": 64}``)."""

    name: str
    paths: list[Path]
    title: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """A figure not drawn, and why (said in the report's README and on the console)."""

    name: str
    why: str


FigureFn = Callable[[list[ReportRun], Path, Options], "Made | Skipped"]

# name -> function, in the order the report shows them; figure modules add theirs here (report.figures
# imports every figure module, so registering is importing).
FIGURES: dict[str, FigureFn] = {}


def register(name: str) -> Callable[[FigureFn], FigureFn]:
    def deco(fn: FigureFn) -> FigureFn:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")
        FIGURES[name] = fn
        return fn

    return deco
