"""Benchmark: what one pass of the live diagnosis (``tuitrain.diagnosis.live``) costs, by run length
(a script, not a test; issue 11).

A synthetic run of ``--layers`` (50) weight tensors with the gradient probe at every step and the
activation probe at every ``--act-every`` (10) steps over ``--layers`` modules, fed as the engine
feeds it (StepBatches of 100 steps) to a :class:`~tuitrain.diagnosis.live.Diagnosed` that never passes
on its own. Then, at 1k, 10k and 100k steps, the parts of one pass, each the median of ``--repeat``:

    data    building the RunData of the run so far (views of the buffers, the epochs table)
    rules   every rule of diagnosis.RULES over it (diagnose), and the slowest rule by itself
    diff    matching the pass's findings against the ones sent (Findings.diff)
    pass    all three: what a pass costs the training loop

and ``feed``: the cost of taking one step's rows into the run so far (per step, microseconds). The
gradient probe past 20,000 rows is thinned (diagnosis.data.MAX_PROBE_ROWS), so a pass's cost grows
with the scalar columns (the loss rules) beyond that, not with the probe rows.

What it means for a run: a pass waits at least ``max(monitor.diagnose_seconds, 100 x its cost)``,
so the loop spends at most ~1% in the rules; the column ``every`` is how often a pass then runs.

    python bench/diagnosis.py                 # 1k, 10k, 100k steps, 5 repeats
    python bench/diagnosis.py --quick         # 1k and 10k, 1 repeat: does it run
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuitrain.diagnosis import RULES, Skipped, diagnose  # noqa: E402
from tuitrain.diagnosis.live import COST_FACTOR, Diagnosed, Findings  # noqa: E402
from tuitrain.events import (  # noqa: E402
    ACT,
    ACT_PROBE,
    GRAD_PROBE,
    STEP_SCALARS,
    EpochEnd,
    LayerInfo,
    ModuleInfo,
    ProbeBlock,
    RunStarted,
    StepBatch,
)


class Null:
    def emit(self, event: object) -> None:
        pass

    def close(self) -> None:
        pass


def started(layers: int, act_every: int) -> RunStarted:
    return RunStarted(
        "bench",
        "",
        "synthetic",
        layers=[
            LayerInfo(f"l{i}.weight", (64, 64), 4096, "weight", f"l{i}", "Linear") for i in range(layers)
        ],
        modules=[ModuleInfo(f"l{i}", "Linear", "leaf") for i in range(layers)],
        num_classes=10,
        probes=[GRAD_PROBE, ACT_PROBE.__class__(ACT, "module", ACT_PROBE.quantities, act_every)],
    )


def batch(rng: np.random.Generator, start: int, n: int, layers: int, act_every: int) -> StepBatch:
    """``n`` steps of a healthy-looking run: loss falling with noise, mean |grad| ~1e-3, update ratio
    ~1e-3, activation std ~1, few dead units."""
    steps = np.arange(start, start + n, dtype=np.int64)
    scalars = np.full((n, len(STEP_SCALARS)), np.nan)
    scalars[:, 0] = 2.3 * np.exp(-steps / 20_000) + 0.2 + 0.05 * rng.standard_normal(n)
    scalars[:, 1] = 0.9 - 0.8 * np.exp(-steps / 20_000)
    scalars[:, 2] = 0.1
    g = np.empty((n, 4, layers), np.float32)
    g[:, 0] = rng.lognormal(0, 0.3, (n, layers))
    g[:, 1] = 1e-3 * rng.lognormal(0, 0.3, (n, layers))
    g[:, 2] = 10.0
    g[:, 3] = 1e-3 * rng.lognormal(0, 0.3, (n, layers))
    act_steps = steps[steps % act_every == 0]
    a = np.empty((len(act_steps), 5, layers), np.float32)
    a[:, 0] = 0.1
    a[:, 1] = rng.lognormal(0, 0.1, (len(act_steps), layers))
    a[:, 2] = 0.4
    a[:, 3] = np.nan
    a[:, 4] = 0.01
    b = StepBatch.with_grad(steps, np.zeros(n, np.int32), scalars, steps, g)
    b.blocks[ACT] = ProbeBlock(ACT, act_steps, a)
    return b


def median_seconds(fn, repeat: int) -> float:  # noqa: ANN001
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="1000,10000,100000", help="run lengths, comma separated")
    ap.add_argument("--layers", type=int, default=50)
    ap.add_argument("--act-every", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1k and 10k steps, one repeat: does it run")
    args = ap.parse_args(argv)
    try:
        sizes = sorted(int(s) for s in args.steps.split(","))
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 100 or args.layers < 1 or args.act_every < 1 or args.repeat < 1:
        print("--steps: comma list of integers >= 100; --layers, --act-every, --repeat >= 1", file=sys.stderr)
        return 2
    if args.quick:
        sizes, args.repeat = [s for s in sizes if s <= 10_000] or sizes[:1], 1
    rng = np.random.default_rng(args.seed)
    d = Diagnosed([Null()], window=50, seconds=float("inf"))
    d.emit(started(args.layers, args.act_every))
    print(f"{args.layers} layers and modules, grad probe every step, act probe every {args.act_every}")
    print(
        f"{'steps':>7} {'feed/step':>10} {'data':>8} {'rules':>8} {'diff':>7} {'pass':>8}"
        f"  {'every':>7}  slowest rule"
    )
    done, epoch = 0, 0
    for size in sizes:
        fed = 0.0
        while done < size:
            n = min(100, size - done)
            b = batch(rng, done, n, args.layers, args.act_every)
            t1 = time.perf_counter()
            d.emit(b)
            fed += time.perf_counter() - t1
            done += n
            if done % 1000 == 0:  # an epoch every 1000 steps (passes suppressed: seconds = inf)
                d.run.add_epoch(EpochEnd(epoch, done, 1.0, 0.6, 1.1, 0.55, 0.1, 1.0))  # type: ignore[union-attr]
                epoch += 1
        assert d.run is not None
        t_data, t_rules, t_diff, slow, t_slow = measure(d, done, args.repeat)
        total = t_data + t_rules + t_diff
        print(
            f"{size:>7} {1e6 * fed / size:>8.1f}us {1e3 * t_data:>6.1f}ms {1e3 * t_rules:>6.1f}ms"
            f" {1e3 * t_diff:>5.2f}ms {1e3 * total:>6.1f}ms  {max(2.0, COST_FACTOR * total):>6.1f}s"
            f"  {slow} {1e3 * t_slow:.1f} ms",
            flush=True,
        )
    return 0


def measure(d: Diagnosed, step: int, repeat: int) -> tuple[float, float, float, str, float]:
    """Seconds of the data, rules and diff parts of one pass over ``d``'s run so far; the slowest rule."""
    run = d.run
    assert run is not None
    data = run.data()
    t_data = median_seconds(run.data, repeat)
    t_rules = median_seconds(lambda: diagnose(data), repeat)
    found = diagnose(data).findings
    t_diff = median_seconds(lambda: Findings().diff(found, step), repeat)
    per_rule = {name: median_seconds(lambda r=rule: _quiet(r, data), 1) for name, rule in RULES.items()}
    slow = max(per_rule, key=per_rule.__getitem__)
    return t_data, t_rules, t_diff, slow, per_rule[slow]


def _quiet(rule, data) -> None:  # noqa: ANN001
    with warnings.catch_warnings(), contextlib.suppress(Skipped):
        warnings.simplefilter("ignore", RuntimeWarning)
        rule(data)


if __name__ == "__main__":
    sys.exit(main())
