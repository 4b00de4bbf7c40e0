"""Replay benchmark: how fast `tuitrain replay` opens a big run file and how fluid the cursor is.

    python bench/replay.py                              # 1,000,000 steps x 200 layers (a 3.2 GB file)
    python bench/replay.py --steps 100000 --layers 50   # smaller
    python bench/replay.py --path /data/big.h5 --size 80x24 --moves 40

Writes the run file once with RunFileWriter from synthetic numpy events (a probe every step, so the
probe matrices are as big as they get: steps x 4 x layers float32) and reuses it while its size
matches; then, in a fresh process (so that peak RSS is the replay's own), runs the real replay app
headless (Textual Pilot) and reports:

* open-to-first-frame: from ``open_run`` to the first painted frame whose chart, bars and header show
  the run (the file source reads the overview on its thread meanwhile); import time is separate;
* peak RSS of that process (VmHWM) after the imports, at the first frame and at the end;
* cursor-move latency: wall time of a key press until the screen is painted again (Pilot's
  ``press``, which also waits for the app to go idle), for left (one chart column), shift+left (one
  epoch: new chunks read from the file), home/end, and left on the heatmap view; with the mean time
  of our redraw (widgets taking the new cursor, file reads included) and of Textual's paint.

Not run in CI. Numbers depend on the page cache: the file was just written, so it is hot; use
``--drop-note`` to be reminded how to measure cold (needs root: ``echo 3 > /proc/sys/vm/drop_caches``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(path: Path, steps: int, n_layers: int, epochs: int = 10, batch: int = 8192) -> float:
    """Write a steps x layers run with a probe every step; returns the seconds it took."""
    from tuitrain.config import RunConfig, to_toml
    from tuitrain.events import (
        PROBE_NAMES,
        STEP_SCALARS,
        EpochEnd,
        LayerInfo,
        RunFinished,
        RunStarted,
        StepBatch,
    )
    from tuitrain.events import TestResult as EvTestResult
    from tuitrain.runfile import RunFileWriter

    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = [
        LayerInfo(
            f"layers.{i // 2}.{'bias' if i % 2 else 'weight'}",
            (64,) if i % 2 else (64, 64),
            64 if i % 2 else 4096,
            "bias" if i % 2 else "weight",
            f"layers.{i // 2}",
            "Linear",
        )
        for i in range(n_layers)
    ]
    spe = max(1, steps // epochs)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, size=(batch, len(PROBE_NAMES), n_layers)).astype(np.float32)
    depth = (1.0 - np.arange(n_layers) / max(1, n_layers - 1)).astype(np.float32)
    with RunFileWriter(path, flush_seconds=math.inf, background=False, overwrite=True) as w:
        w.emit(
            RunStarted(
                run_name=f"bench-{steps}x{n_layers}",
                config_toml=to_toml(RunConfig(name="bench")),
                model_name="mlp",
                dataset="synthetic",
                device="cpu",
                params=n_layers * 2080,
                layers=layers,
                flops=1,
                module_summary=[],
                epochs=epochs,
                steps_per_epoch=spe,
                batch_size=128,
                num_classes=10,
                out_path=str(path),
                started_at=time.time(),
            )
        )
        for s in range(0, steps, batch):
            n = min(batch, steps - s)
            st = np.arange(s, s + n, dtype=np.int64)
            frac = (st / steps).astype(np.float32)
            sc = np.empty((n, len(STEP_SCALARS)))
            sc[:, 0] = 4.6 * np.exp(-3 * frac) + 0.2 * rng.random(n)
            sc[:, 1] = 1 - sc[:, 0] / 5
            sc[:, 2], sc[:, 3], sc[:, 4] = 1e-3, 1e4, 0.01
            # gradients that collapse on the input side as the run goes on
            logs = -1.0 - 8.0 * frac[:, None, None] * depth[None, None, :] + noise[:n]
            w.emit(
                StepBatch.with_grad(
                    st, (st // spe).astype(np.int32), sc, st, np.power(10.0, logs, dtype=np.float32)
                )
            )
            for e in range(epochs):
                if s < (e + 1) * spe <= s + n:
                    w.emit(EpochEnd(e, (e + 1) * spe, 1.0, 0.5, 1.1, 0.45, 1e-3, 10.0))
        w.emit(EvTestResult(1.1, 0.45))
        w.emit(RunFinished("completed", steps))
    return time.perf_counter() - t0


def matches(path: Path, steps: int, n_layers: int) -> bool:
    try:
        from tuitrain.runfile import open_run

        with open_run(path) as rf:
            return (
                rf.n_steps == steps
                and rf.n_layers == n_layers
                and rf.n_probe_rows == steps
                and rf.status == "completed"
            )
    except Exception:
        return False


def rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM (ru_maxrss survives exec, so a child forked from a big
    parent would report the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(path: Path, size: tuple[int, int], moves: int) -> dict:
    t = time.perf_counter()
    from textual.screen import Screen

    from tuitrain.runfile import open_run
    from tuitrain.ui.replay import file_source
    from tuitrain.ui.replay.launch import replay_app
    from tuitrain.ui.widgets.grad_bars import GradBars
    from tuitrain.ui.widgets.heatmap import HeatmapRows
    from tuitrain.ui.widgets.loss_plot import LossChart

    import_s = time.perf_counter() - t
    spent = {"redraw": 0.0, "paint": 0.0}
    orig_update = Screen._on_timer_update

    def timed_update(self):  # the compositor pass that paints the dirty widgets
        t = time.perf_counter()
        orig_update(self)
        spent["paint"] += time.perf_counter() - t

    Screen._on_timer_update = timed_update
    collects: list[float] = []
    orig = file_source.FileSource.collect

    def timed_collect(self):
        t = time.perf_counter()
        out = orig(self)
        collects.append(time.perf_counter() - t)
        return out

    file_source.FileSource.collect = timed_collect
    rss_before = rss_mb()
    t0 = time.perf_counter()
    rf = open_run(path)
    open_s = time.perf_counter() - t0
    n_steps = rf.n_steps
    app = replay_app([rf], cpu_budget=None)
    orig_redraw = app.redraw

    def timed_redraw(force: bool = True, pace: float = 1.0):
        t = time.perf_counter()
        orig_redraw(force, pace)
        spent["redraw"] += time.perf_counter() - t

    app.redraw = timed_redraw
    out: dict = {
        "file_gb": path.stat().st_size / 1e9,
        "steps": n_steps,
        "layers": rf.n_layers,
        "import_s": import_s,
        "open_run_s": open_s,
        "rss_after_imports_mb": rss_before,
    }
    async with app.run_test(size=size) as pilot:
        chart, bars = app.screen.query_one(LossChart), app.screen.query_one(GradBars)
        while True:
            if (
                chart.builds
                and chart.spec.sm_x.size
                and bars.probe_step == n_steps - 1
                and app.history.steps_done == n_steps
            ):
                break
            if time.perf_counter() - t0 > 120:
                raise TimeoutError("no first frame within 120 s")
            await asyncio.sleep(0.002)
        out["first_frame_s"] = time.perf_counter() - t0
        out["overview_read_s"] = collects[0] if collects else float("nan")
        out["overview_rows"] = int(app.history.scalars.n)
        out["overview_probe_rows"] = int(len(app.history.probes or []))
        out["rss_first_frame_mb"] = rss_mb()

        async def lat(keys: list[str]) -> tuple[list[float], float, float]:
            res = []
            spent["redraw"] = spent["paint"] = 0.0
            for k in keys:
                t = time.perf_counter()
                await pilot.press(k)
                res.append(time.perf_counter() - t)
            return res, spent["redraw"] / len(keys), spent["paint"] / len(keys)

        def stats(name: str, got: tuple[list[float], float, float]) -> None:
            xs, redraw, paint = got
            out[f"{name}_p50_ms"] = 1000 * float(np.percentile(xs, 50))
            out[f"{name}_p95_ms"] = 1000 * float(np.percentile(xs, 95))
            out[f"{name}_max_ms"] = 1000 * float(np.max(xs))
            out[f"{name}_redraw_ms"] = 1000 * redraw  # our widgets taking the new state (mean per press)
            out[f"{name}_paint_ms"] = 1000 * paint  # Textual painting the dirty widgets (mean per press)

        await pilot.pause(0.3)
        stats("left", await lat(["left"] * moves))
        out["cursor_after_left"] = app.view.cursor
        stats("shift_left", await lat(["shift+left"] * min(moves, 9)))
        stats("home_end", await lat(["home", "end"] * 5))
        await pilot.press("h")
        rows = app.screen.query_one(HeatmapRows)
        await pilot.pause(0.3)
        stats("heatmap_left", await lat(["left"] * moves))
        out["heatmap_cursor_col"] = rows.cursor_col
        out["rss_end_mb"] = rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument(
        "--path",
        type=Path,
        default=None,
        help="run file (default /tmp/tuitrain-bench/replay-<steps>x<layers>.h5)",
    )
    ap.add_argument("--size", default="200x60", help="terminal size, e.g. 80x24")
    ap.add_argument("--moves", type=int, default=30)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    path = args.path or Path("/tmp/tuitrain-bench") / f"replay-{args.steps}x{args.layers}.h5"
    size = tuple(int(v) for v in args.size.split("x"))
    if args.measure:
        print(json.dumps(asyncio.run(measure(path, size, args.moves))))  # type: ignore[arg-type]
        return
    if matches(path, args.steps, args.layers):
        print(f"reusing {path} ({path.stat().st_size / 1e9:.2f} GB)")
    else:
        print(
            f"writing {path}: {args.steps:,} steps x {args.layers} layers, a probe every step ...", flush=True
        )
        gen = generate(path, args.steps, args.layers)
        print(f"  written in {gen:.1f} s ({path.stat().st_size / 1e9:.2f} GB)")
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            "--path",
            str(path),
            "--size",
            args.size,
            "--moves",
            str(args.moves),
            "--steps",
            str(args.steps),
            "--layers",
            str(args.layers),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if child.returncode:
        print(child.stdout + child.stderr, file=sys.stderr)
        sys.exit(child.returncode)
    r = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"\nreplay of {r['steps']:,} steps x {r['layers']} layers ({r['file_gb']:.2f} GB), terminal {args.size}"
    )
    rows = [
        ("imports (textual, h5py, app)", f"{r['import_s'] * 1000:.0f} ms"),
        ("open_run", f"{r['open_run_s'] * 1000:.0f} ms"),
        (
            "overview read (file source)",
            f"{r['overview_read_s'] * 1000:.0f} ms -> {r['overview_rows']:,} step rows, "
            f"{r['overview_probe_rows']} probe rows",
        ),
        ("open -> first frame", f"{r['first_frame_s'] * 1000:.0f} ms"),
        (
            "peak RSS at first frame / end",
            f"{r['rss_first_frame_mb']:.0f} / {r['rss_end_mb']:.0f} MB "
            f"(after imports {r['rss_after_imports_mb']:.0f} MB)",
        ),
    ]
    for key, label in (
        ("left", "cursor left (1 chart column)"),
        ("shift_left", "cursor shift+left (1 epoch)"),
        ("home_end", "cursor home / end"),
        ("heatmap_left", "cursor left on the heatmap"),
    ):
        rows.append(
            (
                label,
                f"p50 {r[key + '_p50_ms']:.0f} ms  p95 {r[key + '_p95_ms']:.0f} ms  "
                f"max {r[key + '_max_ms']:.0f} ms  (redraw {r[key + '_redraw_ms']:.0f} ms + "
                f"paint {r[key + '_paint_ms']:.0f} ms)",
            )
        )
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
