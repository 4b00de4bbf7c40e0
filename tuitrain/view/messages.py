"""The words the dashboard's event log (and anything else that prints a run's progress) uses for a
run's start, its epochs and its test result, for presets and for a user's own loop alike.

A preset measures every standard number (train/val loss and accuracy, test loss and accuracy), so a
NaN there is a diverged run, said as an error. A user's loop may measure none of them: NaN there means
*not measured* and is left out, while the keys it logged itself (``EpochEnd.metrics``,
``TestResult.metrics``) are shown, a NaN among them being one the loop really logged. Plain Python:
no torch, no textual.
"""

from __future__ import annotations

import math

from tuitrain.events import EpochEnd, RunStarted, TestResult


def start_message(ev: RunStarted) -> str:
    """The log's first line: what runs where, leaving out what the run does not know (a user's loop
    may have no dataset name, device or parameter count)."""
    what = [p for p in (ev.model_name, f"{ev.params:,} params" if ev.params else "", ev.dataset) if p]
    own = {"script": " (your own loop)", "lightning": " (Lightning)"}.get(ev.source, "")
    where = f" on {ev.device}" if ev.device else ""
    return f"run {ev.run_name} started{own}: " + (", ".join(what) or "-") + where


def _metric_text(key: str, v: float) -> str:
    return f"{key} {v:.4g}"


def epoch_message(ev: EpochEnd, total: int, preset: bool = True) -> tuple[str, str]:
    """(level, text) of an epoch's log line. A preset measures every standard number, so a NaN there
    is a diverged run (an error); a user's loop may not measure them (NaN: left out), and its own
    metrics (``ev.metrics``) follow, where a NaN is one it logged."""
    ep = f"epoch {ev.epoch + 1}/{total}" if total else f"epoch {ev.epoch + 1}"
    if preset:
        text = (
            f"{ep}  train {ev.train_loss:.4f} / {ev.train_acc * 100:.1f}%  "
            f"val {ev.val_loss:.4f} / {ev.val_acc * 100:.1f}%  {ev.seconds:.1f}s"
        )
        ok = math.isfinite(ev.train_loss) and math.isfinite(ev.val_loss)
    else:
        parts, ok = [ep], True
        for label, loss, acc in (("train", ev.train_loss, ev.train_acc), ("val", ev.val_loss, ev.val_acc)):
            got = [f"{loss:.4f}"] if not math.isnan(loss) else []
            got += [f"{acc * 100:.1f}%"] if not math.isnan(acc) else []
            ok = ok and all(math.isfinite(v) or math.isnan(v) for v in (loss, acc))
            if got:
                parts.append(f"{label} {' / '.join(got)}")
        for k, v in ev.metrics.items():
            parts.append(_metric_text(k, v))
            ok = ok and math.isfinite(v)
        if math.isfinite(ev.seconds):
            parts.append(f"{ev.seconds:.1f}s")
        text = "  ".join(parts)
    if preset and ev.metrics:
        text += "  " + "  ".join(_metric_text(k, v) for k, v in ev.metrics.items())
    return ("info" if ok else "error"), text


def test_message(ev: TestResult, preset: bool = True) -> tuple[str, str]:
    """(level, text) of the test result's log line; a NaN test loss is an error (red), never a
    success tick. A user's loop may report other numbers only (``ev.metrics``)."""
    parts = ["test"]
    if preset or not math.isnan(ev.loss):
        parts.append(f"loss {ev.loss:.4f}")
    if preset or not math.isnan(ev.acc):
        parts.append(f"acc {ev.acc * 100:.2f}%")
    parts += [_metric_text(k, v) for k, v in ev.metrics.items()]
    values = [ev.loss] if preset else [v for v in (ev.loss, ev.acc) if not math.isnan(v)]
    ok = all(math.isfinite(v) for v in (*values, *ev.metrics.values()))
    return ("success" if ok else "error"), "  ".join(parts)
