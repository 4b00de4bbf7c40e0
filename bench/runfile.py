"""Benchmark the run-file writer and reader (a script, not a test).

Writes ``--steps`` training steps x ``--layers`` probed layers through :class:`RunFileWriter` the way a
fast training loop would (StepBatches of ``--batch`` steps, a flush every ``--flush-seconds`` of
simulated time at ``--steps-per-second``), then the same events as a write-once baseline (no flush
until the end), and prints:

* writer cost: microseconds per step, amortised over emits, flushes and close;
* file size per million steps, and the bloat ratio against the baseline and the raw payload;
* reader cost: open time, the last 1000 rows, one full column, one probe row, a strided probe overview.

    python bench/runfile.py                  # 1,000,000 steps x 200 layers, probes every step
    python bench/runfile.py --steps 100000   # quicker
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tuitrain.events import PROBE_NAMES, STEP_SCALARS, LayerInfo, RunFinished, RunStarted, StepBatch
from tuitrain.runfile import RunFileWriter, open_run


def started(n_layers: int, steps: int) -> RunStarted:
    layers = [
        LayerInfo(f"layer{i}.weight", (64, 64), 4096, "weight", f"layer{i}", "Linear")
        for i in range(n_layers)
    ]
    return RunStarted(
        run_name="bench",
        config_toml="",
        model_name="bench",
        dataset="synthetic",
        device="cpu",
        params=4096 * n_layers,
        layers=layers,
        flops=0,
        module_summary=[],
        epochs=1,
        steps_per_epoch=steps,
        batch_size=100,
        num_classes=10,
        out_path="",
    )


def payloads(
    batch: int, n_layers: int, probe_every: int, pool: int = 8
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few distinct (scalars, probes) blocks, reused so that generating data does not dominate."""
    rng = np.random.default_rng(0)
    m = len(range(0, batch, probe_every))
    base = np.exp(rng.normal(0, 2, n_layers)).astype(np.float32)
    return [
        (
            rng.random((batch, len(STEP_SCALARS))),
            (base * np.exp(0.3 * rng.standard_normal((m, len(PROBE_NAMES), n_layers)))).astype(np.float32),
        )
        for _ in range(pool)
    ]


def write(path: Path, args: argparse.Namespace, flush_seconds: float) -> tuple[float, int]:
    """Emit the whole run; return (seconds spent inside the writer, number of flush periods)."""
    now = [0.0]
    w = RunFileWriter(
        path, flush_seconds=flush_seconds, background=False, clock=lambda: now[0], overwrite=True
    )
    blocks = payloads(args.batch, args.layers, args.probe_every)
    spent = 0.0
    t = time.perf_counter()
    w.emit(started(args.layers, args.steps))
    spent += time.perf_counter() - t
    for i, start in enumerate(range(0, args.steps, args.batch)):
        n = min(args.batch, args.steps - start)
        scalars, probes = blocks[i % len(blocks)]
        steps = np.arange(start, start + n, dtype=np.int64)
        probe_steps = steps[steps % args.probe_every == 0]
        b = StepBatch.with_grad(
            steps, np.zeros(n, np.int32), scalars[:n], probe_steps, probes[: len(probe_steps)]
        )
        now[0] = (start + n) / args.steps_per_second
        t = time.perf_counter()
        w.emit(b)
        spent += time.perf_counter() - t
    t = time.perf_counter()
    w.emit(RunFinished("completed", args.steps))
    w.close()
    spent += time.perf_counter() - t
    return spent, math.ceil(args.steps / args.steps_per_second / flush_seconds) if math.isfinite(
        flush_seconds
    ) else 1


def timed(fn: Callable[[], object]) -> str:
    """First call (cold HDF5 chunk cache) and best of three more, in milliseconds."""
    times = []
    for _ in range(4):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return f"{times[0] * 1e3:9.2f} ms first, {min(times[1:]) * 1e3:8.2f} ms again"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--probe-every", type=int, default=1, help="probe rows every N steps (monitor.every)")
    ap.add_argument("--batch", type=int, default=100, help="steps per StepBatch (100 ms at 1000 steps/s)")
    ap.add_argument("--steps-per-second", type=float, default=1000.0, help="simulated training speed")
    ap.add_argument("--flush-seconds", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the files")
    args = ap.parse_args()

    out = Path(args.dir or tempfile.mkdtemp(prefix="tuitrain-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    live, once = out / "bench-swmr.h5", out / "bench-once.h5"
    try:
        print(
            f"{args.steps:,} steps x {args.layers} layers, probes every {args.probe_every} step(s), "
            f"batches of {args.batch}, flush every {args.flush_seconds:g} s at {args.steps_per_second:g} steps/s"
        )
        spent, flushes = write(live, args, args.flush_seconds)
        spent_once, _ = write(once, args, math.inf)
        size, size_once = live.stat().st_size, once.stat().st_size
        m = len(range(0, args.steps, args.probe_every))
        payload = args.steps * (8 + 4 + 4 * len(STEP_SCALARS)) + m * (8 + 4 * len(PROBE_NAMES) * args.layers)
        mio = 1e6 / args.steps
        print(
            f"writer:  {spent / args.steps * 1e6:.2f} us/step amortised ({flushes} flushes); "
            f"write-once baseline {spent_once / args.steps * 1e6:.2f} us/step"
        )
        print(
            f"size:    {size * mio / 2**20:,.1f} MiB per million steps; bloat vs write-once "
            f"{size / size_once:.4f}x; vs raw payload {size / payload:.4f}x"
        )

        t = time.perf_counter()
        rf = open_run(live)
        t_open = time.perf_counter() - t
        with rf:
            n, rows, name = rf.n_steps, rf.n_probe_rows, PROBE_NAMES[0]
            print(f"reader:  open {t_open * 1e3:.2f} ms ({n:,} steps, {rows:,} probe rows)")
            stride = max(1, rows // 1000)
            reads: list[tuple[str, Callable[[], object]]] = [
                ("last 1000 rows, every step column", lambda: rf.steps(-1000)),
                (f"one full step column ({n:,} rows)", lambda: rf.scalar("loss")),
                ("probe_at_step(last): all probes, all layers", lambda: rf.probe_at_step(n - 1)),
                (f"last 1000 rows of {name}", lambda: rf.probe(name, slice(-1000, None))),
                (f"1000-row strided overview of {name}", lambda: rf.probe(name, slice(0, None, stride))),
                ("read_batches(last 1000 steps)", lambda: rf.read_batches(n - 1000, n)),
            ]
            for label, fn in reads:
                print(f"  {label:<46} {timed(fn)}")
            t = time.perf_counter()
            rf.probe(name, layers=slice(0, 1))
            print(
                f"  {'one layer over every probe row (all chunks)':<46} {(time.perf_counter() - t) * 1e3:9.2f} ms"
            )
    finally:
        if args.keep:
            print(f"files kept in {out}")
        else:
            for p in (live, once):
                p.unlink(missing_ok=True)
            if args.dir is None:
                shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
