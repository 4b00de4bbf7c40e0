"""A PyTorch Lightning callback that watches a ``Trainer`` run with tuitrain.

``Trainer(callbacks=[TuitrainCallback(out="runs/x.h5")])`` writes one run file: the per-tensor
gradient probes of every optimizer step, the training loss and learning rate per step, what the module
logged with ``self.log`` at each epoch's end, the test metrics of ``trainer.test``, and how the run
ended. It is built on the public API (:mod:`tuitrain.api`) and nothing else, and it is the only module
of tuitrain that imports Lightning (an optional dependency: ``pip install 'tuitrain[lightning]'``).

Where each hook comes in, and why there:

- The probe opens at ``on_before_optimizer_step``: Lightning calls it after the closure's backward
  and, under AMP, after ``GradScaler.unscale_``, so the gradients are the real, unscaled ones (and
  before gradient clipping: the probe shows what backward produced). It closes at
  ``on_train_batch_end``, after ``optimizer.step()``, and only on a batch that stepped: with gradient
  accumulation the other batches only add their loss to the step's mean. One row per optimizer
  step, so the file's step is ``trainer.global_step`` (for a fit resumed from a Lightning
  checkpoint, the new file counts from 0).
- The forward signal (the activation probe, every ``activations_every`` optimizer steps: 20 by
  default, 0 = off, a keyword of :func:`tuitrain.init`) hooks the module's submodules. The Monitor
  arms it after each logged step, for the next one: Lightning's ``training_step`` (the forward, run
  inside the optimizer's closure) comes after that, so the first batch of each probed step is the
  one measured (with gradient accumulation, its first micro-batch); validation and the sanity check
  (eval mode, no grad) never count. No hook of this callback is needed for it.
- Per step nothing is read from the device: the loss is logged as the tensor Lightning hands back
  (``outputs["loss"]``, undone of Lightning's division by ``accumulate_grad_batches``), read in
  batches at the monitor's flush.
- An epoch is closed at the next epoch's start (or at ``on_train_end``), not at ``on_train_epoch_end``:
  callbacks run that hook before the module's own ``on_train_epoch_end``, so metrics the module logs
  there (a torchmetrics ``compute()``) would be missed. Validation metrics count only for an epoch
  whose validation ran (``check_val_every_n_epoch`` > 1 leaves last epoch's values in
  ``callback_metrics``).
- The run stays open from ``trainer.fit`` to the end of a following ``trainer.test``, so the test
  metrics land in the same file; it ends ``completed`` at the teardown of ``test`` (or of ``fit``
  with ``until="fit"``), at :meth:`TuitrainCallback.finish`, or when the script exits.
  ``on_exception`` ends it ``failed`` with the error and traceback, or ``stopped`` for Ctrl-C,
  SIGTERM and the dashboard's stop.
- Only global rank 0 writes; the other ranks' callbacks do nothing at all (no collective).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - the test extra installs lightning
    raise ImportError(
        "tuitrain.lightning needs PyTorch Lightning 2.2 or later: pip install 'tuitrain[lightning]'"
    ) from e

import tuitrain
from tuitrain.api.exits import outcome
from tuitrain.api.values import MAX_KEY_BYTES, RESERVED_STEP_KEYS
from tuitrain.hosted import StopRun

__all__ = ["TuitrainCallback"]

_PREFIXES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
_NAMES = {"loss": "loss", "acc": "acc", "accuracy": "acc"}
_TEST_PREFIXES = ("test_", "test/", "test.")
# What TuitrainCallback passes on to tuitrain.init besides its own out, name and every.
_INIT_KEYWORDS = frozenset(inspect.signature(tuitrain.init).parameters) - {"name", "out", "every", "source"}


class TuitrainCallback(pl.Callback):
    """Watch a Lightning run with tuitrain: ``Trainer(callbacks=[TuitrainCallback(out="runs/x.h5")])``.

    ``out``, ``name`` and ``every`` (probe every ``every`` optimizer steps) and any other keyword
    (``activations_every``, ``overwrite``, ``config``, ``epochs``, ...) go to :func:`tuitrain.init`, where they win over
    what the callback reads from the trainer: the config is ``pl_module.hparams``, the name the
    module's class, epochs and optimizer steps per epoch from the trainer's limits and data.

    ``until`` says which stage's teardown completes the run: ``"test"`` (default) keeps it open
    after ``fit`` so that ``trainer.test`` adds its metrics; ``"fit"`` completes it when ``fit``
    ends. After the run ends, the next ``fit`` starts a new run (give it a new ``out``).
    """

    def __init__(
        self,
        out: str | None = None,
        name: str | None = None,
        every: int = 1,
        *,
        until: str = "test",
        **init_kwargs: Any,
    ) -> None:
        if until not in ("fit", "test"):
            raise ValueError(f"TuitrainCallback(until={until!r}): until must be 'fit' or 'test'.")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"TuitrainCallback(every={every!r}): every must be a whole number >= 1.")
        unknown = sorted(set(init_kwargs) - _INIT_KEYWORDS)
        if unknown:  # said now, not at the first training step
            raise TypeError(
                f"TuitrainCallback: unknown keyword {', '.join(map(repr, unknown))}; it takes out, name, "
                f"every, until and what tuitrain.init takes: {', '.join(sorted(_INIT_KEYWORDS))}."
            )
        self.out = out
        self.name = name
        self.every = every
        self.until = until
        self.init_kwargs = init_kwargs
        self.run: Any = None  # the tuitrain Run of rank 0, from the first fit (or test) on
        self._watched: pl.LightningModule | None = None  # the module the run probes
        self._init_failed = False  # tuitrain.init itself raised: on_exception must not try again
        self._open_step: int | None = None  # global_step of the optimizer step being probed
        self._lr = math.nan  # the first optimizer's lr at that step
        self._losses: list[torch.Tensor] = []  # the training losses of the batches of that step
        self._epoch_ended: pl.Trainer | None = None  # on_train_epoch_end ran: closed at the next hook
        self._val_ran = False  # a (non-sanity) validation ran in the epoch being closed

    # -- the run ---------------------------------------------------------------------------------

    @property
    def path(self) -> str | None:
        """The run file, once the run has started."""
        return None if self.run is None else str(self.run.path)

    def _active(self, trainer: pl.Trainer) -> bool:
        return trainer.is_global_zero and self.run is not None and not self.run.finished

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the run (rank 0), unless one is open: a test after fit joins the fit's run."""
        if not trainer.is_global_zero or (self.run is not None and not self.run.finished):
            return
        kwargs: dict[str, Any] = {
            "name": self.name or type(pl_module).__name__,
            "out": self.out,
            "config": _config(pl_module),
            "every": self.every,
            "source": "lightning",
            **_shape(trainer, pl_module),
            **self.init_kwargs,
        }
        try:
            self.run = tuitrain.init(**kwargs)
        except BaseException:
            self._init_failed = True
            raise
        self._watched = None
        self._reset_step()

    def finish(self, status: str = "completed") -> None:
        """End the run now (e.g. after ``fit`` when no ``trainer.test`` follows in a notebook)."""
        if self.run is not None and not self.run.finished:
            self._close_epoch()
            self.run.finish(status)

    def _reset_step(self) -> None:
        self._open_step, self._lr, self._losses = None, math.nan, []

    # -- fit -------------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not at setup: the module is on its device and wrapped, the optimizers exist, and the
        # train data is loaded, so the number of batches is known.
        if self._active(trainer) and self._watched is not None and self._watched is not pl_module:
            self.finish()  # another module: its own run (the probe holds the old one's parameters)
        self._start(trainer, pl_module)
        if not self._active(trainer):
            return
        if self._watched is None:
            self.run.watch(pl_module)  # no optimizer hooks: this callback brackets each step
            self._watched = pl_module
        self._reset_step()
        self._epoch_ended = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer):
            self._close_epoch()
            self._val_ran = False

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._active(trainer):
            return
        step = trainer.global_step
        if self._open_step is not None:
            if self._open_step == step:
                return  # the same optimizer step evaluates its closure again (LBFGS)
            # Manual optimization with several optimizers: the previous optimizer's step is done.
            self.run.after_optimizer_step()
        self._lr = _first_lr(trainer)
        self.run.before_optimizer_step()
        self._open_step = step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self._active(trainer):
            return
        scale = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        loss = _batch_loss(outputs, scale)
        if loss is not None:
            self._losses.append(loss)
        if self._open_step is None:
            return  # accumulating gradients: no optimizer step in this batch
        self.run.after_optimizer_step()
        values: dict[str, Any] = {}
        if self._losses:
            values["loss"] = self._losses[0] if len(self._losses) == 1 else torch.stack(self._losses).mean()
        if not math.isnan(self._lr):
            values["lr"] = self._lr
        self._reset_step()
        self.run.log(values)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer) and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._val_ran = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer):
            self._epoch_ended = trainer  # closed at the next epoch's start or at on_train_end

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._active(trainer):
            self._close_epoch()
            self._reset_step()  # a stop mid-accumulation leaves batches that never stepped

    def _close_epoch(self) -> None:
        trainer, self._epoch_ended = self._epoch_ended, None
        if trainer is not None:
            self.run.log_epoch(epoch_metrics(trainer.callback_metrics, self._val_ran))

    # -- test and the end ------------------------------------------------------------------------

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.run is None:
            self._start(trainer, pl_module)  # trainer.test without a fit before it
        if self._active(trainer):
            self.run.log_test(summary_metrics(trainer.callback_metrics))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active(trainer):
            return
        if stage == "fit":
            self._close_epoch()
        if stage == "test" or (stage == "fit" and self.until == "fit"):
            self.run.finish("completed")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self.run is None and trainer.is_global_zero and not self._init_failed:
            # Before training began (configure_optimizers, the sanity check): a run file that says so.
            # If even that cannot be made, the user still gets Lightning's error, not ours.
            with contextlib.suppress(Exception):
                self._start(trainer, pl_module)
        if not self._active(trainer):
            return
        self._close_epoch()  # an epoch that ended before the error is kept
        self._reset_step()  # a step the error cut short is not logged
        if isinstance(exception, (KeyboardInterrupt, StopRun, SystemExit)):
            # SystemExit: Lightning's SIGTERMException (a SystemExit), or the script's own exit
            self.run.finish("stopped")
            return
        self.run.finish(*outcome(exception))  # failed: error text and traceback as every run has them


