"""Benchmark: ``train.threads`` side by side in one run, with real ``tuitrain run --no-ui`` processes.

For the tiny toy-2D MLP (``toy2d_mlp``, 960 steps) and VGG38 (16 x 16 synthetic images, 60 steps,
about 10-20 s of training on 2 cores): each alone with ``train.threads`` = 1, 2, ``auto`` and torch's
default (the count ``torch.get_num_threads()`` gives with ``OMP_NUM_THREADS`` unset), then two runs
of the same model at once, with ``auto`` and with torch's default. Alone runs rotate their order each
round (``--rounds``), and each figure is the median over rounds.

Speed is training steps/s from the run file: steps over the sum of their ``step_time``, the time
between optimizer steps, which leaves out start-up (imports, data, model) and evaluation but includes
everything ``auto`` does while it measures. The wall time of each process is printed beside it.

Targets (issue 9, section 7), checked at the end, exit 1 if one is missed:
- alone, ``auto`` is within 5% of the best fixed setting (1 or 2 threads), for each model;
- two concurrent ``auto`` runs each keep at least 80% of their alone (``auto``) speed.
A third ratio is printed for VGG38, against its alone speed with one thread: two runs on 2 cores can
each have one core at most, so a model that gains from a second core alone cannot keep 80% of that.

    python bench/threads.py [--quick] [--rounds 2] [--models tiny,vgg38]

Run it on a quiet machine: others' load counts as busy cores, for ``auto`` (by design) and for the
fixed settings (as oversubscription). ``--quick`` is a smoke run (fewer steps, 8 x 8 images, one
round): it shows the bench works, its numbers mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SYNTH = ["--data", "synthetic", "--set", "data.val_size=200", "--set", "data.test_size=200"]
CASES = {  # name -> (preset, options, quick options)
    "tiny": (
        "toy2d_mlp",
        ["--set", "train.epochs=60", "--max-steps", "960"],
        ["--set", "train.epochs=60", "--max-steps", "64"],
    ),
    "vgg38": (
        "vgg38",
        [*SYNTH, "--set", "data.image_size=16", "--set", "data.train_size=3000", "--max-steps", "60"],
        [*SYNTH, "--set", "data.image_size=8", "--set", "data.train_size=600", "--max-steps", "4"],
    ),
}
ALONE_TARGET, TOGETHER_TARGET = 0.95, 0.80


@dataclass
class Result:
    steps_per_s: float
    wall_s: float
    start_threads: str
    notes: list[str]  # auto's "threads ..." events


def torch_default_threads() -> int:
    """What torch uses when nobody sets anything: asked of a fresh interpreter without OMP_NUM_THREADS."""
    code = "import torch; print(torch.get_num_threads())"
    return int(
        subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True).stdout
    )


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["COLUMNS"] = "120"
    return env


def start(case: str, threads: str, out: Path, quick: bool) -> tuple[subprocess.Popen, float]:
    preset, opts, quick_opts = CASES[case]
    setting = f'"{threads}"' if threads == "auto" else threads
    cmd = [sys.executable, "-m", "tuitrain", "run", preset, "--no-ui", *(quick_opts if quick else opts)]
    cmd += ["--set", f"train.threads={setting}", "--set", "train.checkpoint=false", "--out", str(out)]
    proc = subprocess.Popen(
        cmd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    return proc, time.perf_counter()


def finish(proc: subprocess.Popen, t0: float, out: Path) -> Result:
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(proc.args)} exited {proc.returncode}:\n{err[-2000:]}")
    from tuitrain.runfile.reader import open_run

    with open_run(out) as rf:
        st = rf.scalar("step_time")
        st = st[np.isfinite(st)]
        notes = [e["message"] for e in rf.events() if e.get("kind") == "threads"]
        start_threads = rf.versions.get("torch_threads", "?")
    out.unlink()
    return Result(len(st) / float(st.sum()), wall, start_threads, notes)


def alone(case: str, threads: str, tmp: Path, quick: bool) -> Result:
    out = tmp / f"{case}-{threads}.h5"
    return finish(*start(case, threads, out, quick), out)


def together(case: str, threads: str, tmp: Path, quick: bool) -> list[Result]:
    outs = [tmp / f"{case}-{threads}-{i}.h5" for i in range(2)]
    started = [start(case, threads, o, quick) for o in outs]
    return [finish(p, t0, o) for (p, t0), o in zip(started, outs, strict=True)]


def final_threads(r: Result) -> str:
    """The count auto ended on, from its last note ("threads 2 -> 1: ..." or "threads 2: ...")."""
    if not r.notes:
        return r.start_threads
    head = r.notes[-1].split(":", 1)[0].split()
    return head[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer steps, one round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default="tiny,vgg38")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    default = torch_default_threads()
    settings = ["1", "2", "auto"] + ([] if default in (1, 2) else [str(default)])
    print(
        f"{os.cpu_count()} CPUs, torch's default {default} threads, load average {os.getloadavg()[0]:.2f} "
        f"at the start{' (quick: numbers mean little)' if args.quick else ''}",
        flush=True,
    )
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tuitrain-bench-threads-") as tmpdir:
        tmp = Path(tmpdir)
        for case in args.models.split(","):
            runs: dict[str, list[Result]] = {s: [] for s in settings}
            pairs: dict[str, list[list[Result]]] = {"auto": [], str(default): []}
            for r in range(rounds):
                order = settings[r % len(settings) :] + settings[: r % len(settings)]
                for s in order:
                    runs[s].append(alone(case, s, tmp, args.quick))
                for s in pairs:
                    pairs[s].append(together(case, s, tmp, args.quick))
            sps = {s: statistics.median(x.steps_per_s for x in rs) for s, rs in runs.items()}
            print(f"\n{case} ({CASES[case][0]}), alone, median of {rounds} round(s):")
            print(f"  {'train.threads':<22} {'steps/s':>9} {'wall s':>7}  threads (start -> end)")
            for s, rs in runs.items():
                label = s + (" (= torch default)" if s == str(default) else "")
                wall = statistics.median(x.wall_s for x in rs)
                print(
                    f"  {label:<22} {sps[s]:9.2f} {wall:7.1f}  {rs[-1].start_threads} -> {final_threads(rs[-1])}"
                )
            best_fixed = max(sps["1"], sps["2"])
            ratio = sps["auto"] / best_fixed
            ok = ratio >= ALONE_TARGET
            print(f"  auto / best fixed = {ratio:.3f} (target >= {ALONE_TARGET}) {'ok' if ok else 'MISSED'}")
            if not ok:
                misses.append(f"{case}: alone auto / best fixed {ratio:.3f}")
            if runs["auto"][-1].notes:
                print(f"  auto said: {runs['auto'][-1].notes[0]}")
            print(f"{case}, two runs at once (each run's steps/s over its alone steps/s, same setting):")
            for s, rounds_of_two in pairs.items():
                each = [x for two in rounds_of_two for x in two]
                label = "auto" if s == "auto" else f"{s} (torch default)"
                base = sps[s] if s in sps else sps["2"]
                ratios = [x.steps_per_s / base for x in each]
                walls = ", ".join(f"{x.wall_s:.1f}" for x in each)
                line = f"  {label:<22} ratios {', '.join(f'{q:.2f}' for q in ratios)}; wall s {walls}"
                if s == "auto":
                    ok = min(ratios) >= TOGETHER_TARGET
                    line += f" (target each >= {TOGETHER_TARGET}) {'ok' if ok else 'MISSED'}"
                    if not ok:
                        misses.append(f"{case}: two auto runs, worst {min(ratios):.2f} of alone")
                    vs1 = [x.steps_per_s / sps["1"] for x in each]
                    line += f"; vs alone on 1 thread {', '.join(f'{q:.2f}' for q in vs1)}"
                    line += f"; threads {', '.join(final_threads(x) for x in each)}"
                print(line, flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    summary = {"misses": misses}
    print(json.dumps(summary))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
