"""The history and its downsampling maths, without a terminal."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from fake_events import T0, fake_run, make_batch, mlp_layers, run_started

from tuitrain.events import PROBE_NAMES, Alert, EpochEnd, RunFinished, StatusChanged
from tuitrain.ui.history import (
    DecimatingSeries,
    History,
    LogBuckets,
    Ring,
    ViewState,
    bucket_mean,
    ema,
    log_ticks,
    minmax_downsample,
    robust_range,
)


def reference_ema(y, a):
    acc, n, out = 0.0, 0, []
    for v in y:
        if np.isfinite(v):
            acc = a * acc + (1 - a) * v
            n += 1
        out.append(acc / (1 - a**n) if n else np.nan)
    return np.array(out)


@pytest.mark.parametrize("a", [0.0, 0.3, 0.9, 0.999])
def test_ema_matches_reference_and_continues_incrementally(a):
    rng = np.random.default_rng(0)
    y = rng.normal(size=3000)
    y[[5, 700]] = np.nan
    full, _ = ema(y, a)
    np.testing.assert_allclose(full[1:], reference_ema(y, a)[1:], rtol=1e-9, atol=1e-12)
    head, state = ema(y[:1234], a)
    tail, _ = ema(y[1234:], a, state=state)
    np.testing.assert_allclose(np.concatenate([head, tail]), full, rtol=1e-9, atol=1e-12)


def test_minmax_downsample_keeps_extremes_and_bounds_points():
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 500.0)
    y[31_337] = 9.0
    y[77_000] = -9.0
    xs, ys = minmax_downsample(x, y, 80)
    assert xs.size <= 160
    assert 9.0 in ys and -9.0 in ys
    assert np.all(np.diff(xs) > 0)  # in x order
    # small inputs pass through; NaN is dropped
    xs, ys = minmax_downsample(np.arange(5.0), np.array([1, np.nan, 3, 4, 5.0]), 80)
    assert xs.tolist() == [0, 2, 3, 4]


def test_bucket_mean_ignores_nan_and_stretches():
    v = np.arange(12, dtype=float).reshape(12, 1)
    v[1] = np.nan
    out = bucket_mean(v, 3)
    assert out[:, 0] == pytest.approx([(0 + 2 + 3) / 3, 5.5, 9.5])
    assert bucket_mean(np.arange(3.0), 6, stretch=True).tolist() == [0, 0, 1, 1, 2, 2]
    assert bucket_mean(np.arange(3.0), 6).tolist() == [0, 1, 2]
    allnan = bucket_mean(np.full((4, 2), np.nan), 2)
    assert np.isnan(allnan).all()


def test_robust_range_ignores_early_outliers():
    y = np.concatenate([np.full(20, 50.0), 1.0 + 0.1 * np.sin(np.arange(1000))])
    lo, hi = robust_range(y)
    assert 0.8 < lo < 0.95 and 1.05 < hi < 1.3
    assert robust_range(np.array([np.nan])) is None
    lo, hi = robust_range(np.array([2.0, 2.0]))
    assert lo < 2.0 < hi


def test_log_ticks():
    assert log_ticks(-9.5, -0.5) == [-9.0, -7.0, -5.0, -3.0, -1.0]
    within = log_ticks(-2.9, -1.1)  # less than two decades: 1-2-5 ticks
    assert -2.0 in within and len(within) >= 3 and all(-2.9 <= t <= -1.1 for t in within)
    assert log_ticks(1, 0) == []


def test_decimating_series_keeps_uniform_stride_and_bounded_size():
    d = DecimatingSeries(1, cap=64, initial=4)
    rng = np.random.default_rng(1)
    i = 0
    while i < 20_000:
        k = int(rng.integers(1, 300))
        d.append(np.arange(i, i + k, dtype=float)[:, None])
        i += k
    v = d.data[:, 0]
    assert len(d) <= 64
    assert v[0] == 0
    assert np.unique(np.diff(v)).tolist() == [d.stride]
    assert 20_000 - v[-1] <= d.stride


def test_ring_keeps_the_last_rows_in_order():
    r = Ring(5, (2,), initial=2)
    for j in range(3):
        r.append([j], [[j, j]])
    assert r.window()[0].tolist() == [0, 1, 2]
    r.append(np.arange(3, 9), np.arange(12).reshape(6, 2))
    keys, rows = r.window()
    assert keys.tolist() == [4, 5, 6, 7, 8]
    assert r.last()[0] == 8 and rows[-1].tolist() == [10, 11]
    r.append([9, 10], [[0, 0], [1, 1]])
    assert r.window(3)[0].tolist() == [8, 9, 10]
    assert r.total == 11


def test_log_buckets_merge_with_weights():
    lb = LogBuckets(8, (1,))
    for j in range(0, 50, 3):
        k = min(3, 50 - j)
        lb.append(np.arange(j, j + k), np.arange(j, j + k, dtype=np.float32)[:, None])
    steps, vals = lb.view()
    assert len(lb) <= 8 and lb.counts[: lb.n].sum() == 50
    # every bucket's value is the mean of its steps (value == step here)
    np.testing.assert_allclose(vals[:, 0], steps, rtol=1e-5)
    assert np.all(np.diff(steps) > 0)


def test_view_state_zoom_pan_follow():
    v = ViewState()
    assert v.x_window(0, 1000) == (0, 1000)
    v.zoom(0.5, 0, 1000)
    assert v.x_window(0, 1000) == (500, 1000) and v.follow
    assert v.x_window(0, 2000) == (1500, 2000)  # following the live end
    v.pan(-1, 0, 2000)
    assert not v.follow and v.x_window(0, 2000) == (1375, 1875)
    assert v.x_window(0, 3000) == (1375, 1875)  # a paused view stays put
    for _ in range(10):
        v.pan(1, 0, 3000)
        if v.follow:
            break
    assert v.follow  # panned past the end: following again
    v.zoom(4.0, 0, 3000)
    assert v.span == 2000
    v.zoom(2.0, 0, 3000)
    assert v.span is None  # zoomed out past the whole run
    v.follow_live()
    assert v.x_window(0, 3000) == (0, 3000)
    assert v.smoother(1) == 0.95 and v.smoother(-1) == 0.9
    assert [v.cycle_quantity() for _ in PROBE_NAMES][-1] == "grad_norm"


def test_history_from_a_fake_run():
    h = History(clock=lambda: T0 + 100)
    h.extend(fake_run())
    assert h.status == "completed" and h.is_finished
    assert h.steps_done == 400 and len(h.layers) == 76
    assert len(h.epochs) == 4 and h.best_val_acc == pytest.approx(max(h.epochs.column("val_acc")))
    step, row = h.latest_probes()
    assert step == 399 and row.shape == (4, 76)
    health = h.health(row)
    assert health[0] == 1  # the input layer's gradient vanished
    assert health[-2] == 0  # the head is healthy
    kinds = [e.kind for e in h.log]
    assert kinds.count("epoch") == 4 and "vanishing" in kinds and "checkpoint" in kinds and "best" in kinds
    assert kinds[-1] == "finished"
    steps, logs = h.probe_long(0)
    assert logs.shape == (400, 76) and steps[-1] == 399
    sm = h.smoothed("loss", 0.9)
    assert sm.shape == (400,) and np.isfinite(sm).all()
    assert h.smoothed("loss", 0.9) is sm  # cached
    assert h.elapsed() == pytest.approx(400 / 100.0 + 2.0)


def test_history_status_pending_and_death():
    h = History(clock=lambda: T0 + 5)
    h.extend(fake_run(finish=None, stop_after=50))
    assert h.status == "running" and h.eta() is not None and h.eta() > 0
    h.set_pending("pausing…")
    h.extend([StatusChanged("paused", 50, time=T0 + 2)])
    assert h.status == "paused" and h.pending == ""
    h.mark_process_died()
    assert h.status == "failed" and h.finished.status == "failed" and h.process_died
    h.extend(
        [RunFinished("completed", 60)]
    )  # late events do not resurrect it... except a RunFinished, which wins
    assert h.finished.status == "completed"


def test_history_alerts_and_best_dedupe():
    h = History()
    h.extend(fake_run(finish=None, stop_after=100, epochs=2, steps_per_epoch=50))
    n = len(h.log)
    h.extend([EpochEnd(2, 150, 1.0, 0.9, 1.0, 0.99, 1e-3, 1.0), Alert(150, "info", "best", "new best")])
    kinds = [e.kind for e in list(h.log)[n:]]
    assert kinds == ["epoch", "best"]  # the engine's "best" alert does not repeat ours
    h.extend([Alert(151, "error", "nan", "loss is NaN")])
    assert h.log[-1].level == "error"


def test_thresholds_come_from_the_run_not_from_its_toml():
    layers = mlp_layers(4)
    ev = run_started(layers, epochs=1, steps_per_epoch=10)
    h = History()
    assert h.thresholds.vanishing == 0.0 and h.thresholds.exploding == math.inf  # nothing before the run
    ev.config_toml = "[monitor]\nvanishing = 1e-5\nexploding = 10.0\n"
    ev.vanishing, ev.exploding = 1e-3, 5.0
    h.extend([ev])
    assert (h.thresholds.vanishing, h.thresholds.exploding) == (1e-3, 5.0)  # the fields, never the TOML
    broken = run_started(layers, epochs=1, steps_per_epoch=10)
    broken.config_toml = "this is not toml [[["
    h2 = History()
    h2.extend([broken])
    assert h2.thresholds.vanishing == broken.vanishing == 1e-6  # fake_events' run says 1e-6


def test_the_only_threshold_default_is_the_config_schemas():
    from tuitrain.config.schema import MonitorConfig
    from tuitrain.events import RunStarted

    ev = RunStarted("r", "", "m", "d", "cpu", 1, [], 1, [], 1, 1, 1, 2, "")
    assert (ev.vanishing, ev.exploding) == (MonitorConfig().vanishing, MonitorConfig().exploding)


def test_absorbs_10k_steps_per_second_with_200_layers_in_bounded_memory():
    layers = mlp_layers(200)
    h = History(step_cap=1 << 15, probe_rows=20_000, probe_bytes=16 << 20, long_cap=256)
    h.extend([run_started(layers, epochs=1000, steps_per_epoch=10_000)])
    rng = np.random.default_rng(0)
    batch = make_batch(0, 1000, layers, rng, steps_per_epoch=10_000, t=T0)
    t0 = time.perf_counter()
    seconds = 0
    for k in range(20):  # 20 s of a 10,000 steps/s stream with a probe every step
        for j in range(10):
            start = (k * 10 + j) * 1000
            batch.steps = np.arange(start, start + 1000)
            batch.blocks["grad"].steps = batch.steps
            batch.epochs = (batch.steps // 10_000).astype(np.int32)
            h.extend([batch])
        seconds += 1
    dt = time.perf_counter() - t0
    assert h.steps_done == 200_000
    # a sanity bound (a loaded CI box included); bench/ui.py measures the real cost (~30 ms/s here)
    assert dt / seconds < 0.5, f"{dt / seconds * 1000:.0f} ms of UI time per streamed second"
    held = h.scalars._data.nbytes + h.probes._data.nbytes + h.long.values.nbytes
    assert held < 40 << 20, held
    assert len(h.scalars) <= 1 << 15 and h.scalars.stride > 1
    assert len(h.long) <= 256 and h.long.width > 1