# -- what the callback reads from Lightning -------------------------------------------------------


def _config(pl_module: pl.LightningModule) -> dict[str, Any]:
    """``pl_module.hparams`` as a JSON-able dict: values a run file cannot store become their repr."""
    return {str(k): _plain(v) for k, v in dict(pl_module.hparams).items()}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0 and hasattr(value, "item"):
        return _plain(value.item())
    return repr(value)


def _shape(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int]:
    """What the trainer knows of the run's length and batch (0 = unknown, as tuitrain.init takes it)."""
    accumulate = max(1, int(trainer.accumulate_grad_batches))
    batches = trainer.num_training_batches
    steps = math.ceil(batches / accumulate) if isinstance(batches, int) or math.isfinite(batches) else 0
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 0
    batch = getattr(trainer.train_dataloader, "batch_size", None) if trainer.training else None
    out = {"epochs": int(epochs), "steps_per_epoch": int(steps)}
    if isinstance(batch, int) and batch > 0:  # samples per optimizer step, over all ranks
        out["batch_size"] = batch * accumulate * max(1, int(trainer.world_size))
    classes = dict(pl_module.hparams).get("num_classes")
    if isinstance(classes, int) and not isinstance(classes, bool) and classes > 0:
        out["num_classes"] = classes
    return out


