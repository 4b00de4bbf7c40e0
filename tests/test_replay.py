"""`tuitrain replay` without a terminal: the file source on runs made by the real engine and on generated
long runs, following a file another process writes, a SIGKILLed writer, the comparison model, every
bad input through the real CLI, and ``--print``.

The helpers here (real engine runs cached once per session, a synthetic run generator, writer
subprocesses) are shared with tests/ui/test_ui_replay.py.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import REPO, cli_env, tuitrain_cmd
from tuitrain.config import RunConfig, to_toml
from tuitrain.events import (
    PROBE_NAMES,
    STEP_SCALARS,
    EpochEnd,
    Event,
    LayerInfo,
    RunFinished,
    RunStarted,
    StepBatch,
)
from tuitrain.events import TestResult as EvTestResult  # aliased so pytest does not try to collect it
from tuitrain.runfile import RunFileWriter, open_run
from tuitrain.ui.history import INCOMPLETE, History
from tuitrain.ui.replay.compare import check_metric, config_diff, rows_from_files, table_cells, unique_names
from tuitrain.ui.source import EventsArrived, SourceEnded

# -- shared helpers ----------------------------------------------------------------------------------


def engine_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two short toy2d_mlp runs by the real engine (lr 1e-3 and 1e-2), trained once per session."""
    folder = tmp_path_factory.getbasetemp() / "engine-runs"
    paths = [folder / "mlp_lr1e-3.h5", folder / "mlp_lr1e-2.h5"]
    if all(p.exists() for p in paths):
        return paths
    from tuitrain.config import load_config
    from tuitrain.train.engine import train

    folder.mkdir(exist_ok=True)
    for path, lr in zip(paths, ("1e-3", "1e-2"), strict=True):
        cfg = load_config(REPO / "presets" / "toy2d_mlp.toml", ["train.epochs=2", f"optim.lr={lr}"])
        finished = train(cfg, [RunFileWriter(path)], out_path=str(path))
        assert finished.status == "completed", finished.error
    return paths


