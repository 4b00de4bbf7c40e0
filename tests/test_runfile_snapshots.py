"""Snapshots in the run file (issue 12): /snapshots/<name>/ per declared SnapshotSpec. A real
RunFileWriter fed Snapshot events built from real numpy arrays, read back through RunFile (finished,
live in another process, killed), the max_rows cap and the size it bounds, validation of a tampered
file, resume (append), the replay FileSource, and the old fixtures of tests/data, which have none."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tuitrain.events import (
    BOUNDARY,
    FIRST_LAYER,
    GRAD_PROBE,
    MISCLASSIFIED,
    POINTS,
    STEP_SCALARS,
    TOKEN_MIXING,
    EpochEnd,
    LayerInfo,
    ProbeBlock,
    RunFinished,
    RunStarted,
    Snapshot,
    SnapshotField,
    SnapshotSpec,
    StepBatch,
)
from tuitrain.runfile import RunFileError, RunFileWriter, SnapshotRows, open_run

HERE = Path(__file__).resolve().parent
OLD = [HERE / "data" / "run_v1.h5", HERE / "data" / "run_v2_notables.h5"]
F = SnapshotField
T0 = 1_700_000_000.0
EPOCHS, SPE = 4, 10  # 4 epochs of 10 steps


def specs(per_epoch_rows: int = 8) -> list[SnapshotSpec]:
    """The five well-known snapshots of the design (small shapes)."""
    return [
        SnapshotSpec(FIRST_LAYER, (F("weight", (8, 3, 3, 3), "float32"),), "epoch", per_epoch_rows,
                     {"module": "stem", "type": "Conv2d", "out_total": 16}, "first conv kernels"),
        SnapshotSpec(TOKEN_MIXING, (F("weight", (4, 16), "float32"),), "epoch", per_epoch_rows,
                     {"module": "blocks.0.mlp_tokens.fc1", "grid": [4, 4], "hidden_total": 4}),
        SnapshotSpec(BOUNDARY, (F("pred", (6, 6), "int16"), F("prob", (6, 6), "float16")), "epoch",
                     per_epoch_rows, {"extent": [-1.0, 1.0, -2.0, 2.0], "grid": 6, "num_classes": 3}),
        SnapshotSpec(POINTS, (F("xy", (2,), "float32"), F("label", (), "int16")), "start", 50,
                     {"split": "test"}),
        SnapshotSpec(MISCLASSIFIED, (F("index", (), "int64"), F("true", (), "int16"), F("pred", (), "int16"),
                                     F("prob", (), "float16"), F("image", (3, 4, 4), "uint8")), "end", 5,
                     {"split": "test", "n_total": 100, "class_names": ["cat", "dog", "emu"]}),
    ]  # fmt: skip


def started(snaps: list[SnapshotSpec] | None = None) -> RunStarted:
    return RunStarted(
        run_name="snaps",
        config_toml="",
        model_name="Net",
        layers=[LayerInfo(f"fc{i}.weight", (4, 4), 16, "weight", f"fc{i}", "Linear") for i in range(2)],
        started_at=T0,
        epochs=EPOCHS,
        steps_per_epoch=SPE,
        probes=[GRAD_PROBE],
        source="script",
        snapshots=specs() if snaps is None else snaps,
    )


def batch(start: int, n: int) -> StepBatch:
    rng = np.random.default_rng(start)
    steps = np.arange(start, start + n, dtype=np.int64)
    return StepBatch(
        steps=steps,
        epochs=(steps // SPE).astype(np.int32),
        scalars=rng.random((n, len(STEP_SCALARS))),
        scalar_names=STEP_SCALARS,
        blocks={"grad": ProbeBlock("grad", steps, rng.random((n, 4, 2)).astype(np.float32))},
        time=T0 + 1,
    )


def epoch_snaps(epoch: int, step: int) -> list[Snapshot]:
    """The per-epoch rows at ``epoch`` (-1: init), from float64/int64 arrays the writer casts."""
    rng = np.random.default_rng(epoch + 10)
    return [
        Snapshot(FIRST_LAYER, epoch, step, {"weight": rng.standard_normal((1, 8, 3, 3, 3))}),
        Snapshot(TOKEN_MIXING, epoch, step, {"weight": rng.standard_normal((1, 4, 16)).astype(np.float32)}),
        Snapshot(
            BOUNDARY, epoch, step, {"pred": rng.integers(0, 3, (1, 6, 6)), "prob": rng.random((1, 6, 6))}
        ),
    ]


def points() -> Snapshot:
    rng = np.random.default_rng(1)
    return Snapshot(POINTS, -1, 0, {"xy": rng.standard_normal((30, 2)), "label": rng.integers(0, 3, 30)})


def misclassified(step: int, m: int = 3) -> Snapshot:
    rng = np.random.default_rng(2)
    return Snapshot(
        MISCLASSIFIED, EPOCHS - 1, step,
        {"index": np.arange(m) * 7, "true": np.zeros(m, np.int16), "pred": np.ones(m, np.int16),
         "prob": np.full(m, 0.75), "image": rng.integers(0, 256, (m, 3, 4, 4)).astype(np.uint8)},
    )  # fmt: skip


def run_events(snaps: bool = True, epochs: int = EPOCHS) -> list[object]:
    """A whole run: init rows and points at step 0, a row per epoch end, misclassified at the end."""
    out: list[object] = [started() if snaps else started([])]
    if snaps:
        out += [*epoch_snaps(-1, 0), points()]
    for e in range(epochs):
        out.append(batch(e * SPE, SPE))
        step = (e + 1) * SPE
        out.append(EpochEnd(e, step, 1.0, 0.5, 1.1, 0.4, 1.0, T0 + 2 + e))
        if snaps:
            out += epoch_snaps(e, step)
    if snaps:
        out.append(misclassified(epochs * SPE))
    out.append(RunFinished("completed", epochs * SPE - 1, time=T0 + 10))
    return out


def write(path: Path, events: list[object]) -> Path:
    with RunFileWriter(path, background=False) as w:
        for ev in events:
            w.emit(ev)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("snaps") / "run.h5", run_events())


def test_round_trip_of_the_five_snapshots(written: Path) -> None:
    want = {s.name: s for s in specs()}
    with open_run(written) as rf:
        got = rf.snapshot_specs
        assert list(got) == list(want)
        for name, s in want.items():
            g = got[name]
            assert (g.when, g.max_rows, g.meta, g.description) == (s.when, s.max_rows, s.meta, s.description)
            assert g.fields == s.fields
        # per-epoch specs: the init row and one per epoch, in order, cast to the declared dtypes
        for name in (FIRST_LAYER, TOKEN_MIXING, BOUNDARY):
            r = rf.snapshot_rows(name)
            assert isinstance(r, SnapshotRows) and len(r) == rf.n_snapshot_rows(name) == EPOCHS + 1
            assert r.epoch.tolist() == [-1, *range(EPOCHS)] and r.epoch.dtype == np.int32
            assert (
                r.step.tolist() == [0, *(SPE * (e + 1) for e in range(EPOCHS))] and r.step.dtype == np.int64
            )
            for f in want[name].fields:
                assert r.arrays[f.name].dtype == np.dtype(f.dtype)
                assert r.arrays[f.name].shape == (EPOCHS + 1, *f.shape)
        r = rf.snapshot_rows(FIRST_LAYER)
        assert r is not None
        for i, e in enumerate([-1, *range(EPOCHS)]):
            sent = epoch_snaps(e, 0)[0].arrays["weight"][0].astype(np.float32)
            np.testing.assert_array_equal(r.arrays["weight"][i], sent)
        b = rf.snapshot_rows(BOUNDARY)
        assert b is not None
        np.testing.assert_array_equal(b.arrays["pred"][0], epoch_snaps(-1, 0)[2].arrays["pred"][0])
        np.testing.assert_allclose(b.arrays["prob"][0], epoch_snaps(-1, 0)[2].arrays["prob"][0], atol=1e-3)
        p = rf.snapshot(POINTS)
        assert p is not None and p.rows == 30 and (p.epoch, p.step) == (-1, 0)
        np.testing.assert_allclose(p.arrays["xy"], points().arrays["xy"], rtol=1e-6)
        mis = rf.snapshot(MISCLASSIFIED)
        assert mis is not None and mis.rows == 3 and (mis.epoch, mis.step) == (EPOCHS - 1, EPOCHS * SPE)
        assert mis.arrays["index"].tolist() == [0, 7, 14] and mis.arrays["image"].dtype == np.uint8
        np.testing.assert_array_equal(mis.arrays["image"], misclassified(0).arrays["image"])
        last = rf.snapshot(FIRST_LAYER, start=2)
        assert last is not None and last.rows == EPOCHS - 1 and last.epoch == EPOCHS - 1
        assert (
            rf.snapshot("nope") is None
            and rf.snapshot_rows("nope") is None
            and rf.n_snapshot_rows("nope") == 0
        )
        # the whole-file event stream carries them, a snapshot after the epoch end of its step
        events = list(rf.to_events(batch_steps=SPE))
    assert [s.name for s in events[0].snapshots] == list(want)  # type: ignore[attr-defined]
    kinds = [(type(e).__name__, getattr(e, "name", "")) for e in events]
    snaps_back = [e for e in events if isinstance(e, Snapshot)]
    assert len(snaps_back) == 3 * (EPOCHS + 1) + 2
    for e in snaps_back:
        if e.name in (FIRST_LAYER, TOKEN_MIXING, BOUNDARY):
            assert e.rows == 1
        i = events.index(e)
        if e.epoch >= 0 and e.name != MISCLASSIFIED:
            ends = [x for x in events[:i] if isinstance(x, EpochEnd)]
            assert ends and ends[-1].step == e.step, kinds
    with h5py.File(written) as f:
        g = f["snapshots/first_layer"]
        assert (
            g.attrs["when"] == "epoch" and int(g.attrs["max_rows"]) == 8 and int(g.attrs["dropped_rows"]) == 0
        )
        assert (
            g["weight"].maxshape == (None, 8, 3, 3, 3) and g["weight"].compression is None
        )  # capped by max_rows
        assert "snapshots" in f.attrs


def test_a_run_without_snapshots_has_no_group(tmp_path: Path) -> None:
    path = write(tmp_path / "none.h5", run_events(snaps=False))
    with h5py.File(path) as f:
        assert "snapshots" not in f and f.attrs["snapshots"] == "[]"
    with open_run(path) as rf:
        assert rf.snapshot_specs == {} and rf.snapshot(FIRST_LAYER) is None
        assert not any(isinstance(e, Snapshot) for e in rf.to_events())


@pytest.mark.parametrize("old", OLD, ids=lambda p: p.name)
def test_old_files_open_without_snapshots(old: Path) -> None:
    with open_run(old) as rf:
        assert rf.snapshot_specs == {} and rf.n_snapshot_rows(FIRST_LAYER) == 0
        assert rf.snapshot_rows(FIRST_LAYER) is None
        assert rf.run_started().snapshots == []


def test_max_rows_is_a_hard_cap_and_bounds_the_size(tmp_path: Path) -> None:
    capped = specs(per_epoch_rows=3)
    events: list[object] = [started(capped)]
    for e in range(-1, 12):  # 13 rows offered to a cap of 3
        if e >= 0:
            events.append(batch(e * SPE, SPE))
        events += epoch_snaps(e, (e + 1) * SPE)
    events.append(points())
    events.append(misclassified(12 * SPE, m=9))  # 9 rows, cap 5
    events.append(RunFinished("completed", 12 * SPE - 1, time=T0 + 10))
    with_snaps = write(tmp_path / "with.h5", events)
    # without: the same run declaring no snapshots
    events_none = [started([]), *[ev for ev in events[1:] if not isinstance(ev, Snapshot)]]
    without = write(tmp_path / "without.h5", events_none)
    with open_run(with_snaps) as rf:
        for name in (FIRST_LAYER, TOKEN_MIXING, BOUNDARY):
            r = rf.snapshot_rows(name)
            assert r is not None and r.epoch.tolist() == [-1, 0, 1]  # the first 3; later ones dropped
        assert rf.n_snapshot_rows(MISCLASSIFIED) == 5
    with h5py.File(with_snaps) as f:
        assert int(f["snapshots/first_layer"].attrs["dropped_rows"]) == 10
        assert int(f["snapshots/misclassified"].attrs["dropped_rows"]) == 4
    budget = sum(s.max_bytes for s in capped)
    extra = with_snaps.stat().st_size - without.stat().st_size
    n_datasets = sum(len(s.fields) + 2 for s in capped)  # + epoch and step
    # beyond the rows: about 0.6 KB of header and chunk index per dataset (measured: 12 KB for these 21)
    assert 0 < extra <= budget + 1024 * n_datasets, (extra, budget)


def test_undeclared_or_misshapen_snapshots_are_value_errors(tmp_path: Path) -> None:
    with RunFileWriter(tmp_path / "bad.h5", background=False) as w:
        w.emit(started())
        with pytest.raises(ValueError, match="did not declare"):
            w.emit(Snapshot("nope", 0, 0, {"x": np.zeros((1, 2))}))
        with pytest.raises(ValueError, match="shape"):
            w.emit(Snapshot(FIRST_LAYER, 0, 0, {"weight": np.zeros((1, 8, 3, 3))}))
        with pytest.raises(ValueError, match="fields"):
            w.emit(Snapshot(BOUNDARY, 0, 0, {"pred": np.zeros((1, 6, 6), np.int16)}))
        with pytest.raises(ValueError, match="cannot be stored"):
            w.emit(Snapshot(BOUNDARY, 0, 0, {"pred": np.zeros((1, 6, 6)), "prob": np.zeros((1, 6, 6))}))
        w.emit(epoch_snaps(-1, 0)[0])  # the writer goes on
        w.emit(RunFinished("completed", 0, time=T0 + 1))
    with open_run(tmp_path / "bad.h5") as rf:
        assert rf.n_snapshot_rows(FIRST_LAYER) == 1 and rf.n_snapshot_rows(BOUNDARY) == 0


@pytest.mark.parametrize(
    "spec, why",
    [
        (SnapshotSpec("a/..", (F("w", (2,), "float32"),), "epoch", 2), None),  # "/" is escaped: fine
        (SnapshotSpec("..", (F("w", (2,), "float32"),), "epoch", 2), "dataset name"),
        (SnapshotSpec("s", (F("w", (2,), "float32"),), "epoch", 0), "max_rows"),
        (SnapshotSpec("s", (F("w", (0,), "float32"),), "epoch", 2), "shape"),
        (SnapshotSpec("s", (F("step", (2,), "float32"),), "epoch", 2), "reserved"),
        (SnapshotSpec("s", (), "epoch", 2), "no fields"),
    ],
)
def test_declarations_are_checked_at_run_started(tmp_path: Path, spec: SnapshotSpec, why: str | None) -> None:
    w = RunFileWriter(tmp_path / "d.h5", background=False)
    try:
        if why is None:
            w.emit(started([spec]))
            w.emit(Snapshot(spec.name, -1, 0, {"w": np.ones((1, 2))}))
        else:
            with pytest.raises(ValueError, match=why):
                w.emit(started([spec]))
    finally:
        w.close()
    if why is None:
        with open_run(tmp_path / "d.h5") as rf:
            assert list(rf.snapshot_specs) == ["a/.."] and rf.n_snapshot_rows("a/..") == 1


def _tamper(src: Path, dst: Path, edit: str) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        g = f["snapshots/first_layer"]
        if edit == "shape":
            del g["weight"]
            g.create_dataset(
                "weight", data=np.zeros((5, 8, 3, 3), np.float32), maxshape=(8, 8, 3, 3), chunks=True
            )
        elif edit == "dtype":
            data = g["weight"][()]
            del g["weight"]
            g.create_dataset("weight", data=data.astype(np.float64))
        elif edit == "missing":
            del g["step"]
        elif edit == "lengths":
            g["step"].resize(3, axis=0)
        elif edit == "attr":
            f.attrs["snapshots"] = '[{"name": "x"}]'
    return dst


@pytest.mark.parametrize(
    "edit, says",
    [
        ("shape", "/snapshots/first_layer/weight has shape (5, 8, 3, 3)"),
        ("dtype", "/snapshots/first_layer/weight holds float64"),
        ("missing", "lacks /snapshots/first_layer/step"),
        ("lengths", "columns of /snapshots/first_layer differ in length"),
        ("attr", "attribute `snapshots` does not declare snapshots"),
    ],
)
def test_validation_names_the_tampered_dataset(written: Path, tmp_path: Path, edit: str, says: str) -> None:
    bad = _tamper(written, tmp_path / f"{edit}.h5", edit)
    with pytest.raises(RunFileError) as e:
        open_run(bad)
    assert says in str(e.value) and str(bad) in str(e.value)


def test_resume_continues_the_same_snapshots_and_skips_others(written: Path, tmp_path: Path) -> None:
    path = tmp_path / "resumed.h5"
    shutil.copy(written, path)
    more = specs()
    more[0] = SnapshotSpec(FIRST_LAYER, more[0].fields, "epoch", 8, {"module": "stem2"})  # meta may differ
    with RunFileWriter(path, background=False, append=True) as w:
        w.emit(started(more))
        w.emit(batch(EPOCHS * SPE, SPE))
        w.emit(EpochEnd(EPOCHS, (EPOCHS + 1) * SPE, 1.0, 0.5, 1.1, 0.4, 1.0, T0 + 20))
        for ev in epoch_snaps(EPOCHS, (EPOCHS + 1) * SPE):
            w.emit(ev)
        w.emit(misclassified((EPOCHS + 1) * SPE))  # the resumed end: 3 more rows, the cap grew from 5 to 8
        w.emit(RunFinished("completed", (EPOCHS + 1) * SPE - 1, time=T0 + 21))
    with open_run(path) as rf:
        r = rf.snapshot_rows(FIRST_LAYER)
        assert r is not None and r.epoch.tolist() == [-1, *range(EPOCHS + 1)]
        assert rf.snapshot_specs[FIRST_LAYER].meta["module"] == "stem"  # the file's declaration stays
        assert rf.n_snapshot_rows(MISCLASSIFIED) == 6 and rf.snapshot_specs[MISCLASSIFIED].max_rows == 8
        end = rf.snapshot(MISCLASSIFIED)  # the last group of rows: the resumed run's end
        assert end is not None and end.rows == 3 and end.step == (EPOCHS + 1) * SPE
        assert rf.snapshot_specs[FIRST_LAYER].max_rows == EPOCHS + 1 + 8  # the rows it had + the plan's
    # a resumed run declaring other snapshots takes none (and never creates datasets under SWMR)
    other = tmp_path / "other.h5"
    shutil.copy(written, other)
    with RunFileWriter(other, background=False, append=True) as w:
        w.emit(started(specs()[:2]))
        w.emit(batch(EPOCHS * SPE, SPE))
        for ev in epoch_snaps(EPOCHS, (EPOCHS + 1) * SPE)[:2]:
            w.emit(ev)
        w.emit(RunFinished("completed", (EPOCHS + 1) * SPE - 1, time=T0 + 21))
    with open_run(other) as rf:
        assert rf.n_snapshot_rows(FIRST_LAYER) == EPOCHS + 1 and len(rf.snapshot_specs) == 5
    # a file without snapshots resumed by a run that takes some: none recorded, no error
    plain = write(tmp_path / "plain.h5", run_events(snaps=False))
    with RunFileWriter(plain, background=False, append=True) as w:
        w.emit(started())
        w.emit(batch(EPOCHS * SPE, SPE))
        w.emit(epoch_snaps(EPOCHS, (EPOCHS + 1) * SPE)[0])
        w.emit(RunFinished("completed", (EPOCHS + 1) * SPE - 1, time=T0 + 21))
    with open_run(plain) as rf:
        assert rf.snapshot_specs == {} and rf.n_steps == (EPOCHS + 1) * SPE


_LIVE = """
import sys
sys.path.insert(0, {root!r})
from tests.test_runfile_snapshots import *
w = RunFileWriter({path!r}, background=False)
w.emit(started())
for ev in epoch_snaps(-1, 0):
    w.emit(ev)
