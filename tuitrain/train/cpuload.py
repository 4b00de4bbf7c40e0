"""What the CPUs are doing, for :mod:`tuitrain.train.threads`: how many this process may use, how many
are busy outside tuitrain's training runs, and which other runs are training now and with how many
threads. No torch here: :mod:`tuitrain.launch` needs :func:`available_cpus` before deciding to train.

Runs find each other through claim files, ``<pid>.claim`` holding ``pid threads fixed start``, in a
directory private to the user (``$TMPDIR/tuitrain-<uid>/threads``, or ``$TUITRAIN_THREADS_DIR``). A
claim whose process is gone (SIGKILL leaves one behind) or whose pid now belongs to another process
(its start time differs) is removed by the next reader. If the directory cannot be made private, runs
do not coordinate; they still measure the load.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, claims still work
    fcntl = None  # type: ignore[assignment]

DIR_ENV = "TUITRAIN_THREADS_DIR"


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, lowered by a cgroup CPU quota (containers)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(n, quota) if quota else n)


def _cgroup_quota() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
        if text and text[0] != "max":
            return math.ceil(int(text[0]) / int(text[1]))
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return math.ceil(q / p) if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


def env_cap() -> int | None:
    """``OMP_NUM_THREADS`` as a positive integer, or None when unset or not one."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n >= 1 else None


def _proc_stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces): [0] is the state."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _start_time(pid: int | str) -> str:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else "-"  # field 22 of stat: start time in ticks


@dataclass(frozen=True)
class Peer:
    """Another training process: how many threads it uses, and whether it may still take more."""

    pid: int
    threads: int
    fixed: bool  # an explicit train.threads, or auto that measured one thread to be best


class Registry:
    """This user's training runs and their thread counts (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        default = Path(tempfile.gettempdir()) / f"tuitrain-{os.getuid()}" / "threads"
        self.root = Path(root or os.environ.get(DIR_ENV) or default)
        self.pid = os.getpid()
        self.ok = self._prepare()
        self._claimed = False

    def _prepare(self) -> bool:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(self.root)
        except OSError:
            return False
        import stat

        return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock: looking at the claims and adding ours is one step."""
        if not self.ok or fcntl is None:
            yield
            return
        try:
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def claim(self, threads: int, fixed: bool) -> None:
        if not self.ok:
            return
        tmp = self.root / f"{self.pid}.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{self.pid} {threads} {int(fixed)} {_start_time(self.pid)}\n")
            os.replace(tmp, self.root / f"{self.pid}.claim")
        except OSError:
            return
        if not self._claimed:
            self._claimed = True
            atexit.register(self.release)

    def release(self) -> None:
        if self._claimed:
            self._claimed = False
            with contextlib.suppress(OSError):
                (self.root / f"{self.pid}.claim").unlink()

    def peers(self) -> list[Peer]:
        """The other live runs' claims; stale ones are removed."""
        if not self.ok:
            return []
        out = []
        try:
            files = list(self.root.glob("*.claim"))
        except OSError:
            return []
        for path in files:
            try:
                pid_s, threads_s, fixed_s, start = path.read_text().split()
                pid, threads = int(pid_s), int(threads_s)
            except (OSError, ValueError):
                continue  # being replaced right now, or not ours to judge
            if pid == self.pid:
                continue
            if not _alive(pid, start):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            out.append(Peer(pid, max(1, threads), fixed_s == "1"))
        return out

    def peer_pids(self) -> list[int]:
        return [p.pid for p in self.peers()]


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc (macOS): the signal test is all there is
    return fields[0] != "Z" and (start == "-" or _start_time(pid) == start)


class CpuSampler:
    """Cores busy outside the given processes (tuitrain's runs) and this one, between two calls of
    :meth:`sample`, from the CPU counters of the CPUs this process may use (Linux: ``/proc/stat``;
    elsewhere the 1-minute load average less the threads claimed)."""

    MIN_TICKS = 5  # per CPU: a shorter window (50 ms at 100 Hz) says too little

    def __init__(self) -> None:
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except (AttributeError, OSError):  # pragma: no cover
            self.cpus = set()
        self._last: tuple[int, int, dict[int, int]] | None = None

    def _read(self, pids: list[int]) -> tuple[int, int, dict[int, int]] | None:
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        total = busy = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name in self.cpus:
                v = [int(x) for x in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(v)
                busy += sum(v) - v[3] - v[4]
        ticks = {}
        for pid in {*pids, os.getpid()}:
            f = _proc_stat(pid)
            if f and len(f) > 12:
                ticks[pid] = int(f[11]) + int(f[12])  # utime + stime, all threads
        return total, busy, ticks

    def sample(self, pids: list[int], claimed_threads: int = 0) -> float | None:
        """Busy cores outside ``pids`` and this process since the previous call; None for the first
        call or too short a window (the previous point is then kept)."""
        now = self._read(pids)
        if now is None or not self.cpus:
            try:
                return max(0.0, os.getloadavg()[0] - claimed_threads)
            except OSError:  # pragma: no cover
                return 0.0
        if self._last is None:
            self._last = now
            return None
        total, busy, ticks = now
        t0, b0, k0 = self._last
        if total - t0 < self.MIN_TICKS * len(self.cpus):
            return None
        self._last = now
        per_cpu = (total - t0) / len(self.cpus)  # ticks of wall time in the window
        ours = sum(ticks[p] - k0[p] for p in ticks if p in k0)
        return max(0.0, (busy - b0 - ours) / per_cpu)
