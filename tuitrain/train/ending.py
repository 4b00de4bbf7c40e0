"""How a run ends: the checkpoint beside the run file, a run file for a failure before the run was
announced, and the last event to every sink, with the final status decided after the run file was
closed. Kept out of :mod:`tuitrain.train.engine` so that the loop there reads top to bottom.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import tuitrain
from tuitrain.config import RunConfig, to_toml
from tuitrain.diagnosis.live import concluded, inner
from tuitrain.events import Alert, RunFinished, RunStarted, Sink
from tuitrain.runfile.claim import companions, save_beside
from tuitrain.runfile.writer import RunFileWriter
from tuitrain.train.monitor import Monitor


def save_checkpoint(state: Callable[[], dict[str, Any]], out_path: str, monitor: Monitor) -> str:
    """Save the checkpoint ``state()`` (weights, optimizer, scheduler, step, epoch, config, RNG: see
    :mod:`tuitrain.train.resume`) beside the run file; a failure is a warning, never the run's end.

    Written under a private temporary name and renamed into place (:func:`save_beside`), so a link
    planted at ``<out>.pt`` is replaced, not written through, and a failure leaves nothing half
    written. ``torch.save`` raises RuntimeError as well as OSError (a directory in the way, say):
    any Exception counts, and the run that trained to the end still ends ``completed``/``stopped``.
    """
    if not out_path:
        return ""
    path = companions(Path(out_path))["checkpoint"]
    try:
        save_beside(path, lambda fh: torch.save(state(), fh))
    except Exception as e:  # noqa: BLE001 - see the docstring
        reason = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:200]
        monitor.emit(
            Alert(monitor.step, "warning", "checkpoint", f"checkpoint not written: {path}: {reason}")
        )
        return ""
    monitor.emit(Alert(monitor.step, "info", "checkpoint", f"checkpoint written: {path}"))
    return str(path)


def announce_failed(cfg: RunConfig, sinks: list[Sink], out_path: str) -> None:
    """The run failed before it was announced (out of memory building the model, say): give the
    run-file sinks a RunStarted holding what is known (the config, no layers, 0 params), so that the
    RunFinished after it lands in a run file like any other failure, as the README promises. The other
    sinks (console, dashboard) show the failure from RunFinished alone. The file format stays the
    writer's: this is an ordinary event."""
    t = cfg.train
    started = RunStarted(
        run_name=cfg.name,
        config_toml=to_toml(cfg),
        model_name=cfg.model.name,
        dataset=cfg.data.name,
        device=t.device,
        params=0,
        layers=[],
        flops=0,
        module_summary=[],
        epochs=t.epochs,
        steps_per_epoch=0,
        batch_size=t.batch_size,
        num_classes=0,
        out_path=out_path,
        max_steps=t.max_steps,
        versions={"tuitrain": tuitrain.__version__, "torch": torch.__version__},
    )
    for sink in inner(sinks):  # the sinks themselves, out of the live diagnosis around them
        if isinstance(sink, RunFileWriter):
            with contextlib.suppress(Exception):  # a file that cannot even be created: RunFinished says why
                sink.emit(started)


def finish(sinks: list[Sink], finished: RunFinished) -> RunFinished:
    """Deliver the last event and close every sink, even if one of them fails; return the final word.

    The run file goes first: if its last flush or close fails, the run is not ``completed`` (nor
    ``stopped``), whatever the loop reached, and the other sinks (console, dashboard) and the exit code
    are told ``failed`` with what went wrong. A failing console or queue changes nothing: they may
    drop, the file may not."""
    sinks = concluded(sinks)  # live diagnosis's last pass (its findings before the end), then the sinks
    files = [s for s in sinks if isinstance(s, RunFileWriter)]
    for sink in files:
        try:
            sink.emit(finished)
            sink.close()
        except Exception as e:  # noqa: BLE001 - said below, and in the exit code
            with contextlib.suppress(Exception):
                sink.close()
            why = str(e) if str(sink.path) in str(e) else f"{type(e).__name__}: {e}"  # names the file?
            problem = f"the run file {sink.path} could not be completed: {why}"
            finished = RunFinished(
                "failed",
                finished.step,
                error=f"{finished.error}; {problem}" if finished.error else problem,
                traceback=finished.traceback,  # the paragraph says it all; the loop's own, if it failed
                checkpoint=finished.checkpoint,
                time=finished.time,
            )
    for sink in sinks:
        if sink not in files:
            with contextlib.suppress(Exception):
                sink.emit(finished)
    for sink in sinks:
        if sink not in files:
            with contextlib.suppress(Exception):
                sink.close()
    return finished
