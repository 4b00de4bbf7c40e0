"""One colour per run, in order: the compare view, the chart legends and the report's figures all use
these, so run 2 is the same orange on the dashboard and in a PNG."""

from __future__ import annotations

# Tableau 10: distinct hues that read on dark and light themes (and on white paper) alike.
PALETTE: tuple[str, ...] = (
    "#4e9ad8",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def run_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]
