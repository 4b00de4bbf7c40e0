"""Where each value of an event goes in the file, by its declaration: a StepBatch's declared columns to
``/steps/<name>`` (NaN for a declared column the batch does not carry), its other keys to ``/metrics``
(scope ``step``, only the values a step logged), each probe block to ``/probes/<probe>/``; the extra
metrics of EpochEnd and TestResult to ``/metrics``; a Finding to a row of ``/findings`` when the file
declares that table. Only buffer copies: the writer owns the flushes.

Split from :mod:`tuitrain.runfile.writer` so that the writer keeps to the lifecycle (create, append,
flush, finish, fail). The per-batch cost stays a few column copies: the mapping from a batch's
``scalar_names`` to columns is built once per distinct tuple of names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

from tuitrain.events import EpochEnd, Finding, StepBatch, TestResult
from tuitrain.runfile import schema as S
from tuitrain.runfile.columns import Column, fixed_bytes
from tuitrain.runfile.declaration import Declaration

_SCOPE = {s: fixed_bytes(s, S.METRIC_FIELDS["scope"]) for s in S.METRIC_SCOPES}


class Rows:
    """Puts events' rows into ``cols`` (the writer's columns) following ``decl``."""

    def __init__(self, decl: Declaration, cols: dict[str, Column], where: str) -> None:
        self.decl = decl
        self.cols = cols
        self.where = where  # the run file's path, for error messages
        # columns per row of each probe, as laid out in the file (a reopened file keeps its own)
        self.widths = {
            p.name: int(cols[decl.probe_path(p.name, p.names[0])].buf.shape[1]) for p in decl.probes
        }
        self._declared = {p.name: p for p in decl.probes}
        self._maps: dict[
            tuple[str, ...], tuple[list[tuple[Column, int]], list[Column], list[tuple[str, int]]]
        ] = {}
        self.last_step = -1
        self.last_epoch = -1

    def _map(
        self, names: tuple[str, ...]
    ) -> tuple[list[tuple[Column, int]], list[Column], list[tuple[str, int]]]:
        got = self._maps.get(names)
        if got is None:
            index = {n: j for j, n in enumerate(names)}
            present = [
                (self.cols[S.path(S.STEPS, n)], index[n]) for n in self.decl.step_scalars if n in index
            ]
            absent = [self.cols[S.path(S.STEPS, n)] for n in self.decl.step_scalars if n not in index]
            declared = set(self.decl.step_scalars)
            extra = [(n, j) for j, n in enumerate(names) if n not in declared]
            got = self._maps[names] = (present, absent, extra)
        return got

    def steps(self, b: StepBatch) -> int:
        """Buffer one StepBatch; returns about how many bytes it added."""
        n = len(b)
        added = 0
        if n:
            c = self.cols
            c["steps/step"].put(b.steps)
            c["steps/epoch"].put(b.epochs)
            c["steps/time"].put(np.full(n, b.time, np.float64))
            present, absent, extra = self._map(tuple(b.scalar_names))
            for col, j in present:
                col.put(b.scalars[:, j])
            if absent:
                nan = np.full(n, np.nan)
                for col in absent:
                    col.put(nan)
            for key, j in extra:
                values = b.scalars[:, j]
                keep = ~np.isnan(values)
                if keep.any():
                    added += self._metric_rows("step", b.steps[keep], b.epochs[keep], key, values[keep])
            self.last_step = int(b.steps[-1])
            self.last_epoch = int(b.epochs[-1])
            added += n * (20 + 8 * len(self.decl.step_scalars))
        for name, block in b.blocks.items():
            m = len(block)
            if not m:
                continue
            spec = self._declared.get(name)
            if spec is None:
                known = ", ".join(self._declared) or "none"
                raise ValueError(
                    f"{self.where}: StepBatch has rows of probe {name!r}, which RunStarted did not declare "
                    f"(declared: {known}); a run file holds only the probes it declares"
                )
            want = (m, len(spec.quantities), self.widths[name])
            if block.values.shape != want:
                raise ValueError(
                    f"{self.where}: probe {name!r} rows have shape {block.values.shape}, expected {want} "
                    f"(rows, quantities, {spec.axis} axis)"
                )
            self.cols[self.decl.probe_path(name, "step")].put(block.steps)
            for j, q in enumerate(spec.names):
                self.cols[self.decl.probe_path(name, q)].put(block.values[:, j, :])
            added += m * (8 + 4 * want[1] * want[2])
        return added

    def epoch(self, ev: EpochEnd) -> int:
        for name in S.EPOCH_FIELDS:
            self.cols[S.path(S.EPOCHS, name)].put_one(getattr(ev, name))
        return self._metric_dict("epoch", ev.step, ev.epoch, ev.metrics)

    def test(self, ev: TestResult) -> int:
        # step: the steps done when it ran (like EpochEnd.step), so /metrics/step never decreases
        return self._metric_dict("test", self.last_step + 1, max(self.last_epoch, 0), ev.metrics)

    @property
    def keeps_findings(self) -> bool:
        """Whether the file has a /findings table (a file continued from before issue 11 has none)."""
        return self.decl.has_table(S.FINDINGS)

    def finding(self, ev: Finding, when: float) -> int:
        """One /findings row (the caller checks :attr:`keeps_findings`); texts cut to their fields."""
        c, F = self.cols, S.FINDING_FIELDS
        c["findings/at_step"].put_one(int(ev.at_step))
        c["findings/time"].put_one(float(when))
        c["findings/first_step"].put_one(int(ev.first_step))
        c["findings/last_step"].put_one(S.FINDING_OPEN if ev.last_step is None else int(ev.last_step))
        c["findings/evidence"].put_one(evidence_bytes(ev.evidence, F["evidence"]))
        for name in ("kind", "severity", "layer", "message", "suggestion"):
            c[S.path(S.FINDINGS, name)].put_one(fixed_bytes(str(getattr(ev, name)), F[name]))
        return 1900

    def _metric_dict(self, scope: str, step: int, epoch: int, metrics: Mapping[str, float]) -> int:
        added = 0
        for key, value in metrics.items():
            v = float(value) if isinstance(value, (int, float, np.number)) else math.nan
            added += self._metric_rows(scope, np.array([step]), np.array([epoch]), str(key), np.array([v]))
        return added

    def _metric_rows(
        self, scope: str, steps: np.ndarray, epochs: np.ndarray, key: str, values: np.ndarray
    ) -> int:
        k = len(values)
        c = self.cols
        c["metrics/step"].put(steps)
        c["metrics/epoch"].put(epochs)
        c["metrics/scope"].put([_SCOPE[scope]] * k)
        c["metrics/key"].put([fixed_bytes(key, S.METRIC_FIELDS["key"])] * k)
        c["metrics/value"].put(values)
        return 92 * k


def evidence_bytes(evidence: Mapping[str, float], dt: np.dtype) -> bytes:
    """A finding's evidence as a JSON object that fits ``dt``: entries past the field's size are left
    out whole (the first ones, which the rules put first because they matter most, stay), so the text
    always parses. Values are floats (NaN and Infinity as Python's json writes them; NaN for a value
    that is not a number)."""
    items = [(str(k), _number(v)) for k, v in evidence.items()]
    while True:
        raw = json.dumps(dict(items), separators=(",", ":")).encode("utf-8")
        if len(raw) <= dt.itemsize or not items:
            return raw if len(raw) <= dt.itemsize else b"{}"
        items.pop()


def _number(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan  # not a number: stored as NaN rather than failing the run's writer
