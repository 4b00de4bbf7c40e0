"""The runs the app shows: one slot (source, history, name, colour) per run. A live dashboard has one;
``tuitrain replay a.h5 b.h5 ...`` has one per file, and :attr:`ViewState.selected` picks the one whose
header, bars, sparklines and heatmap are shown while the chart overlays them all."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import run_color

if TYPE_CHECKING:
    from tuitrain.ui.source import Source


@dataclass
class RunSlot:
    source: Source
    history: History
    name: str = ""  # legend and table name; "" -> the run's own name once RunStarted arrived
    color: str = ""  # "#rrggbb"; "" -> the palette's colour for the slot
    path: str = ""


class RunSet:
    def __init__(self, slots: Sequence[RunSlot]) -> None:
        if not slots:
            raise ValueError("a RunSet needs at least one run")
        self.slots = list(slots)
        for i, s in enumerate(self.slots):
            s.color = s.color or run_color(i)

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[RunSlot]:
        return iter(self.slots)

    def __getitem__(self, i: int) -> RunSlot:
        return self.slots[i]

    def attach(self, i: int, source: Source, history: History) -> RunSlot:
        """Give slot ``i`` a new source and history (a sweep variant whose run file appeared); its name,
        colour and place stay. The caller starts the source."""
        s = self.slots[i]
        s.source, s.history = source, history
        return s

    @property
    def histories(self) -> list[History]:
        return [s.history for s in self.slots]

    def name(self, i: int) -> str:
        s = self.slots[i]
        if s.name:
            return s.name
        return s.history.run.run_name if s.history.run is not None else f"run {i + 1}"

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self.slots))]

    @property
    def colors(self) -> list[str]:
        return [s.color for s in self.slots]

    def overlay(self) -> list[tuple[str, str, History]]:
        """(name, colour, history) of every run, what the chart and its legend draw."""
        return [(self.name(i), s.color, s.history) for i, s in enumerate(self.slots)]

    def tag(self, i: int) -> str:
        """The header's label of run ``i``: a chip in its colour and i/N; empty for a single run."""
        if len(self.slots) < 2:
            return ""
        s, name = self.slots[i], self.name(i)
        own = s.history.run.run_name if s.history.run is not None else ""
        label = f" {name.replace('[', chr(92) + '[')} [$text-muted]·[/]" if name != own else ""
        return f"[{s.color}]■[/] {i + 1}/{len(self.slots)}{label}"

    @property
    def version(self) -> int:
        return sum(s.history.version for s in self.slots)
