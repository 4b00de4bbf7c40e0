"""Every field of every event survives the run file: written by the real RunFileWriter, read back by the
reader (``to_events``) and by the dashboard's FileSource, compared field by field over the dataclass
fields of RunStarted, StepBatch (each probe block too), EpochEnd, TestResult, Alert, StatusChanged and
RunFinished; for a preset's run and for a user loop's (two probes, one per tensor and one per step,
its own step columns, a key first logged after RunStarted, extra epoch and test metrics, its config
as JSON). And a file written before the newer attributes existed (attributes and /steps/time deleted
with h5py) still opens, with the documented defaults.

The fault this guards: ``RunStarted.max_steps`` was not stored, so a 50-step run read back as 1000 total
steps and the header's step i/N and ETA were wrong when following it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.clirun import tt
from tuitrain.config import RunConfig, to_toml
from tuitrain.events import (
    GRAD_PROBE,
    PROBE_NAMES,
    STEP_SCALARS,
    Alert,
    EpochEnd,
    LayerInfo,
    ProbeBlock,
    ProbeSpec,
    Quantity,
    RunFinished,
    RunStarted,
    StatusChanged,
    StepBatch,
)
from tuitrain.events import (
    TestResult as TResult,
)
from tuitrain.runfile import RunFileWriter, open_run
from tuitrain.runfile import schema as S
from tuitrain.ui.history import History
from tuitrain.ui.replay.file_source import FileSource

L = 3


def started(path: Path) -> RunStarted:
    cfg = RunConfig(name="roundtrip")
    cfg.monitor.vanishing, cfg.monitor.exploding = 3e-7, 42.0
    cfg.train.max_steps = 50
    return RunStarted(
        run_name="roundtrip",
        config_toml=to_toml(cfg),
        model_name="mlp",
        dataset="toy2d",
        device="cpu",
        params=4242,
        layers=[
            LayerInfo("layers.0.weight", (16, 2), 32, "weight", "layers.0", "Linear"),
            LayerInfo("layers.0.bias", (16,), 16, "bias", "layers.0", "Linear"),
            LayerInfo("scale", (), 1, "norm", "", "Model"),
        ],
        flops=999,
        module_summary=[{"name": "layers.0", "type": "Linear", "params": 48, "flops": 64}],
        epochs=20,
        steps_per_epoch=50,  # 1000 steps planned, capped at 50 by max_steps
        batch_size=64,
        num_classes=2,
        out_path=str(path),
        versions={"python": "3.12", "tuitrain": "test"},
        started_at=1_700_000_000.5,
        max_steps=50,
        vanishing=3e-7,
        exploding=42.0,
    )


def batch(start: int, n: int, t: float) -> StepBatch:
    rng = np.random.default_rng(start)
    steps = np.arange(start, start + n, dtype=np.int64)
    return StepBatch.with_grad(
        steps=steps,
        epochs=np.zeros(n, np.int32),
        # the file stores per-step scalars as float32 (docs/run-file.md): use float32-exact values
        scalars=rng.random((n, len(STEP_SCALARS))).astype(np.float32).astype(np.float64),
        probe_steps=steps.copy(),
        probes=rng.random((n, len(PROBE_NAMES), L)).astype(np.float32),
        time=t,
    )


def the_run(path: Path) -> list:
    return [
        started(path),
        StatusChanged("running", 0, time=1_700_000_001.0),
        batch(0, 25, 1_700_000_002.0),
        Alert(24, "warning", "vanishing", "vanishing gradients: 1 of 1 weight layers", time=1_700_000_002.5),
        batch(25, 25, 1_700_000_003.0),
        EpochEnd(0, 50, 0.5, 0.75, 0.625, 0.8125, 1e-3, 2.5, time=1_700_000_003.5),
        TResult(0.375, 0.875, time=1_700_000_004.0),
        RunFinished("completed", 49, checkpoint=str(path.with_suffix(".pt")), time=1_700_000_005.0),
    ]


SCALE = ProbeSpec(
    "scale", "step", (Quantity("loss_scale", "AMP loss scale"), Quantity("skipped", "skipped")), 2
)
USER = (*STEP_SCALARS, "grad_clip", "tokens")


def script_started(path: Path) -> RunStarted:
    """A user loop's RunStarted: no preset config, most plan fields unknown, two probes, own columns."""
    return RunStarted(
        run_name="my-loop",
        config_toml="",
        model_name="Net",
        layers=started(path).layers,
        out_path=str(path),
        versions={"python": "3.12"},
        started_at=1_700_000_000.5,
        probes=[GRAD_PROBE, SCALE],
        step_scalars=USER,
        source="script",
        config_json='{"lr": 0.001, "layers": [64, 64], "name": "ü"}',
    )


