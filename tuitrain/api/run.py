"""The :class:`Run` a user's own loop talks to: ``watch``, ``log``, ``log_epoch``, ``log_test``, ``finish``.

It is a thin layer over the same :class:`~tuitrain.train.monitor.Monitor` the preset engine uses, so a
user's loop gets the engine's fused per-tensor probes, its batched reads and its sinks unchanged:

* ``watch(model, optimizer)`` registers the optimizer's step pre/post hooks, which call the monitor's
  ``before_step`` / ``after_optimizer_step``: the probe sees the gradients the optimizer is about to
  use and the real update it made, for any optimizer. Under AMP the pre-hook runs inside
  ``GradScaler.step``, after ``unscale_``: the gradients are unscaled. A step the scaler skips (inf or
  NaN gradients) calls no hook and is not probed; it is still a step when it is logged. LBFGS
  evaluates its closure inside ``step()``: the gradients the pre-hook sees are those of the previous
  step's last closure call (none, 0, at the first step); its update ratio is the real step's.
* ``log(values)`` hands the values to the monitor as they are: tensors stay on their device until the
  monitor's flush reads all of them in one go (about ten times a second), never one step at a time.
* The run file is created when the monitor sends its first batch (``announce``): by then the layers
  (from ``watch``) and the keys logged so far are known, so the file declares them from the start.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from tuitrain.api import exits
from tuitrain.api.described import device_label, test_result, versions
from tuitrain.api.values import check_key, check_value, to_float
from tuitrain.config import MonitorConfig
from tuitrain.diagnosis.live import wrap as diagnosed
from tuitrain.events import (
    Alert,
    EpochEnd,
    RunFinished,
    RunStarted,
    Sink,
    StatusChanged,
)
from tuitrain.hosted import Control, StopRun

POLL_SECONDS = 0.05  # how often run.log asks the host's control for pause / stop, at most


class Run:
    """One run of a user's loop, writing one run file. Made by :func:`tuitrain.init`."""

    def __init__(
        self,
        *,
        name: str,
        path: Path,
        sinks: list[Sink],
        control: Control | None,
        config_json: str,
        epochs: int,
        steps_per_epoch: int,
        batch_size: int,
        num_classes: int,
        every: int,
        source: str,
        activations_every: int = MonitorConfig.activations_every,
    ) -> None:
        self.name = name
        self._path = path
        self._sinks = diagnosed(sinks, MonitorConfig())  # live diagnosis, at the config's defaults
        self._control = control
        self._config_json = config_json
        self._shape = (epochs, steps_per_epoch, batch_size, num_classes)
        self._every = every
        self._act_every = activations_every
        self._source = source
        self._monitor: Any = None  # tuitrain.train.monitor.Monitor, made at the first watch / log
        self._probe: Any = None  # the gradient probe, once watched
        self._act: Any = None  # the activation probe, once watched (unless off)
        self._hooks: list[Any] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._model_name = ""
        self._layers: list = []
        self._params = 0
        self._device = ""
        self._pending: dict[str, Any] = {}  # log(commit=False) values of the open step
        self._seen: set[str] = set()  # keys checked once
        self._lr = math.nan  # the watched optimizer's lr at its last step
        self._test: dict[str, float] = {}
        self._epoch = 0
        self._epoch_start = time.time()
        self._best = -math.inf
        self._last_poll = 0.0
        self._finished = False
        self._status = "running"

    # -- what the user reads ------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        """The run file (None on a data-parallel rank other than 0, which writes nothing)."""
        return self._path

    @property
    def step(self) -> int:
        """The open step's index: the number of steps committed so far."""
        return self._monitor.step if self._monitor is not None else 0

    @property
    def epoch(self) -> int:
        """The open epoch's index (0-based): the number of ``log_epoch`` calls so far."""
        return self._epoch

    @property
    def finished(self) -> bool:
        return self._finished

    def __repr__(self) -> str:
        return f"<tuitrain.Run {self.name!r} at {self._path} step {self.step}{' finished' if self._finished else ''}>"

    # -- watch ----------------------------------------------------------------------------------
    def watch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int | None = None,
        activations_every: int | None = None,
    ) -> Run:
        """Probe every trainable parameter tensor of ``model`` every ``every`` steps (default: the
        ``every`` of :func:`tuitrain.init`): grad L2 norm, mean |grad|, weight norm and the update ratio
        of the optimizer step. Layers are named as ``model.named_parameters()`` names them, in that
        order (a ``torch.compile`` or DDP wrapper is looked through). With ``optimizer``, its step
        hooks do the probing; without, call :meth:`before_optimizer_step` / :meth:`after_optimizer_step`
        around the step yourself. Call it once, before the first :meth:`log`. ``activations_every``
        (default :func:`tuitrain.init`'s, 10; 0 = off): the forward signal per module (docs/api.md),
        from the first training-mode forward after each logged or optimizer step."""
        if self._finished:
            raise RuntimeError(f"run.watch: the run {self.name!r} has finished; tuitrain.init a new one.")
        if (self._monitor is not None and self._monitor.announced) or self.step > 0:
            raise RuntimeError(
                "run.watch came after the run started logging: call run.watch(model, optimizer) before "
                "the first run.log, so the run file can declare its layers from the start."
            )
        if self._probe is not None:
            raise RuntimeError(
                "run.watch was called twice; watch once, with the module that holds every parameter to probe."
            )
        every = self._every if every is None else every
        act_every = self._act_every if activations_every is None else activations_every
        for key, value, low in (("every", every, 1), ("activations_every", act_every, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(
                    f"run.watch({key}={value!r}): {key} must be a whole number of steps, {low} or more."
                )
        from tuitrain.train.activations import ActivationProbe
        from tuitrain.train.probe_protocol import GradientProbe, unwrap_model
        from tuitrain.train.summary import layer_infos

        net = unwrap_model(model)
        params = [p for _, p in net.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"run.watch: {type(net).__name__} has no trainable parameters to probe.")
        device = params[0].device
        with exits.guard:
            layers = layer_infos(net)
            self._model_name = type(net).__name__
            self._params = sum(p.numel() for p in params)
            self._device = device_label(device)
            monitor = self._ensure_monitor()
            self._probe = GradientProbe(params, layers, every=every)
            self._layers = layers
            monitor.add_probe(self._probe)
            if act_every:
                self._act = ActivationProbe(every=act_every)
                monitor.add_probe(self._act, net)  # armed for the open step's forward
            if optimizer is not None:
                self._optimizer = optimizer
                self._hooks = [
                    optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_optimizer_step()),
                    optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_optimizer_step()),
                ]
        return self

    def before_optimizer_step(self) -> None:
        """Just before ``optimizer.step()`` (the watched optimizer's pre-hook calls it): a probed step
        copies the gradients and weights now."""
        if self._finished:
            return
        with exits.guard:
            monitor = self._ensure_monitor()
            if self._pending and monitor.stepped:  # log(commit=False) values of the step just taken
                self._commit({})
            opt = self._optimizer
            if opt is not None:
                lr = opt.param_groups[0].get("lr", math.nan)
                self._lr = lr if isinstance(lr, float) else float(lr)
            monitor.before_step()

    def after_optimizer_step(self) -> None:
        """Just after ``optimizer.step()`` (the post-hook calls it): a probed step measures the update."""
        if self._finished:
            return
        with exits.guard:
            self._ensure_monitor().after_optimizer_step()

    # -- log ------------------------------------------------------------------------------------
    def log(self, values: Mapping[str, Any], *, step: int | None = None, commit: bool = True) -> None:
        """Record scalars of the open step and close it (``commit=False``: keep it open for more).

        ``values``: Python numbers or one-element tensors on any device, read at the monitor's flush
        (no host sync per step; so a logged tensor must not be changed in place afterwards, e.g. a
        running sum: log ``total.clone()`` or a new tensor instead). ``loss`` and ``acc`` are the standard columns the dashboard charts
        first, ``lr`` the learning-rate column (else the watched optimizer's); every other key gets a
        column of its own. ``step``: the 0-based step the values belong to (:attr:`step` is the open
        one); steps skipped over are stored as empty rows, a step already closed is refused with a
        warning. Under ``tuitrain watch`` this is also where a pause waits and a stop raises
        :class:`~tuitrain.hosted.StopRun`."""
        if self._finished:
            raise RuntimeError(f"run.log: the run {self.name!r} has finished; tuitrain.init a new one.")
        if not isinstance(values, (dict, Mapping)):
            raise TypeError(
                f"run.log takes a dict of scalars, e.g. {{'loss': loss}}; got a {type(values).__name__}."
            )
        seen = self._seen
        for key, value in values.items():
            if key not in seen:
                check_key(key)
                seen.add(key)
            check_value(key, value)
        with exits.guard:
            if step is not None and not self._advance_to(int(step)):
                return
            if not commit:
                self._pending.update(values)
                return
            self._commit(values)
        if self._control is not None:
            self._poll()

    def _advance_to(self, step: int) -> bool:
        """Close empty steps up to ``step``; False (and a warning) when ``step`` was closed already."""
        current = self.step
        if step < current:
            warnings.warn(
                f"run.log(step={step}): step {step} was already logged (the open step is {current}); "
                "steps only go forward, these values were not stored.",
                stacklevel=3,
            )
            return False
        while self.step < step:
            self._commit({})
        return True

    def _commit(self, values: Mapping[str, Any]) -> None:
        row = {**self._pending, **values} if self._pending else dict(values)
        self._pending = {}
        lr = math.nan if "lr" in row else self._lr  # a logged lr is the column; else the optimizer's
        self._ensure_monitor().log(row, self._epoch, lr=lr, n_samples=self._shape[2])

    def _poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_poll < POLL_SECONDS:
            return
        self._last_poll = now
        cmd = self._control.poll()
        if cmd == "stop":
            raise StopRun("stopped from the dashboard")
        if cmd == "pause":
            self._pause()

    def _pause(self) -> None:
        """Really stop stepping: block here until the dashboard says resume (or stop)."""
        monitor = self._ensure_monitor()
        with exits.guard:
            monitor.flush(force=True)
            monitor.emit(StatusChanged("paused", monitor.step))
        while True:
            cmd = self._control.poll(timeout=0.2)
            if cmd == "stop":
                raise StopRun("stopped from the dashboard")
            if cmd == "resume":
                monitor.emit(StatusChanged("running", monitor.step))
                monitor.pause_clock()
                return

    def log_epoch(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Close the open epoch: the train loss and accuracy are the means of the ``loss``/``acc``
        logged in it; ``metrics`` adds ``val_loss``, ``val_acc`` (or overrides ``train_loss``,
        ``train_acc``, ``lr``) and any keys of its own. One host read, here, for the lot."""
        if self._finished:
            raise RuntimeError(f"run.log_epoch: the run {self.name!r} has finished.")
        with exits.guard:
            if self._pending:
                self._commit({})
            monitor = self._ensure_monitor()
            train_loss, train_acc = monitor.take_epoch_means()
            std = {
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": math.nan,
                "val_acc": math.nan,
            }
            lr, extra = self._lr, {}
            for key, value in (metrics or {}).items():
                check_key(key, "run.log_epoch")
                v = to_float(key, value, "run.log_epoch")
                if key in std:
                    std[key] = v
                elif key == "lr":
                    lr = v
                else:
                    extra[key] = v
            now = time.time()
            monitor.emit(
                EpochEnd(
                    self._epoch, monitor.step, lr=lr, seconds=now - self._epoch_start, metrics=extra, **std
                )
            )
            val_acc = std["val_acc"]
            if math.isfinite(val_acc) and val_acc > self._best:
                if self._epoch > 0:
                    msg = f"new best validation accuracy {val_acc:.2%} at epoch {self._epoch + 1}"
                    monitor.emit(Alert(monitor.step, "info", "best", msg))
                self._best = val_acc
            self._epoch += 1
            self._epoch_start = now
            monitor.pause_clock()  # validation is not a slow step
        if self._control is not None:
            self._poll(force=True)

    def log_test(self, metrics: Mapping[str, Any]) -> None:
        """Final metrics for the reports' table (``test_loss``/``loss``, ``test_acc``/``acc`` and any
        others), stored when the run finishes; a second call adds to the first."""
        if self._finished:
            raise RuntimeError(f"run.log_test: the run {self.name!r} has finished.")
        for key, value in metrics.items():
            check_key(key, "run.log_test")
            self._test[key] = to_float(key, value, "run.log_test")

    summary = log_test

    # -- the end --------------------------------------------------------------------------------
    def finish(self, status: str = "completed", error: str = "", traceback: str = "") -> None:
        """End the run: the last rows, the test metrics, ``RunFinished`` with ``status``
        ("completed", "stopped" or "failed", with ``error`` and ``traceback``), every sink closed.
        A second call does nothing. A run file that cannot be completed makes the run ``failed``."""
        if self._finished:
            return
        if status not in ("completed", "stopped", "failed"):
            raise ValueError(f"run.finish(status={status!r}): allowed: 'completed', 'stopped', 'failed'.")
        from tuitrain.train.ending import finish as finish_sinks

        self._finished = True  # first: whatever fails below, the run is never ended twice
        exits.unregister(self)
        with exits.guard:
            for handle in self._hooks:
                handle.remove()
            self._hooks = []
            monitor = self._monitor
            try:
                monitor = self._ensure_monitor()
                if self._pending:
                    self._commit({})
                monitor.flush(force=True)  # announces the run if nothing was sent yet
                if self._test:
                    monitor.emit(test_result(self._test))
            except Exception as e:  # noqa: BLE001 - the run still ends, and says why
                if status != "failed":
                    status, error, traceback = exits.outcome(e)
            step = monitor.step if monitor is not None else 0
            finished = finish_sinks(self._sinks, RunFinished(status, step, error=error, traceback=traceback))
            self._status = finished.status
            for probe in (self._probe, self._act):
                if probe is not None:
                    probe.detach()

    @property
    def status(self) -> str:
        """ "running" until :meth:`finish`, then how the run ended (as the run file says)."""
        return self._status

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, trace: Any) -> bool:
        self.finish(*exits.outcome(exc))
        return isinstance(exc, StopRun)  # the dashboard's stop ends the block, not the script

    # -- internals ------------------------------------------------------------------------------
    def _ensure_monitor(self) -> Any:
        if self._monitor is None:
            from tuitrain.train.monitor import Monitor

            cfg = MonitorConfig(every=self._every, on_nan="continue")  # a user's loop decides itself
            self._monitor = Monitor(self._sinks, cfg, announce=self._announce)
        return self._monitor

    def _announce(self, step_scalars: tuple[str, ...]) -> None:
        """The monitor's first batch is about to go: the run file needs RunStarted first."""
        epochs, steps_per_epoch, batch_size, num_classes = self._shape
        monitor = self._monitor
        monitor.emit(
            RunStarted(
                run_name=self.name,
                config_toml="",
                model_name=self._model_name,
                device=self._device,
                params=self._params,
                layers=self._layers,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                batch_size=batch_size,
                num_classes=num_classes,
                out_path=str(self._path),
                versions=versions(),
                probes=list(monitor.specs),  # the gradient and activation probes with their `every`, or none
                modules=monitor.modules,  # the activation probe's columns, or []
                step_scalars=tuple(step_scalars),
                source=self._source,
                config_json=self._config_json,
            )
        )
        monitor.emit(StatusChanged("running", 0))
