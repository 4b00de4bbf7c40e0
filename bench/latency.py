"""Step-to-screen latency and start-up time of the live dashboard.

    python bench/latency.py                 # latency through the real queue path, 15 s
    python bench/latency.py --startup       # also: `tuitrain watch` in tmux until the first step is drawn

Latency: a producer process emits step batches through the real ``QueueSink`` every 0.1 s (as the
engine's monitor does, ``monitor.emit_seconds``), each stamped with its wall-clock emission time. The
real app runs headless on the real ``LiveSource``; the header's ``render`` (what the compositor
paints) is timed against the stamp of the newest step it shows. "newest" is that difference; a step
can also wait inside the engine for up to ``emit_seconds`` before its batch leaves, so "oldest" adds
that. Target (issue: dashboard): about 0.25 s from a step to the screen.

Start-up: time from launching ``tuitrain watch presets/toy2d_mlp.toml`` in a tmux pane to the first
frame that shows a step (torch import, data, model, first steps, queue, draw).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from fake_events import make_batch, mlp_layers, run_started  # noqa: E402

from tuitrain.events import StatusChanged  # noqa: E402

EMIT = 0.1


def producer(q, seconds: float, steps_per_emit: int, n_layers: int) -> None:
    from tuitrain.train.sinks import QueueSink

    sink = QueueSink(q)
    layers = mlp_layers(n_layers)
    rng = np.random.default_rng(0)
    sink.emit(run_started(layers, epochs=1, steps_per_epoch=10**9, name="latency"))
    sink.emit(StatusChanged("running", 0))
    step = 0
    t_end = time.time() + seconds
    while time.time() < t_end:
        time.sleep(EMIT)
        b = make_batch(step, steps_per_emit, layers, rng, steps_per_epoch=10**9, probe_every=1, t=time.time())
        b.time = time.time()
        sink.emit(b)
        step += steps_per_emit
    sink.close()


async def measure(seconds: float, steps_per_emit: int, n_layers: int) -> list[float]:
    from tuitrain.ui import history as history_mod
    from tuitrain.ui.app import TuitrainApp
    from tuitrain.ui.source import LiveSource
    from tuitrain.ui.widgets import header as header_mod

    stamps: dict[int, float] = {}
    lat: list[float] = []
    shown = {"step": -1}
    orig_on_steps = history_mod.History._on_steps
    orig_render = header_mod.RunHeader.render

    def on_steps(self, ev):  # record when each batch's newest step was emitted
        if len(ev):
            stamps[int(ev.steps[-1])] = ev.time
        return orig_on_steps(self, ev)

    def render(self):
        h = self._history
        if h is not None and h.steps_done - 1 != shown["step"] and (h.steps_done - 1) in stamps:
            shown["step"] = h.steps_done - 1
            lat.append(time.time() - stamps[shown["step"]])
        return orig_render(self)

    history_mod.History._on_steps = on_steps
    header_mod.RunHeader.render = render
    ctx = mp.get_context("spawn")
    q = ctx.Queue(maxsize=64)
    proc = ctx.Process(target=producer, args=(q, seconds, steps_per_emit, n_layers))
    proc.start()
    app = TuitrainApp(LiveSource(q, batch_seconds=0.05), cpu_budget=None)  # as `tuitrain watch`
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause(seconds + 3)
    proc.join(timeout=10)
    return lat[5:]  # skip start-up


def startup() -> float | None:
    if shutil.which("tmux") is None:
        return None
    name = f"lat-{uuid.uuid4().hex[:6]}"
    out = Path("/tmp") / f"{name}.h5"
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    exe = Path(sys.executable).parent / "tuitrain"
    t0 = time.time()
    subprocess.run(
        [
            "tmux",
            "-L",
            name,
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "36",
            "-c",
            str(ROOT),
            f"exec {exe} watch presets/toy2d_mlp.toml --epochs 50 --out {out}",
        ],
        check=True,
        env=env,
    )
    took = None
    try:
        while time.time() - t0 < 120:
            screen = subprocess.run(
                ["tmux", "-L", name, "capture-pane", "-p", "-t", name], capture_output=True, text=True
            ).stdout
            if "RUNNING" in screen and "step " in screen and " step 0/" not in screen:
                took = time.time() - t0
                break
            time.sleep(0.05)
    finally:
        subprocess.run(["tmux", "-L", name, "send-keys", "-t", name, "q"], capture_output=True)
        time.sleep(0.5)
        subprocess.run(["tmux", "-L", name, "send-keys", "-t", name, "s"], capture_output=True)
        time.sleep(3)
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--steps-per-emit", type=int, default=100, help="steps per 0.1 s batch (1000 steps/s)")
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--startup", action="store_true")
    args = ap.parse_args()
    lat = np.array(asyncio.run(measure(args.seconds, args.steps_per_emit, args.layers)))
    if lat.size == 0:
        print("no frames measured")
        sys.exit(1)
    p50, p95, mx = np.percentile(lat, 50), np.percentile(lat, 95), lat.max()
    print(
        f"step-to-screen latency over {lat.size} frames, {args.steps_per_emit * 10} steps/s, {args.layers} layers"
    )
    print(f"  newest step: p50 {p50 * 1000:.0f} ms  p95 {p95 * 1000:.0f} ms  max {mx * 1000:.0f} ms")
    print(
        f"  oldest step (+{EMIT * 1000:.0f} ms inside the engine): p50 {(p50 + EMIT) * 1000:.0f} ms  "
        f"p95 {(p95 + EMIT) * 1000:.0f} ms"
    )
    if args.startup:
        took = startup()
        print(
            f"start-up: `tuitrain watch` to first drawn step: {took:.1f} s"
            if took
            else "start-up: not measured"
        )
    if p95 + EMIT > 0.5:
        sys.exit(1)


if __name__ == "__main__":
    main()
