"""A run file as TensorBoard event files: ``tensorboard --logdir DIR`` then shows its curves.

Tags (docs/export.md): ``train/<scalar>`` per step for every declared step scalar, ``epoch/<column>`` per
epoch at the epoch's last step, ``test/<metric>`` at the run's last step, and the per-layer statistics
of each probe at the steps it was taken, ``<probe>/<quantity>/<layer or module>`` (``grad/...`` and
``act/...`` for the built-in probes). NaN values (not measured, not logged at that step) are left out:
TensorBoard would draw them as gaps at best.

Written with ``torch.utils.tensorboard.SummaryWriter``, imported here inside the function: only this
command pays for torch. TensorBoard itself is an optional extra; :class:`TensorBoardMissing` says how
to install it. Each export writes one new event file; an existing one is refused (two files in one
folder would draw every curve twice) unless ``overwrite``, which removes the old event files once the
new one is complete.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tuitrain.export.csv import ExportError, chunks, probe_axis_names, probe_width

if TYPE_CHECKING:
    from tuitrain.runfile.reader import RunFile

EVENT_GLOB = "events.out.tfevents.*"


class TensorBoardMissing(ExportError):
    """The tensorboard package is not installed."""


def require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise TensorBoardMissing(
            "--tensorboard needs the tensorboard package, which is not installed. Install it with "
            'pip install "tuitrain[tensorboard]" (or pip install tensorboard); --csv needs nothing extra.'
        ) from None


def tensorboard_scalars(rf: RunFile) -> Iterator[tuple[str, float, int]]:
    """(tag, value, step) of everything the export writes, in order; NaN values left out."""
    names = rf.step_scalars
    for sl in chunks(rf.n_steps):
        steps = rf.scalar("step", sl.start, sl.stop)
        cols = [rf.scalar(n, sl.start, sl.stop) for n in names]
        for i in range(len(steps)):
            for n, c in zip(names, cols, strict=True):
                v = float(c[i])
                if not math.isnan(v):
                    yield f"train/{n}", v, int(steps[i])
    ep = rf.epochs()
    for i in range(len(ep["epoch"])):
        for col, vals in ep.items():
            if col in ("epoch", "step"):
                continue
            v = float(vals[i])
            if not math.isnan(v):
                yield f"epoch/{col}", v, int(ep["step"][i])
    for key, (steps, _epochs, values) in rf.metrics("epoch").items():
        for s, v in zip(steps.tolist(), values.tolist(), strict=True):
            if not math.isnan(v):
                yield f"epoch/{key}", float(v), int(s)
    test = rf.test()
    if math.isfinite(test["time"]):
        for key, v in {**test, **rf.test_metrics()}.items():
            if not math.isnan(v):
                yield f"test/{key}", float(v), rf.last_step
    for spec in rf.probe_specs:
        _, items = probe_axis_names(rf, spec.axis, probe_width(rf, spec.name, spec.axis))
        for sl in chunks(rf.probe_rows(spec.name)):
            steps = rf.probe_steps(sl, probe=spec.name)
            values = {q: rf.probe(q, sl, probe=spec.name) for q in spec.names}
            for k in range(len(steps)):
                for q, arr in values.items():
                    for j, item in enumerate(items):
                        v = float(arr[k, j])
                        if not math.isnan(v):
                            yield f"{spec.name}/{q}/{item}", v, int(steps[k])


def check_tb_dir(out_dir: Path, overwrite: bool) -> list[Path]:
    """The old event files in ``out_dir`` (to remove after writing); refuses them without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(
            f"{out_dir} exists and is not a folder; give a folder for the TensorBoard event files."
        )
    old = sorted(out_dir.glob(EVENT_GLOB)) if out_dir.is_dir() else []
    if old and not overwrite:
        raise ExportError(
            f"{out_dir} already holds TensorBoard event files ({', '.join(p.name for p in old)}); nothing "
            "was written. Export into another folder, or pass --overwrite to replace them."
        )
    return old


def export_tensorboard(rf: RunFile, out_dir: Path, overwrite: bool = False) -> Path:
    """Write one event file of :func:`tensorboard_scalars` into ``out_dir``; returns its path."""
    require_tensorboard()
    old = check_tb_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    from torch.utils.tensorboard import SummaryWriter

    before = set(out_dir.glob(EVENT_GLOB))
    writer = SummaryWriter(log_dir=str(out_dir), max_queue=4096, flush_secs=3600)
    try:
        for tag, value, step in tensorboard_scalars(rf):
            writer.add_scalar(tag, value, global_step=step)
    finally:
        writer.close()
    new = sorted(set(out_dir.glob(EVENT_GLOB)) - before)
    for p in old:
        p.unlink(missing_ok=True)
    return new[-1] if new else out_dir
