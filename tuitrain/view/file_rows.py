"""The final-table rows of run files, and the config keys that differ between them: one owner for
``tuitrain replay --print``, the dashboard's comparison (:mod:`tuitrain.ui.replay.compare` re-exports
these) and ``tuitrain report``. Reads files through RunFile's public API only; pure (numpy, the config
module): no textual, no torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitrain.view.colors import run_color
from tuitrain.view.table import FinalRow, extra_metrics, unmeasured_missing

if TYPE_CHECKING:
    from tuitrain.runfile.reader import RunFile

EPOCH_METRICS: tuple[str, ...] = ("train_loss", "train_acc", "val_loss", "val_acc")


def unique_names(names: Sequence[str], paths: Sequence[str | Path]) -> list[str]:
    """Run names for a legend: the run's own name, its file's stem where two runs share a name, and
    a counter where even the stems collide."""
    out = [n or Path(p).stem for n, p in zip(names, paths, strict=True)]
    shared = {n for n in out if out.count(n) > 1}
    out = [Path(p).stem if n in shared else n for n, p in zip(out, paths, strict=True)]
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            out[i] = f"{n} ({seen[n]})"
    return out


def extras_of_file(rf: RunFile) -> dict[str, float]:
    """The same from a run file: the last value of each epoch metric and the test metrics it stores
    (none in a file from before user metrics were stored)."""
    if not hasattr(rf, "metrics"):  # a reader without RunFile.metrics (schema 1 only)
        return {}
    last = {
        scope: {k: float(v[2][-1]) for k, v in rf.metrics(scope).items() if len(v[2])}
        for scope in ("epoch", "test")
    }
    return extra_metrics(last["epoch"], last["test"])


def flat_dict(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as dotted keys (``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if isinstance(v, dict):
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def user_config_diff(config_jsons: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """:func:`config_diff` for user loops' configs (``tuitrain.init(config=...)``, stored as JSON):
    the dotted keys whose values differ, a key one run lacks included."""
    import json

    empty: list[dict[str, str]] = [{} for _ in config_jsons]
    try:
        dicts = [json.loads(t or "{}") for t in config_jsons]
    except ValueError:
        return [], empty
    if len(dicts) < 2 or not all(isinstance(d, dict) for d in dicts):
        return [], empty
    flats = [flat_dict(d) for d in dicts]
    missing = object()
    keys = list(dict.fromkeys(k for f in flats for k in f))
    keys = [k for k in keys if len({repr(f.get(k, missing)) for f in flats}) > 1]
    return keys, [{k: fmt_config(f[k]) if k in f else "" for k in keys} for f in flats]


def run_config_diff(configs: Sequence[tuple[str, str]]) -> tuple[list[str], list[dict[str, str]]]:
    """The differing config keys of runs given as ``(config_toml, config_json)``: presets' configs
    compared as configs, user loops' dicts as dicts; presets and user loops have no keys in common to
    compare, so a mix shows none."""
    if all(toml or not js for toml, js in configs):
        return config_diff([toml for toml, _ in configs])
    if not any(toml for toml, _ in configs):
        return user_config_diff([js for _, js in configs])
    return [], [{} for _ in configs]


def fmt_config(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(fmt_config(v) for v in value) + "]"
    return str(value)


def config_diff(config_tomls: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The dotted config keys whose values differ between the runs, and each run's values for them.
    Nothing when there is only one run or a stored config does not load."""
    from tuitrain.config import ConfigError, diff_flat, from_toml, to_flat

    empty: list[dict[str, str]] = [{} for _ in config_tomls]
    if len(config_tomls) < 2:
        return [], empty
    try:
        cfgs = [from_toml(t) for t in config_tomls]
    except (ConfigError, ValueError):
        return [], empty
    keys = diff_flat(cfgs)
    flats = [to_flat(c) for c in cfgs]
    return keys, [{k: fmt_config(f[k]) for k in keys} for f in flats]


def file_divergence(rf: RunFile, metric: str = "loss") -> int | None:
    """The first step from which a run file's ``metric`` is not finite (the training loss: where the
    run diverged). A preset's: the first NaN or Inf. A user loop's, whose NaN may be a step or epoch
    it did not log: by the rule for sparse logging (:mod:`tuitrain.view.divergence`); its own epoch
    metrics (``run.log_epoch``) hold only what it logged: the first non-finite one."""

    from tuitrain.view.divergence import first_divergence

    if metric not in EPOCH_METRICS and metric not in rf.step_scalars:  # a user loop's own key in /metrics
        steps, values = own_metric(rf, metric)
        return first_divergence(steps, values)
    if str(getattr(rf, "source", "preset")) == "preset":
        return rf.first_nonfinite(metric)
    if metric in EPOCH_METRICS:
        ep = rf.epochs()
        return first_divergence(ep["step"], ep[metric], dense=False)
    n = rf.n_steps
    return first_divergence(rf.scalar("step", 0, n), rf.scalar(metric, 0, n), dense=False)


def own_metric(rf: RunFile, metric: str) -> tuple[Any, Any]:
    """(steps, values) of a user loop's key that the file keeps in /metrics: a per-step key first
    logged after the run started, else an epoch metric (``run.log_epoch``); empty when neither."""
    import numpy as np

    for scope in ("step", "epoch"):
        got = rf.metrics(scope).get(metric)
        if got is not None:
            return got[0], got[2]
    return np.zeros(0, np.int64), np.zeros(0)


def file_config(rf: RunFile) -> tuple[str, str]:
    """(config_toml, the user's config as JSON text) of a run file; the JSON is "" for presets and for
    files from before user configs were stored."""
    import json

    user = getattr(rf, "user_config", None)  # RunFile.user_config: a schema-2 reader
    return rf.config_toml, json.dumps(user) if user else ""


def rows_from_files(runs: Sequence[RunFile], names: Sequence[str]) -> tuple[list[FinalRow], list[str]]:
    """Final-table rows read from open run files (``--print``), and the differing config keys."""
    keys, configs = run_config_diff([file_config(rf) for rf in runs])
    rows = []
    for i, (rf, name, cfg) in enumerate(zip(runs, names, configs, strict=True)):
        status = "incomplete" if rf.incomplete else rf.status
        source = str(getattr(rf, "source", "preset"))  # RunFile.source: a schema-2 reader
        metrics = unmeasured_missing(rf.final_metrics(), source, file_divergence(rf) is not None)
        rows.append(FinalRow(name, metrics, status, cfg, run_color(i), extras_of_file(rf)))
    return rows, keys
