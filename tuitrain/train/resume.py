"""Checkpoints that resume a run: what one holds, and continuing from it (``--resume RUN.h5``).

A checkpoint carries what nanoGPT's does, as plain dicts, tensors, numbers and strings, so that it
loads with ``torch.load(path, weights_only=True)`` (no pickled code runs):

=================  ==============================================================================
``format``          ``"tuitrain.checkpoint"``; ``version``: 1
``config_toml``     the run's resolved config (:func:`tuitrain.config.to_toml`)
``step``            steps trained: the index of the next step
``epoch``           epochs closed (with their validation row): the index of the next epoch
``model``           the weights (``state_dict`` of the plain model: not DDP's, not torch.compile's)
``optimizer``       ``optimizer.state_dict()``; ``scheduler``: ``scheduler.state_dict()``
``rng``             ``torch`` (the CPU generator), ``cuda`` (one per device, on CUDA), ``data`` (the
                    generator that shuffles and augments)
``best_val_acc``    the best validation accuracy so far (for the "new best" events)
``tuitrain``        the version that wrote it
=================  ==============================================================================

Resuming: the run file names the checkpoint (``<x>.pt`` beside it, else its ``checkpoint``
attribute); the config is the stored one with the command's overrides; the model must be the same
(a changed ``[model]`` or optimizer is bad input); weights, optimizer, scheduler and RNG state are
restored and training goes on at the next epoch (a run stopped inside an epoch begins that epoch
again, with the weights it had). Into the same file (appended, :mod:`tuitrain.runfile.append`) or
into a new ``--out``, which starts as a copy of the old file, so that either holds the whole history
and steps stay consecutive from 0. The run-file checks need no torch (the CLI makes them before it
starts anything, the training process again); torch is imported where a checkpoint is read or built.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tuitrain
from tuitrain.config import ConfigError, RunConfig, from_toml, to_flat, to_toml

if TYPE_CHECKING:
    import torch

FORMAT = "tuitrain.checkpoint"
VERSION = 1
FINAL = ("completed", "stopped", "failed")


@dataclass(frozen=True)
class ResumeFrom:
    """What ``--resume RUN`` continues, as the run file says (no torch)."""

    run_file: Path
    checkpoint: Path
    out: Path  # where the resumed run writes: the run file itself (append) or a new file (a copy first)
    next_step: int  # the file's last step + 1: a checkpoint to continue must hold exactly this step
    n_epochs: int  # epoch rows in the file
    config_toml: str  # the run's stored config

    @property
    def append(self) -> bool:
        return _same(self.run_file, self.out)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def inspect_run(run_file: Path, out: Path) -> ResumeFrom:
    """The checks that need only the run file: it opens, it is closed (not being written, not left open
    by a killed writer), it is a preset's run (a script resumes itself), and its checkpoint exists."""
    from tuitrain.runfile.reader import RunFileError, open_run

    where = f"--resume {run_file}"
    if run_file.suffix == ".pt":
        raise ConfigError(
            f"{where}: give the run file ({run_file.with_suffix('.h5')}), not its checkpoint; the "
            "checkpoint is found beside it."
        )
    try:
        with open_run(run_file) as rf:
            status = rf.status
            alive = rf.writer_alive() if status not in FINAL else None
            source = str(getattr(rf, "source", "preset") or "preset")
            attr = rf.checkpoint
            next_step = rf.last_step + 1
            n_epochs = rf.n_epochs
            config_toml = rf.config_toml
    except RunFileError as e:
        raise ConfigError(f"{where}: {e}") from None
    if status not in FINAL:
        why = (
            "is still being written by its run; wait for it to end (or stop it), then resume"
            if alive is not False
            else "was never closed: its training process was killed, so it holds no final checkpoint "
            "state to continue from"
        )
        raise ConfigError(f"{where}: the run file {why} (status {status!r}).")
    if source != "preset":
        raise ConfigError(
            f"{where}: this run was written by a {source} (its own training loop), not by a preset: "
            "tuitrain cannot continue a loop it does not run. Resume it in the script itself."
        )
    beside = run_file.with_suffix(".pt")
    candidates = [beside] + ([Path(attr)] if attr else [])
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ConfigError(
            f"{where}: the run has no checkpoint ({' or '.join(str(p) for p in dict.fromkeys(candidates))} "
            "does not exist). A run leaves one when it ends completed or stopped with "
            "train.checkpoint = true (the default)."
        )
    return ResumeFrom(run_file, found, out, next_step, n_epochs, config_toml)


