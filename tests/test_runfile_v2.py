"""Run file schema 2: a file declares what it holds (probes, step scalars, source, user config) and a
reader requires exactly that. Real files written by the real RunFileWriter, real h5py, a real
schema-1 file (tests/data/run_v1.h5, written by the code before schema 2), a real SIGKILL, and the
real CLI (`info`, `replay --print`) on the old file.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.clirun import tt
from tuitrain.events import (
    GRAD_PROBE,
    PROBE_NAMES,
    STEP_SCALARS,
    EpochEnd,
    LayerInfo,
    ProbeBlock,
    ProbeSpec,
    Quantity,
    RunFinished,
    RunStarted,
    StepBatch,
)
from tuitrain.events import TestResult as TResult
from tuitrain.runfile import RunFileError, RunFileWriter, open_run
from tuitrain.runfile import schema as S
from tuitrain.runfile.append import AppendRefused, check_appendable
from tuitrain.runfile.claim import OutTaken, RunLock

HERE = Path(__file__).resolve().parent
V1 = HERE / "data" / "run_v1.h5"
L = 4
SCALE = ProbeSpec(
    "scale", "step", (Quantity("loss_scale", "loss scale"), Quantity("skipped", "skipped", "")), 2
)
USER = (*STEP_SCALARS, "tokens")


def layers(n: int = L) -> list[LayerInfo]:
    return [LayerInfo(f"fc{i}.weight", (8, 8), 64, "weight", f"fc{i}", "Linear") for i in range(n)]


def started(probes: list[ProbeSpec] | None = None, n_layers: int = L, **kw: object) -> RunStarted:
    fields: dict[str, object] = dict(
        run_name="loop",
        config_toml="",
        model_name="Net",
        layers=layers(n_layers),
        started_at=1_700_000_000.0,
        probes=[GRAD_PROBE, SCALE] if probes is None else probes,
        step_scalars=USER,
        source="script",
        config_json='{"lr": 0.01}',
    )
    fields.update(kw)
    return RunStarted(**fields)  # type: ignore[arg-type]


def batch(start: int, n: int, probes: tuple[str, ...] = ("grad", "scale"), late: bool = False) -> StepBatch:
    rng = np.random.default_rng(start)
    steps = np.arange(start, start + n, dtype=np.int64)
    cols = [rng.random((n, len(STEP_SCALARS))).astype(np.float32).astype(np.float64), rng.random((n, 1))]
    names: tuple[str, ...] = USER
    if late:
        cols.append(np.where(steps % 2 == 0, steps * 0.5, np.nan)[:, None])
        names = (*USER, "late")
    blocks = {}
    if "grad" in probes:
        blocks["grad"] = ProbeBlock("grad", steps, rng.random((n, 4, L)).astype(np.float32))
    if "scale" in probes:
        ps = steps[steps % 2 == 0]
        blocks["scale"] = ProbeBlock("scale", ps, rng.random((len(ps), 2, 1)).astype(np.float32))
    return StepBatch(
        steps, np.full(n, start // 10, np.int32), np.concatenate(cols, axis=1), names, blocks, 1.7e9
    )


def write(path: Path, events: list, **kw: object) -> Path:
    with RunFileWriter(path, flush_seconds=math.inf, background=False, **kw) as w:  # type: ignore[arg-type]
        for ev in events:
            w.emit(ev)
    return path


def test_declared_probes_scalars_and_metrics_round_trip(tmp_path: Path) -> None:
    b0, b1 = batch(0, 10), batch(10, 10, late=True)
    ep = EpochEnd(0, 10, val_acc=0.5, metrics={"f1": 0.25}, time=1.7e9)
    path = write(
        tmp_path / "r.h5",
        [started(), b0, ep, b1, TResult(metrics={"auc": 0.75}, time=1.7e9), RunFinished("completed", 19)],
    )
    with h5py.File(path, "r") as f:  # what a reader without tuitrain sees
        assert f.attrs["schema_version"] == 2 and f.attrs["source"] == "script"
        assert [p["name"] for p in json.loads(f.attrs["probes"])] == ["grad", "scale"]
        assert json.loads(f.attrs["step_scalars"]) == list(USER) and json.loads(f.attrs["config_json"]) == {
            "lr": 0.01
        }
        assert f["steps/tokens"].dtype == np.float64 and f["steps/loss"].dtype == np.float32
        assert f["probes/grad/grad_norm"].shape == (20, L) and f["probes/scale/loss_scale"].shape == (10, 1)
        assert set(f["metrics"]) == set(S.METRIC_FIELDS)
    with open_run(path) as rf:
        assert rf.probe_specs == [GRAD_PROBE, SCALE] and rf.has_probe("scale") and not rf.has_probe("act")
        assert rf.step_scalars == USER and rf.source == "script" and rf.user_config == {"lr": 0.01}
        assert rf.config is None  # no preset config: documented; the user's is user_config
        np.testing.assert_array_equal(
            rf.scalar("tokens"), np.concatenate([b0.scalar("tokens"), b1.scalar("tokens")])
        )
        np.testing.assert_array_equal(
            rf.probe("skipped", probe="scale")[:, 0],
            np.concatenate([b0.blocks["scale"].values[:, 1, 0], b1.blocks["scale"].values[:, 1, 0]]),
        )
        np.testing.assert_array_equal(rf.probe_steps(probe="scale"), np.arange(0, 20, 2))
        assert rf.probe_rows("scale") == 10 and rf.n_probe_rows == 20
        steps, epochs, values = rf.metrics("step")["late"]
        np.testing.assert_array_equal(steps, np.arange(10, 20, 2))  # only the steps that logged it
        np.testing.assert_array_equal(values, np.arange(10, 20, 2) * 0.5)
        assert rf.epoch_metrics() == [{"f1": 0.25}] and rf.test_metrics() == {"auc": 0.75}
        assert set(rf.metrics("epoch")) == {"f1"} and rf.metrics("test")["auc"][0].tolist() == [20]
        back = rf.read_batches(10, 20)
        assert back.scalar_names == (*USER, "late") and list(back.blocks) == ["grad", "scale"]
        np.testing.assert_array_equal(back.scalars, b1.scalars)
        with pytest.raises(KeyError, match="no probe 'act'"):
            rf.probe("x", probe="act")
        with pytest.raises(KeyError, match="unknown step column 'nope'"):
            rf.scalar("nope")
        s = rf.summary()
        assert (
            s["source"] == "script"
            and s["probes"] == ["grad", "scale"]
            and s["test_metrics"] == {"auc": 0.75}
        )
        rs = rf.run_started()
        assert (rs.probes, rs.step_scalars, rs.source, rs.config_json) == (
            [GRAD_PROBE, SCALE],
            USER,
            "script",
            '{"lr": 0.01}',
        )


def test_a_file_without_probes_opens_and_replays(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bare.h5", [started(probes=[]), batch(0, 30, probes=()), RunFinished("completed", 29)]
    )
    with h5py.File(path, "r") as f:
        assert list(f["probes"]) == []  # no /probes/<probe> groups
    with open_run(path) as rf:
        assert rf.probe_specs == [] and rf.n_probe_rows == 0 and not rf.has_probe("grad")
        assert rf.probe_at_step(5).shape == (len(PROBE_NAMES), L) and np.isnan(rf.probe_at_step(5)).all()
        assert rf.read_batches(0, 30).blocks == {} and rf.n_steps == 30
        assert [type(e).__name__ for e in rf.to_events()] == ["RunStarted", "StepBatch", "RunFinished"]
    from tuitrain.ui.history import History
    from tuitrain.ui.replay.file_source import FileSource

    src = FileSource(open_run(path))
    try:
        with src.lock:
            got = src.collect()
        assert src.probes_at(10) is None and src.scalars_at(10) is not None
    finally:
        src.rf.close()
    h = History()
    h.extend(got)
    assert h.steps_done == 30


def test_bad_declarations_are_refused_by_the_writer(tmp_path: Path) -> None:
    for bad, words in (
        (dict(step_scalars=(*STEP_SCALARS, "time")), "reserved"),
        (dict(step_scalars=(*STEP_SCALARS, " a")), "cannot be a dataset name"),
        (dict(probes=[GRAD_PROBE, GRAD_PROBE]), "declared twice"),
        (dict(probes=[ProbeSpec("x", "galaxy", (Quantity("q", "q"),))]), "axis 'galaxy'"),
    ):
        w = RunFileWriter(tmp_path / "bad.h5", background=False)
        with pytest.raises(ValueError, match=words):
            w.emit(started(**bad))  # type: ignore[arg-type]
        w.close()
        assert not (tmp_path / "bad.h5").exists()
    with RunFileWriter(tmp_path / "undeclared.h5", background=False) as w:
        w.emit(started(probes=[GRAD_PROBE]))
        with pytest.raises(ValueError, match="probe 'scale', which RunStarted did not declare"):
            w.emit(batch(0, 4))


def test_validation_requires_what_is_declared_and_ignores_the_rest(tmp_path: Path) -> None:
    good = write(tmp_path / "good.h5", [started(), batch(0, 10), RunFinished("completed", 9)])
    extra = tmp_path / "extra.h5"
    shutil.copyfile(good, extra)
    with h5py.File(extra, "r+") as f:
        f.create_dataset("probes/undeclared/q", data=np.zeros((3, 3)))
        f.create_dataset("steps/undeclared", data=np.zeros(2))
    with open_run(extra) as rf:
        assert [p.name for p in rf.probe_specs] == ["grad", "scale"]
    missing = tmp_path / "missing.h5"
    shutil.copyfile(good, missing)
    with h5py.File(missing, "r+") as f:
        del f["probes/scale/skipped"]
    with pytest.raises(RunFileError, match=r"missing /probes/scale/skipped"):
        open_run(missing)
    wide = tmp_path / "wide.h5"
    shutil.copyfile(good, wide)
    with h5py.File(wide, "r+") as f:
        del f["probes/scale/skipped"]
        f.create_dataset("probes/scale/skipped", data=np.zeros((10, 3), np.float32))
    with pytest.raises(
        RunFileError, match=r"/probes/scale/skipped has shape \(10, 3\); expected \(rows, 1\)"
    ):
        open_run(wide)


def test_the_schema_1_fixture_opens_replays_and_informs(tmp_path: Path) -> None:
    with h5py.File(V1, "r") as f:
        assert f.attrs["schema_version"] == 1 and "probes/grad_norm" in f  # really the old layout
    with open_run(V1) as rf:
        assert rf.schema_version == 1 and rf.status == "completed" and rf.n_steps == 60
        assert rf.probe_specs == [GRAD_PROBE] and rf.step_scalars == STEP_SCALARS and rf.source == "preset"
        assert rf.n_probe_rows == 60 and rf.probe("grad_norm").shape == (60, rf.n_layers)
        assert rf.metrics("step") == {} and rf.epoch_metrics() == [{}] * rf.n_epochs and rf.user_config == {}
        assert rf.config is not None and rf.config.name == "toy2d_mlp"
        events = list(rf.to_events(batch_steps=16))
        batches = [e for e in events if isinstance(e, StepBatch)]
        assert sum(len(b) for b in batches) == 60 and all(list(b.blocks) == ["grad"] for b in batches)
        assert type(events[-1]).__name__ == "RunFinished" and any(isinstance(e, TResult) for e in events)
    p = tt("info", str(V1))
    assert p.returncode == 0 and "toy2d_mlp" in p.stdout and "completed" in p.stdout, p.stdout + p.stderr
    p = tt("replay", str(V1), "--print")
    assert p.returncode == 0 and "toy2d_mlp" in p.stdout and "Traceback" not in p.stderr, p.stdout + p.stderr
    with pytest.raises(AppendRefused, match="schema 1 cannot be continued"):
        check_appendable(V1)


def test_a_sigkilled_schema_2_writer_leaves_a_file_that_opens(tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    script = tmp_path / "w.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {str(HERE.parent)!r})\n"
        + textwrap.dedent(
            f"""
            from tests.test_runfile_v2 import batch, started
            from tuitrain.runfile import RunFileWriter
            w = RunFileWriter({str(path)!r}, flush_seconds=1e9, background=False)
            w.emit(started())
            w.emit(batch(0, 20, late=True))
            w.flush()
            w.emit(batch(20, 10))  # never flushed
            print("ready", flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    with open_run(path) as rf:
        assert rf.opened_swmr and rf.incomplete and rf.n_steps == 20 and rf.probe_rows("scale") == 10
        assert rf.step_scalars == USER and list(rf.metrics("step")) == ["late"]
    with pytest.raises(AppendRefused, match="marked open"):
        check_appendable(path)


def test_append_continues_a_finished_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.h5",
        [
            started(),
            batch(0, 20),
            EpochEnd(0, 20, val_acc=0.5, time=1.7e9),
            RunFinished("stopped", 19, time=1.7e9),
        ],
    )
    check_appendable(path)
    resumed = started(step_scalars=(*USER, "new_key"), epochs=4)
    b = batch(20, 10)
    b2 = StepBatch(
        b.steps,
        b.epochs,
        np.concatenate([b.scalars, np.full((10, 1), 3.0)], axis=1),
        (*USER, "new_key"),
        b.blocks,
        b.time,
    )
    with RunFileWriter(path, append=True, background=False) as w:
        w.emit(resumed)
        with open_run(path) as live:  # a reader sees it running again
            assert live.status == "running" and math.isnan(live.ended_at)
        with pytest.raises(ValueError, match="not after the last step written"):
            w.emit(batch(5, 3))
        w.emit(b2)
        w.emit(EpochEnd(1, 30, val_acc=0.75, time=1.7e9))
        w.emit(RunFinished("completed", 29, time=1.7e9 + 5))
    with open_run(path) as rf:
        assert rf.status == "completed" and rf.n_steps == 30 and rf.last_step == 29 and rf.epochs_planned == 4
        np.testing.assert_array_equal(rf.scalar("step"), np.arange(30))
        assert rf.probe_rows("scale") == 15 and rf.n_epochs == 2 and rf.started_at == 1_700_000_000.0
        assert rf.step_scalars == USER  # the file's columns; the new key went to /metrics
        np.testing.assert_array_equal(rf.metrics("step")["new_key"][2], np.full(10, 3.0))
        kinds = [(e["kind"], e["message"]) for e in rf.events()]
        assert kinds == [("finished", "stopped"), ("status", "running"), ("finished", "completed")]
    for bad, words in (
        (started(n_layers=L + 1), "parameter tensors differ"),
        (started(probes=[GRAD_PROBE]), "probes .* differ"),
    ):
        w = RunFileWriter(path, append=True, background=False)
        with pytest.raises(AppendRefused, match=words):
            w.emit(bad)
        w.close()
    with pytest.raises(AppendRefused, match="no run file to continue"):
        check_appendable(tmp_path / "none.h5")
    holder = RunLock(path)
    holder.acquire()
    try:
        w = RunFileWriter(path, append=True, background=False)
        with pytest.raises(OutTaken, match="another tuitrain run"):
            w.emit(started())
        w.close()
    finally:
        holder.release()
    with open_run(path) as rf:
        assert rf.status == "completed" and rf.n_steps == 30  # refusals changed nothing


