"""Run file: writer -> HDF5 -> reader round trips, live SWMR following, SIGKILL survival, bad input, size.

Real files in tmp_path, real h5py, no torch: events come from the small numpy factories below (also
imported by the writer subprocesses, which add this directory to sys.path).
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tuitrain.config import RunConfig, to_toml
from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    LayerInfo,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
)
from tuitrain.events import (
    TestResult as EvTestResult,  # aliased so pytest does not try to collect it
)
from tuitrain.runfile import RunFileError, RunFileWriter, open_run
from tuitrain.runfile import schema as S

N_LAYERS = 6
HERE = Path(__file__).resolve().parent


# -- factories (numpy only) ------------------------------------------------------------------------


def make_layers(n: int) -> list[LayerInfo]:
    shapes = [(32, 3, 3, 3), (32,), (64, 32), (64,), (10, 64), ()]
    return [
        LayerInfo(
            name=f"block{i}.{'bias' if len(shapes[i % 6]) == 1 else 'weight'}",
            shape=shapes[i % 6],
            numel=int(np.prod(shapes[i % 6], dtype=np.int64)),
            kind="bias" if len(shapes[i % 6]) == 1 else "weight",
            module=f"block{i}",
            module_type="Conv2d" if i % 2 == 0 else "Linear",
        )
        for i in range(n)
    ]


def make_started(n_layers: int = N_LAYERS, **kw: object) -> RunStarted:
    fields: dict[str, object] = dict(
        run_name="unit",
        config_toml=to_toml(RunConfig(name="unit")),
        model_name="mlp",
        dataset="synthetic",
        device="cpu",
        params=12345,
        layers=make_layers(n_layers),
        flops=678,
        module_summary=[{"name": "block0", "type": "Conv2d", "params": 896, "flops": 100}],
        epochs=2,
        steps_per_epoch=50,
        batch_size=100,
        num_classes=10,
        out_path="unused.h5",
        versions={"python": "3.11", "h5py": h5py.__version__},
        started_at=1_700_000_000.25,
    )
    fields.update(kw)
    return RunStarted(**fields)  # type: ignore[arg-type]


def make_batch(
    start: int, n: int, n_layers: int = N_LAYERS, probe_every: int = 1, epoch: int = 0
) -> StepBatch:
    """Consecutive steps with float32-exact values (the file stores float32), probes every k steps."""
    rng = np.random.default_rng(start)
    steps = np.arange(start, start + n, dtype=np.int64)
    pst = steps[steps % probe_every == 0]
    return StepBatch.with_grad(
        steps=steps,
        epochs=np.full(n, epoch, np.int32),
        scalars=rng.random((n, len(STEP_SCALARS))).astype(np.float32).astype(np.float64),
        probe_steps=pst,
        probes=rng.random((len(pst), len(PROBE_NAMES), n_layers)).astype(np.float32),
        time=123.0,
    )


def write_run(path: Path, batches: list[StepBatch], n_layers: int = N_LAYERS, **writer_kw: object) -> None:
    with RunFileWriter(path, **writer_kw) as w:  # type: ignore[arg-type]
        w.emit(make_started(n_layers))
        for b in batches:
            w.emit(b)
        w.emit(
            RunFinished("completed", sum(len(b) for b in batches), checkpoint="ck.pt", time=1_700_000_500.0)
        )


def concat(batches: list[StepBatch]) -> StepBatch:
    return StepBatch.with_grad(
        steps=np.concatenate([b.steps for b in batches]),
        epochs=np.concatenate([b.epochs for b in batches]),
        scalars=np.concatenate([b.scalars for b in batches]),
        probe_steps=np.concatenate([b.probe_steps for b in batches]),
        probes=np.concatenate([b.probes for b in batches]),
    )


def assert_batch_equal(got: StepBatch, want: StepBatch) -> None:
    for name in ("steps", "epochs", "scalars", "probe_steps", "probes"):
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == w.dtype, name
        np.testing.assert_array_equal(g, w, err_msg=name)


# -- round trip ------------------------------------------------------------------------------------


def test_round_trip_every_event_type(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.h5"
    started = make_started()
    batches = [make_batch(0, 30, probe_every=4), make_batch(30, 20, probe_every=4, epoch=1)]
    ep0 = EpochEnd(0, 30, 1.5, 0.25, 1.75, 0.2, 1e-3, 12.5, time=10.0)
    ep1 = EpochEnd(1, 50, 1.25, 0.5, 1.5, 0.375, 5e-4, 11.0, time=20.0)
    alert = Alert(17, "warning", "vanishing", "grad of block0 below 1e-6 for 200 steps", time=5.0)
    long_alert = Alert(18, "info", "info", "ü" * 300, time=5.5)  # 600 UTF-8 bytes: cut to 512, whole chars
    pause, resume = StatusChanged("paused", 20, time=6.0), StatusChanged("running", 20, time=7.0)
    test_res = EvTestResult(1.625, 0.3125, time=30.0)
    done = RunFinished("completed", 50, checkpoint="runs/unit.pt", time=31.0)
    with RunFileWriter(path, flush_seconds=0.0) as w:
        for ev in [
            started,
            batches[0],
            alert,
            long_alert,
            pause,
            resume,
            ep0,
            batches[1],
            ep1,
            test_res,
            done,
        ]:
            w.emit(ev)
    assert not path.with_name("run.h5.partial").exists()

    with open_run(path) as rf:
        assert not rf.opened_swmr and not rf.is_live and not rf.incomplete
        assert (rf.status, rf.run_name, rf.model_name, rf.dataset, rf.device) == (
            "completed",
            "unit",
            "mlp",
            "synthetic",
            "cpu",
        )
        assert (
            rf.params,
            rf.flops,
            rf.epochs_planned,
            rf.steps_per_epoch,
            rf.batch_size,
            rf.num_classes,
        ) == (12345, 678, 2, 50, 100, 10)
        assert rf.versions == started.versions and rf.module_summary == started.module_summary
        assert rf.config == RunConfig(name="unit")
        assert rf.layers == started.layers
        assert (rf.started_at, rf.ended_at, rf.checkpoint, rf.error, rf.traceback) == (
            started.started_at,
            31.0,
            "runs/unit.pt",
            "",
            "",
        )
        assert rf.schema_version == S.SCHEMA_VERSION and rf.last_step == 49
        assert (rf.n_steps, rf.n_probe_rows, rf.n_epochs, rf.n_layers) == (50, 13, 2, N_LAYERS)

        want = concat(batches)
        np.testing.assert_array_equal(rf.scalar("loss"), want.scalars[:, 0].astype(np.float32))
        np.testing.assert_array_equal(rf.steps(-10)["step"], np.arange(40, 50))
        np.testing.assert_array_equal(rf.probe("grad_norm"), want.probes[:, 0, :])
        np.testing.assert_array_equal(
            rf.probe("weight_norm", slice(0, None, 5), slice(1, 3)), want.probes[::5, 2, 1:3]
        )
        np.testing.assert_array_equal(rf.probe_at_step(23), want.probes[5])  # probe rows at 0,4,..,20,24
        assert rf.probe_row_at(24) == 6 and np.isnan(rf.probe_at_step(-1)).all()
        assert_batch_equal(rf.read_batches(0, 50), want)
        part = rf.read_batches(10, 30)
        np.testing.assert_array_equal(part.steps, np.arange(10, 30))
        np.testing.assert_array_equal(part.probe_steps, np.arange(12, 30, 4))

        ep = rf.epochs()
        assert [EpochEnd(**{k: v[i].item() for k, v in ep.items()}) for i in range(2)] == [ep0, ep1]
        assert rf.test() == {"loss": 1.625, "acc": 0.3125, "time": 30.0}
        assert rf.events() == [
            {"step": 17, "time": 5.0, "level": "warning", "kind": "vanishing", "message": alert.message},
            {"step": 18, "time": 5.5, "level": "info", "kind": "info", "message": "ü" * 256},
            {"step": 20, "time": 6.0, "level": "info", "kind": "status", "message": "paused"},
            {"step": 20, "time": 7.0, "level": "info", "kind": "status", "message": "running"},
            {"step": 50, "time": 31.0, "level": "info", "kind": "finished", "message": "completed"},
        ]
        assert rf.final_metrics() == {
            "train_loss": 1.25,
            "val_loss": 1.5,
            "train_acc": 0.5,
            "val_acc": 0.375,
            "test_loss": 1.625,
            "test_acc": 0.3125,
            "params": 12345.0,
        }

        summary = rf.summary()
        assert (summary["status"], summary["n_steps"], summary["n_epochs"], summary["ended_at"]) == (
            "completed",
            50,
            2,
            31.0,
        )
        assert summary["final"] == rf.final_metrics() and summary["modules"] == started.module_summary

        replay = list(rf.to_events(batch_steps=16))
    kinds = [type(e).__name__ for e in replay]
    assert kinds[0] == "RunStarted" and kinds[-2:] == ["TestResult", "RunFinished"]
    long_alert.message = "ü" * 256
    assert [e for e in replay if not isinstance(e, (StepBatch, RunStarted))] == [
        alert,
        long_alert,
        pause,
        resume,
        ep0,
        ep1,
        test_res,
        done,
    ]
    assert_batch_equal(concat([e for e in replay if isinstance(e, StepBatch)]), want)
    assert kinds.index("EpochEnd") > kinds.index("StepBatch")  # ep0 follows the batch holding step 29


def test_zero_steps_zero_layers_and_crash_close(tmp_path: Path) -> None:
    empty = tmp_path / "empty.h5"
    with RunFileWriter(empty) as w:
        w.emit(make_started())
        w.emit(RunFinished("stopped", 0, time=5.0))
    with open_run(empty) as rf:
        assert (rf.status, rf.n_steps, rf.n_probe_rows, rf.n_epochs, rf.last_step) == ("stopped", 0, 0, 0, -1)
        assert all(len(v) == 0 for v in rf.steps().values()) and rf.probe("grad_norm").shape == (0, N_LAYERS)
        assert np.isnan(rf.probe_at_step(100)).all()
        b = rf.read_batches(0, 100)
        assert b.scalars.shape == (0, len(STEP_SCALARS)) and b.probes.shape == (0, len(PROBE_NAMES), N_LAYERS)
        fm = rf.final_metrics()
        assert fm["val_acc"] is None and fm["test_acc"] is None and fm["params"] == 12345  # missing
        assert [type(e).__name__ for e in rf.to_events()] == ["RunStarted", "RunFinished"]

    no_layers = tmp_path / "nolayers.h5"
    write_run(no_layers, [make_batch(0, 10, n_layers=0)], n_layers=0)
    with open_run(no_layers) as rf:
        assert rf.layers == [] and rf.n_steps == 10 and rf.probe("grad_norm").shape == (10, 0)
        assert rf.probe_at_step(5).shape == (len(PROBE_NAMES), 0)

    crashed = tmp_path / "crashed.h5"
    w = RunFileWriter(crashed)
    w.emit(make_started())
    w.emit(make_batch(0, 7))
    w.close()  # no RunFinished: the crash path
    w.close()  # idempotent
    with open_run(crashed) as rf:
        assert rf.status == "failed" and "without a RunFinished" in rf.error and rf.n_steps == 7
        assert rf.events()[-1]["kind"] == "finished" and not rf.incomplete

    never = tmp_path / "never.h5"
    RunFileWriter(never).close()  # no RunStarted: nothing to write
    assert not never.exists()


# -- live following and SIGKILL ----------------------------------------------------------------------


def _spawn_writer(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    script = tmp_path / "writer_proc.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from test_runfile import make_batch, make_started\n"
        "from tuitrain.events import RunFinished, StatusChanged\n"
        "from tuitrain.runfile import RunFileWriter\n" + textwrap.dedent(body)
    )
    return subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_reader_follows_a_live_writer(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    proc = _spawn_writer(
        tmp_path,
        f"""
        w = RunFileWriter({str(path)!r}, flush_seconds=0.2)
        w.emit(make_started())
        for i in range(25):
            w.emit(make_batch(10 * i, 10))
            time.sleep(0.1)
        w.emit(RunFinished("completed", 250))
        w.close()
        """,
    )
    try:
        _wait_for(path)
        seen: list[tuple[float, int]] = []
        with open_run(path) as rf:
            assert rf.opened_swmr and rf.is_live and not rf.incomplete and rf.writer_alive()
            deadline = time.monotonic() + 20
            while rf.status != "completed":
                assert time.monotonic() < deadline, "the reader never saw the run complete"
                rf.refresh()
                seen.append((time.monotonic(), rf.n_steps))
                time.sleep(0.05)
            counts = [n for _, n in seen]
            assert counts == sorted(counts) and len(set(counts)) >= 5 and counts[-1] == 250
            grew = [t for (_, prev), (t, n) in itertools.pairwise(seen) if n > prev]
            assert max(np.diff(grew)) < 2.0, "rows took more than 2 s to become visible"
            assert not rf.is_live and rf.ended_at > rf.started_at  # final attrs picked up on reopen
            np.testing.assert_array_equal(rf.scalar("step"), np.arange(250))
    finally:
        proc.kill()
        proc.wait()


def test_sigkill_keeps_every_flushed_row(tmp_path: Path) -> None:
    path = tmp_path / "killed.h5"
    proc = _spawn_writer(
        tmp_path,
        f"""
        w = RunFileWriter({str(path)!r}, flush_seconds=1e9, background=False)
        w.emit(make_started())
        w.emit(make_batch(0, 200, probe_every=3))
        w.emit(StatusChanged("paused", 200))  # root attrs rewritten under SWMR
        w.emit(StatusChanged("running", 200))
        w.emit(make_batch(200, 100, probe_every=3))
        w.flush()
        w.emit(make_batch(300, 100))  # buffered, never flushed: lost by design
        print("ready", flush=True)
        time.sleep(60)
        """,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with open_run(path) as live:
            assert live.is_live and not live.incomplete
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    with open_run(path) as rf:
        assert rf.opened_swmr and rf.status == "running" and rf.incomplete and not rf.is_live
        assert rf.writer_alive() is False and rf.last_step == 299
        assert_batch_equal(
            rf.read_batches(0, 1000),
            concat([make_batch(0, 200, probe_every=3), make_batch(200, 100, probe_every=3)]),
        )
        assert [e["message"] for e in rf.events()] == ["paused", "running"]


def test_background_flush_without_further_emits(tmp_path: Path) -> None:
    path = tmp_path / "idle.h5"
    proc = _spawn_writer(
        tmp_path,
        f"""
        w = RunFileWriter({str(path)!r}, flush_seconds=0.3)
        w.emit(make_started())
        w.emit(make_batch(0, 40))  # then the loop goes quiet (validation, a slow step...)
        print("emitted", flush=True)
        time.sleep(60)
        """,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "emitted"
        t0 = time.monotonic()
        with open_run(path) as rf:
            while rf.n_steps < 40:
                assert time.monotonic() - t0 < 2.0, "pending rows were not flushed by the background thread"
                time.sleep(0.05)
                rf.refresh()
    finally:
        proc.kill()
        proc.wait()


# -- bad input -------------------------------------------------------------------------------------


def _bad(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    if name == "missing.h5":
        return path
    if name == "adir.h5":
        path.mkdir()
    elif name == "text.h5":
        path.write_text("loss,acc\n1,0\n")
    elif name == "plain.h5":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    elif name == "other.h5":
        with h5py.File(path, "w") as f:
            f.attrs["format"] = "anndata"
    else:
        write_run(path, [make_batch(0, 500)])
        if name == "newer.h5":
            with h5py.File(path, "r+") as f:
                f.attrs["schema_version"] = S.SCHEMA_VERSION + 1
        elif name == "truncated.h5":
            os.truncate(path, path.stat().st_size // 2)
        elif name == "nosteps.h5":
            with h5py.File(path, "r+") as f:
                del f["steps/loss"]
    return path


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("missing.h5", "no such run file"),
        ("adir.h5", "is a directory"),
        ("text.h5", "not an HDF5 file"),
        ("plain.h5", "not a tuitrain run file (no `format` attribute"),
        ("other.h5", "not a tuitrain run file (format 'anndata'"),
        ("newer.h5", "newer than this tuitrain supports"),
        ("truncated.h5", "truncated or corrupt"),
        ("nosteps.h5", "missing /steps/loss"),
    ],
)
def test_bad_input_raises_runfileerror(tmp_path: Path, name: str, words: str) -> None:
    path = _bad(tmp_path, name)
    with pytest.raises(RunFileError) as info:
        open_run(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and words in msg and "\n" not in msg


# -- size ------------------------------------------------------------------------------------------


def test_periodic_flushes_do_not_bloat_the_file(tmp_path: Path) -> None:
    """20,000 steps x 50 layers flushed every 100 steps vs written once: measured 1.00x; bound 1.05x."""
    batches = [make_batch(i, 100, n_layers=50) for i in range(0, 20_000, 100)]
    once, periodic = tmp_path / "once.h5", tmp_path / "periodic.h5"
    write_run(once, batches, n_layers=50, flush_seconds=math.inf, background=False)
    write_run(periodic, batches, n_layers=50, flush_seconds=0.0, background=False)  # 200 flushes
    ratio = periodic.stat().st_size / once.stat().st_size
    payload = 20_000 * (8 + 4 + 4 * len(STEP_SCALARS) + 8 + 4 * len(PROBE_NAMES) * 50)
    assert ratio < 1.05, f"periodic flushing bloated the file {ratio:.2f}x"
    assert once.stat().st_size < 1.05 * payload
    with open_run(periodic) as rf:
        assert_batch_equal(rf.read_batches(0, 20_000), concat(batches))


def test_runfile_does_not_import_torch_or_textual() -> None:
    code = "import sys, tuitrain.runfile; print(sorted({'torch', 'textual'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_file_whose_bytes_lag_its_recorded_end_for_a_moment_opens_once_they_arrive(tmp_path: Path) -> None:
    """A writer mid-flush has recorded a larger end of file than it has written yet, and a plain open then
    says "truncated file" (`info` on a live run failed so, now and then). A file written a moment ago is
    retried until its bytes arrive; a file left short (a dead writer, a damaged copy) is still refused,
    with the same message, a moment later."""
    import threading

    path = tmp_path / "lag.h5"
    write_run(path, [make_batch(0, 40)])
    whole = path.read_bytes()
    path.write_bytes(whole[:-4096])  # the recorded end is now ahead of the bytes
    late = threading.Timer(0.5, lambda: path.write_bytes(whole))  # ... until the "flush" completes
    late.start()
    t0 = time.monotonic()
    try:
        with open_run(path) as rf:
            assert rf.n_steps == 40 and rf.status == "completed"
    finally:
        late.join()
    assert 0.4 < time.monotonic() - t0 < 2.0
    path.write_bytes(whole[:-4096])  # never completed: refused after the retry window
    t0 = time.monotonic()
    with pytest.raises(RunFileError, match="truncated"):
        open_run(path)
    assert time.monotonic() - t0 >= 1.9
