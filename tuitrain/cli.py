"""The ``tuitrain`` command line. Thin commands; heavy imports only inside the command that needs them.

``import torch`` takes about 3 s and ``import torchvision`` about 5 s on a small machine, so nothing at
module level here imports either (``tuitrain --help`` stays well under half a second). Every bad input
ends as one clear message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tuitrain.config import DATASET_CLASSES, ConfigError, RunConfig, load_config
from tuitrain.launch import Launch

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="A terminal-first live monitor for PyTorch training: loss curves, per-layer gradient flow "
    "and a lossless HDF5 history of every run.",
)

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_STOPPED = 130


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"tuitrain: error: {message}", err=True)
    return typer.Exit(code)


def presets_dir() -> Path:
    """``./presets`` when run from a checkout or a project that has its own, else the package's."""
    local = Path("presets")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / "presets"


def resolve_preset(preset: str) -> Path:
    """Accept a path, or a bare preset name such as ``vgg38``."""
    path = Path(preset)
    if path.exists() or path.suffix == ".toml" or os.sep in preset:
        return path
    candidate = presets_dir() / f"{preset}.toml"
    return candidate if candidate.exists() else path


# Options shared by `run` and `watch` -------------------------------------------------------------
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override a config key: KEY=VALUE (TOML value), repeatable.", metavar="KEY=VALUE")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Dataset: synthetic (offline), cifar10, cifar100, toy2d.")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Where CIFAR lives or is downloaded to (also $TUITRAIN_DATA).")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Number of epochs.")]
StepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps (quick looks).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Training batch size.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda or mps.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for initialisation, shuffling and augmentation.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run file to write (default runs/<name>-<time>.h5).")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run name (default: the preset's name).")]
# Data-parallel (torchrun) options, shared by `run` and `watch`
NprocOpt = Annotated[int, typer.Option("--nproc-per-node", min=1, help="Data-parallel: processes on this machine "
                                       "(one per GPU), started with torchrun; --batch-size stays the global batch.")]
NnodesOpt = Annotated[int, typer.Option("--nnodes", min=1, help="Machines in a data-parallel run; each runs this "
                                        "command with its own --node-rank.")]
NodeRankOpt = Annotated[int, typer.Option("--node-rank", min=0, help="This machine's index, 0..nnodes-1; "
                                          "node 0 holds rank 0, which writes the run file.")]
MasterAddrOpt = Annotated[str | None, typer.Option("--master-addr", help="Address of node 0 that every node reaches "
                                                   "(needed with --nnodes > 1; default 127.0.0.1).")]
MasterPortOpt = Annotated[int | None, typer.Option("--master-port", help="Free TCP port on node 0 (default: any "
                                                   "free port on one machine, 29500 across machines).")]


def build_config(
    preset: str, sets: list[str] | None, data: str | None = None, data_dir: str | None = None,
    epochs: int | None = None, max_steps: int | None = None, batch_size: int | None = None,
    device: str | None = None, seed: int | None = None, name: str | None = None,
) -> RunConfig:
    extra: dict[str, Any] = {}
    for key, value in (("data.dir", data_dir), ("train.epochs", epochs), ("train.max_steps", max_steps),
                       ("train.batch_size", batch_size), ("train.device", device), ("train.seed", seed),
                       ("name", name)):
        if value is not None:
            extra[key] = value
    path = resolve_preset(preset)
    if data is not None:
        original = load_config(path).data.name  # what the preset was written for
        if data != original:
            extra["data.name"] = data
            user_keys = {s.split("=", 1)[0].strip() for s in sets or []}
            # Keep the head of the model: a CIFAR-100 preset on synthetic data gets 100 synthetic classes.
            if data == "synthetic" and original in DATASET_CLASSES and "data.classes" not in user_keys:
                extra["data.classes"] = DATASET_CLASSES[original]
            # Split sizes belong to the dataset they were written for: the new one starts from its defaults.
            for key in ("data.train_size", "data.val_size", "data.test_size"):
                if key not in user_keys:
                    extra[key] = 0
    cfg = load_config(path, sets, extra)
    return cfg


