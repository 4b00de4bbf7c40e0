"""``tuitrain replay``: the dashboard fed from run files, one :class:`FileSource` and one history per
file. One file opens on the dashboard; several open on the compare view (overlaid curves, legend,
final table), with ``r`` to pick the run the header, bars, sparklines and heatmap show."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tuitrain.runfile.reader import RunFile
from tuitrain.ui.app import TuitrainApp
from tuitrain.ui.history import History
from tuitrain.ui.replay.compare import unique_names
from tuitrain.ui.replay.file_source import FileSource
from tuitrain.ui.replay.runs import RunSet, RunSlot


def replay_runs(runs: Sequence[RunFile], *, follow: bool = False, **source_kw: float) -> RunSet:
    """A slot per open run file: its source, and a history that looks steps up in the file."""
    names = unique_names([rf.run_name for rf in runs], [str(rf.path) for rf in runs])
    slots = []
    for rf, name in zip(runs, names, strict=True):
        source = FileSource(rf, follow=follow, **source_kw)  # type: ignore[arg-type]
        history = History(clock=time.time)
        history.backing = source
        history.row_stride = float(source.step_stride)
        history.findings.stored = rf.has_findings  # False: a file from before findings were stored
        slots.append(RunSlot(source, history, name=name, path=str(rf.path)))
    return RunSet(slots)


def replay_app(
    runs: Sequence[RunFile],
    *,
    follow: bool = False,
    metric: str = "loss",
    mode: str | None = None,
    cpu_budget: float | None = 0.08,
    **source_kw: float,
) -> TuitrainApp:
    run_set = replay_runs(runs, follow=follow, **source_kw)
    mode = mode or ("compare" if len(runs) > 1 else "dashboard")
    return TuitrainApp(None, runs=run_set, replay=True, mode=mode, metric=metric, cpu_budget=cpu_budget)


def run_replay(runs: Sequence[RunFile], *, follow: bool = False, metric: str = "loss") -> str | None:
    """Run the replay in the terminal until the user quits."""
    return replay_app(runs, follow=follow, metric=metric).run()