def check_config(stored: RunConfig, cfg: RunConfig, where: str, step: int, epoch: int) -> None:
    """What a resumed run may change: anything but the model and the optimizer's kind (their state is
    the checkpoint's); it must have epochs (and, with a step cap, steps) left to train."""
    before, after = to_flat(stored), to_flat(cfg)
    changed = [
        k
        for k in dict.fromkeys([*before, *after])
        if (k.startswith("model.") or k == "optim.name") and before.get(k) != after.get(k)
    ]
    if changed:
        said = "; ".join(
            f"`{k}` {before.get(k, '(unset)')!r} -> {after.get(k, '(unset)')!r}" for k in changed
        )
        raise ConfigError(
            f"{where}: a resumed run trains the checkpoint's model with its optimizer state, but {said}. "
            "Leave [model] and optim.name as they were, or start a new run."
        )
    if cfg.train.epochs <= epoch:
        raise ConfigError(
            f"{where}: the run has trained {epoch} epoch{'s' if epoch != 1 else ''} already and "
            f"train.epochs = {cfg.train.epochs}; give --epochs above {epoch} (the total, not the epochs to add)."
        )
    if cfg.train.max_steps and cfg.train.max_steps <= step:
        raise ConfigError(
            f"{where}: train.max_steps = {cfg.train.max_steps} stops at step {cfg.train.max_steps}, and the "
            f"run has trained {step} steps already; give --max-steps above {step} (the total), or 0 for no cap."
        )


# -- torch: building and reading checkpoints -----------------------------------------------------


def checkpoint_state(
    cfg: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    epoch: int,
    generator: torch.Generator,
    best_val: float,
) -> dict[str, Any]:
    """The checkpoint of a run at ``step``/``epoch`` (see the module docstring)."""
    import torch

    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": FORMAT,
        "version": VERSION,
        "config_toml": to_toml(cfg),
        "step": int(step),
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "best_val_acc": float(best_val),
        "tuitrain": tuitrain.__version__,
    }