def default_out(cfg: RunConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{cfg.name}-{stamp}.h5"
    n = 1
    while path.exists():
        n += 1
        path = Path("runs") / f"{cfg.name}-{stamp}-{n}.h5"
    return path


def check_out(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file path such as {out / 'run.h5'}.")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the directory {parent}: {e.strerror}.") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: the directory {parent} is not writable.")


class SignalControl:
    """Ctrl-C (or SIGTERM) asks the loop to stop at the next step, so the run file is closed cleanly
    as ``stopped``; a second Ctrl-C interrupts at once. ``announce``: say so on stderr (only rank 0 of
    a data-parallel run does, not every rank)."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\nstopping after this step (Ctrl-C again to interrupt at once)", file=sys.stderr)

    def poll(self, timeout: float = 0.0) -> str | None:
        if self.requested:
            return "stop"
        if timeout:
            time.sleep(timeout)
        return None


@app.command()
def run(
    preset: Annotated[str, typer.Argument(help="Preset TOML file (or a preset name such as vgg38).")],
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Headless: rich progress on the console.")] = False,
    sets: SetOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None, epochs: EpochsOpt = None,
    max_steps: StepsOpt = None, batch_size: BatchOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
    out: OutOpt = None, name: NameOpt = None, nproc_per_node: NprocOpt = 1, nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0, master_addr: MasterAddrOpt = None, master_port: MasterPortOpt = None,
) -> None:
    """Train a preset and write its full history to one HDF5 run file."""
    launch = Launch(nproc_per_node, nnodes, node_rank, master_addr, master_port)
    try:
        cfg = build_config(preset, sets, data, data_dir, epochs, max_steps, batch_size, device, seed, name)
        out_path = out or default_out(cfg)
        check_out(out_path)
        launch.check(cfg)
    except ConfigError as e:
        raise _fail(str(e)) from None
    headless = no_ui or not (sys.stdout.isatty() and sys.stderr.isatty()) or launch.node_rank != 0
    if headless and launch.distributed:
        _run_launched(cfg, out_path, launch)
    elif headless:
        _run_headless(cfg, out_path)
    else:
        _run_watch(cfg, out_path, "detach", launch)


@app.command()
def watch(
    preset: Annotated[str, typer.Argument(help="Preset TOML file (or a preset name such as vgg38).")],
    sets: SetOpt = None, data: DataOpt = None, data_dir: DataDirOpt = None, epochs: EpochsOpt = None,
    max_steps: StepsOpt = None, batch_size: BatchOpt = None, device: DeviceOpt = None, seed: SeedOpt = None,
    out: OutOpt = None, name: NameOpt = None,
    on_hangup: Annotated[str, typer.Option(
        "--on-hangup", help="When the terminal goes away (SSH drops): 'detach' keeps training, 'stop' stops it.",
    )] = "detach",
    nproc_per_node: NprocOpt = 1, nnodes: NnodesOpt = 1, node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None, master_port: MasterPortOpt = None,
) -> None:
    """Train a preset in the background and watch it live in the terminal dashboard."""
    launch = Launch(nproc_per_node, nnodes, node_rank, master_addr, master_port)
    try:
        if on_hangup not in ("detach", "stop"):
            raise ConfigError(f"--on-hangup {on_hangup!r}: allowed: detach, stop.")
        cfg = build_config(preset, sets, data, data_dir, epochs, max_steps, batch_size, device, seed, name)
        out_path = out or default_out(cfg)
        check_out(out_path)
        launch.check(cfg, dashboard=True)
    except ConfigError as e:
        raise _fail(str(e)) from None
    _run_watch(cfg, out_path, on_hangup, launch)


class _Commands:
    """The dashboard's control channel to the training process."""

    def __init__(self, q: Any) -> None:
        self.q = q

    def send(self, cmd: str) -> None:
        self.q.put(cmd)

    def flush(self) -> None:
        """Make sure what was sent has left this process (before os._exit)."""
        self.q.close()
        self.q.join_thread()


def _run_watch(cfg: RunConfig, out_path: Path, on_hangup: str, launch: Launch | None = None) -> None:
    import multiprocessing as mp

    from tuitrain.config import to_toml
    from tuitrain.train.worker import worker_main
    from tuitrain.ui.app import run_dashboard
    from tuitrain.ui.source import LiveSource

    ctx = mp.get_context("spawn")
    events = ctx.Queue(maxsize=64)  # bounded: the worker coalesces or drops live rows, never blocks
    commands = _Commands(ctx.Queue())
    log_path = out_path.with_suffix(".log")
    proc = ctx.Process(target=worker_main, name="tuitrain-train", args=(
        to_toml(cfg), str(out_path), events, commands.q, str(log_path), os.getpid(), launch))
    proc.start()

    def hangup(signum: int, frame: Any) -> None:
        # The terminal is gone: nothing to restore, nobody to ask. Hand over and leave.
        commands.send(on_hangup if on_hangup == "stop" else "detach")
        commands.flush()
        os._exit(0)

    signal.signal(signal.SIGHUP, hangup)
    # 50 ms windows: the engine already batches 100 ms of steps, so the drain adds little delay
    result = run_dashboard(LiveSource(events, batch_seconds=0.05), commands, proc_alive=proc.is_alive)
    if result == "detach" and proc.is_alive():
        commands.send("detach")
        commands.flush()
        typer.echo(f"training continues in the background (pid {proc.pid}); it writes {out_path}\n"
                   f"re-attach: tuitrain replay --follow {out_path}; stop it: kill {proc.pid}")
        os._exit(0)  # skip multiprocessing's exit-time join: the worker must outlive us
    if result not in ("stop", "done") and proc.is_alive():
        commands.send("stop")  # the UI closed without a choice: do not leave an orphan behind
    if proc.is_alive():
        typer.echo(f"waiting for the training process to close {out_path} ...")
    proc.join(timeout=120)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=10)
    _print_brief(out_path, log_path)


