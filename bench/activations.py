"""Benchmark: what the forward-signal probe (``tuitrain.train.activations``) costs the engine's loop
(a script, not a test; issue 11's cost target).

Two variants of the same engine-like loop on the same model, data, optimizer and seed, run side by
side in ONE process, in interleaved blocks whose order alternates (a b, b a, ...) so that a noisy,
shared machine slows both alike:

(e)   ``engine``  forward, cross-entropy, backward, ``monitor.before_step()``, ``optimizer.step()``,
      ``monitor.after_step(...)``: the real :class:`~tuitrain.train.monitor.Monitor` as the engine
      builds it (``Monitor.for_model``: the gradient probe at the preset's ``monitor.every``), no sinks;
(act) the same, plus an :class:`~tuitrain.train.activations.ActivationProbe` at ``--every`` (10)
      added to that Monitor. Both call ``monitor.before_forward()`` before each forward, as the
      engine does (it arms the probe's hooks on the steps it probes).
No sinks in either: this measures the probe alone; ``bench/overhead.py`` (e)/(b) measures it with
the run file and the live queue, as the engine runs it. The ratio (act)/(e) is the median of the per-round ratios (a slow drift in
the machine's load affects that far less than a ratio of medians), on the wall clock and on this
process's CPU time. Targets (issue 11): VGG38 and ResNet18 <= 1.03, tiny MLP <= 1.05; printed, never
the exit status (this script measures, the lead judges).

The models are small versions (``--image``, default 16 x 16 inputs; ResNet18 at ``--width`` 16) so
that a round takes seconds on a CPU; on a GPU pass ``--device cuda --image 32 --width 64``.

    python bench/activations.py                     # every case
    python bench/activations.py --models mlp --rounds 5
    python bench/activations.py --smoke             # one short round of each: does it run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from tuitrain.config import load_config
from tuitrain.train.activations import ActivationProbe
from tuitrain.train.data import toy2d_points
from tuitrain.train.engine import build_optimizer
from tuitrain.train.models import build_model
from tuitrain.train.monitor import Monitor
from tuitrain.train.summary import layer_infos

PRESETS = Path(__file__).resolve().parents[1] / "tuitrain" / "presets"


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    preset: str
    image: bool  # (3, image, image) inputs; else the preset's 2-D points
    classes: int
    batch: int
    target: float
    steps: int  # steps per block


CASES = {
    c.key: c
    for c in (
        Case("mlp", "tiny MLP", "toy2d_mlp.toml", False, 3, 128, 1.05, 200),
        Case("vgg38", "VGG38 (small)", "vgg38.toml", True, 100, 32, 1.03, 10),
        Case("resnet18", "ResNet18 (small)", "resnet18_cifar10.toml", True, 10, 32, 1.03, 5),
    )
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Loop:
    """One variant: its own copy of the initial model, its optimizer, its Monitor."""

    def __init__(self, name: str, base: torch.nn.Module, cfg, device: torch.device, every: int) -> None:  # noqa: ANN001
        self.name = name
        self.device = device
        self.model = copy.deepcopy(base)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(cfg, params)
        self.monitor = Monitor.for_model(params, layer_infos(self.model), [], cfg.monitor, device)
        self.act: ActivationProbe | None = None
        if every:
            self.act = ActivationProbe(every=every)
            self.monitor.add_probe(self.act, self.model)

    def block(self, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> tuple[float, float]:
        model, opt, monitor = self.model, self.opt, self.monitor
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            x, y = batches[i % len(batches)]
            monitor.before_forward()
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            monitor.before_step()
            lr = opt.param_groups[0]["lr"]
            opt.step()
            monitor.after_step(loss, logits, y, lr, 0)
        monitor.flush()
        sync(self.device)
        return time.perf_counter() - t0, time.process_time() - c0


def setup(case: Case, args: argparse.Namespace, device: torch.device):  # noqa: ANN201
    cfg = load_config(PRESETS / case.preset)
    cfg.train.batch_size = case.batch
    if case.key == "resnet18":
        cfg.model = replace(cfg.model, width=args.width)
    shape = (3, args.image, args.image) if case.image else (2,)
    torch.manual_seed(args.seed)
    base = build_model(cfg.model, shape, case.classes).to(device)
    g = torch.Generator().manual_seed(args.seed)
    n = 4 * case.batch
    if case.image:
        x = torch.randn(n, *shape, generator=g)
        y = torch.randint(0, case.classes, (n,), generator=g)
    else:
        x, y = toy2d_points("spirals", [n], case.classes, args.seed, 0.1)
        x = (x - x.mean(0)) / x.std(0)
    x, y = x.to(device), y.to(device)
    batches = [(x[i : i + case.batch], y[i : i + case.batch]) for i in range(0, n, case.batch)]
    return cfg, base, batches


def run_case(case: Case, args: argparse.Namespace, device: torch.device) -> str:
    cfg, base, batches = setup(case, args, device)
    steps = args.every + 1 if args.smoke else (args.steps or case.steps)  # smoke: two probed steps a block
    rounds = 1 if args.smoke else args.rounds
    loops = [Loop("engine", base, cfg, device, 0), Loop("act", base, cfg, device, args.every)]
    wall: dict[str, list[float]] = {lp.name: [] for lp in loops}
    cpu: dict[str, list[float]] = {lp.name: [] for lp in loops}
    for lp in loops:  # warm-up, untimed
        lp.block(batches, steps)
    for r in range(rounds):
        for lp in loops if r % 2 == 0 else loops[::-1]:
            w, c = lp.block(batches, steps)
            wall[lp.name].append(w / steps)
            cpu[lp.name].append(c / steps)
    act = loops[1].act
    assert act is not None
    probed = -(-loops[1].monitor.step // args.every)  # steps 0, every, 2 every, ... below monitor.step
    rw = statistics.median(a / e for a, e in zip(wall["act"], wall["engine"], strict=True))
    rc = statistics.median(a / e for a, e in zip(cpu["act"], cpu["engine"], strict=True))
    verdict = "ok" if rw <= case.target else f"over {case.target:g}"
    return (
        f"{case.label:<17} {act.n_modules:>4} mod  {statistics.median(wall['engine']) * 1e3:>9.2f} ms"
        f"  {statistics.median(wall['act']) * 1e3:>9.2f} ms  {rw:>6.3f}x  {rc:>6.3f}x  <= {case.target:g}"
        f"  {verdict}  ({probed} probed steps)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--every", type=int, default=10, help="the activation probe's every (default 10)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--steps", type=int, default=0, help="steps per block (default: per case)")
    ap.add_argument("--image", type=int, default=16)
    ap.add_argument("--width", type=int, default=16, help="ResNet18 width")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="one short round per case (every + 1 steps a block): check that it runs",
    )
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CASES]
    if unknown or args.every < 1:
        print(f"unknown model(s) {unknown} or every < 1; allowed: {', '.join(CASES)}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    print(f"activation probe every {args.every}; device {device}; torch {torch.__version__}")
    print(f"{'case':<17} {'':>8}  {'(e) step':>12}  {'(act) step':>12}  {'wall':>7}  {'cpu':>7}  target")
    for key in keys:
        print(run_case(CASES[key], args, device), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