def _first_lr(trainer: pl.Trainer) -> float:
    """The learning rate of the first optimizer's first parameter group (NaN when there is none)."""
    optimizers = trainer.optimizers
    if not optimizers or not optimizers[0].param_groups:
        return math.nan
    lr = optimizers[0].param_groups[0].get("lr", math.nan)
    if isinstance(lr, torch.Tensor):  # a tensor lr (capturable optimizers): a host read, once a step
        return float(lr.item()) if lr.numel() == 1 else math.nan
    return float(lr) if isinstance(lr, (int, float)) else math.nan


def _batch_loss(outputs: Any, scale: int) -> torch.Tensor | None:
    """The batch's training loss as a detached tensor, or None when ``training_step`` returned none.
    Lightning hands back the loss divided by ``accumulate_grad_batches``; ``scale`` undoes it."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return None
    loss = loss.detach().reshape(())
    return loss * scale if scale != 1 else loss


def _canonical(key: str) -> str | None:
    """The standard epoch column a logged name stands for: ``val/accuracy_epoch`` -> ``val_acc``."""
    k = key.lower().replace("/", "_").replace(".", "_").replace("-", "_")
    k = k.removesuffix("_epoch")
    prefix, _, rest = k.partition("_")
    p, n = _PREFIXES.get(prefix), _NAMES.get(rest)
    return f"{p}_{n}" if p and n else None


def _is_val(key: str) -> bool:
    prefix = key.lower().replace("/", "_").replace(".", "_").replace("-", "_").partition("_")[0]
    return _PREFIXES.get(prefix) == "val"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The one-number entries of ``trainer.callback_metrics`` (tensors stay tensors: read later)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                out[str(key)] = value.detach()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = value
    return out


def metric_key(key: str) -> str:
    """A logged name as a run file's metric name: kept as it is (``val/f1`` too), except that a column
    tuitrain keeps itself (``step``, ``time``, ...) becomes ``logged_<name>``, NUL and surrounding spaces
    are dropped, and a name is cut to 64 bytes."""
    key = key.replace("\0", "").strip() or "unnamed"
    if key in (".", ".."):
        key = f"logged_{key}"
    if key in RESERVED_STEP_KEYS:
        key = f"logged_{key}"
    raw = key.encode()
    return raw[:MAX_KEY_BYTES].decode(errors="ignore") if len(raw) > MAX_KEY_BYTES else key


def epoch_metrics(metrics: Mapping[str, Any], val_ran: bool = True) -> dict[str, Any]:
    """An epoch's ``callback_metrics`` as ``run.log_epoch`` takes them.

    ``train_loss`` / ``train_acc`` / ``val_loss`` / ``val_acc`` from the names that say so (``val_loss``,
    ``valid/accuracy``, ``train_loss_epoch``; a ``*_epoch`` name wins over the bare one), every other
    name as it is. Dropped: a ``*_step`` name beside its ``*_epoch`` twin (the last batch's value, not
    the epoch's), and validation names when no validation ran this epoch (their values are older).
    """
    values = _scalars(metrics)
    out: dict[str, Any] = {}
    ranked: dict[str, int] = {}
    for key, value in values.items():
        if key.endswith("_step") and f"{key[: -len('_step')]}_epoch" in values:
            continue
        column = _canonical(key)
        if not val_ran and _is_val(key):
            continue
        if column is None:
            out[metric_key(key)] = value
            continue
        rank = 0 if key.endswith("_epoch") else 1
        if rank <= ranked.get(column, 2):
            ranked[column] = rank
            out[column] = value
    return out


def summary_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``trainer.test``'s ``callback_metrics`` as ``run.log_test`` takes them: ``test_loss`` and
    ``test_acc`` (or ``test/accuracy``, ...) become ``loss`` and ``acc``; other names stay."""
    out: dict[str, Any] = {}
    for key, value in _scalars(metrics).items():
        if key.lower().startswith(_TEST_PREFIXES):
            rest = _NAMES.get(key[5:].lower().removesuffix("_epoch"))
            if rest is not None:
                out[rest] = value
                continue
        out[metric_key(key)] = value
    return out