@dataclass(frozen=True)
class Resumed:
    """Where the resumed run goes on."""

    source: ResumeFrom
    step: int
    epoch: int
    best_val: float

    def describe(self) -> str:
        """The event that says so, in the run file and on the dashboard."""
        into = "" if self.source.append else f", into the copy {self.source.out}"
        return f"resumed from {self.source.checkpoint} at step {self.step:,}, epoch {self.epoch + 1}{into}"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A tuitrain checkpoint, read with ``weights_only=True``; anything else is a ConfigError."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, pickled code: all unreadable
        said = " ".join(str(e).split())[:240]
        raise ConfigError(
            f"--resume: cannot read the checkpoint {path}: {type(e).__name__}: {said}"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ConfigError(
            f"--resume: {path} is not a tuitrain checkpoint that can resume (older versions saved the "
            "weights alone, without the optimizer state, step and epoch)."
        )
    if ck.get("version") != VERSION:
        raise ConfigError(
            f"--resume: {path} is checkpoint version {ck.get('version')!r}; this tuitrain reads {VERSION}."
        )
    return ck


def restore(
    cfg: RunConfig,
    out_path: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
) -> Resumed:
    """Check ``cfg.train.resume`` again and load its checkpoint into the freshly built run: weights,
    optimizer and scheduler state (with this config's hyperparameters and this run's schedule, which
    may span more steps than before), RNG state."""
    import torch

    # Data-parallel, only rank 0 opens the run file (it is about to write it); the others read the
    # checkpoint beside it, and keep their own dropout streams (seed + rank), as a new run would.
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        source = inspect_run(Path(cfg.train.resume), Path(out_path))
    else:
        run_file = Path(cfg.train.resume)
        source = ResumeFrom(run_file, run_file.with_suffix(".pt"), Path(out_path), -1, -1, "")
    ck = load_checkpoint(source.checkpoint)
    where = f"--resume {source.run_file}"
    step, epoch = int(ck["step"]), int(ck["epoch"])
    stored = from_toml(str(ck["config_toml"]), where=f"the config in {source.checkpoint}")
    check_config(stored, cfg, where, step, epoch)
    if rank == 0 and step != source.next_step:
        raise ConfigError(
            f"{where}: the checkpoint {source.checkpoint} holds step {step}, but the run file goes on to "
            f"step {source.next_step - 1}: it is not this file's last state (the run went on after it "
            "was written, or the checkpoint is another run's)."
        )
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        said = " ".join(str(e).split())[:300]
        raise ConfigError(
            f"{where}: the checkpoint's weights do not fit the model built now (did data.classes, "
            f"data.image_size or the dataset change?): {said}"
        ) from None
    fresh = [dict(g) for g in optimizer.param_groups]  # the config's hyperparameters win (--set optim.lr)
    try:
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise ConfigError(f"{where}: the checkpoint's optimizer state does not fit: {e}") from None
    for group, new in zip(optimizer.param_groups, fresh, strict=True):
        for key, value in new.items():
            if key != "params":
                group[key] = value
    scheduler.base_lrs = [g["initial_lr"] for g in fresh]
    for group, base, factor in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(scheduler.last_epoch)  # this run's schedule from the next step on
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # noqa: SLF001 - get_last_lr()
    rng = ck.get("rng") or {}
    if rank == 0 and isinstance(rng.get("torch"), torch.Tensor):
        torch.set_rng_state(rng["torch"])
    data = rng.get("data")
    if isinstance(data, torch.Tensor):
        with contextlib.suppress(RuntimeError):  # another device type than before: its seed's stream
            generator.set_state(data)
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    best = float(ck.get("best_val_acc", -math.inf))
    return Resumed(source, step, epoch, best)


def continued_log(config_toml: str, out_path: str, log_path: str) -> int | None:
    """For the ``watch`` worker of a run resumed into the same file: that run's log, opened to append
    (``O_NOFOLLOW``: never through a link planted there); None for any other run, or where it cannot
    be opened that way (the worker then refuses an existing log as ever)."""
    try:
        resume = from_toml(config_toml).train.resume
    except ConfigError:
        return None
    if not resume or not _same(Path(resume), Path(out_path)):
        return None
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(log_path, flags, 0o644)
    except OSError:
        return None


def continue_file(source: ResumeFrom, sinks: list[Any]) -> None:
    """Make the run-file sinks continue the resumed file: a new ``--out`` first becomes a copy of it
    (written under a private name beside it and put in place by the claim rules, never over a run
    without ``--overwrite``), then every :class:`~tuitrain.runfile.writer.RunFileWriter` appends to
    its file at RunStarted (:mod:`tuitrain.runfile.append` checks that the file can be continued)."""
    from tuitrain.diagnosis.live import inner, resumed
    from tuitrain.runfile.claim import overwrite_asked, place, private_temp
    from tuitrain.runfile.reader import open_run
    from tuitrain.runfile.writer import RunFileWriter

    writers = [s for s in inner(sinks) if isinstance(s, RunFileWriter)]  # out of the live diagnosis
    if not writers:
        return
    if not all(hasattr(w, "append") for w in writers):  # pragma: no cover - a writer without append
        raise ConfigError(
            f"--resume {source.run_file}: this tuitrain's run-file writer cannot continue a file."
        )
    if not source.append:
        source.out.parent.mkdir(parents=True, exist_ok=True)
        with private_temp(source.out) as tmp:
            shutil.copyfile(source.run_file, tmp)
            place(tmp, source.out, overwrite_asked())
    for writer in writers:
        writer.append = True
    with contextlib.suppress(Exception):  # live diagnosis: the findings the file left open are closed
        with open_run(source.run_file) as rf:
            prior = rf.findings() if rf.has_findings else []
        resumed(sinks, prior, source.next_step - 1)
