"""Diagnosis in words (issue 11): pure rules over a run's data, each finding naming what is wrong,
where, since when, on what evidence, and what usually fixes it.

Numpy only (no torch, textual or h5py), so the same rules run live, in replay and offline
(``tuitrain diagnose``). :func:`from_runfile` builds the :class:`RunData` of a run file through the
RunFile's public API; :func:`diagnose` runs every rule of :data:`RULES`. docs/diagnosis.md lists the
rules, their thresholds and sources."""

from tuitrain.diagnosis.data import Activations, Grads, RunData, from_runfile
from tuitrain.diagnosis.engine import RULES, Diagnosis, diagnose, line
from tuitrain.diagnosis.finding import SEVERITIES, Finding, Skipped, current, episodes, ranked

__all__ = [
    "RULES",
    "SEVERITIES",
    "Activations",
    "Diagnosis",
    "Finding",
    "Grads",
    "RunData",
    "Skipped",
    "current",
    "diagnose",
    "episodes",
    "from_runfile",
    "line",
    "ranked",
]
