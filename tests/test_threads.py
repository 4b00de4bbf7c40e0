"""train.threads: the policy on fixed inputs, the claims that let runs see each other (real processes,
a real SIGKILL), and real training runs that really use the thread count they record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import cli_env
from tuitrain.launch import Launch
from tuitrain.train.cpuload import CpuSampler, Peer, Registry, available_cpus
from tuitrain.train.threads import Threads, choose, fair_share

TOY = ("run", "toy2d_mlp", "--no-ui", "--max-steps", "16", "--set", "train.checkpoint=false")


def test_fair_share_splits_free_cores() -> None:
    assert fair_share(2, 0.0, []) == 2  # alone on an idle 2-core machine
    assert fair_share(2, 0.0, [Peer(1, 2, fixed=False)]) == 1  # two runs that may grow: one core each
    assert fair_share(2, 0.0, [Peer(1, 1, fixed=False), Peer(2, 1, fixed=True)]) == 1  # never below 1
    assert fair_share(2, 1.0, []) == 1  # a core busy elsewhere
    assert fair_share(2, 0.4, []) == 2  # less than half a core busy is noise
    assert fair_share(8, 0.0, [Peer(1, 1, fixed=True)]) == 7  # a small model's run keeps its one thread
    assert fair_share(8, 0.0, [Peer(1, 1, fixed=True), Peer(2, 4, fixed=False)]) == 3
    assert fair_share(16, 0.0, [], cap=8) == 8  # OMP_NUM_THREADS, e.g. set by --nproc-per-node 2


def test_choose_keeps_more_threads_only_when_they_pay() -> None:
    assert choose({1: 3.39e-3, 2: 4.24e-3}) == 1  # the tiny MLP: two threads are slower
    assert choose({1: 0.60, 2: 0.35}) == 2  # a conv net: two threads 1.7x faster
    assert choose({1: 1.00, 2: 0.95}) == 1  # 5% is not worth a core another run could use
    assert choose({1: 1.0, 2: 0.6, 4: 0.58}) == 2


class FixedLoad:
    """The measured busy cores outside tuitrain, as a fixed input to the policy."""

    def __init__(self, busy: float = 0.0) -> None:
        self.busy = busy

    def sample(self, pids: list[int], claimed_threads: int = 0) -> float:
        return self.busy


def simulate(
    tmp_path: Path, cost: dict[int, float], steps: int, load: FixedLoad | None = None
) -> tuple[Threads, list[str], list[int], list[float]]:
    """Drive the policy with step times that depend on the thread count (a clock advanced by them)."""
    now = [0.0]
    applied: list[int] = []
    t = Threads(
        "auto",
        registry=Registry(tmp_path),
        sampler=load or FixedLoad(),
        cpus=2,
        cap=None,
        clock=lambda: now[0],
        apply=applied.append,
    )
    t.begin()
    now[0] += 0.5  # setup
    notes = []
    for _ in range(steps):
        now[0] += cost[t.current]
        if (note := t.step()) is not None:
            notes.append(note)
    return t, notes, applied, now


def test_auto_gives_a_tiny_model_one_thread_and_a_conv_net_both(tmp_path: Path) -> None:
    t, notes, _, _ = simulate(tmp_path / "a", {1: 3.4e-3, 2: 4.2e-3}, 300)
    assert (t.current, t.fixed) == (1, True)
    assert notes == [
        "threads 2 -> 1: best step time with 1 thread 3.4 ms, 2 threads 4.2 ms (2 of 2 CPUs free)"
    ]
    t.close()
    t, notes, applied, _ = simulate(tmp_path / "b", {1: 0.6, 2: 0.35}, 20)
    assert (t.current, t.fixed) == (2, False)
    assert applied.count(1) == 1  # one short window at one thread, then back
    assert "2 threads 350 ms" in notes[0]
    t.close()


def test_auto_gives_back_at_once_when_another_run_starts_and_takes_again_after(tmp_path: Path) -> None:
    now = [0.0]
    t = Threads(
        "auto", Registry(tmp_path), FixedLoad(), cpus=2, cap=None, clock=lambda: now[0], apply=lambda n: None
    )
    t.begin()
    for _ in range(20):  # calibrate: a conv net, keeps 2
        now[0] += 0.35 if t.current == 2 else 0.6
        t.step()
    assert t.current == 2
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        peer = Registry(tmp_path)
        peer.pid = other.pid  # claim on behalf of a real live process
        peer.claim(2, fixed=False)
        now[0] += 0.6
        note = t.step()
        assert t.current == 1 and note is not None and "threads 2 -> 1" in note
        assert t.registry.peers() == [Peer(other.pid, 2, False)]
    finally:
        other.kill()
        other.wait()
    for _ in range(3):  # the claim of a dead process is dropped; two looks that agree, then 2 again
        now[0] += 0.6
        t.step()
    assert t.current == 2
    t.close()


def test_auto_measures_more_cores_once_when_they_free_up(tmp_path: Path) -> None:
    now = [0.0]
    applied: list[int] = []
    cost = {1: 1.0, 2: 0.6, 4: 0.58}  # a second core helps, the third and fourth do not
    t = Threads(
        "auto", Registry(tmp_path), FixedLoad(), cpus=4, cap=None, clock=lambda: now[0], apply=applied.append
    )
    t.begin()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        peer = Registry(tmp_path)
        peer.pid = other.pid
        peer.claim(2, fixed=False)  # another run that may grow: 2 cores each
        for _ in range(10):
            now[0] += cost[t.current]
            t.step()
        assert (t.current, t.best) == (2, 2)
    finally:
        other.kill()
        other.wait()
    for _ in range(40):  # alone now: 4 is timed once, found no better, and 2 kept
        now[0] += cost[t.current]
        t.step()
    assert (t.current, applied.count(4)) == (2, 1), applied
    t.close()


def test_auto_waits_for_a_second_look_before_giving_back_to_outside_load(tmp_path: Path) -> None:
    load = FixedLoad()
    t, _, _, now = simulate(tmp_path, {1: 0.6, 2: 0.35}, 20, load)
    assert t.current == 2
    load.busy = 1.0
    now[0] += 0.6
    t.step()
    assert t.current == 2  # one look could be a blip
    now[0] += 0.6
    t.step()
    assert t.current == 1
    t.close()


def test_a_claim_of_a_killed_run_is_removed_and_a_live_one_is_seen(tmp_path: Path) -> None:
    code = (
        "import sys, time; from tuitrain.train.cpuload import Registry; "
        f"Registry({str(tmp_path)!r}).claim(1, fixed=True); print('claimed', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "claimed"
        assert Registry(tmp_path).peers() == [Peer(p.pid, 1, True)]
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert Registry(tmp_path).peers() == []
    assert not (tmp_path / f"{p.pid}.claim").exists()


def test_the_sampler_sees_a_busy_core_outside_tuitrain() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat here: the load average is used instead")
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        outside, ours = CpuSampler(), CpuSampler()  # the same window, the spinner counted or not
        outside.sample([])
        ours.sample([spin.pid])
        time.sleep(1.0)
        busy_with = outside.sample([])
        busy_without = ours.sample([spin.pid])  # as if it were a tuitrain run's
    finally:
        spin.kill()
        spin.wait()
    assert busy_with is not None and busy_without is not None
    # a busy machine gives the spinner less than a core; the difference is what it got
    assert busy_with - busy_without > 0.25, (busy_with, busy_without)


def test_launch_splits_cores_between_ranks_as_auto_expects() -> None:
    env_before = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        assert Launch(nproc_per_node=2).env()["OMP_NUM_THREADS"] == str(max(1, available_cpus() // 2))
    finally:
        if env_before is not None:
            os.environ["OMP_NUM_THREADS"] = env_before


def _versions(path: Path) -> dict[str, str]:
    import json

    with h5py.File(path, "r", locking=False) as f:
        return json.loads(f.attrs["versions"])


def test_a_real_run_uses_and_records_the_threads_asked_for(tmp_path: Path) -> None:
    env = {**cli_env(), "OMP_NUM_THREADS": "2", "TUITRAIN_THREADS_DIR": str(tmp_path / "claims")}
    out = tmp_path / "one.h5"
    p = tt(*TOY, "--set", "train.threads=1", "--out", str(out), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    v = _versions(out)  # torch.get_num_threads() inside the training process, though OMP said 2
    assert (v["threads"], v["torch_threads"]) == ("1", "1")
    assert "CPU threads 1 at start, train.threads = 1" in tt("info", str(out), env=env).stdout

    env.pop("OMP_NUM_THREADS")
    out = tmp_path / "auto.h5"
    p = tt(*TOY, "--out", str(out), env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    v = _versions(out)
    assert v["threads"] == "auto" and 1 <= int(v["torch_threads"]) <= available_cpus()
    assert list((tmp_path / "claims").glob("*.claim")) == []  # released at the end


def test_bad_threads_is_refused_as_bad_input() -> None:
    p = tt(*TOY, "--set", "train.threads=0")
    assert_clean_error(p, "`train.threads` = 0", '"auto"', ">= 1")
    p = tt(*TOY, "--set", "train.threads='many'")
    assert_clean_error(p, "`train.threads` = 'many'")


def test_a_claims_directory_others_can_write_is_not_used(tmp_path: Path) -> None:
    shared = tmp_path / "claims"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # anyone could plant claims (or links) here
    (shared / "1.claim").write_text("1 64 1 -\n")
    r = Registry(shared)
    r.claim(2, fixed=False)
    assert not r.ok and r.peers() == [] and not (shared / f"{os.getpid()}.claim").exists()
