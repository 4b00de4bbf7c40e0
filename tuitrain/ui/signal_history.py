"""What the Signal view (key ``v``) remembers of a run's forward signal: the activation probe's rows.

The probe ``act`` (:data:`tuitrain.events.ACT_PROBE`, axis "module") reports, every
``monitor.activations_every`` steps, per probed module (``RunStarted.modules``, in the order their
outputs are produced) the mean, std, fraction of zeros, fraction saturated and fraction of dead units of
its output. The view shows one such row as bars (the signal-propagation plot of Brock et al. 2021) and
the whole run's std as a modules x time heatmap, so it needs what :class:`~tuitrain.ui.history.History`
keeps for the gradient probe, and the same buffers hold it: a :class:`~tuitrain.ui.buffers.Ring` of the
latest rows in full, and :class:`~tuitrain.ui.buffers.LogBuckets` of log10 std over the whole run
(bounded memory whatever the run's length). A replay looks the exact row at the time cursor up in the
run file (the history's backing).

Quantities are found by name in the run's own spec (a file declares them): a row here is always in
:data:`FIELDS` order, NaN for a quantity the run does not have. No textual, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tuitrain.events import ACT, ACT_PROBE, ModuleInfo, ProbeSpec, RunStarted, StepBatch
from tuitrain.ui.buffers import LogBuckets, Ring

FIELDS: tuple[str, ...] = ACT_PROBE.names  # mean, std, zero_frac, saturated_frac, dead_frac
STD = FIELDS.index("std")

# Why a run has no activation probe, for the view's empty state (one sentence, the ways it comes about).
NO_PROBE = (
    "no activation probe in this run: files written before it have none, monitor.activations_every = 0 "
    "turns it off, and a loop of your own gets it from run.watch(model, optimizer)"
)


class ProbeBacking(Protocol):
    """Exact lookups of any probe's row in the run file (:class:`tuitrain.ui.replay.file_source.FileSource`)."""

    def probe_at(self, step: int, probe: str) -> tuple[int, np.ndarray] | None:
        """(probed step, (n_quantities, n_axis) float32 in the file's quantity order) of the last row
        of ``probe`` at or before ``step``; None when there is none."""


@dataclass(frozen=True)
class SignalRow:
    """One probed step: each quantity per module (``(n_modules,)`` float64; NaN where not measured)."""

    step: int
    values: np.ndarray  # (len(FIELDS), n_modules)
    exact: bool = True  # False: a whole-run bucket mean (older than the ring, no file): std only

    def get(self, name: str) -> np.ndarray:
        """One quantity of :data:`FIELDS` per module."""
        return self.values[FIELDS.index(name)]

    @property
    def std(self) -> np.ndarray:
        return self.values[STD]

    @property
    def dead_frac(self) -> np.ndarray:
        return self.get("dead_frac")

    @property
    def saturated_frac(self) -> np.ndarray:
        return self.get("saturated_frac")


