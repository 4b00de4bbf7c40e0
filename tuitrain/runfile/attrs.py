"""A run file's root attributes and declaration as typed properties: the part of
:class:`~tuitrain.runfile.reader.RunFile` that reads no dataset. Split from the reader to keep each
module small; every value here was checked by :mod:`tuitrain.runfile.validate` when the file opened.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

import numpy as np

from tuitrain.config import ConfigError, MonitorConfig, RunConfig, from_toml
from tuitrain.events import ProbeSpec
from tuitrain.runfile import schema as S
from tuitrain.runfile.declaration import Declaration
from tuitrain.runfile.opening import RunFileError, one_line, start_ticks

if TYPE_CHECKING:
    from pathlib import Path


class RunAttrs:
    """Root attributes (as validated at open) and what the file declares."""

    path: Path
    opened_swmr: bool
    _attrs: dict[str, Any]
    _decl: Declaration
    _live_status: str | None

    # -- liveness (the writer's pid, host and start time are attributes) -------------------------------------------------------------------------------

    def writer_alive(self) -> bool | None:
        """Whether the writing process still runs: True/False on the writer's host, None elsewhere."""
        pid, host = int(self._attrs["writer_pid"]), str(self._attrs["writer_host"])
        if pid <= 0 or host != socket.gethostname():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        ticks = int(self._attrs.get("writer_start_ticks", 0))
        # A different start time means the pid was recycled by another process.
        return not (ticks and start_ticks(pid) not in (None, ticks))

    @property
    def is_live(self) -> bool:
        """A writer may still append: the file is SWMR-open, the status not final, the writer not known dead."""
        return self.opened_swmr and self.status not in S.FINAL_STATUSES and self.writer_alive() is not False

    @property
    def incomplete(self) -> bool:
        """The run never finished: its status is still live but no writer is left to finish it."""
        return self.status not in S.FINAL_STATUSES and not self.is_live

    # -- attributes -------------------------------------------------------------------------------

    def attr(self, name: str) -> Any:
        value = self._attrs[name]
        return value.item() if isinstance(value, np.generic) else value

    @property
    def status(self) -> str:
        attr = str(self._attrs["status"])
        return attr if attr in S.FINAL_STATUSES or not self._live_status else self._live_status

    schema_version = property(lambda self: int(self.attr("schema_version")))
    tuitrain_version = property(lambda self: str(self.attr("tuitrain_version")))
    run_name = property(lambda self: str(self.attr("run_name")))
    model_name = property(lambda self: str(self.attr("model_name")))
    dataset = property(lambda self: str(self.attr("dataset")))
    device = property(lambda self: str(self.attr("device")))
    params = property(lambda self: int(self.attr("params")))
    flops = property(lambda self: int(self.attr("flops")))
    config_toml = property(lambda self: str(self.attr("config_toml")))
    epochs_planned = property(lambda self: int(self.attr("epochs")))
    steps_per_epoch = property(lambda self: int(self.attr("steps_per_epoch")))
    batch_size = property(lambda self: int(self.attr("batch_size")))
    num_classes = property(lambda self: int(self.attr("num_classes")))
    started_at = property(lambda self: float(self.attr("started_at")))
    ended_at = property(lambda self: float(self.attr("ended_at")))
    error = property(lambda self: str(self.attr("error")))
    traceback = property(lambda self: str(self.attr("traceback")))
    checkpoint = property(lambda self: str(self.attr("checkpoint")))

    def optional_attr(self, name: str) -> Any:
        """A root attribute newer than some files (:data:`schema.OPTIONAL_ROOT_ATTRS`): its default there."""
        if name not in self._attrs:
            return S.OPTIONAL_ROOT_ATTRS[name]
        return self.attr(name)

    max_steps = property(lambda self: int(self.optional_attr("max_steps")))
    out_path = property(lambda self: str(self.optional_attr("out_path")))

    # -- what the file declares (schema 2; a schema-1 file gets the one translation) ------------------

    @property
    def probe_specs(self) -> list[ProbeSpec]:
        """The probes the file holds rows of, in declared order (empty: nothing was watched)."""
        return list(self._decl.probes)

    def has_probe(self, name: str) -> bool:
        return any(p.name == name for p in self._decl.probes)

    @property
    def tables(self) -> tuple[str, ...]:
        """The optional tables the file declares (``modules``, ``findings``); () for older files."""
        return self._decl.tables

    @property
    def step_scalars(self) -> tuple[str, ...]:
        """The declared ``/steps`` columns besides step and epoch: STEP_SCALARS, then a user loop's keys."""
        return self._decl.step_scalars

    @property
    def source(self) -> str:
        """``preset``, ``script`` (``tuitrain.init``) or ``lightning``; ``preset`` for schema-1 files."""
        return self._decl.source

    @property
    def config_json(self) -> str:
        return self._decl.config_json

    @property
    def user_config(self) -> dict[str, Any]:
        """A user loop's config (``tuitrain.init(config=...)``) as a dict; ``{}`` for presets, whose
        config is :attr:`config` (and :attr:`config_toml`)."""
        return dict(json.loads(self._decl.config_json)) if self._decl.config_json else {}

    @property
    def total_steps(self) -> int:
        """Steps the run was planned for: epochs x steps per epoch, capped by max_steps (0 = unknown)."""
        full = self.epochs_planned * self.steps_per_epoch
        return min(full, self.max_steps) if self.max_steps else full

    @property
    def thresholds(self) -> tuple[float, float]:
        """(monitor.vanishing, monitor.exploding) the run was monitored with. Stored as attributes; a
        file from before they were has them only in its config, and failing that the schema defaults."""
        van, exp = self.optional_attr("vanishing"), self.optional_attr("exploding")
        if van is None or exp is None:
            try:
                cfg = self.config
            except RunFileError:
                cfg = None
            mon = cfg.monitor if cfg is not None else MonitorConfig()
            van = mon.vanishing if van is None else van
            exp = mon.exploding if exp is None else exp
        return float(van), float(exp)

    @property
    def versions(self) -> dict[str, str]:
        return dict(json.loads(self.attr("versions") or "{}"))

    @property
    def module_summary(self) -> list[dict[str, Any]]:
        return list(json.loads(self.attr("module_summary") or "[]"))

    @property
    def config(self) -> RunConfig | None:
        """The run's resolved tuitrain config, rebuilt from the stored TOML; None for a run that has
        none (a user's own loop or Lightning: ``config_toml`` is "", its config is :attr:`user_config`).
        A stored TOML that does not load is a :class:`RunFileError`."""
        if not self.config_toml:
            return None
        try:
            return from_toml(self.config_toml)
        except (ConfigError, ValueError) as e:
            raise RunFileError(f"{self.path}: the stored config does not load: {one_line(e)}") from None
