"""``tuitrain.load``: a run file as pandas DataFrames, each equal to what RunFile's API reads from the
same file (issue 12). Real files only: a real short training run, the committed old-schema fixtures,
and a file with findings written by the real writer."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tuitrain
from tests.clirun import tt
from tests.conftest import REPO, cli_env
from tests.test_runfile_tables import (
    CLOSED,
    LONG,
    OPENED,
    RUN_LEVEL,
    V1,
    V2_NOTABLES,
    WRITER,
    batch,
    started,
    write,
)
from tuitrain import events as E  # (not TestResult by name: pytest would try to collect it)
from tuitrain.config.dump import to_dict
from tuitrain.diagnosis import current
from tuitrain.frames import LoadedRun, PandasMissing
from tuitrain.runfile import RunFileError, RunFileWriter, open_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("load") / "toy.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--max-steps", "60", "--epochs", "2", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    return out


@pytest.fixture(scope="module")
def with_findings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("load") / "findings.h5")


@pytest.fixture(scope="module")
def with_metrics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user loop's extra keys: per epoch (one missing in epoch 1, one NaN) and at the test."""
    path = tmp_path_factory.mktemp("load") / "metrics.h5"
    with RunFileWriter(path, background=False) as w:
        w.emit(started())
        w.emit(batch(0, 10))
        w.emit(E.EpochEnd(0, 10, train_loss=0.5, metrics={"f1": 0.25, "top5": float("nan")}))
        w.emit(batch(10, 10))
        w.emit(E.EpochEnd(1, 20, train_loss=0.4, metrics={"f1": 0.5}))
        w.emit(E.TestResult(loss=0.3, acc=0.9, metrics={"f1": 0.75}))
        w.emit(E.RunFinished("completed", 19))
    return path


def assert_equals_file(run: LoadedRun, path: Path) -> None:
    """Every frame of ``run`` against RunFile's API on the same file (NaN equals NaN)."""
    eq = np.testing.assert_array_equal
    with open_run(path) as rf:
        steps = rf.steps()
        assert list(run.steps.columns[:2]) == ["epoch", *rf.step_scalars][:2]
        eq(run.steps.index.to_numpy(), steps["step"])
        for name in ("epoch", *rf.step_scalars):
            eq(run.steps[name].to_numpy(), steps[name])
        if rf.has("steps/time"):
            eq(run.steps["time"].to_numpy(), rf.scalar("time"))
        for k, v in rf.epochs().items():
            eq(run.epochs[k].to_numpy(), v)
        for i, extra in enumerate(rf.epoch_metrics()):
            for k, v in extra.items():
                assert run.epochs[k].iloc[i] == v or (math.isnan(v) and math.isnan(run.epochs[k].iloc[i]))
        assert list(run.probes) == [p.name for p in rf.probe_specs]
        for spec in rf.probe_specs:
            long = run.probes[spec.name]
            names = [x.name for x in rf.layers] if spec.axis == "tensor" else [m.name for m in rf.modules]
            column = {"tensor": "layer", "module": "module"}[spec.axis]
            assert len(long) == rf.probe_rows(spec.name) * len(spec.names) * len(names)
            wide = run.probe(spec.name, wide=True)
            eq(wide.index.to_numpy(), rf.probe_steps(probe=spec.name))
            for q in spec.names:
                got = long[long["quantity"] == q]
                eq(got["step"].to_numpy(), np.repeat(rf.probe_steps(probe=spec.name), len(names)))
                assert got[column].tolist() == names * rf.probe_rows(spec.name)
                eq(got["value"].to_numpy().reshape(-1, len(names)), rf.probe(q, probe=spec.name))
                eq(wide[q].to_numpy(), rf.probe(q, probe=spec.name))
        assert run.layers.to_dict("records") == [vars(x) for x in rf.layers]
        assert run.modules.to_dict("records") == [vars(m) for m in rf.modules]
        assert run.events.to_dict("records") == rf.events()
        for scope in ("step", "epoch", "test"):
            for key, (s, e, v) in rf.metrics(scope).items():
                got = run.metrics[(run.metrics["scope"] == scope) & (run.metrics["key"] == key)]
                eq(got["step"].to_numpy(), s)
                eq(got["epoch"].to_numpy(), e)
                eq(got["value"].to_numpy(), v)
        rows = rf.findings()
        assert len(run.finding_rows) == len(rows)
        for df, want in ((run.finding_rows, rows), (run.findings, current(rows))):
            assert df["kind"].tolist() == [f.kind for f in want]
            assert df["layer"].tolist() == [f.layer for f in want]
            assert df["first_step"].tolist() == [f.first_step for f in want]
            assert [None if pd.isna(x) else int(x) for x in df["last_step"]] == [f.last_step for f in want]
            assert df["evidence"].tolist() == [f.evidence for f in want]
            assert df["message"].tolist() == [f.message for f in want]
        test = rf.test()
        for k, v in test.items():
            assert run.test[k] == v or (math.isnan(v) and math.isnan(run.test[k]))
        assert {k: run.test[k] for k in rf.test_metrics()} == rf.test_metrics()
        assert run.config == (to_dict(rf.config) if rf.config is not None else rf.user_config)
        assert run.attrs["run_name"] == rf.run_name and run.attrs["status"] == rf.status
        assert run.attrs["params"] == rf.params and run.attrs["model_name"] == rf.model_name