class SignalHistory:
    """The activation probe's rows of one run. :meth:`start` at RunStarted, :meth:`feed` per StepBatch."""

    def __init__(self, *, rows: int = 20_000, row_bytes: int = 16 << 20, long_cap: int = 2048) -> None:
        self.rows_cap, self.bytes_cap, self.long_cap = rows, row_bytes, long_cap
        self.started = False  # RunStarted seen
        self.spec: ProbeSpec | None = None  # the run's act probe; None: it has none
        self.modules: list[ModuleInfo] = []
        self.ring: Ring | None = None
        self.long: LogBuckets | None = None
        self.skipped = 0  # blocks whose width did not match the modules (not shown)
        self._order = np.zeros(0, dtype=np.int64)  # FIELDS index -> spec index (-1: absent)

    # -- feeding ---------------------------------------------------------------------------------

    def start(self, run: RunStarted) -> None:
        self.started = True
        self.spec = next((p for p in run.probes if p.name == ACT), None)
        self.modules = list(run.modules)
        self.ring = self.long = None
        if self.spec is not None:
            names = self.spec.names
            self._order = np.array([names.index(f) if f in names else -1 for f in FIELDS], dtype=np.int64)
            if self.modules:
                self._allocate(len(self.modules))

    def _allocate(self, n: int) -> None:
        per_row = max(1, len(FIELDS) * n * 4)
        self.ring = Ring(max(256, min(self.rows_cap, self.bytes_cap // per_row)), (len(FIELDS), n))
        self.long = LogBuckets(self.long_cap, (n,))

    def feed(self, batch: StepBatch) -> None:
        block = batch.blocks.get(ACT)
        if block is None or not len(block) or self.spec is None:
            return
        values = np.asarray(block.values, dtype=np.float32)
        n = values.shape[-1]
        if self.ring is None:  # a run that did not name its modules: numbered columns
            self.modules = [ModuleInfo(f"module {i}", "", "leaf") for i in range(n)]
            self._allocate(n)
        assert self.ring is not None and self.long is not None
        if n != len(self.modules):
            self.skipped += len(block)
            return
        rows = self._canonical(values)
        self.ring.append(block.steps, rows)
        std = rows[:, STD, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log10(np.abs(std))  # 0 -> -inf: drawn as zero
        logs[~np.isfinite(std)] = np.nan
        self.long.append(block.steps, logs)

    def _canonical(self, values: np.ndarray) -> np.ndarray:
        """(m, spec quantities, n) -> (m, len(FIELDS), n): the run's order to FIELDS', NaN where absent."""
        out = np.full((values.shape[0], len(FIELDS), values.shape[-1]), np.nan, dtype=np.float32)
        for f, j in enumerate(self._order.tolist()):
            if 0 <= j < values.shape[1]:
                out[:, f] = values[:, j]
        return out

    # -- reading ---------------------------------------------------------------------------------

    @property
    def has_probe(self) -> bool:
        """Whether the run declares an activation probe (True until RunStarted says otherwise)."""
        return not self.started or self.spec is not None

    @property
    def every(self) -> int:
        return self.spec.every if self.spec is not None else 0

    @property
    def n_rows(self) -> int:
        """Rows ever received (0: waiting for the first probed step)."""
        return self.ring.total if self.ring is not None else 0

    def at(self, step: int | None, backing: object | None = None) -> SignalRow | None:
        """The row of the last probed step at or before ``step`` (None: the latest one).

        From the run file when ``backing`` can look probe rows up (a replay: exact at any step); else
        from the ring of recent rows (exact), and for a step older than the ring from the whole-run
        buckets (their geometric mean of std, the other quantities NaN). None before the first row."""
        if self.spec is None or not self.modules:
            return None
        if step is not None and backing is not None and hasattr(backing, "probe_at"):
            got = backing.probe_at(int(step), ACT)
            if got is not None and got[1].shape[-1] == len(self.modules):
                return SignalRow(got[0], self._canonical(got[1][None])[0].astype(np.float64))
        if self.ring is None:
            return None
        got = self.ring.last() if step is None else self.ring.at(int(step))
        if got is not None:
            return SignalRow(got[0], got[1].astype(np.float64))
        if step is not None and self.long is not None and len(self.long):
            steps, logs = self.long.view()
            i = int(np.searchsorted(steps, step, "right")) - 1
            if i >= 0:
                values = np.full((len(FIELDS), len(self.modules)), np.nan)
                values[STD] = 10.0 ** logs[i].astype(np.float64)
                return SignalRow(int(round(steps[i])), values, exact=False)
        return None

    def std_long(self) -> tuple[np.ndarray, np.ndarray]:
        """(bucket steps (b,), log10 std (b, n_modules)) over the whole run; -inf = exactly zero."""
        if self.long is None or not len(self.long):
            return np.zeros(0), np.zeros((0, len(self.modules)))
        return self.long.view()
