"""The Monitor's probes and its bookkeeping of them (:class:`ProbeSet`): which probes measure a step,
which rows each still owes, and the rows collected but not yet sent.

Kept apart from :mod:`tuitrain.train.monitor` so that the monitor reads as the step's life (commit,
flush, alerts) and this file as the probes' (arm, measure, collect, hold). The contract it counts on is
the probe protocol's (:mod:`tuitrain.train.probe_protocol`): a probe whose ``before_step`` ran for a
step gives exactly one row for it, once its ``after_step`` ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tuitrain.events import GRAD, PROBE_AXES, ModuleInfo, ProbeBlock, ProbeSpec
from tuitrain.train.probe_protocol import GradientProbe, Probe
from tuitrain.train.steprows import concat_blocks, split_block

__all__ = ["ProbeSet", "Slot"]


@dataclass
class Slot:
    """A probe and the bookkeeping of it."""

    probe: Probe
    outstanding: list[int] = field(default_factory=list)  # steps measured, rows not yet collected
    held: ProbeBlock | None = None  # rows collected for steps not yet sent


class ProbeSet:
    """The probes of one run, in the order they were added (the order of RunStarted.probes)."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []
        self._forward: list[Callable[[int], None]] = []  # the probes' before_forward (activations)
        self._forward_step = -1  # the step they were last armed for

    def add(
        self,
        probe: Probe,
        model: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer | None,
        step: int,
    ) -> None:
        """Check ``probe``'s spec, attach it (when ``model`` or ``optimizer`` is given) and arm its
        forward hooks for ``step``, the open step: a user loop's next forward is that step's."""
        spec = probe.spec
        if spec.axis not in PROBE_AXES:
            raise ValueError(f"probe {spec.name!r}: axis {spec.axis!r}; allowed: {', '.join(PROBE_AXES)}")
        if not spec.name or any(s.probe.spec.name == spec.name for s in self.slots):
            raise ValueError(f"probe name {spec.name!r} is empty or already taken by another probe")
        if "/" in spec.name or spec.every < 1:
            raise ValueError(
                f"probe {spec.name!r} (every = {spec.every}); allowed: a name without '/', every >= 1"
            )
        if spec.axis == "module" and any(s.probe.spec.axis == "module" for s in self.slots):
            raise ValueError(
                f"probe {spec.name!r}: a run has at most one probe on axis 'module' (its columns are the "
                "run file's one /modules table)"
            )
        if model is not None or optimizer is not None:
            probe.attach(model, optimizer)
        if spec.name == GRAD and not list(getattr(probe, "layers", [])):
            raise ValueError("the gradient probe has no parameter tensors: attach it to a model first")
        self.slots.append(Slot(probe))
        before_forward = getattr(probe, "before_forward", None)
        if callable(before_forward):
            self._forward.append(before_forward)
            before_forward(step)
            self._forward_step = step

    @property
    def specs(self) -> list[ProbeSpec]:
        return [s.probe.spec for s in self.slots]

    @property
    def modules(self) -> list[ModuleInfo]:
        """The columns of the probe on axis "module" (the activation probe's modules), [] if none."""
        for s in self.slots:
            if s.probe.spec.axis == "module":
                return list(getattr(s.probe, "modules", []))
        return []

    @property
    def gradient(self) -> GradientProbe | None:
        for s in self.slots:
            if s.probe.spec.name == GRAD and isinstance(s.probe, GradientProbe):
                return s.probe
        return None

    # -- a step ----------------------------------------------------------------------------------
    def arm_forward(self, step: int) -> None:
        """The forward probes' ``before_forward(step)``, once per step: a second call for the same
        step (a commit after the optimizer step's arming, the engine's call after :meth:`add`'s) must
        not drop a forward already measured. On an unprobed step the probe does a modulo, no more."""
        if step != self._forward_step and self._forward:
            self._forward_step = step
            for before_forward in self._forward:
                before_forward(step)

    def before_step(self, step: int) -> list[Slot]:
        """The probes whose ``every`` selects ``step``, each told ``before_step(step)``."""
        armed = [s for s in self.slots if step % s.probe.spec.every == 0]
        for s in armed:
            s.probe.before_step(step)
        return armed

    @staticmethod
    def after_step(armed: list[Slot], step: int) -> None:
        for s in armed:
            s.probe.after_step(step)
            s.outstanding.append(step)

    # -- the flush -------------------------------------------------------------------------------
    def collect(self, force: bool) -> None:
        """Every probe's rows since the last call, added to what it holds. First, before the rows are
        taken: a probe's outstanding steps decide which rows wait for it."""
        collected = [(s, s.probe.collect(force)) for s in self.slots]
        for s, got in collected:
            del s.outstanding[: len(got)]
            s.held = got if s.held is None else concat_blocks(s.held, got)

    def frontier(self) -> int | None:
        """The oldest step some probe has measured and not yet returned a row for (None: none)."""
        waiting = [s.outstanding[0] for s in self.slots if s.outstanding]
        return min(waiting) if waiting else None

    def split_held(self, last_out: int) -> dict[str, ProbeBlock]:
        """Every probe's rows for the steps up to ``last_out`` (sent); rows for later steps stay held."""
        out: dict[str, ProbeBlock] = {}
        for s in self.slots:
            assert s.held is not None
            out[s.probe.spec.name], s.held = split_block(s.held, last_out)
        return out