def script_batch(start: int, n: int, t: float, late: bool) -> StepBatch:
    """User columns (float64 kept exactly), a key first logged after RunStarted when ``late``."""
    rng = np.random.default_rng(start + 7)
    steps = np.arange(start, start + n, dtype=np.int64)
    std = rng.random((n, len(STEP_SCALARS))).astype(np.float32).astype(np.float64)
    std[:, STEP_SCALARS.index("samples_per_s")] = np.nan  # a loop that never said its batch size
    cols = [std, rng.random((n, 2)) * np.pi]
    names = USER
    if late:
        late_col = rng.random((n, 1))
        late_col[::3] = np.nan  # logged on two steps in three
        cols.append(late_col)
        names = (*USER, "late_key")
    probed = steps[steps % 2 == 0]
    return StepBatch(
        steps,
        np.full(n, start // 25, np.int32),
        np.concatenate(cols, axis=1),
        names,
        {
            "grad": ProbeBlock("grad", steps.copy(), rng.random((n, len(PROBE_NAMES), L)).astype(np.float32)),
            "scale": ProbeBlock("scale", probed, rng.random((len(probed), 2, 1)).astype(np.float32)),
        },
        t,
    )


def script_run(path: Path) -> list:
    return [
        script_started(path),
        StatusChanged("running", 0, time=1_700_000_001.0),
        script_batch(0, 25, 1_700_000_002.0, late=False),
        Alert(30, "warning", "exploding", "grad norm 1e3 in fc.weight", time=1_700_000_002.7),
        EpochEnd(0, 25, train_loss=0.5, metrics={"val_f1": 0.25, "bleu": 12.5}, time=1_700_000_002.5),
        script_batch(25, 25, 1_700_000_003.0, late=True),
        EpochEnd(1, 50, val_acc=0.75, time=1_700_000_003.5),
        TResult(metrics={"f1": 0.875, "auc": 0.5}, time=1_700_000_004.0),
        RunFinished("completed", 49, time=1_700_000_005.0),
    ]


RUNS = {"preset": the_run, "script": script_run}


def write(path: Path, events: list) -> Path:
    with RunFileWriter(path, flush_seconds=math.inf, background=False) as w:
        for ev in events:
            w.emit(ev)
    return path


def same(a: object, b: object, where: str) -> None:
    """Field by field, over every dataclass field of ``a``'s type."""
    assert type(a) is type(b), where
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f"{where}.{f.name}")
            assert x.dtype == y.dtype, f"{where}.{f.name}: {x.dtype} != {y.dtype}"
        elif f.name == "blocks":
            assert list(x) == list(y), f"{where}.blocks: wrote {list(x)}, read {list(y)}"
            for name in x:
                same(x[name], y[name], f"{where}.blocks[{name}]")
        elif isinstance(x, float) and math.isnan(x):  # a metric the run did not log stays NaN
            assert isinstance(y, float) and math.isnan(y), f"{where}.{f.name}: wrote NaN, read {y!r}"
        else:
            assert x == y, f"{where}.{f.name}: wrote {x!r}, read {y!r}"


def merged(batches: list[StepBatch], names: tuple[str, ...]) -> StepBatch:
    """One batch of ``batches`` with the columns ``names`` (what the dashboard's overview carries)."""
    blocks = {
        k: ProbeBlock(
            k,
            np.concatenate([b.blocks[k].steps for b in batches]),
            np.concatenate([b.blocks[k].values for b in batches]),
        )
        for k in batches[0].blocks
    }
    scalars = np.concatenate([np.stack([b.scalar(n) for n in names], axis=1) for b in batches])
    return StepBatch(
        np.concatenate([b.steps for b in batches]),
        np.concatenate([b.epochs for b in batches]),
        scalars,
        names,
        blocks,
        batches[-1].time,
    )


@pytest.mark.parametrize("run", list(RUNS))
def test_every_field_of_every_event_survives_the_file(tmp_path: Path, run: str) -> None:
    path = tmp_path / "rt.h5"
    events = RUNS[run](path)
    write(path, events)
    with open_run(path) as rf:
        back = list(rf.to_events(batch_steps=25))  # the same batching as written
        if run == "preset":
            assert rf.total_steps == 50 and rf.max_steps == 50 and rf.thresholds == (3e-7, 42.0)
        else:
            assert rf.config is None and rf.user_config == {"lr": 0.001, "layers": [64, 64], "name": "ü"}
            assert rf.source == "script" and rf.step_scalars == USER and rf.probe_specs == [GRAD_PROBE, SCALE]
            assert list(rf.metrics("step")) == ["late_key"] and rf.test_metrics() == {"f1": 0.875, "auc": 0.5}
    # Order across types follows the reader's rule (a side event at step s comes after step s's row),
    # so compare each type's events in order.
    for kind in (RunStarted, StepBatch, StatusChanged, Alert, EpochEnd, TResult, RunFinished):
        wrote = [e for e in events if type(e) is kind]
        read = [e for e in back if type(e) is kind]
        assert len(wrote) == len(read) >= 1, kind.__name__
        for i, (a, b) in enumerate(zip(wrote, read, strict=True)):
            same(a, b, f"{kind.__name__} {i}")
    assert back[0].total_steps == (50 if run == "preset" else 0)  # not 20 epochs x 50 steps; 0 = unknown


