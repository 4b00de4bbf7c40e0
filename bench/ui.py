"""Dashboard load benchmark: a producer process streams fake training events through a
``multiprocessing.Queue`` (as the training worker does) into the real app, run headless; the UI
process reports its frame times, how many events it absorbed, its RSS growth and its CPU use.
``--draw-1m`` instead fills a history with a long run (1,000,000 steps) and times drawing it.

    python bench/ui.py                       # both scenarios below, 20 s each
    python bench/ui.py --scenario heavy --seconds 60
    python bench/ui.py --rate 5000 --layers 120 --size 80x24
    python bench/ui.py --draw-1m             # a 1M-step history: dashboard and chart frames

Scenarios: ``heavy`` = 10,000 steps/s, 200 layers, a probe every step (32 MB/s of probes);
``typical`` = 1,000 steps/s, 40 layers (the <10%-of-a-core target). Not run in CI.

Frame time = the app's data push into the widgets (``redraw``) plus the compositor pass that
renders them, plus the encoding of that update into terminal escape codes (a terminal app pays for
it on every frame; headless Textual skips it, so the bench does it, untimed by Textual itself).
A frame is one compositor pass that painted something, with the redraws since the previous pass.
CPU% is the UI process's own CPU time (all its threads: the queue drain thread, unpickling, the
event loop) over wall time, after a 2 s warm-up; the producer runs in another process and is not
counted.

``--draw-1m``: the history holds 1,000,000 steps of loss/accuracy with their epochs, and per-layer
probes (200 layers, every 10th step: what the ring of recent rows and the whole-run buckets keep).
Rows: ``live``, the dashboard's own frames while the run goes on at 10,000 steps/s (its 10 Hz tick,
pacing and staggering; no CPU governor); ``chart``, the loss panel's data push plus a full render of
the chart (spec from the whole history, rasterised, every line); ``all panels``, every panel
redrawn with new data at once (what a key press costs); ``repaint only``, every widget repainted
with nothing new (Textual's own cost for a full screen, for scale). New steps are appended untimed
before each frame, as a live run would.

Targets (issue 5): frame p95 <= 50 ms while streaming; <= 20 ms per frame with a 1M-point history
(``live`` and ``chart``; ``all panels`` is held to the 50 ms frame target, see DRAW_ROWS). The exit
status is 1 when a p95 is over twice its target, a stream is absorbed at less than half its rate,
or the UI process grew by more than its history's caps in the second half of a run.
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
    pool = [
        make_batch(0, per, layers, rng, steps_per_epoch=10**9, probe_every=probe_every, t=0.0)
        for _ in range(4)
    ]
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


class FrameClock:
    """Times frames in a running app: ``redraw`` (the data push into the widgets) is accumulated
    and charged to the next compositor pass that paints (``Screen._on_timer_update``), together with
    the encoding of its update into terminal escape codes (done here: headless Textual skips it).
    A pass that paints nothing and no redraw is not a frame."""

    def __init__(self, app) -> None:
        import io

        from rich.console import Console
        from textual._compositor import CompositorUpdate
        from textual.app import App
        from textual.screen import Screen

        # a truecolor terminal, as the app's own console would be in one (headless it is 16-colour)
        term = Console(color_system="truecolor", force_terminal=True, file=io.StringIO())
        self.frames: list[float] = []
        self.encode: list[float] = []
        self._pending = 0.0
        self._painted = self._inside = False
        self._restore = [
            (Screen, "_on_timer_update", Screen._on_timer_update),
            (App, "_display", App._display),
        ]
        orig_update, orig_display, orig_redraw = Screen._on_timer_update, App._display, app.redraw
        clock = self

        def timed_update(screen) -> None:
            clock._painted = False
            clock._inside = True
            t = time.perf_counter()
            try:
                orig_update(screen)
            finally:
                clock._inside = False
            dt = time.perf_counter() - t  # the encoding included
            if clock._painted or clock._pending:
                clock.frames.append(dt + clock._pending)
                clock._pending = 0.0

        def display(app_, screen, renderable) -> None:
            if isinstance(renderable, CompositorUpdate):
                clock._painted = True
                t = time.perf_counter()
                renderable.render_segments(term)  # what a terminal frame would write
                clock.encode.append(time.perf_counter() - t)
                if not clock._inside:  # a paint outside the update pass goes to the next frame
                    clock._pending += clock.encode[-1]
            orig_display(app_, screen, renderable)

        def timed_redraw(force: bool = True, pace: float = 1.0) -> None:
            t = time.perf_counter()
            orig_redraw(force, pace)
            clock._pending += time.perf_counter() - t

        Screen._on_timer_update = timed_update
        App._display = display
        app.redraw = timed_redraw

    def close(self) -> None:
        for owner, name, fn in self._restore:
            setattr(owner, name, fn)


def pct(values: list[float], q: float) -> float:
    return 1000 * float(np.percentile(values, q)) if values else float("nan")


async def run_ui(q, proc, seconds: float, size: tuple[int, int], warmup: float = 2.0) -> dict:
    from tuitrain.ui.app import TuitrainApp
    from tuitrain.ui.source import LiveSource

    app = TuitrainApp(LiveSource(q), proc_alive=proc.is_alive)
    clock = FrameClock(app)
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(warmup)
            clock.frames.clear()
            clock.encode.clear()
            h = app.history
            steps0, rss0 = h.steps_seen, rss_mb()
            cpu0, wall0, redraws0 = time.process_time(), time.monotonic(), app.redraws
            await asyncio.sleep(seconds / 2)
            rss_mid = rss_mb()
            await asyncio.sleep(seconds / 2)
            cpu1, wall1 = time.process_time(), time.monotonic()
            rss1 = rss_mb()
            steps, wall, fr = h.steps_seen - steps0, wall1 - wall0, clock.frames
            chart = app.screen.query("LossChart")
            return {
                "steps_absorbed": steps,
                "steps_per_s": steps / wall,
                "dropped": h.dropped_steps,
                "cpu_pct": 100 * (cpu1 - cpu0) / wall,
                "frames": len(fr),
                "frames_per_s": len(fr) / wall,
                "redraws_per_s": (app.redraws - redraws0) / wall,
                "p50_ms": pct(fr, 50),
                "p95_ms": pct(fr, 95),
                "max_ms": 1000 * max(fr) if fr else float("nan"),
                "encode_p95_ms": pct(clock.encode, 95),
                "rss0_mb": rss0,
                "rss_growth_mb": rss1 - rss0,
                "rss_growth_2nd_half_mb": rss1 - rss_mid,
                "chart_builds": chart.first().builds if chart else 0,
                "pace": app.pacer.factor,
                "status": h.status,
            }
    finally:
        clock.close()


def bench(rate: int, layers: int, probe_every: int, seconds: float, size: tuple[int, int]) -> dict:
    q = mp.Queue(maxsize=64)
    proc = mp.Process(target=producer, args=(q, rate, layers, probe_every, seconds + 2.5), daemon=True)
    proc.start()
    try:
        res = asyncio.run(run_ui(q, proc, seconds, size))
    finally:
        proc.terminate()
        proc.join(2)
    res.update(
        rate=rate, layers=layers, probe_every=probe_every, size=f"{size[0]}x{size[1]}", seconds=seconds
    )
    return res


# -- a long history ----------------------------------------------------------------------------------

DRAW_TARGET_MS = 20.0
STREAM_TARGET_MS = 50.0
RSS_GROWTH_MB = 64.0  # the history's own caps (probe ring 32 MB, steps 15 MB, buckets 7 MB): beyond is a leak


def run_events(
    start: int, steps: int, layers, probe_every: int, rng, per: int = 10_000, steps_per_epoch: int = 10_000
) -> list[list]:
    """A run's events from step ``start`` on, as lists to deliver together: a StepBatch of up to
    ``per`` steps each, with an EpochEnd at each epoch's end."""
    from tuitrain.events import EpochEnd

    out, s, end = [], start, start + steps
    while s < end:
        n = min(per, end - s, steps_per_epoch - s % steps_per_epoch)
        events: list = [
            make_batch(s, n, layers, rng, steps_per_epoch=steps_per_epoch, probe_every=probe_every, t=0.0)
        ]
        s += n
        if s % steps_per_epoch == 0:
            e = s // steps_per_epoch - 1
            events.append(
                EpochEnd(e, s, 1.45, 0.6, 1.5 + 0.1 / (e + 1), 0.58 - 0.1 / (e + 1), 1e-3, 1.0, time=0.0)
            )
        out.append(events)
    return out


