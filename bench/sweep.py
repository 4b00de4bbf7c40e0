"""Benchmark: ``tuitrain sweep --parallel auto`` against running the same variants one after another
(``--parallel 1``), in one run of this script (a script, not a test; issue 13's target).

Each case is one real ``tuitrain sweep ... --no-ui`` process per setting, timed on the wall clock from
start to exit, every variant a real ``tuitrain run`` child as the sweep always runs them. The two
settings alternate (auto first in odd rounds, one-by-one first in even ones) so that a drift in the
machine's load hurts both alike; the ratio is the median over rounds of one-by-one / auto.

Cases:
  toy2d  4 toy2d_mlp variants (an lr grid), 2 epochs of 2000 points each: the issue's target, auto
         must finish >= 1.6x sooner.
  vgg38  2 vgg38 variants on small synthetic images (16 x 16, 60 steps): a model that gains from a
         second core alone; auto must never be slower (ratio >= 1.0 within noise).

The machine may be shared (other sessions' tests); the 1-minute load average is printed before and
after each case. Printed, never the exit status: the script measures, the reader judges.

    python bench/sweep.py                  # both cases, 1 round
    python bench/sweep.py --rounds 2 --cases toy2d
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNTH = ["--data", "synthetic", "--set", "data.val_size=200", "--set", "data.test_size=200"]
CASES: dict[str, list[str]] = {
    "toy2d": [
        "toy2d_mlp",
        "--grid",
        "optim.lr=1e-1,1e-2,1e-3,1e-4",
        "--epochs",
        "2",
        "--set",
        "data.train_size=2000",
    ],
    "vgg38": [
        "vgg38",
        "--grid",
        "optim.lr=1e-3,1e-4",
        *SYNTH,
        "--set",
        "data.image_size=16",
        "--set",
        "data.train_size=3000",
        "--max-steps",
        "60",
    ],
}
TARGET = {"toy2d": 1.6, "vgg38": 1.0}


def load() -> float:
    return os.getloadavg()[0]


def sweep(case: str, parallel: str, out: Path) -> float:
    """One ``tuitrain sweep`` of ``case`` with ``--parallel parallel``; its wall time in seconds."""
    cmd = [sys.executable, "-m", "tuitrain", "sweep", *CASES[case], "--no-ui", "--parallel", parallel]
    cmd += ["--set", "train.checkpoint=false", "--out", str(out)]
    env = dict(os.environ)
    # As a user runs it: each child's train.threads auto decides (an OMP_NUM_THREADS would cap it).
    env.pop("OMP_NUM_THREADS", None)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"sweep {case} --parallel {parallel} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    check_completed(out)
    return wall


def check_completed(out: Path) -> None:
    from tuitrain.sweep.manifest import load as load_manifest
    from tuitrain.sweep.manifest import status_of

    m = load_manifest(out)
    bad = [(v.name, status_of(v, out)) for v in m.variants if status_of(v, out) != "completed"]
    if bad:
        sys.exit(f"{out}: variants not completed: {bad}")


def run_case(case: str, rounds: int, tmp: Path) -> None:
    print(f"\n== {case}: tuitrain sweep {' '.join(CASES[case])} --no-ui", flush=True)
    la0 = load()
    walls: dict[str, list[float]] = {"auto": [], "1": []}
    ratios = []
    for r in range(rounds):
        order = ["auto", "1"] if r % 2 == 0 else ["1", "auto"]
        got = {}
        for parallel in order:
            out = tmp / f"{case}-{parallel}-{r}"
            got[parallel] = sweep(case, parallel, out)
            shutil.rmtree(out, ignore_errors=True)
            print(f"  round {r + 1}: --parallel {parallel:4s} {got[parallel]:6.1f} s", flush=True)
        for k, v in got.items():
            walls[k].append(v)
        ratios.append(got["1"] / got["auto"])
    ratio = statistics.median(ratios)
    verdict = "met" if ratio >= TARGET[case] * (0.97 if TARGET[case] == 1.0 else 1.0) else "MISSED"
    print(
        f"  {case}: one after another {statistics.median(walls['1']):.1f} s, auto "
        f"{statistics.median(walls['auto']):.1f} s: auto {ratio:.2f}x sooner "
        f"(target >= {TARGET[case]}: {verdict}); load average {la0:.2f} -> {load():.2f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="toy2d,vgg38", help="comma-separated: toy2d, vgg38")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        sys.exit(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    from tuitrain.train.cpuload import available_cpus

    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {available_cpus()} CPUs available, load average {load():.2f}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tuitrain-bench-sweep-") as tmp:
        for case in cases:
            run_case(case, args.rounds, Path(tmp))
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
