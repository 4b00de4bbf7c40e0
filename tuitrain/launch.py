"""Data-parallel runs: ``tuitrain run/watch --nproc-per-node N`` re-launches tuitrain under torchrun.

No torch here (the CLI imports this before deciding whether to train): the launcher is torch's own,
``python -m torch.distributed.run`` (through :mod:`tuitrain.train.torchrun`, which only silences its
traceback on Ctrl-C), started as a subprocess. It starts one process per device, each
running ``tuitrain run CONFIG --no-ui --out OUT`` with ``RANK``/``WORLD_SIZE``/... set; the engine
(:mod:`tuitrain.train.distributed`) joins the process group from those. ``CONFIG`` is the resolved
config written to a temporary file, so every local rank trains exactly what this command resolved
(timestamps, ``--set`` and ``--data`` included) and the run file records it once.

Signals: the launcher runs in its own process group, so a Ctrl-C at the terminal reaches only this
process, which forwards it once to torchrun; torchrun forwards it to every rank and the ranks agree on
a step to stop at (:class:`tuitrain.train.distributed.AgreedControl`). Were the terminal's SIGINT to
reach torchrun as well, it would get two and give up waiting for the ranks to close the run file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuitrain.config import ConfigError, RunConfig

TORCHRUN_DEFAULT_PORT = 29500


def free_port() -> int:
    """A TCP port nobody listens on now: single-machine runs need no agreed port, and a fixed one
    (torchrun's 29500) would make two runs on one machine collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Launch:
    """The torchrun options of ``run`` and ``watch``; the defaults mean one process, no launcher."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None  # node 0's address; 127.0.0.1 on one machine
    master_port: int | None = None  # None: a free port on one machine, torchrun's 29500 across several

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def check(self, cfg: RunConfig, dashboard: bool = False) -> None:
        """Refuse, as bad input, what would otherwise fail inside N processes at once."""
        if not self.distributed:
            return
        if os.environ.get("WORLD_SIZE"):
            raise ConfigError(
                "--nproc-per-node / --nnodes: this process already runs under torchrun "
                "(WORLD_SIZE is set); leave the launcher options out here."
            )
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(
                f"--node-rank {self.node_rank}: must be in 0..{self.nnodes - 1} for --nnodes {self.nnodes}."
            )
        if self.nnodes > 1 and not self.master_addr:
            raise ConfigError(
                "--nnodes > 1 needs --master-addr: the address of node 0, which every node "
                "must reach (and --master-port, a free port there, if 29500 is taken)."
            )
        if dashboard and self.node_rank != 0:
            raise ConfigError(
                "the dashboard lives on node 0, where rank 0 writes the run file; on the other "
                "nodes use `tuitrain run --no-ui` with the same options."
            )
        if cfg.train.batch_size % self.world_size:
            raise ConfigError(
                f"`train.batch_size` = {cfg.train.batch_size} is the global batch and must be divisible by "
                f"the number of processes, {self.world_size} (--nproc-per-node x --nnodes)."
            )

    def command(self, config_path: Path, out_path: Path) -> list[str]:
        """The torchrun command line that trains ``config_path`` into ``out_path`` on this node."""
        port = self.master_port or (free_port() if self.nnodes == 1 else TORCHRUN_DEFAULT_PORT)
        return [
            sys.executable,
            "-m",
            "tuitrain.train.torchrun",  # torch.distributed.run, quiet on Ctrl-C
            f"--nproc-per-node={self.nproc_per_node}",
            f"--nnodes={self.nnodes}",
            f"--node-rank={self.node_rank}",
            f"--master-addr={self.master_addr or '127.0.0.1'}",
            f"--master-port={port}",
            "-m",
            "tuitrain",
            "run",
            str(config_path),
            "--no-ui",
            "--out",
            str(out_path),
        ]

    def env(self) -> dict[str, str]:
        """The ranks' environment: CPU threads split between the processes of this machine (what
        torchrun would otherwise set to 1, with a banner saying so). With ``train.threads = "auto"``
        each rank takes this as its ceiling (:mod:`tuitrain.train.threads`) and may use fewer; an
        explicit ``train.threads = N`` is per process and wins. An ``OMP_NUM_THREADS`` of the user's
        own is kept."""
        from tuitrain.runfile.claim import LAUNCHED_ENV
        from tuitrain.train.cpuload import available_cpus  # no torch

        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // self.nproc_per_node)))
        env[LAUNCHED_ENV] = "1"  # the ranks need not check --out again: this command did
        return env


def run_launcher(cmd: list[str], env: dict[str, str]) -> int:
    """Run torchrun to its end and return its exit status, forwarding Ctrl-C, SIGTERM and SIGHUP.

    The first signal asks every rank to stop after its current step (SIGHUP becomes SIGTERM: training
    must not die with the terminal, but end cleanly); a second one is forwarded too, and torchrun
    then stops waiting for the ranks, which still close the run file on their own.
    """
    group: dict[str, Any] = (
        {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
    )
    proc = subprocess.Popen(cmd, env=env, **group)
    count = 0

    def forward(signum: int, frame: Any) -> None:
        nonlocal count
        count += 1
        if count == 1:
            print(
                "\nstopping all ranks after the current step (Ctrl-C again to stop waiting)",
                file=sys.stderr,
                flush=True,
            )
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