def test_a_sigkill_while_appending_keeps_the_old_run_and_the_flushed_new_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.h5", [started(), batch(0, 20), RunFinished("completed", 19)])
    script = tmp_path / "w.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {str(HERE.parent)!r})\n"
        + textwrap.dedent(
            f"""
            from tests.test_runfile_v2 import batch, started
            from tuitrain.runfile import RunFileWriter
            w = RunFileWriter({str(path)!r}, append=True, flush_seconds=1e9, background=False)
            w.emit(started())
            w.emit(batch(20, 10))
            w.flush()
            w.emit(batch(30, 10))  # never flushed
            print("ready", flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    with open_run(path) as rf:
        assert rf.opened_swmr and rf.incomplete and rf.status == "running"
        np.testing.assert_array_equal(rf.scalar("step"), np.arange(30))
        assert rf.probe_rows("scale") == 15
    p = tt("info", str(path))
    assert p.returncode == 0 and "incomplete" in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(shutil.which("h5ls") is None, reason="h5ls (HDF5 tools) not installed")
def test_h5ls_reads_a_schema_2_file(tmp_path: Path) -> None:
    path = write(tmp_path / "t.h5", [started(), batch(0, 10, late=True), RunFinished("completed", 9)])
    p = subprocess.run(["h5ls", "-r", str(path)], capture_output=True, text=True)
    assert p.returncode == 0 and "/probes/scale/loss_scale" in p.stdout and "/metrics/key" in p.stdout, (
        p.stderr
    )