async def run_draw(
    steps: int, size: tuple[int, int], frames: int, layers: int, probe_every: int, seconds: float
) -> dict:
    """Frames over a ``steps``-long history: the dashboard as the app draws it while the run goes on
    at 10,000 steps/s (its own 10 Hz tick, pacing and staggering; no CPU governor), every panel at
    once (what a key press costs), and the loss chart alone."""
    from textual.geometry import Region

    from tuitrain.ui.app import TuitrainApp
    from tuitrain.ui.history import History
    from tuitrain.ui.source import EventsArrived, ListSource
    from tuitrain.ui.widgets.loss_plot import LossPanel

    rng = np.random.default_rng(0)
    infos = mlp_layers(layers)
    h = History()
    h.extend([run_started(infos, epochs=max(1, steps // 10_000), steps_per_epoch=10_000, name="bench-1m")])
    t0 = time.perf_counter()
    for events in run_events(0, steps, infos, probe_every, rng):
        h.extend(events)
    out: dict = {
        "steps": h.steps_done,
        "rows": h.scalars.n,
        "fill_s": time.perf_counter() - t0,
        "size": f"{size[0]}x{size[1]}",
    }

    def more(n: int = 1000) -> list:  # the next 0.1 s of a 10,000 steps/s run
        return [e for events in run_events(h.steps_done, n, infos, probe_every, rng) for e in events]

    app = TuitrainApp(ListSource([]), history=h, cpu_budget=None)
    clock = FrameClock(app)
    try:
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.5)
            panel = app.screen.query_one(LossPanel)
            chart = panel.chart
            builds0, t_end = chart.builds, time.monotonic() + seconds
            clock.frames.clear()
            clock.encode.clear()
            while time.monotonic() < t_end:  # live: the app's own frames
                app.post_message(EventsArrived(more()))
                await asyncio.sleep(0.1)
            out["live"], out["live_builds"] = list(clock.frames), chart.builds - builds0
            out["encode"] = list(clock.encode)
            for timer in list(app._timers):  # from here on the bench drives every frame
                if getattr(timer, "_callback", None) == app._tick:
                    timer.pause()
            await pilot.pause(0.3)

            async def frame() -> None:  # until the compositor pass after what was just dirtied ran
                n = len(clock.frames)
                for _ in range(200):
                    await pilot.pause()
                    if len(clock.frames) > n:
                        return

            builds0 = chart.builds
            clock.frames.clear()
            for _ in range(frames):  # every panel at once, as after a key press
                h.extend(more())
                app.redraw(force=True)
                await frame()
            out["all panels"], out["all panels_builds"] = list(clock.frames), chart.builds - builds0
            clock.frames.clear()
            for _ in range(frames):  # every widget repainted, nothing new to show: Textual's own floor
                for widget in app.screen.query("*"):
                    widget.refresh()
                await frame()
            out["repaint only"], out["repaint only_builds"] = list(clock.frames), 0
            chart_frames = []
            builds0 = chart.builds
            for _ in range(frames):  # the chart alone: spec from the history, rasterise, every line rendered
                h.extend(more())
                t = time.perf_counter()
                panel.update_data(h, app.view, force=True)
                chart.render_lines(Region(0, 0, chart.size.width, chart.size.height))
                chart_frames.append(time.perf_counter() - t)
                await pilot.pause()
            out["chart"], out["chart_builds"] = chart_frames, chart.builds - builds0
    finally:
        clock.close()
    return out


# what each --draw-1m row is held to: the 1M-point drawing target for the frames a live run shows and
# for the chart; a key press repaints every panel at once, and a 200x60 repaint of everything costs
# ~30 ms in Textual before any data (the "repaint only" row), so it is held to the frame target
DRAW_ROWS = {
    "live": DRAW_TARGET_MS,
    "chart": DRAW_TARGET_MS,
    "all panels": STREAM_TARGET_MS,
    "repaint only": float("nan"),
}


def draw_rows(out: dict) -> list[dict]:
    rows = []
    for what, target in DRAW_ROWS.items():
        fr = out[what]
        rows.append(
            {
                "what": what,
                "size": out["size"],
                "steps": out["steps"],
                "rows": out["rows"],
                "frames": len(fr),
                "builds": out[f"{what}_builds"],
                "p50_ms": pct(fr, 50),
                "p95_ms": pct(fr, 95),
                "max_ms": 1000 * max(fr),
                "target_ms": target,
            }
        )
    return rows


# -- driver --------------------------------------------------------------------------------------------


def print_table(rows: list[dict], cols: list[tuple[str, str]]) -> None:
    table = [[fmt.format(r[c]) for c, fmt in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, (c, _) in enumerate(cols)]
    print("  ".join(c.rjust(w) for (c, _), w in zip(cols, widths, strict=True)))
    for t in table:
        print("  ".join(v.rjust(w) for v, w in zip(t, widths, strict=True)))


def verdict(rows: list[dict], target_ms: float | None = None, rate_key: str | None = None) -> int:
    """1 (and why, on stderr) when a p95 is over twice its target (``target_ms``, else the row's own;
    NaN: none) or a stream is absorbed at less than half its rate; 0 otherwise. Misses within 2x are
    reported but pass (noisy shared machines)."""
    bad = 0
    for r in rows:
        name = " ".join(str(r[k]) for k in ("scenario", "what", "size") if k in r)
        target = r["target_ms"] if target_ms is None else target_ms
        if target != target:
            continue
        if r["p95_ms"] > 2 * target:
            print(
                f"FAIL {name}: frame p95 {r['p95_ms']:.1f} ms > 2x the {target:g} ms target", file=sys.stderr
            )
            bad = 1
        elif r["p95_ms"] > target:
            print(f"miss {name}: frame p95 {r['p95_ms']:.1f} ms > {target:g} ms target", file=sys.stderr)
        if rate_key and r["steps_per_s"] < 0.5 * r[rate_key]:
            print(
                f"FAIL {name}: absorbed {r['steps_per_s']:,.0f} steps/s of {r[rate_key]:,}", file=sys.stderr
            )
            bad = 1
        if r.get("rss_growth_2nd_half_mb", 0.0) > RSS_GROWTH_MB:
            print(
                f"FAIL {name}: RSS grew {r['rss_growth_2nd_half_mb']:.0f} MB in the second half",
                file=sys.stderr,
            )
            bad = 1
    return bad


def child(args: list[str]) -> dict:
    """Run one configuration in a fresh process (clean RSS, no leftovers of the previous app)."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"bench/ui.py {' '.join(args)} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=["all", *SCENARIOS], default="all")
    ap.add_argument(
        "--seconds", type=float, default=20.0, help="per configuration (--draw-1m: live frames, at most 10)"
    )
    ap.add_argument("--rate", type=int, help="steps/s (overrides the scenario)")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--probe-every", type=int)
    ap.add_argument("--size", action="append", help="WxH; repeatable (default 200x60 and 80x24)")
    ap.add_argument("--draw-1m", action="store_true", help="time drawing a long history instead of streaming")
    ap.add_argument("--steps", type=int, default=1_000_000, help="history length for --draw-1m")
    ap.add_argument("--frames", type=int, default=60, help="frames timed per view for --draw-1m")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # run one config here, print JSON
    a = ap.parse_args(argv)
    sizes = a.size or ["200x60", "80x24"]
    names = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
    given = {k: getattr(a, k) for k in ("rate", "layers", "probe_every") if getattr(a, k) is not None}
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in given.items()]
    if a.one:
        size = tuple(int(v) for v in sizes[0].split("x"))
        if a.draw_1m:
            out = run_draw(
                a.steps, size, a.frames, a.layers or 200, a.probe_every or 10, min(a.seconds, 10.0)
            )
            print(json.dumps(asyncio.run(out)))
        else:
            sc = {**SCENARIOS[names[0]], **given}
            r = bench(sc["rate"], sc["layers"], sc["probe_every"], a.seconds, size)
            print(json.dumps({**r, "scenario": names[0]}))
        return 0
    rows = []
    if a.draw_1m:
        for size in sizes:
            print(f"drawing a {a.steps:,}-step history at {size} ...", file=sys.stderr, flush=True)
            rows += draw_rows(
                child(
                    [
                        "--one",
                        "--draw-1m",
                        "--size",
                        size,
                        "--steps",
                        str(a.steps),
                        "--frames",
                        str(a.frames),
                        "--seconds",
                        str(a.seconds),
                        *extra,
                    ]
                )
            )
        print_table(
            rows,
            [
                ("what", "{}"),
                ("size", "{}"),
                ("steps", "{:,}"),
                ("rows", "{:,}"),
                ("frames", "{}"),
                ("builds", "{}"),
                ("p50_ms", "{:.1f}"),
                ("p95_ms", "{:.1f}"),
                ("max_ms", "{:.1f}"),
                ("target_ms", "{:g}"),
            ],
        )
        return verdict(rows)
    for name in names:
        for size in sizes:
            print(f"running {name} at {size} for {a.seconds:.0f} s ...", file=sys.stderr, flush=True)
            rows.append(
                child(["--one", "--scenario", name, "--seconds", str(a.seconds), "--size", size, *extra])
            )
    print_table(
        rows,
        [
            ("scenario", "{}"),
            ("size", "{}"),
            ("rate", "{:,}"),
            ("layers", "{}"),
            ("steps_per_s", "{:,.0f}"),
            ("dropped", "{:,}"),
            ("cpu_pct", "{:.1f}"),
            ("frames_per_s", "{:.1f}"),
            ("p50_ms", "{:.1f}"),
            ("p95_ms", "{:.1f}"),
            ("max_ms", "{:.1f}"),
            ("encode_p95_ms", "{:.1f}"),
            ("chart_builds", "{}"),
            ("pace", "{:.1f}"),
            ("rss0_mb", "{:.0f}"),
            ("rss_growth_mb", "{:+.1f}"),
            ("rss_growth_2nd_half_mb", "{:+.1f}"),
        ],
    )
    return verdict(rows, STREAM_TARGET_MS, "rate")


if __name__ == "__main__":
    sys.exit(main())
