"""tuitrain's public Python API for a user's own training loop (docs/api.md)::

    run = tuitrain.init(name="mnist", out="runs/mnist.h5", config=vars(args))
    run.watch(model, optimizer)
    ...  # the loop: optimizer.step(); run.log({"loss": loss, "acc": acc})
    run.log_epoch({"val_loss": val_loss, "val_acc": val_acc})
    run.finish()

The run file is the same as a preset's (``tuitrain info``, ``replay``, ``watch --attach`` read it); the
dashboard joins in when the script runs under ``tuitrain watch script.py`` (:mod:`tuitrain.hosted`).
No textual here: this is the training side's floor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuitrain import hosted
from tuitrain.api.exits import end_runs
from tuitrain.api.ranks import RankRun, dist_rank
from tuitrain.api.run import Run
from tuitrain.api.values import config_json, script_name
from tuitrain.config import ConfigError, MonitorConfig
from tuitrain.hosted import StopRun

__all__ = ["Run", "StopRun", "end_runs", "init"]

SOURCES = ("script", "lightning")


def init(
    name: str | None = None,
    out: str | os.PathLike[str] | None = None,
    config: Any = None,
    *,
    epochs: int = 0,
    steps_per_epoch: int = 0,
    batch_size: int = 0,
    num_classes: int = 0,
    every: int = 1,
    activations_every: int = MonitorConfig.activations_every,
    overwrite: bool = False,
    source: str = "script",
) -> Run:
    """Start a run of your own loop and return its :class:`Run` (also a context manager).

    ``name``: the run's name (default: the script's file name without ``.py``). ``out``: the run file
    (default ``runs/<name>-<YYYYmmdd-HHMMSS>.h5``, a name no other run uses); an existing run there is
    refused (:class:`~tuitrain.runfile.claim.OutTaken`) unless ``overwrite``. ``config``: a dict of
    JSON-able values (or an ``argparse.Namespace``), stored in the run file. ``epochs``,
    ``steps_per_epoch`` (e.g. ``len(loader)``), ``batch_size`` (gives samples/s) and ``num_classes``
    are what the dashboard shows as progress; 0 = unknown. ``every``: probe the gradients every N
    steps; ``activations_every``: the forward signal every N steps (0 = off; see :meth:`Run.watch`).
    ``source``: who calls (``"lightning"`` for tuitrain's callback).

    Under ``tuitrain watch script.py`` / ``run script.py --no-ui`` the command's ``--out`` and
    ``--overwrite`` win for the script's first run (a later run keeps its own ``out``; the command's
    ``--overwrite`` counts for it too), and its dashboard or console joins the sinks. On a
    data-parallel rank other than 0 the run does nothing at all.
    """
    cfg_json = config_json(config)  # a bad config is said before anything is created
    for key, value, low in (
        ("epochs", epochs, 0),
        ("steps_per_epoch", steps_per_epoch, 0),
        ("batch_size", batch_size, 0),
        ("num_classes", num_classes, 0),
        ("every", every, 1),
        ("activations_every", activations_every, 0),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"tuitrain.init({key}={value!r}): {key} must be a whole number, {low} or more.")
    if source not in SOURCES:
        raise ValueError(f"tuitrain.init(source={source!r}): allowed: {', '.join(SOURCES)}.")
    name = script_name() if name is None else str(name)
    if dist_rank() != 0:
        return RankRun(name)

    from tuitrain.api import exits
    from tuitrain.runfile.writer import RunFileWriter

    host = hosted.current()
    path, replace = _out_path(name, out, overwrite, host)
    writer = RunFileWriter(path, overwrite=replace)
    run = Run(
        name=name,
        path=path,
        sinks=[writer, *(host.sinks if host is not None else [])],
        control=host.control if host is not None else None,
        config_json=cfg_json,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        num_classes=num_classes,
        every=every,
        activations_every=activations_every,
        source=source,
    )
    if host is not None:
        host.runs.append(str(path))
    exits.register(run)
    return run


def _out_path(
    name: str, out: str | os.PathLike[str] | None, overwrite: bool, host: hosted.Host | None
) -> tuple[Path, bool]:
    """Where the run goes, and whether it may replace a run there. The host's ``--out`` (checked by its
    command) for the script's first run; else ``out``, checked here; else a fresh default name."""
    from tuitrain.runfile.claim import COMPANION_SUFFIXES, check_free, claim_default_out

    if host is not None and host.out and not host.runs:
        return Path(host.out), host.overwrite
    if out is None or str(out) == "":
        return claim_default_out(name), False
    if host is not None:
        overwrite = overwrite or host.overwrite  # the command's --overwrite asks for it too
    path = Path(out)
    where = f"tuitrain.init(out={str(out)!r})"
    if "\0" in str(path):
        raise ConfigError(
            f"{where}: the path contains a NUL character; give a file path such as runs/run.h5."
        )
    if path.suffix in COMPANION_SUFFIXES.values():
        raise ConfigError(
            f"{where}: {path.suffix} is the suffix of a file beside each run "
            f"({', '.join(COMPANION_SUFFIXES.values())}); give a run-file path such as {path.with_suffix('.h5')}."
        )
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory; give a file path such as {path / 'run.h5'}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{where}: cannot create the directory {path.parent}: {e.strerror}.") from None
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"{where}: the directory {path.parent} is not writable.")
    check_free(path, overwrite)  # OutTaken (a ConfigError) when a run is there or being written
    return path, overwrite