w.emit(points())
print("ready", flush=True)
for e in range(2):
    sys.stdin.readline()
    w.emit(batch(e * SPE, SPE))
    w.emit(EpochEnd(e, (e + 1) * SPE, 1.0, 0.5, 1.1, 0.4, 1.0, T0 + 2 + e))
    for ev in epoch_snaps(e, (e + 1) * SPE):
        w.emit(ev)
    print("epoch", flush=True)
sys.stdin.readline()
{end}
"""


def _writer(tmp_path: Path, end: str) -> tuple[subprocess.Popen[str], Path]:
    path = tmp_path / "live.h5"
    script = tmp_path / "live.py"
    script.write_text(textwrap.dedent(_LIVE.format(root=str(HERE.parent), path=str(path), end=end)))
    proc = subprocess.Popen(
        [sys.executable, "-u", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, path


def _step(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "epoch"


def test_a_live_reader_sees_rows_grow_and_file_source_sends_them(tmp_path: Path) -> None:
    from tests.test_replay import Collector
    from tuitrain.ui.replay.file_source import FileSource

    proc, path = _writer(tmp_path, "w.emit(RunFinished('completed', 19, time=T0 + 9)); w.close()")
    try:
        with open_run(path) as rf:
            assert (
                rf.opened_swmr and rf.n_snapshot_rows(FIRST_LAYER) == 1 and rf.n_snapshot_rows(POINTS) == 30
            )
            _step(proc)
            assert rf.refresh() and rf.n_snapshot_rows(FIRST_LAYER) == 2
            r = rf.snapshot_rows(BOUNDARY)
            assert r is not None and r.epoch.tolist() == [-1, 0]
        src = FileSource(path, follow=True, poll_seconds=0.05)
        col = Collector()
        src.start(col)
        try:
            deadline = time.monotonic() + 10
            while sum(isinstance(e, Snapshot) for e in col.events()) < 7 and time.monotonic() < deadline:
                time.sleep(0.02)
            _step(proc)  # epoch 1, appended while the source follows
            while sum(isinstance(e, Snapshot) for e in col.events()) < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert col.wait_ended() == "finished"
        finally:
            src.stop()
    finally:
        proc.wait(timeout=20)
    events = col.events()
    got = [(e.name, e.epoch, e.step, e.rows) for e in events if isinstance(e, Snapshot)]
    per_epoch = [g for g in got if g[0] == FIRST_LAYER]
    assert per_epoch == [(FIRST_LAYER, -1, 0, 1), (FIRST_LAYER, 0, 10, 1), (FIRST_LAYER, 1, 20, 1)]
    assert [g for g in got if g[0] == POINTS] == [(POINTS, -1, 0, 30)]
    for e in events:  # each per-epoch snapshot comes after the EpochEnd of its step
        if isinstance(e, Snapshot) and e.epoch >= 0:
            i = events.index(e)
            assert [x.step for x in events[:i] if isinstance(x, EpochEnd)][-1] == e.step


def test_a_killed_writer_leaves_the_rows_flushed_so_far(tmp_path: Path) -> None:
    proc, path = _writer(tmp_path, "import os; os._exit(9)")
    try:
        _step(proc)
        copy = tmp_path / "copy.h5"
        shutil.copy(path, copy)  # the file as a SIGKILL would leave it: the writer still has it open
    finally:
        proc.kill()
        proc.wait(timeout=20)
    with open_run(copy) as rf:
        assert rf.n_snapshot_rows(FIRST_LAYER) == 2 and rf.n_snapshot_rows(POINTS) == 30
        r = rf.snapshot_rows(FIRST_LAYER)
        assert r is not None and r.epoch.tolist() == [-1, 0]


def test_file_source_replays_snapshots_in_step_order(written: Path) -> None:
    from tests.test_replay import Collector
    from tuitrain.ui.replay.file_source import FileSource

    src = FileSource(written)
    col = Collector()
    src.start(col)
    try:
        assert col.wait_ended() == "finished"
    finally:
        src.stop()
    events = col.events()
    snaps = [e for e in events if isinstance(e, Snapshot)]
    assert [(e.epoch, e.rows) for e in snaps if e.name == BOUNDARY] == [
        (-1, 1),
        *((e, 1) for e in range(EPOCHS)),
    ]
    assert [(e.name, e.rows) for e in snaps if e.name in (POINTS, MISCLASSIFIED)] == [
        (POINTS, 30),
        (MISCLASSIFIED, 3),
    ]
    steps = [e.step for e in snaps]
    assert steps == sorted(steps)
    assert isinstance(events[-1], RunFinished) and events.index(snaps[-1]) < len(events) - 1
