"""What a data-parallel rank other than 0 gets from :func:`tuitrain.init`: a run that does nothing.

Only rank 0 writes the run file and talks to a dashboard. The other ranks run the same script, so
they get a :class:`RankRun` whose methods return at once: no file, no sink, and above all no
collective operation that could hang a job whose ranks log at different moments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from tuitrain.api import exits
from tuitrain.api.run import Run
from tuitrain.hosted import StopRun


class RankRun(Run):
    """What a data-parallel rank other than 0 gets: every method does nothing (no file, no sink, no
    collective), so the same script runs on every rank. It counts steps and epochs, nothing more."""

    def __init__(self, name: str) -> None:  # noqa: D107 - nothing of Run's state is needed
        self.name = name
        self._path = None
        self._steps = 0
        self._epoch = 0
        self._finished = False
        self._status = "running"
        self._monitor = None

    @property
    def step(self) -> int:
        return self._steps

    def watch(self, model: torch.nn.Module, optimizer: Any = None, *, every: int | None = None) -> Run:
        return self

    def before_optimizer_step(self) -> None:
        pass

    def after_optimizer_step(self) -> None:
        pass

    def log(self, values: Mapping[str, Any], *, step: int | None = None, commit: bool = True) -> None:
        if commit:
            self._steps = max(self._steps + 1, (step or 0) + 1)

    def log_epoch(self, metrics: Mapping[str, Any] | None = None) -> None:
        self._epoch += 1

    def log_test(self, metrics: Mapping[str, Any]) -> None:
        pass

    summary = log_test

    def finish(self, status: str = "completed", error: str = "", traceback: str = "") -> None:
        self._finished = True
        self._status = status

    def __exit__(self, exc_type: Any, exc: BaseException | None, trace: Any) -> bool:
        self.finish(exits.outcome(exc)[0])
        return isinstance(exc, StopRun)


def dist_rank() -> int:
    """This process's rank in a data-parallel job: torch.distributed's once it is initialised, else
    ``$RANK`` (torchrun sets it before the script runs), else 0."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0
