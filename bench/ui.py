"""Dashboard load benchmark: a producer process streams fake training events through a
``multiprocessing.Queue`` (as the training worker does) into the real app, run headless; the UI
process reports its frame times, how many events it absorbed, its RSS growth and its CPU use.

    python bench/ui.py                       # both scenarios below, 20 s each
    python bench/ui.py --scenario heavy --seconds 60
    python bench/ui.py --rate 5000 --layers 120 --size 80x24

Scenarios: ``heavy`` = 10,000 steps/s, 200 layers, a probe every step (32 MB/s of probes);
``typical`` = 1,000 steps/s, 40 layers (the <10%-of-a-core target). Not run in CI.

Frame time = the app's data push into the widgets (``redraw``) plus the compositor update that
renders them (where plotext builds happen); a frame is counted when either ran. CPU% is the UI
process's own CPU time (all its threads: the queue drain thread, unpickling, the event loop) over
wall time, after a 2 s warm-up; the producer runs in another process and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import queue as queue_mod
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))  # fake_events lives with the UI tests

from fake_events import make_batch, mlp_layers, run_started  # noqa: E402

from tuitrain.events import EventBatch, RunFinished, StatusChanged  # noqa: E402

SCENARIOS = {
    "heavy": dict(rate=10_000, layers=200, probe_every=1),
    "typical": dict(rate=1_000, layers=40, probe_every=1),
}


def producer(q, rate: int, n_layers: int, probe_every: int, seconds: float, emit: float = 0.1) -> None:
    """Emit ``rate`` steps/s in ``emit``-second EventBatches with put_nowait, coalescing drops like
    the real QueueSink. Reuses a few pre-generated batches so the producer stays cheap."""
    layers = mlp_layers(n_layers)
    per = max(1, int(rate * emit))
    rng = np.random.default_rng(0)
    pool = [make_batch(0, per, layers, rng, steps_per_epoch=10**9, probe_every=probe_every, t=0.0) for _ in range(4)]
    total = int(rate * seconds)
    q.put(EventBatch([run_started(layers, epochs=1, steps_per_epoch=total, name="bench")]))
    q.put(EventBatch([StatusChanged("running", 0)]))
    step, dropped, k = 0, 0, 0
    t0 = time.monotonic()
    while step < total:
        b = pool[k % len(pool)]
        k += 1
        b.steps = np.arange(step, step + per, dtype=np.int64)
        b.epochs = np.zeros(per, dtype=np.int32)
        b.probe_steps = b.steps[(b.steps % probe_every) == 0]
        b.time = time.time()
        try:
            q.put_nowait(EventBatch([b], dropped_steps=dropped))
            dropped = 0
        except queue_mod.Full:
            dropped += per
        step += per
        wait = t0 + step / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    q.put(EventBatch([RunFinished("completed", step)], dropped_steps=dropped))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def run_ui(q, proc, seconds: float, size: tuple[int, int], warmup: float = 2.0) -> dict:
    from textual.screen import Screen

    from tuitrain.ui.app import TuitrainApp
    from tuitrain.ui.source import LiveSource

    frames: list[float] = []
    current: dict[str, float] = {}
    orig_update = Screen._on_timer_update

    def timed_update(self):  # the compositor pass that renders dirty widgets
        t = time.perf_counter()
        orig_update(self)
        frames.append(time.perf_counter() - t + current.pop("redraw", 0.0))

    Screen._on_timer_update = timed_update
    app = TuitrainApp(LiveSource(q), proc_alive=proc.is_alive)
    orig_redraw = app.redraw

    def timed_redraw(force: bool = True, pace: float = 1.0):
        t = time.perf_counter()
        orig_redraw(force, pace)
        current["redraw"] = current.get("redraw", 0.0) + time.perf_counter() - t

    app.redraw = timed_redraw
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(warmup)
            frames.clear()
            h = app.history
            steps0, rss0 = h.steps_seen, rss_mb()
            cpu0, wall0, redraws0 = time.process_time(), time.monotonic(), app.redraws
            await asyncio.sleep(seconds / 2)
            rss_mid = rss_mb()
            await asyncio.sleep(seconds / 2)
            cpu1, wall1 = time.process_time(), time.monotonic()
            rss1 = rss_mb()
            steps = h.steps_seen - steps0
            chart = app.screen.query("LossChart")
            builds = chart.first().builds if chart else 0
            return {
                "steps_absorbed": steps,
                "steps_per_s": steps / (wall1 - wall0),
                "dropped": h.dropped_steps,
                "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
                "frames": len(frames),
                "redraws_per_s": (app.redraws - redraws0) / (wall1 - wall0),
                "p50_ms": 1000 * float(np.percentile(frames, 50)) if frames else float("nan"),
                "p95_ms": 1000 * float(np.percentile(frames, 95)) if frames else float("nan"),
                "max_ms": 1000 * float(np.max(frames)) if frames else float("nan"),
                "rss0_mb": rss0,
                "rss_growth_mb": rss1 - rss0,
                "rss_growth_2nd_half_mb": rss1 - rss_mid,
                "chart_builds": builds,
                "pace": app.pacer.factor,
                "status": h.status,
            }
    finally:
        Screen._on_timer_update = orig_update


def bench(rate: int, layers: int, probe_every: int, seconds: float, size: tuple[int, int]) -> dict:
    q = mp.Queue(maxsize=64)
    proc = mp.Process(target=producer, args=(q, rate, layers, probe_every, seconds + 2.5), daemon=True)
    proc.start()
    try:
        res = asyncio.run(run_ui(q, proc, seconds, size))
    finally:
        proc.terminate()
        proc.join(2)
    res.update(rate=rate, layers=layers, probe_every=probe_every, size=f"{size[0]}x{size[1]}", seconds=seconds)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, help="steps/s (overrides the scenario)")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--probe-every", type=int)
    ap.add_argument("--size", action="append", help="WxH; repeatable (default 200x60 and 80x24)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # run one config here, print JSON
    a = ap.parse_args(argv)
    sizes = a.size or ["200x60", "80x24"]
    names = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
    if a.one:
        sc = dict(SCENARIOS[names[0]])
        for key in ("rate", "layers", "probe_every"):
            if getattr(a, key) is not None:
                sc[key] = getattr(a, key)
        size = tuple(int(v) for v in sizes[0].split("x"))
        r = bench(sc["rate"], sc["layers"], sc["probe_every"], a.seconds, size)
        print(json.dumps({**r, "scenario": names[0]}))
        return
    rows = []
    for name in names:
        for size in sizes:
            # one fresh process per configuration: clean RSS, no leftovers from the previous app
            cmd = [sys.executable, __file__, "--one", "--scenario", name, "--seconds", str(a.seconds), "--size", size]
            for key in ("rate", "layers", "probe_every"):
                if getattr(a, key) is not None:
                    cmd += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
            print(f"running {name} at {size} for {a.seconds:.0f} s ...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    cols = [("scenario", "{}"), ("size", "{}"), ("rate", "{:,}"), ("layers", "{}"), ("steps_per_s", "{:,.0f}"),
            ("dropped", "{:,}"), ("cpu_pct", "{:.1f}"), ("redraws_per_s", "{:.1f}"), ("p50_ms", "{:.1f}"),
            ("p95_ms", "{:.1f}"), ("max_ms", "{:.1f}"), ("chart_builds", "{}"), ("pace", "{:.1f}"), ("rss0_mb", "{:.0f}"),
            ("rss_growth_mb", "{:+.1f}"), ("rss_growth_2nd_half_mb", "{:+.1f}")]
    table = [[fmt.format(r[c]) for c, fmt in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, (c, _) in enumerate(cols)]
    print("  ".join(c.rjust(w) for (c, _), w in zip(cols, widths, strict=True)))
    for t in table:
        print("  ".join(v.rjust(w) for v, w in zip(t, widths, strict=True)))


if __name__ == "__main__":
    main()
