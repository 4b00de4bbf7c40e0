"""All rules, run in one call: the findings worst first, and the rules that skipped with why."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from tuitrain.diagnosis import gradients, loss, signal
from tuitrain.diagnosis.data import RunData
from tuitrain.diagnosis.finding import SEVERITY_RANK, Finding, Skipped, fmt

Rule = Callable[[RunData], list[Finding]]

RULES: dict[str, Rule] = {
    "signal_collapse": signal.signal_collapse,
    "vanishing_gradients": gradients.vanishing_gradients,
    "exploding_gradients": gradients.exploding_gradients,
    "dead_units": signal.dead_units,
    "saturation": signal.saturation,
    "update_ratio": gradients.update_ratio,
    "loss_at_init": loss.loss_at_init,
    "stuck_at_chance": loss.stuck_at_chance,
    "plateau": loss.plateau,
    "diverging": loss.diverging,
    "overfitting": loss.overfitting,
}


@dataclass(frozen=True)
class Diagnosis:
    findings: list[Finding]
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it did not run


def diagnose(data: RunData) -> Diagnosis:
    """Every rule over ``data``: findings sorted worst first, then by step, then by rule order."""
    found: list[Finding] = []
    skipped: dict[str, str] = {}
    order = {k: i for i, k in enumerate(RULES)}
    for name, rule in RULES.items():
        try:
            with warnings.catch_warnings():  # all-NaN slices (a NaN run) are data, not a fault
                warnings.simplefilter("ignore", RuntimeWarning)
                found.extend(rule(data))
        except Skipped as e:
            skipped[name] = str(e)
    found.sort(key=lambda f: (SEVERITY_RANK[f.severity], order[f.kind], f.first_step))
    return Diagnosis(found, skipped)


def line(f: Finding) -> str:
    """One line per finding: severity, kind, where, since which step, evidence, suggestion."""
    where = f" at {f.layer}" if f.layer else ""
    until = "" if f.last_step is None else f" until step {f.last_step}"
    ev = ", ".join(f"{k}={fmt(v)}" for k, v in f.evidence.items())
    return (
        f"{f.severity:<7} {f.kind}{where} since step {f.first_step}{until}: {f.message} [{ev}]"
        f" -> {f.suggestion}"
    )
