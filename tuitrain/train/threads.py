"""CPU threads for training (``train.threads``): how many threads torch uses, chosen so that runs side by
side on one machine do not starve each other.

Why: on a 2-core machine two tiny-MLP runs with torch's default two threads each took 4.9x as long as
one run alone (OpenMP threads spin waiting for a core the other run holds), and the tiny MLP is faster
with one thread than with two even alone. ``train.threads = N`` fixes the count; ``"auto"`` (the
default) decides by measurement while the run trains:

1. *What is free* (:func:`fair_share`): the CPUs this process may run on (affinity, cgroup quota), less
   the cores busy outside tuitrain's runs (measured from ``/proc/stat`` between two looks; the load
   average elsewhere), less the threads of runs that fixed theirs, split evenly between the runs that
   may still grow; at least 1, at most ``OMP_NUM_THREADS`` when that was set (``--nproc-per-node``
   sets it to the CPUs per rank). Runs find each other through small claim files, one per process
   (:mod:`tuitrain.train.cpuload`).
2. *What helps* (:func:`choose`): a run starts on one thread; when more than one is free, a few real
   training steps are timed with 1 thread and with the share; more threads are kept only if they make a step at least
   ``MIN_SPEEDUP`` faster. Small models end on one thread and say so (their claim becomes fixed).
3. *Keep it so*: twice a second the share is looked at again. A run gives threads back at once when
   another run starts, and after a second look that agrees when the load comes from elsewhere; it
   takes more after two looks that agree. Changes go to the event log (at most one line per 10 s).

torch is imported by the functions that set threads, not by this module: :mod:`tuitrain.launch`
reads :func:`available_cpus` without torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable

from tuitrain.train.cpuload import CpuSampler, Peer, Registry, available_cpus, env_cap

AUTO = "auto"
MIN_SPEEDUP = 1.10  # more threads must make a step this much faster, else one thread is kept
WINDOW_SECONDS = 0.1  # timed steps per candidate: at least this long ...
WINDOW_MIN_STEPS = 2  # ... and at least this many steps
LOOK_SECONDS = 0.5  # how often the share is looked at again
NOTE_SECONDS = 10.0  # at most one line about a change of threads per this many seconds
_ENV_CAP = env_cap()  # OMP_NUM_THREADS as the user (or torchrun's launcher) set it, before we change it

__all__ = ["AUTO", "Threads", "available_cpus", "choose", "fair_share", "set_torch_threads"]


def fair_share(cpus: int, external_busy: float, peers: list[Peer], cap: int | None = None) -> int:
    """Threads this run may use now: free cores, less the fixed claims of other runs, split evenly
    between this run and the other runs that may grow. ``external_busy``: cores busy outside
    tuitrain's runs (a core counts as busy from half a core on). At least 1, at most ``cap``."""
    free = cpus - int(external_busy + 0.5)
    fixed = sum(p.threads for p in peers if p.fixed)
    growing = sum(1 for p in peers if not p.fixed)
    share = max(1, (free - fixed) // (1 + growing))
    return min(share, cap) if cap else share


def choose(step_seconds: dict[int, float], min_speedup: float = MIN_SPEEDUP) -> int:
    """The thread count to keep, from the best step time measured with each: the fewest threads
    within ``min_speedup`` of the fastest (more threads cost the other runs, so they must pay)."""
    fastest = min(step_seconds.values())
    return min(n for n, s in step_seconds.items() if s <= fastest * min_speedup)


def set_torch_threads(n: int, interop: bool = False) -> None:
    """torch's intra-op threads, and OMP/MKL for child processes (compile workers). Inter-op threads
    can be set once, before any parallel work; afterwards torch refuses, which is fine."""
    import torch

    torch.set_num_threads(n)
    if interop:  # refused once set in this process (a second run in one process) or parallel work began
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(n)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)


