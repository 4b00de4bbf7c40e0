"""Data-parallel training with torchrun: the real CLI with 2 gloo ranks on the CPU, the helpers under
``torch.multiprocessing.spawn``, and the sharding arithmetic.

The strongest check is :func:`test_helpers_and_two_ranks_reproducing_one_process`: without BatchNorm
(whose batch statistics are per rank by design), 2 ranks with half the batch each must follow exactly
the trajectory of one process with the whole batch.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import REPO, cli_env, tuitrain_cmd
from tuitrain.config import ConfigError
from tuitrain.launch import free_port
from tuitrain.train import distributed
from tuitrain.train.data import DeviceData

TOY_STEPS_PER_EPOCH = 16  # toy2d: 2,000 training points; global batch 128 -> 1,000 per rank in 64s


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = cli_env()
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [*tuitrain_cmd(), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )


# ---- the real CLI ----------------------------------------------------------------------------------


def test_run_nproc_per_node_2_writes_one_complete_file(tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    p = run_cli(
        "run",
        "presets/toy2d_mlp.toml",
        "--no-ui",
        "--nproc-per-node",
        "2",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "data-parallel with torchrun: 2 processes" in p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.h5", "x.pt"]  # one file, one checkpoint
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "completed"
        assert f.attrs["device"] == "2 x cpu (gloo)"
        assert '"world_size": "2"' in f.attrs["versions"]
        assert f.attrs["batch_size"] == 128 and f.attrs["steps_per_epoch"] == TOY_STEPS_PER_EPOCH
        n = f["steps/step"].shape[0]
        assert n == 2 * TOY_STEPS_PER_EPOCH
        assert np.array_equal(f["steps/step"][:], np.arange(n))
        assert f["probes/grad/grad_norm"].shape == (n, f["layers/name"].shape[0])
        assert np.isfinite(f["probes/grad/grad_norm"][:]).all()
        assert list(f["epochs/epoch"][:]) == [0, 1]
        assert np.isfinite(f["epochs/val_loss"][:]).all() and np.isfinite(f["epochs/train_loss"][:]).all()
        assert math.isfinite(f["test"].attrs["loss"]) and 0 <= f["test"].attrs["acc"] <= 1


def test_launcher_options_are_checked_before_anything_starts() -> None:
    for args, needle in (
        (["--batch-size", "127"], "divisible"),
        (["--nnodes", "2", "--node-rank", "2", "--master-addr", "10.0.0.1"], "--node-rank 2"),
        (["--nnodes", "2"], "--master-addr"),
    ):
        p = run_cli("run", "presets/toy2d_mlp.toml", "--no-ui", "--nproc-per-node", "2", *args, timeout=60)
        assert p.returncode == 2, p.stdout + p.stderr
        assert needle in p.stderr and "Traceback" not in p.stderr


# ---- the helpers and the engine, in 2 real gloo processes ------------------------------------------

# Without BatchNorm (whose batch statistics are per rank by design), so that 2 ranks with half the batch
# each must follow exactly the trajectory of one process with the whole batch.
EXACT_SETS = ["model.batch_norm=false", "train.checkpoint=false", "train.device='cpu'", "train.epochs=1"]


class Recorder:
    def __init__(self) -> None:
        self.batches: list = []

    def emit(self, event: object) -> None:
        from tuitrain.events import StepBatch

        if isinstance(event, StepBatch):
            self.batches.append(event)

    def close(self) -> None:
        pass

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "loss": np.concatenate([b.scalar("loss") for b in self.batches]),
            "acc": np.concatenate([b.scalar("acc") for b in self.batches]),
            "grad": np.concatenate([b.probe("grad_norm") for b in self.batches]),
        }


def train_toy(sinks: list) -> str:
    from tuitrain.cli import build_config
    from tuitrain.train.engine import train

    return train(build_config("presets/toy2d_mlp.toml", EXACT_SETS), sinks).status


class Scripted:
    """A local control that answers from a script, one answer per poll (then None)."""

    def __init__(self, answers: list[str | None]) -> None:
        self.answers = list(answers)

    def poll(self, timeout: float = 0.0) -> str | None:
        return self.answers.pop(0) if self.answers else None


def _rank_checks(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1: 2 x 2 threads on 2 cores crawl (5x)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    job, device = distributed.init(torch.device("cpu"))
    try:
        assert (job.rank, job.world_size, job.backend, device.type) == (rank, world, "gloo", "cpu")

        # per step: rank r reports loss 1 + 2r and r + 3 correct; everyone gets the mean and the sum
        loss, correct = job.reduce_step(torch.tensor(1.0 + 2 * rank), torch.tensor(rank + 3))
        assert loss.item() == pytest.approx(np.mean([1.0 + 2 * r for r in range(world)]))
        assert correct.item() == sum(r + 3 for r in range(world))

        # evaluation sums
        sums = job.sum(torch.tensor([10.0 * (rank + 1), float(rank), 5.0 + rank], dtype=torch.float64))
        assert sums.tolist() == [30.0, 1.0, 11.0]

        # commands: the local control is asked on every 4th poll only, and what any rank says there
        # reaches all ranks at that same poll: a pause from rank 0 (one-shot, like the dashboard's),
        # a stop from rank 1 alone (Ctrl-C reaching one rank). Polls with a timeout (paused) always ask.
        script = {0: ["pause"], 1: [None, "stop"]}
        control = job.control(Scripted(script[rank]))
        assert [control.poll() for _ in range(8)] == [None, None, None, "pause", None, None, None, "stop"]
        control = job.control(Scripted(["resume"] if rank == 0 else []))
        assert control.poll(timeout=0.01) == "resume" and control.poll(timeout=0.01) is None

        # rank 0's BatchNorm statistics are what every rank evaluates with
        bn = torch.nn.BatchNorm1d(3)
        bn.running_mean.fill_(float(rank))
        job.sync_buffers(bn)
        assert bn.running_mean.tolist() == [0.0, 0.0, 0.0]

        # a failure on local rank 0 during setup: the others stop with PeerFailed, not a hang
        with pytest.raises(ConfigError) as err, job.local_main_first():
            if rank == 0:
                raise ConfigError("CIFAR-10 is not available")
        assert isinstance(err.value, distributed.PeerFailed) == (rank != 0)

        # the engine itself (it joins the group already there and leaves it at the end)
        recorder = Recorder()
        assert train_toy([recorder] if rank == 0 else []) == "completed"
        if rank == 0:
            np.savez(Path(out_dir) / "rank0.npz", **recorder.arrays())
    finally:
        distributed.shutdown()


def test_helpers_and_two_ranks_reproducing_one_process(tmp_path: Path) -> None:
    """The helpers, then training: per-step loss, accuracy and per-layer gradient norms of 2 ranks equal
    those of 1 process, which holds only if the shards are right, the losses averaged, the correct
    counts summed, the gradients averaged by DDP and rank 0's probes see the global gradients."""
    torch.multiprocessing.spawn(_rank_checks, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    got = dict(np.load(tmp_path / "rank0.npz"))
    recorder = Recorder()
    assert train_toy([recorder]) == "completed"
    want = recorder.arrays()
    assert got["loss"].shape == want["loss"].shape == (TOY_STEPS_PER_EPOCH,)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    np.testing.assert_allclose(got["acc"], want["acc"], atol=1e-9)  # counts summed over ranks: exact
    np.testing.assert_allclose(got["grad"], want["grad"], rtol=1e-4, atol=1e-7)


# ---- sharding and batch arithmetic (no processes needed) -------------------------------------------


def toy_data(n_train: int = 103, n_val: int = 11) -> DeviceData:
    """Points whose first coordinate is their index, so a batch says which samples it holds."""
    xs = {
        s: torch.stack([torch.arange(n, dtype=torch.float32), torch.zeros(n)], 1)
        for s, n in (("train", n_train), ("val", n_val), ("test", 5))
    }
    ys = {s: torch.zeros(x.shape[0], dtype=torch.int64) for s, x in xs.items()}
    return DeviceData("toy2d", 2, (2,), xs, ys, augmentable=False)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_shards_together_are_the_single_process_batches(world: int) -> None:
    data, global_batch = toy_data(), 12
    local = distributed.Dist(0, world).local_batch(global_batch)

    def batches(rank: int, world_size: int, batch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(7)
        return [x[:, 0].long().tolist() for x, _ in data.train_batches(batch, g, False, rank, world_size)]

    single = batches(0, 1, global_batch)
    per_rank = [batches(r, world, local) for r in range(world)]
    steps = data.steps_per_epoch(global_batch, world)
    assert all(len(b) == steps for b in per_rank)  # every rank takes the same number of steps
    assert [len(b) for b in per_rank[0]] == [len(b) for b in per_rank[-1]]
    n_used = data.sizes["train"] // world * world
    for k in range(steps):
        together = {i for r in range(world) for i in per_rank[r][k]}
        assert together <= set(single[k])
        if k < steps - 1:  # the last batch lacks the remainder (fewer than `world` samples)
            assert together == set(single[k])
    seen = [i for r in range(world) for b in per_rank[r] for i in b]
    assert len(seen) == len(set(seen)) == n_used  # each used sample exactly once per epoch
    assert steps == math.ceil(n_used / global_batch)


def test_eval_slices_cover_the_split_once() -> None:
    data = toy_data()
    got = sorted(int(v) for r in range(3) for x, _ in data.eval_batches("val", 4, r, 3) for v in x[:, 0])
    assert got == list(range(11))


def test_batch_size_must_divide_over_ranks() -> None:
    with pytest.raises(ConfigError, match="divisible by the number of processes"):
        distributed.Dist(0, 4).local_batch(130)
    assert distributed.Dist().local_batch(130) == 130
    assert distributed.SINGLE.control(None) is None  # one process: no collective, nothing wrapped