@pytest.mark.parametrize("run", list(RUNS))
def test_the_dashboard_file_source_reads_the_same_fields(tmp_path: Path, run: str) -> None:
    path = tmp_path / "rt.h5"
    events = RUNS[run](path)
    write(path, events)
    src = FileSource(open_run(path))
    try:
        with src.lock:
            got = src.collect()
    finally:
        src.rf.close()
    for kind in (RunStarted, StatusChanged, Alert, EpochEnd, TResult, RunFinished):
        wrote = [e for e in events if type(e) is kind]
        read = [e for e in got if type(e) is kind]
        assert len(wrote) == len(read) >= 1, kind.__name__
        for i, (a, b) in enumerate(zip(wrote, read, strict=True)):
            same(a, b, f"{kind.__name__} {i}")
    steps = [e for e in got if isinstance(e, StepBatch)]
    assert len(steps) == 1  # one overview batch: every row of a short file
    # The overview carries the declared columns, then the keys first logged later (from /metrics).
    declared = (*USER, "late_key") if run == "script" else STEP_SCALARS
    same(merged([e for e in events if isinstance(e, StepBatch)], declared), steps[0], "StepBatch")
    h = History()
    h.extend(got)
    assert h.run is not None and h.steps_done == 50
    if run == "preset":
        assert h.run.total_steps == 50 and (h.thresholds.vanishing, h.thresholds.exploding) == (3e-7, 42.0)


def test_a_file_from_before_the_new_attributes_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    events = the_run(path)
    write(path, events)
    with h5py.File(path, "r+") as f:
        for name in S.OPTIONAL_ROOT_ATTRS:
            del f.attrs[name]
        for name in S.OPTIONAL_STEP_FIELDS:
            del f[S.path(S.STEPS, name)]
    with open_run(path) as rf:
        assert rf.max_steps == 0 and rf.total_steps == 1000 and rf.out_path == ""  # the documented defaults
        assert rf.thresholds == (3e-7, 42.0)  # from the stored config's [monitor]
        back = list(rf.to_events(batch_steps=25))
        assert [b.time for b in back if isinstance(b, StepBatch)] == [rf.started_at] * 2
        assert rf.summary()["total_steps"] == 1000
    with h5py.File(path, "r+") as f:
        f.attrs["config_toml"] = "not toml [[["
    with open_run(path) as rf:
        from tuitrain.config.schema import MonitorConfig

        assert rf.thresholds == (MonitorConfig().vanishing, MonitorConfig().exploding)


@pytest.mark.parametrize("max_steps", [0, 7])
def test_max_steps_and_thresholds_of_a_real_training_run(tmp_path: Path, max_steps: int) -> None:
    """The engine puts them in RunStarted and the file keeps them (the real CLI, a real toy2d run)."""
    out = tmp_path / "real.h5"
    args = ["run", "toy2d_mlp", "--no-ui", "--epochs", "1", "--out", str(out)]
    args += [
        "--set",
        "data.train_size=2048",
        "--set",
        "monitor.vanishing=2.5e-9",
        "--set",
        "train.checkpoint=false",
    ]
    p = tt(*args, *(["--max-steps", str(max_steps)] if max_steps else []))
    assert p.returncode == 0, p.stdout + p.stderr
    with open_run(out) as rf:
        assert rf.max_steps == max_steps and rf.thresholds == (2.5e-9, 100.0)
        assert rf.run_started().total_steps == (max_steps or rf.steps_per_epoch)
        assert rf.n_steps == rf.run_started().total_steps


def test_the_header_counts_steps_to_max_steps_when_replaying(tmp_path: Path) -> None:
    """The header's step i/N comes from the file: 50 of 50, not 50 of 1000 (20 epochs x 50 steps)."""
    import asyncio

    from tuitrain.ui.replay.launch import replay_app
    from tuitrain.ui.widgets.header import RunHeader

    path = tmp_path / "rt.h5"
    write(path, the_run(path))

    async def main() -> str:
        app = replay_app([open_run(path)], cpu_budget=None)
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(100):
                if app.history.is_finished:
                    break
                await pilot.pause(0.05)
            app.redraw()
            await pilot.pause(0.1)
            header = app.screen.query_one(RunHeader)
            return "\n".join(strip.text for strip in header.render_lines(header.region.reset_offset))

    text = asyncio.run(main())
    assert "step 50/50" in text and "/1,000" not in text, text