class Threads:
    """The thread count of one training process. :meth:`start` before any torch work, :meth:`step`
    after every optimizer step (it returns a line for the event log when the count changes),
    :meth:`close` at the end."""

    def __init__(
        self,
        setting: int | str,
        registry: Registry | None = None,
        sampler: CpuSampler | None = None,
        cpus: int | None = None,
        cap: int | None = _ENV_CAP,
        clock: Callable[[], float] = time.perf_counter,
        apply: Callable[[int], None] = set_torch_threads,
    ) -> None:
        self.setting = setting
        self.auto = setting == AUTO
        self.registry = registry if registry is not None else Registry()
        self.sampler = sampler if sampler is not None else CpuSampler()
        self.cpus = cpus or available_cpus()
        self.cap = cap
        self.clock = clock
        self.apply = apply
        self.current = 1
        self.best: int | None = None  # what calibration kept (None: not measured yet)
        self.fixed = not self.auto
        self.share = 1
        self._grow_votes = self._drop_votes = self._runs = 0
        self._last_note = -math.inf
        self._last_look = 0.0
        self._last_step: float | None = None
        # calibration: the candidates still to time, the step times of the one in progress, results
        self._plan: list[int] = []
        self._window: list[float] = []
        self._times: dict[int, float] = {}
        self._calib_peers = 0
        self._measured = 1  # the most threads timed so far

    @classmethod
    def start(cls, setting: int | str) -> Threads:
        t = cls(setting)
        t.begin()
        return t

    def begin(self) -> None:
        if not self.auto:
            self.current = int(self.setting)
            self.apply(self.current)
            self._set_interop()
            self.registry.claim(self.current, fixed=True)
            return
        self.sampler.sample(self.registry.peer_pids())  # the baseline for the first measured window
        with self.registry.locked():  # two runs started together must see each other's claim
            peers = self.registry.peers()
            self._runs = len(peers)
            self.share = fair_share(self.cpus, 0.0, peers, self.cap)  # the load is measured by step 0
            # One thread until measured: on a machine busy elsewhere two OpenMP threads made VGG38's
            # steps 10-20x slower, and a small model never wants more. Costs a big model a step or two.
            self.current = 1
            self.registry.claim(self.current, fixed=False)
        self.apply(self.current)
        self._set_interop()
        self._last_look = self.clock()

    def _set_interop(self) -> None:
        if self.apply is set_torch_threads:
            set_torch_threads(self.current, interop=True)

    def versions(self) -> dict[str, str]:
        """For the run file's ``versions``: the setting and what torch uses as training starts."""
        import torch

        return {"threads": str(self.setting), "torch_threads": str(torch.get_num_threads())}

    # -- the per-step call --------------------------------------------------------------------------
    def step(self) -> str | None:
        if self.fixed:
            return None
        now = self.clock()
        last, self._last_step = self._last_step, now
        if self._plan:
            if last is not None:
                self._window.append(now - last)
            if now - self._last_look >= LOOK_SECONDS:
                self._last_look = now
                if len(self.registry.peers()) > self._calib_peers:  # another run started: stop timing
                    self._plan = []
                    return self._look(now)
            return self._calibrate(now)
        if now - self._last_look < LOOK_SECONDS and last is not None:
            return None
        return self._look(now)

    def _set(self, n: int) -> None:
        if n != self.current:
            self.current = n
            self.apply(n)
        self.registry.claim(n, fixed=self.fixed)

    def _look(self, now: float) -> str | None:
        """Measure what is free; give back at once, grow after two looks that agree, calibrate when a
        share above what was measured becomes free."""
        self._last_look = now
        peers = self.registry.peers()
        busy = self.sampler.sample([p.pid for p in peers], sum(p.threads for p in peers) + self.current)
        if busy is None:
            return None  # too short a window to say
        self.share = fair_share(self.cpus, busy, peers, self.cap)
        old = self.current
        more_runs, self._runs = len(peers) > self._runs, len(peers)
        if self.share < self.current:
            # another run: give back at once; load from elsewhere: after a second look that agrees
            self._grow_votes = 0
            self._drop_votes += 1
            if more_runs or self._drop_votes >= 2:
                self._drop_votes = 0
                self._set(self.share)
                return self._note(f"threads {old} -> {self.share}: {self._why(peers, busy)}", now)
            return None
        self._drop_votes = 0
        if self.best is None:
            if self.share > 1:
                self._begin_calibration(len(peers))
            return None
        if self.best == self._measured < self.share:  # the most threads timed were the best: try more
            self._begin_calibration(len(peers))
            return None
        target = min(self.share, self.best)
        if target > self.current:
            self._grow_votes += 1
            if self._grow_votes >= 2:
                self._grow_votes = 0
                self._set(target)
                return self._note(f"threads {old} -> {target}: {self._why(peers, busy)}", now)
        else:
            self._grow_votes = 0
        return None

    def _note(self, text: str, now: float) -> str | None:
        """At most one line per ``NOTE_SECONDS`` for the event log: a machine whose load comes and goes
        must not fill it."""
        if now - self._last_note < NOTE_SECONDS:
            return None
        self._last_note = now
        return text

    def _why(self, peers: list[Peer], busy: float) -> str:
        runs = 1 + len(peers)
        return (
            f"{self.share} for this run of {runs} on {self.cpus} CPUs "
            f"({busy:.1f} busy outside tuitrain's runs)"
        )

    # -- calibration ----------------------------------------------------------------------------
    def _begin_calibration(self, peers: int) -> None:
        self._calib_peers = peers
        low = self.best or 1
        self._plan = [low, self.share] if low != self.share else []
        self._times = {}
        self._window = []
        if self._plan:
            self._set(self._plan[0])

    def _calibrate(self, now: float) -> str | None:
        """Time the candidate in progress for a window, then the next; decide after the last."""
        window = self._window
        span = sum(window)
        if len(window) < WINDOW_MIN_STEPS or span < WINDOW_SECONDS:
            return None
        n = self._plan.pop(0)
        self._times[n] = min(self._times.get(n, math.inf), statistics.median(window))
        self._window = []
        if self._plan:
            self._set(self._plan[0])
            return None
        self.best = choose(self._times)
        self._measured = max(self._measured, *self._times)
        if self.best == 1:
            self.fixed = True  # small model: one thread from here on, and the others may count on it
        old = self.current
        self._set(self.best)
        self._last_look = now
        measured = ", ".join(
            f"{k} thread{'s' * (k > 1)} {v * 1e3:.3g} ms" for k, v in sorted(self._times.items())
        )
        change = f"{old} -> {self.best}" if old != self.best else f"{self.best}"
        return f"threads {change}: best step time with {measured} ({self.share} of {self.cpus} CPUs free)"

    def close(self) -> None:
        self.registry.release()