def test_a_real_run_loads_and_every_frame_equals_the_file(trained: Path) -> None:
    run = tuitrain.load(trained)
    assert isinstance(run, LoadedRun)
    assert_equals_file(run, trained)
    assert len(run.steps) == 32 and run.steps.index[0] == 0 and run.steps.index[-1] == 31  # 2 x 16 steps
    assert set(run.probes) >= {"grad"} and not run.steps["loss"].isna().any()
    assert run.attrs["status"] == "completed" and run.config["name"] == "toy2d_mlp"
    assert run.config["train"]["epochs"] == 2 and run.attrs["epochs_planned"] == 2
    assert run.events["kind"].iloc[-1] in ("finished", "status") and math.isfinite(run.test["acc"])
    assert run.epochs["epoch"].tolist() == [0, 1]


def test_the_file_is_closed_after_load(trained: Path, tmp_path: Path) -> None:
    """No handle left: the file can be moved away and loaded again from its new place, and a writer
    could open it at once."""
    import h5py

    copy = tmp_path / "copy.h5"
    copy.write_bytes(trained.read_bytes())
    tuitrain.load(copy)
    with h5py.File(copy, "r+") as f:  # an open reader handle in this process would refuse this mode
        f.attrs["probe_of_closing"] = 1
    moved = copy.rename(tmp_path / "moved.h5")
    assert len(tuitrain.load(moved).steps) == 32


@pytest.mark.parametrize("fixture", [V1, V2_NOTABLES], ids=["schema1", "schema2-notables"])
def test_old_fixtures_load(fixture: Path) -> None:
    run = tuitrain.load(fixture)
    assert_equals_file(run, fixture)
    assert run.findings.empty and run.modules.empty and list(run.probes) == ["grad"]


def test_a_file_with_findings_gives_them(with_findings: Path) -> None:
    run = tuitrain.load(with_findings)
    assert_equals_file(run, with_findings)
    assert len(run.finding_rows) == 4
    now = run.findings  # dead_units opened then closed: one finding, closed; ranked worst first
    assert len(now) == 3 and now["kind"].tolist()[0] == LONG.kind
    dead = now[now["kind"] == OPENED.kind].iloc[0]
    assert dead["last_step"] == CLOSED.last_step and dead["evidence"]["ratio"] == float("inf")
    assert pd.isna(now[now["kind"] == RUN_LEVEL.kind].iloc[0]["last_step"])
    assert list(run.probes) == ["grad", "act"] and set(run.probes["act"]["module"]) == set(
        run.modules["name"]
    )
    assert run.config == {} and run.attrs["source"] == "script"
    with pytest.raises(KeyError, match="has: grad, act"):
        run.probe("nope")


def test_extra_metrics_load_long_and_as_epoch_columns(with_metrics: Path) -> None:
    run = tuitrain.load(with_metrics)
    assert_equals_file(run, with_metrics)
    assert run.epochs["f1"].tolist() == [0.25, 0.5] and run.epochs["top5"].isna().all()
    assert run.test["f1"] == 0.75 and run.test["acc"] == 0.9
    test_rows = run.metrics[run.metrics["scope"] == "test"]
    assert test_rows[["key", "value"]].to_dict("records") == [{"key": "f1", "value": 0.75}]
    assert sorted(run.metrics["scope"].unique()) == ["epoch", "test"]
    assert len(run.metrics[run.metrics["scope"] == "epoch"]) == 3  # f1 twice, top5 once


def test_a_live_file_loads_what_is_there(tmp_path: Path) -> None:
    """A writer still open (SWMR): each load sees what was flushed by then, equal to RunFile's view,
    and the next load sees more."""
    path, script = tmp_path / "live.h5", tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER.format(root=str(REPO), path=str(path))))
    proc = subprocess.Popen(
        [sys.executable, "-u", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "opened"
        first = tuitrain.load(path)
        assert_equals_file(first, path)
        assert (
            first.attrs["is_live"] and first.findings["last_step"].isna().all() and len(first.findings) == 1
        )
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "closed"
        second = tuitrain.load(path)
        assert_equals_file(second, path)
        assert len(second.finding_rows) == 2 and second.findings["last_step"].tolist() == [CLOSED.last_step]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
        done = tuitrain.load(path)
        assert done.attrs["status"] == "completed" and len(done.steps) == 40
    finally:
        proc.kill()
        proc.wait()


def test_bad_paths_raise_what_info_says(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    for path in (tmp_path / "missing.h5", junk, tmp_path):
        with pytest.raises(RunFileError) as e:
            tuitrain.load(path)
        p = tt("info", str(path))
        assert str(e.value) in p.stdout + p.stderr, (str(e.value), p.stdout + p.stderr)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env(), cwd=REPO
    )


def test_without_pandas_the_error_says_how_to_install_it(trained: Path) -> None:
    code = (
        "import sys; sys.modules['pandas'] = None\n"  # what an interpreter without pandas does
        "import tuitrain\n"
        f"try:\n    tuitrain.load({str(trained)!r})\n"
        "except ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    p = run_python(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(PandasMissing.__name__) and 'pip install "tuitrain[pandas]"' in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


def test_import_tuitrain_does_not_import_pandas() -> None:
    p = run_python(
        "import sys, tuitrain; tuitrain.load; print(sorted(m for m in ('pandas', 'h5py', 'torch') if m in sys.modules))"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