def synthetic_events(
    steps: int = 2000,
    n_layers: int = 12,
    epochs: int = 4,
    name: str = "syn",
    lr: float = 1e-3,
    batch: int = 500,
    probe_every: int = 1,
    finish: bool = True,
) -> Iterator[Event]:
    """A deterministic run whose input-side gradients collapse over time (layer 0 falls from 1e-1 to
    1e-9 by the last step, the output layer stays near 1e-1), loss falling at a rate set by ``lr``."""
    cfg = RunConfig(name=name)
    cfg.optim.lr = lr
    layers = [
        LayerInfo(f"layers.{i}.weight", (8, 8), 64, "weight", f"layers.{i}", "Linear")
        for i in range(n_layers)
    ]
    spe = max(1, steps // epochs)
    yield RunStarted(
        run_name=name,
        config_toml=to_toml(cfg),
        model_name="mlp",
        dataset="synthetic",
        device="cpu",
        params=1000 + n_layers,
        layers=layers,
        flops=1,
        module_summary=[],
        epochs=epochs,
        steps_per_epoch=spe,
        batch_size=32,
        num_classes=10,
        out_path="",
        started_at=1_700_000_000.0,
    )
    depth = 1.0 - np.arange(n_layers) / max(1, n_layers - 1)  # 1 at the input, 0 at the output
    rate = 3.0 * lr / 1e-3
    for s in range(0, steps, batch):
        st = np.arange(s, min(steps, s + batch), dtype=np.int64)
        frac = st / max(1, steps - 1)
        sc = np.empty((st.shape[0], len(STEP_SCALARS)))
        sc[:, 0] = 2.3 * np.exp(-rate * frac) + 0.05
        sc[:, 1] = 1.0 - sc[:, 0] / 2.5
        sc[:, 2], sc[:, 3], sc[:, 4] = lr, 1e4, 0.01
        pst = st[st % probe_every == 0]
        pf = pst / max(1, steps - 1)
        grad = 10.0 ** (-1.0 - 8.0 * pf[:, None] * depth[None, :])
        probes = np.empty((pst.shape[0], len(PROBE_NAMES), n_layers), np.float32)
        probes[:, 0], probes[:, 1], probes[:, 2], probes[:, 3] = grad, grad / 8, 1.0, grad * lr
        yield StepBatch.with_grad(st, (st // spe).astype(np.int32), sc, pst, probes, time=1_700_000_000.0 + s)
        for e in range(epochs):
            if s < (e + 1) * spe <= s + batch:
                loss = float(sc[min(len(st) - 1, (e + 1) * spe - 1 - s), 0])
                yield EpochEnd(
                    e,
                    (e + 1) * spe,
                    loss,
                    1 - loss / 2.5,
                    loss * 1.1,
                    1 - loss / 2.2,
                    lr,
                    1.0,
                    time=1_700_000_000.0 + (e + 1) * spe,
                )
    if finish:
        yield EvTestResult(loss * 1.1, 1 - loss / 2.2, time=1_700_000_000.0 + steps)
        yield RunFinished("completed", steps, time=1_700_000_000.0 + steps + 1)


def write_synthetic(path: Path, **kw: object) -> Path:
    with RunFileWriter(path, flush_seconds=math.inf, background=False) as w:
        for ev in synthetic_events(**kw):  # type: ignore[arg-type]
            w.emit(ev)
    return path


def spawn_writer(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    """A Python process that writes a run file with RunFileWriter (``synthetic_events`` is in scope)."""
    script = tmp_path / f"writer_{time.monotonic_ns()}.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\n"
        "from tests.test_replay import synthetic_events\n"
        "from tuitrain.runfile import RunFileWriter\n" + textwrap.dedent(body)
    )
    return subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, text=True, cwd=REPO)


def killed_run(tmp_path: Path, name: str = "killed") -> Path:
    """A run file whose writer was SIGKILLed after 600 of 2000 steps (and reaped)."""
    path = tmp_path / f"{name}.h5"
    proc = spawn_writer(
        tmp_path,
        f"""
        w = RunFileWriter({str(path)!r}, flush_seconds=0.0)
        for i, ev in enumerate(synthetic_events(steps=2000, batch=200, name={name!r})):
            w.emit(ev)
            if i == 4:
                w.flush()
                print("flushed", flush=True)
                time.sleep(600)
    """,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "flushed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return path


class Collector:
    """A message target that keeps what a source posts."""

    def __init__(self) -> None:
        self.messages: list[object] = []

    def post_message(self, message: object) -> bool:
        self.messages.append(message)
        return True

    def events(self) -> list[Event]:
        return [e for m in self.messages if isinstance(m, EventsArrived) for e in m.events]

    def ended(self) -> str | None:
        return next((m.reason for m in self.messages if isinstance(m, SourceEnded)), None)

    def wait_ended(self, timeout: float = 20.0) -> str:
        end = time.monotonic() + timeout
        while self.ended() is None and time.monotonic() < end:
            time.sleep(0.02)
        reason = self.ended()
        assert reason is not None, "the source did not end"
        return reason


def feed(path: Path, **kw: object):
    """Run a FileSource to its end into a History; returns (source, history, collector)."""
    from tuitrain.ui.replay.file_source import FileSource

    src = FileSource(path, **kw)  # type: ignore[arg-type]
    col = Collector()
    src.start(col)
    col.wait_ended()
    h = History()
    h.backing = src
    h.extend(col.events())
    return src, h, col


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return engine_runs(tmp_path_factory)


# -- the file source -----------------------------------------------------------------------------------


def test_engine_run_replays_every_event(engine: list[Path]) -> None:
    src, h, col = feed(engine[0])
    try:
        kinds = [type(e).__name__ for e in col.events()]
        assert kinds[0] == "RunStarted" and kinds[-2:] == ["TestResult", "RunFinished"]
        with open_run(engine[0]) as rf:
            n, epochs, test = rf.n_steps, rf.n_epochs, rf.test()
            loss = rf.scalar("loss")
            probe_last = rf.probe_at_step(n - 1)
        assert h.steps_done == n and len(h.epochs) == epochs == 2
        assert h.status == "completed" and h.test is not None and h.test.acc == pytest.approx(test["acc"])
        np.testing.assert_allclose(h.column("loss"), loss)  # short run: every step, exactly
        step, row = h.probes_at(None)
        assert step == n - 1
        np.testing.assert_array_equal(row, probe_last)
        # the cursor's lookups come from the file: the probe row and the step row at step 5
        s5, r5 = h.probes_at(5)
        assert s5 == 5 and not np.array_equal(r5, row)
        assert h.scalars_at(5)["loss"] == pytest.approx(float(loss[5]))
        assert col.ended() == "finished"
    finally:
        src.stop()


def test_long_run_is_delivered_as_a_bounded_overview(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "long.h5", steps=20_000, n_layers=30, batch=5000)
    t0 = time.perf_counter()
    src, h, col = feed(path, overview_rows=2048, probe_rows=256)
    took = time.perf_counter() - t0
    try:
        batches = [e for e in col.events() if isinstance(e, StepBatch)]
        assert len(batches) == 1
        b = batches[0]
        assert len(b) <= 2049 and b.probes.shape[0] <= 257 and b.probes.shape[2] == 30
        assert b.steps[0] == 0 and b.steps[-1] == 19_999 and b.probe_steps[-1] == 19_999  # the latest is kept
        assert src.step_stride == 10 and h.row_stride == 1.0  # the launcher sets row_stride; feed() does not
        assert h.steps_done == 20_000 and h.scalars.n == len(b)
        # exact per-step lookups still come from the file
        with open_run(path) as rf:
            want = rf.probe_at_step(12_345)
            loss = float(rf.scalar("loss", 12_345, 12_346)[0])
        step, row = h.probes_at(12_345)
        assert step == 12_345
        np.testing.assert_array_equal(row, want)
        assert h.scalars_at(12_345)["loss"] == pytest.approx(loss)
        assert took < 10
    finally:
        src.stop()


def test_killed_writer_is_reported_incomplete(tmp_path: Path) -> None:
    path = killed_run(tmp_path)
    src, h, col = feed(path)
    try:
        assert h.status == INCOMPLETE and h.finished is not None
        assert "never finished" in h.finished.error and "steps" in h.finished.error
        assert 0 < h.steps_done < 2000
        assert any(e.kind == "incomplete" for e in h.log)
    finally:
        src.stop()


def test_follow_sees_another_process_write_and_then_die(tmp_path: Path) -> None:
    from tuitrain.ui.replay.file_source import FileSource

    path = tmp_path / "dies.h5"
    proc = spawn_writer(
        tmp_path,
        f"""
        w = RunFileWriter({str(path)!r}, flush_seconds=0.05)
        for i, ev in enumerate(synthetic_events(steps=2000, batch=100, finish=False)):
            w.emit(ev)
            w.flush()
            if i == 0:
                print("started", flush=True)
            time.sleep(0.1)
        print("written", flush=True)
        time.sleep(600)
    """,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    src = FileSource(path, follow=True, poll_seconds=0.05)
    col = Collector()
    src.start(col)
    try:
        end = time.monotonic() + 20
        while len([m for m in col.messages if isinstance(m, EventsArrived)]) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        assert col.ended() is None  # still following
        assert proc.stdout.readline().strip() == "written"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert col.wait_ended() == "incomplete"
        h = History()
        h.extend(col.events())
        assert h.status == INCOMPLETE and h.steps_done == 2000
        steps = [len(e) for e in col.events() if isinstance(e, StepBatch)]
        assert len(steps) >= 3  # the rows arrived in several deliveries, as they were written
    finally:
        src.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- the comparison model -----------------------------------------------------------------------------


def test_metric_names_are_checked() -> None:
    assert check_metric("val_acc") == "val_acc"
    with pytest.raises(ValueError, match="allowed: loss, acc, lr.*Did you mean 'val_acc'"):
        check_metric("val_accc")


def test_names_and_config_diff(engine: list[Path]) -> None:
    assert unique_names(["a", "a", "b"], ["x/r1.h5", "y/r2.h5", "b.h5"]) == ["r1", "r2", "b"]
    assert unique_names(["a", "a"], ["r.h5", "d/r.h5"]) == ["r", "r (2)"]
    runs = [open_run(p) for p in engine]
    try:
        keys, values = config_diff([rf.config_toml for rf in runs])
        assert keys == ["optim.lr"] and [v["optim.lr"] for v in values] == ["0.001", "0.01"]
        rows, keys = rows_from_files(runs, ["slow", "fast"])
        cells = table_cells(rows, keys)
        assert [c[0] for c in cells] == ["slow", "fast"] and cells[0][-1] == "0.001"
        assert all(c[7] == "5.86K" for c in cells)  # Params
    finally:
        for rf in runs:
            rf.close()


# -- the real CLI ------------------------------------------------------------------------------------------


def bad_inputs(tmp_path: Path, good: Path) -> dict[str, tuple[list[str], list[str]]]:
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5 at all\n")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2, 3]
    newer = tmp_path / "newer.h5"
    shutil.copy(good, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = 99
    cut = tmp_path / "cut.h5"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return {
        "missing": ([str(tmp_path / "nope.h5")], ["nope.h5", "no such run file"]),
        "not hdf5": ([str(text)], ["notes.h5", "not an HDF5 file"]),
        "not a run": ([str(other)], ["other.h5", "not a tuitrain run file"]),
        "newer schema": ([str(newer)], ["newer.h5", "schema_version 99 is newer"]),
        "truncated": ([str(cut)], ["cut.h5", "truncated or corrupt"]),
        "second file bad": ([str(good), str(text)], ["notes.h5"]),
        "bad metric": ([str(good), "--metric", "val_accc"], ["val_accc", "allowed: loss, acc", "val_acc"]),
    }


def test_bad_input_is_one_clear_line(tmp_path: Path, engine: list[Path]) -> None:
    cases = bad_inputs(tmp_path, engine[0])
    procs = {
        name: subprocess.Popen(
            [*tuitrain_cmd(), "replay", *args, "--print"],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }  # all at once: each is mostly interpreter start-up
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, out, err)
        assert "Traceback" not in out + err, (name, err)
        assert out == "" and len(err.strip().splitlines()) == 1, (name, err)
        for needle in cases[name][1]:
            assert needle in err, (name, needle, err)


def test_print_shows_the_table_and_a_chart_without_a_tty(tmp_path: Path, engine: list[Path]) -> None:
    killed = killed_run(tmp_path, "crashed")
    p = subprocess.run(
        [*tuitrain_cmd(), "replay", *map(str, engine), str(killed), "--metric", "val_acc"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=cli_env(),
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "\x1b[" not in out  # not a terminal: plain text
    for col in (
        "Run",
        "Train Loss",
        "Val Loss",
        "Train Acc",
        "Val Acc",
        "Test Loss",
        "Test Acc",
        "Params",
        "optim.lr",
        "Status",
    ):
        assert col in out, col
    for name in ("mlp_lr1e-3", "mlp_lr1e-2", "crashed"):
        assert name in out, name
    assert "crashed: incomplete" in out
    assert "Val acc % (epochs) · 3 runs" in out  # the chart's title
    assert "┤" in out and "step" in out  # its y axis and x label
    assert "• mlp_lr1e-3" in out and "x mlp_lr1e-2" in out  # the legend: a marker per run


def test_print_long_run_reads_lazily(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "long.h5", steps=20_000, n_layers=8, batch=5000, name="long")
    t0 = time.perf_counter()
    p = subprocess.run(
        [*tuitrain_cmd(), "replay", str(path), "--print", "--metric", "loss"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**cli_env(), "COLUMNS": "100"},
    )
    assert p.returncode == 0, p.stderr
    assert "long" in p.stdout and "Loss · 1 run" in p.stdout
    assert time.perf_counter() - t0 < 30


def test_replay_does_not_import_torch() -> None:
    code = (
        "import sys, tuitrain.replay_print, tuitrain.ui.replay.launch;"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
