"""What a user loop's run says about itself: its device in words and the versions it ran with (the
engine's own, from :mod:`tuitrain.train.summary`), its test metrics as the
:class:`~tuitrain.events.TestResult` the run file stores."""

from __future__ import annotations

import math

from tuitrain.events import TestResult
from tuitrain.train.summary import device_label, versions

__all__ = ["device_label", "test_result", "versions"]  # the first two: tuitrain.train.summary's


def test_result(metrics: dict[str, float]) -> TestResult:
    """``test_loss`` (or ``loss``) and ``test_acc`` (or ``acc``) are the standard columns; every other
    key goes to ``TestResult.metrics``."""
    rest = dict(metrics)
    standard = {}
    for field, names in (("loss", ("test_loss", "loss")), ("acc", ("test_acc", "acc"))):
        found = [rest.pop(n) for n in names if n in rest]
        standard[field] = found[0] if found else math.nan
    return TestResult(metrics=rest, **standard)