def _print_brief(out_path: Path, log_path: Path) -> None:
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(out_path) as rf:
            s = rf.summary()
    except RunFileError:
        typer.echo(f"no run file was written; the training log is {log_path}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    typer.echo(f"run {s['status']} after {s['n_steps']} steps; run file {out_path}")
    if s.get("error"):
        typer.echo(f"error: {s['error']}", err=True)
        raise typer.Exit(EXIT_FAILED)


def _run_launched(cfg: RunConfig, out_path: Path, launch: Launch) -> None:
    """``run --no-ui --nproc-per-node N``: torchrun starts the ranks (see :mod:`tuitrain.launch`); this
    process forwards Ctrl-C and exits as a single-process run would, from rank 0's run file."""
    import tempfile

    from tuitrain.config import to_toml
    from tuitrain.launch import run_launcher

    here = f"{launch.nproc_per_node} on this machine, node {launch.node_rank} of {launch.nnodes}"
    where = f"rank 0 writes {out_path}" if launch.node_rank == 0 else "rank 0, on node 0, writes the run file"
    typer.echo(f"data-parallel with torchrun: {launch.world_size} processes ({here}); {where}", err=True)
    with tempfile.TemporaryDirectory(prefix="tuitrain-") as tmp:
        config_path = Path(tmp) / "config.toml"  # every local rank trains exactly what was resolved here
        config_path.write_text(to_toml(cfg))
        rc = run_launcher(launch.command(config_path, out_path), launch.env())
    if launch.node_rank != 0:
        raise typer.Exit(0 if rc == 0 else EXIT_FAILED)
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(out_path) as rf:
            s = rf.summary()
    except RunFileError:  # rank 0 failed before it started the file: its exit code says why
        if rc != EXIT_BAD_INPUT:
            typer.echo(f"tuitrain: error: no run file was written (torchrun exited with code {rc})", err=True)
        raise typer.Exit(rc if rc in (EXIT_BAD_INPUT, EXIT_STOPPED) else EXIT_FAILED) from None
    codes = {"completed": 0, "stopped": EXIT_STOPPED}
    code = codes.get(s["status"], EXIT_FAILED)
    if s["status"] == "failed" and str(s.get("error") or "").startswith("ConfigError"):
        code = EXIT_BAD_INPUT
    raise typer.Exit(code)


def _run_headless(cfg: RunConfig, out_path: Path) -> None:
    from rich.console import Console

    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun only rank 0 reports and writes the file
    console = Console()
    with console.status(f"starting {cfg.name}: loading torch, data and model...") if rank == 0 \
            else contextlib.nullcontext():
        control = SignalControl(announce=rank == 0)
        from tuitrain.runfile.writer import RunFileWriter
        from tuitrain.train.engine import train
        from tuitrain.train.sinks import ConsoleSink
        from tuitrain.train.worker import relay_end
    relay = relay_end(control) if rank == 0 else None  # rank 0 of a data-parallel `watch`
    sinks = [RunFileWriter(str(out_path), cfg.monitor.flush_seconds), relay or ConsoleSink(console)] if rank == 0 else []
    try:
        finished = train(cfg, sinks, control=relay or control, out_path=str(out_path))
    except ConfigError as e:
        from tuitrain.train.distributed import PeerFailed

        if isinstance(e, PeerFailed):
            raise typer.Exit(0) from None  # rank 0 failed first, said why, and its exit code counts
        raise _fail(str(e) if rank == 0 else f"(rank {rank}) {e}") from None
    if finished.status == "failed":
        if finished.traceback:
            console.print(finished.traceback, markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)
    if finished.status == "stopped":
        # Other ranks stopped because all agreed to: exiting 0 lets torchrun wait for rank 0 to close
        # the run file instead of killing it when the first rank leaves.
        raise typer.Exit(EXIT_STOPPED if rank == 0 else 0)


@app.command()
def presets(
    directory: Annotated[Path | None, typer.Option("--dir", help="Folder of presets (default ./presets).")] = None,
) -> None:
    """List the presets: name, model, dataset, parameters and what each one is for."""
    from rich.console import Console
    from rich.table import Table

    folder = directory or presets_dir()
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise _fail(f"no presets (*.toml) found in {folder}.")
    console = Console()
    with console.status("counting parameters (loading torch)..."):
        from tuitrain.train.models import build_model

        table = Table(title=f"Presets in {folder}", title_justify="left")
        for col in ("name", "model", "dataset", "params", "description"):
            table.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
        for f in files:
            try:
                cfg = load_config(f)
                shape = (2,) if cfg.data.name == "toy2d" else (3, cfg.data.image_size, cfg.data.image_size)
                classes = DATASET_CLASSES.get(cfg.data.name, cfg.data.classes)
                model = build_model(cfg.model, shape, classes)
                params = sum(p.numel() for p in model.parameters() if p.requires_grad)
                table.add_row(f.stem, _model_label(cfg), cfg.data.name, f"{params:,}", cfg.description)
            except ConfigError as e:
                table.add_row(f.stem, "[red]invalid[/]", "", "", str(e))
    console.print(table)


def _model_label(cfg: RunConfig) -> str:
    m = cfg.model
    if m.name == "vgg":
        extras = [x for x, on in (("BN", m.batch_norm), ("RC", m.residual)) if on]
        return f"vgg {2 + m.stages * (2 * m.blocks_per_stage + 2)}" + (f" +{'+'.join(extras)}" if extras else "")
    if m.name == "mlp":
        return f"mlp {len(m.hidden)}x{m.activation}" + (" +BN" if m.batch_norm else "")
    if m.name == "mlp_mixer":
        return f"mixer p{m.patch_size} d{m.embed_dim} x{m.num_blocks}"
    return m.name


@app.command()
def info(
    run_file: Annotated[Path, typer.Argument(help="A run file (.h5) written by tuitrain.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a run file: config, model summary, status and final metrics."""
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(run_file) as rf:
            summary = rf.summary()
    except RunFileError as e:
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=_json_default))
        return
    _print_info(summary)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _print_info(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    from tuitrain.train.sinks import final_table, fmt_count

    c = Console()
    status = s["status"] + (" (incomplete: the writer stopped without closing the file)" if s.get("incomplete") else "")
    c.print(f"[bold]{s['run_name']}[/]  {s['path']}")
    c.print(f"status {status}; {s['model_name']} with {fmt_count(s['params'])} params, {fmt_count(s['flops'])} "
            f"FLOPs/sample; {s['dataset']}; device {s['device']}")
    c.print(f"{s['n_steps']} steps, {s['n_epochs']} of {s['epochs']} epochs; started {s['started']}, "
            f"ended {s['ended'] or '-'}")
    if s.get("error"):
        c.print(f"[bold red]error:[/] {s['error']}")
    c.print(final_table([{**s["final"], "run": s["run_name"]}]))
    mods = Table(title="Model summary", title_justify="left")
    for col in ("module", "type", "params", "FLOPs"):
        mods.add_column(col, justify="left" if col in ("module", "type") else "right")
    for m in s["modules"]:
        mods.add_row(m["name"], m["type"], f"{m['params']:,}", fmt_count(m.get("flops", 0)))
    c.print(mods)
    c.print(Syntax(s["config_toml"], "toml", theme="ansi_dark", background_color="default"))


@app.command()
def replay(
    run_files: Annotated[list[Path], typer.Argument(help="Run files (.h5) written by tuitrain; several are compared.",
                                                    metavar="RUN.h5...")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep up with runs another process is still "
                                         "writing; shows when they finish or their writer dies.")] = False,
    metric: Annotated[str, typer.Option("--metric", "-m", help="The overlaid curve: loss, acc, lr, samples_per_s, "
                                        "step_time, train_loss, train_acc, val_loss, val_acc.")] = "loss",
    print_only: Annotated[bool, typer.Option("--print", help="No TUI: print the final table and a chart of "
                                             "--metric to stdout (the default when stdout is not a terminal).")] = False,
) -> None:
    """Scrub through finished runs, follow running ones, compare several side by side."""
    from tuitrain.runfile.reader import RunFileError, open_run
    from tuitrain.ui.replay.compare import check_metric

    try:
        check_metric(metric)
    except ValueError as e:
        raise _fail(str(e)) from None
    runs = []
    try:
        for path in run_files:
            runs.append(open_run(path))
        if print_only or not sys.stdout.isatty():
            from tuitrain.replay_print import print_report, wait_finished

            if follow:
                wait_finished(runs)
            print_report(runs, metric)
            return
        from tuitrain.ui.replay.launch import run_replay

        run_replay(runs, follow=follow, metric=metric)
    except RunFileError as e:
        raise _fail(str(e)) from None
    finally:
        for rf in runs:
            rf.close()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_STOPPED)


if __name__ == "__main__":
    main()
