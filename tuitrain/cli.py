"""The ``tuitrain`` command line. Thin commands; heavy imports only inside the command that needs them.

``import torch`` takes about 3 s and ``import torchvision`` about 5 s on a small machine, so nothing at
module level here imports either (``tuitrain --help`` stays well under half a second). Every bad input
ends as one clear message on stderr and exit code 2, never a traceback. What the commands do lives in
:mod:`tuitrain.commands`; this module holds their options and wiring.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tuitrain.commands import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_STOPPED, fail
from tuitrain.commands.replay import replay_files
from tuitrain.commands.resolve import (
    build_config,
    check_out,
    default_out,
    preset_folders,
    presets_dir,
    resolve_preset,
)
from tuitrain.commands.resume import configure
from tuitrain.commands.script import (
    is_script,
    preset_options_given,
    refuse_args,
    refuse_options,
    start_script,
)
from tuitrain.commands.show import info_summary, json_default, print_info, print_presets
from tuitrain.commands.training import start
from tuitrain.config import ConfigError
from tuitrain.launch import Launch

# Re-exported from tuitrain.commands: tests and docs/screenshot.py build configs as the commands do.
__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_STOPPED",
    "app",
    "build_config",
    "check_out",
    "default_out",
    "main",
    "presets_dir",
    "resolve_preset",
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
    help="A terminal-first live monitor for PyTorch training: loss curves, per-layer gradient flow "
    "and a lossless HDF5 history of every run.",
)


def _print_version(value: bool) -> None:
    if value:
        from tuitrain import __version__

        typer.echo(f"tuitrain {__version__}")
        raise typer.Exit()


@app.callback()
def _app(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options of ``tuitrain`` itself (the app's help text is the Typer's, above)."""


# Options shared by `run` and `watch` -------------------------------------------------------------
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a config key: KEY=VALUE (TOML value), repeatable.", metavar="KEY=VALUE"
    ),
]
DataOpt = Annotated[
    str | None, typer.Option("--data", help="Dataset: synthetic (offline), cifar10, cifar100, toy2d.")
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", help="Where CIFAR lives or is downloaded to (also $TUITRAIN_DATA)."),
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help="Number of epochs.")]
StepsOpt = Annotated[
    int | None, typer.Option("--max-steps", help="Stop after this many steps (quick looks).")
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Training batch size.")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto (cuda > mps > cpu), cpu, cuda or mps.")]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="Seed for initialisation, shuffling and augmentation: 0 to 2147483647."),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Run file to write (default runs/<name>-<time>.h5).")
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Run name (default: the preset's name).")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace the run at --out (its .h5, .pt checkpoint and .log); without it an existing "
        "run is never replaced.",
    ),
]
ResumeOpt = Annotated[
    Path | None,
    typer.Option(
        "--resume",
        help="Continue this run from its checkpoint: its config (with --set and options on top), weights, "
        "optimizer and schedule, at its next epoch; into the same file, or a copy of it at --out. "
        "PRESET may be left out.",
        metavar="RUN.h5",
    ),
]
# Data-parallel (torchrun) options, shared by `run` and `watch`
NprocOpt = Annotated[
    int,
    typer.Option(
        "--nproc-per-node",
        min=1,
        help="Data-parallel: processes on this machine "
        "(one per GPU), started with torchrun; --batch-size stays the global batch.",
    ),
]
NnodesOpt = Annotated[
    int,
    typer.Option(
        "--nnodes",
        min=1,
        help="Machines in a data-parallel run; each runs this command with its own --node-rank.",
    ),
]
NodeRankOpt = Annotated[
    int,
    typer.Option(
        "--node-rank",
        min=0,
        help="This machine's index, 0..nnodes-1; node 0 holds rank 0, which writes the run file.",
    ),
]
MasterAddrOpt = Annotated[
    str | None,
    typer.Option(
        "--master-addr",
        help="Address of node 0 that every node reaches (needed with --nnodes > 1; default 127.0.0.1).",
    ),
]
MasterPortOpt = Annotated[
    int | None,
    typer.Option(
        "--master-port",
        help="Free TCP port on node 0 (default: any free port on one machine, 29500 across machines).",
    ),
]


TargetArg = Annotated[
    str | None,
    typer.Argument(
        help="Preset TOML file (or a preset name such as vgg38), or your own training script (train.py) "
        "that calls tuitrain.init.",
        metavar="PRESET|SCRIPT.py",
        show_default=False,
    ),
]
ScriptArgs = Annotated[
    list[str] | None,
    typer.Argument(
        help="A script's own arguments, after --: tuitrain watch train.py -- --epochs 2.",
        metavar="-- SCRIPT_ARGS",
        show_default=False,
    ),
]


@app.command()
def run(
    preset: TargetArg = None,
    script_args: ScriptArgs = None,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Headless: rich progress on the console.")] = False,
    sets: SetOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    max_steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    out: OutOpt = None,
    name: NameOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    nproc_per_node: NprocOpt = 1,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
) -> None:
    """Train a preset, or run your own training script, and write its full history to one HDF5 run
    file."""
    given = preset_options_given(
        set=sets, data=data, data_dir=data_dir, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        device=device, seed=seed, name=name, nproc_per_node=nproc_per_node, nnodes=nnodes,
        node_rank=node_rank, master_addr=master_addr, master_port=master_port, resume=resume,
    )  # fmt: skip
    if is_script(preset) and resume is None:  # --resume: commands/resume.py refuses a script
        try:
            refuse_options(given)
        except ConfigError as e:
            raise fail(str(e)) from None
        start_script(preset, script_args, out, overwrite, "detach", dashboard=not no_ui, say_why=False)
        return
    launch = Launch(nproc_per_node, nnodes, node_rank, master_addr, master_port)
    try:
        refuse_args(script_args, preset)
        cfg, out_path = configure(
            preset, resume, sets, out, overwrite, data=data, data_dir=data_dir, epochs=epochs,
            max_steps=max_steps, batch_size=batch_size, device=device, seed=seed, name=name,
        )  # fmt: skip
        launch.check(cfg)
    except ConfigError as e:
        raise fail(str(e)) from None
    start(cfg, out_path, launch, "detach", dashboard=not no_ui, say_why=False)


@app.command()
def watch(
    preset: TargetArg = None,
    script_args: ScriptArgs = None,
    attach: Annotated[
        Path | None,
        typer.Option(
            "--attach",
            help="Watch a run file another process is writing (a script started on its own), "
            "as `tuitrain replay --follow` does.",
            metavar="RUN.h5",
        ),
    ] = None,
    sets: SetOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    max_steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    out: OutOpt = None,
    name: NameOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = None,
    on_hangup: Annotated[
        str,
        typer.Option(
            "--on-hangup",
            help="When the terminal goes away (SSH drops): 'detach' keeps training, 'stop' stops it.",
        ),
    ] = "detach",
    nproc_per_node: NprocOpt = 1,
    nnodes: NnodesOpt = 1,
    node_rank: NodeRankOpt = 0,
    master_addr: MasterAddrOpt = None,
    master_port: MasterPortOpt = None,
) -> None:
    """Train a preset, or run your own training script, in the background and watch it live in the
    terminal dashboard; or attach to a run another process writes."""
    given = preset_options_given(
        set=sets, data=data, data_dir=data_dir, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        device=device, seed=seed, name=name, nproc_per_node=nproc_per_node, nnodes=nnodes,
        node_rank=node_rank, master_addr=master_addr, master_port=master_port, resume=resume,
    )  # fmt: skip
    if attach is not None:
        if preset is not None or script_args or out is not None or overwrite or any(given.values()):
            raise fail(
                f"--attach {attach}: watches a run file another process writes, so it takes nothing "
                "else: no preset, script or options (tuitrain watch --attach runs/x.h5)."
            )
        replay_files([attach], follow=True, metric="loss", print_only=False)
        return
    if preset is None and resume is None:
        raise fail(
            "watch what? Give a preset (tuitrain watch vgg38), your own training script "
            "(tuitrain watch train.py -- ARGS) or a run file another process writes "
            "(tuitrain watch --attach runs/x.h5)."
        )
    if on_hangup not in ("detach", "stop"):
        raise fail(f"--on-hangup {on_hangup!r}: allowed: detach, stop.")
    if is_script(preset) and resume is None:  # --resume: commands/resume.py refuses a script
        try:
            refuse_options(given)
        except ConfigError as e:
            raise fail(str(e)) from None
        start_script(preset, script_args, out, overwrite, on_hangup, dashboard=True, say_why=True)
        return
    launch = Launch(nproc_per_node, nnodes, node_rank, master_addr, master_port)
    try:
        refuse_args(script_args, preset)
        cfg, out_path = configure(
            preset, resume, sets, out, overwrite, data=data, data_dir=data_dir, epochs=epochs,
            max_steps=max_steps, batch_size=batch_size, device=device, seed=seed, name=name,
        )  # fmt: skip
        launch.check(cfg, dashboard=True)
    except ConfigError as e:
        raise fail(str(e)) from None
    start(cfg, out_path, launch, on_hangup, dashboard=True, say_why=True)


@app.command()
def sweep(
    presets: Annotated[
        list[str] | None,
        typer.Argument(
            help="One or more presets (names or TOML files); every preset is run with every grid value.",
            metavar="PRESET...",
            show_default=False,
        ),
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            help="Values of a config key to try: KEY=V1,V2,... or KEY=[TOML array], repeatable "
            "(the cartesian product).",
            metavar="KEY=V1,V2",
        ),
    ] = None,
    sets: SetOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    max_steps: StepsOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    seed: SeedOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The sweep folder (default runs/sweep-<preset>-<time>/).", metavar="DIR"
        ),
    ] = None,
    parallel: Annotated[
        str,
        typer.Option(
            "--parallel",
            help="Variants at a time: auto (one per GPU on CUDA, else one per CPU core) or a number.",
            metavar="N|auto",
        ),
    ] = "auto",
    no_ui: Annotated[
        bool, typer.Option("--no-ui", help="Headless: one progress row per variant, then the table.")
    ] = False,
    print_commands: Annotated[
        bool,
        typer.Option(
            "--print-commands",
            help="Start nothing: print one `tuitrain run` command per variant as a bash script (for a "
            "scheduler) and write the sweep's manifest.",
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="--print-commands as: shell (default) or slurm (a job array)."),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Use a sweep folder that is not empty, replacing the variants' files."
        ),
    ] = False,
    attach: Annotated[
        Path | None,
        typer.Option(
            "--attach",
            help="Open the dashboard on a sweep folder (running or finished) instead of starting a sweep.",
            metavar="DIR",
        ),
    ] = None,
    run_folder: Annotated[
        Path | None, typer.Option("--_run-folder", hidden=True, help="The detached runner of DIR's sweep.")
    ] = None,
) -> None:
    """Run the variants of an experiment (presets x --grid values), each a run file in one sweep folder."""
    from tuitrain.commands.sweep import attach_command, run_folder_command, sweep_command

    if run_folder is not None:
        run_folder_command(run_folder)
    if attach is not None:
        attach_command(attach, bool(presets or grid or sets))
    options = {
        "data": data, "data_dir": data_dir, "epochs": epochs, "max_steps": max_steps,
        "batch_size": batch_size, "device": device, "seed": seed,
    }  # fmt: skip
    sweep_command(
        presets or [], grid or [], sets or [], options, out, parallel, no_ui, print_commands, fmt, overwrite
    )


@app.command()
def presets(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="List only this folder (default: ./presets, if any, and tuitrain's own)."),
    ] = None,
) -> None:
    """List the presets: name, model, dataset, parameters and what each one is for."""
    folders = [("--dir", directory)] if directory is not None else preset_folders()
    groups = [(whose, folder, sorted(folder.glob("*.toml"))) for whose, folder in folders]
    groups = [g for g in groups if g[2]]
    if not groups:
        where = " or ".join(str(folder) for _, folder in folders)
        raise fail(f"no presets (*.toml) found in {where}.")
    print_presets(groups)


@app.command()
def info(
    run_file: Annotated[
        Path, typer.Argument(help="A run file (.h5) written by tuitrain, or a sweep folder.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a run file: config, model summary, status and final metrics (a sweep folder: its variants)."""
    from tuitrain.runfile.reader import RunFileError, open_run

    if run_file.is_dir():
        from tuitrain.sweep.paths import print_sweep_summary, sweep_summary

        sweep = sweep_summary(run_file)
        if as_json:
            typer.echo(json.dumps(sweep, indent=2))
        else:
            print_sweep_summary(sweep)
        return

    try:
        with open_run(run_file) as rf:
            summary = info_summary(rf)
    except RunFileError as e:
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=json_default))
        return
    print_info(summary)


@app.command()
def diagnose(
    run_files: Annotated[
        list[Path], typer.Argument(help="Run files (.h5) written by tuitrain.", metavar="RUN.h5...")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of the findings.")] = False,
) -> None:
    """Say what is wrong with a run: one line per finding (where, since when, evidence, fix)."""
    from tuitrain.commands.diagnose import diagnose_files

    diagnose_files(run_files, as_json)


@app.command()
def export(
    run_file: Annotated[Path, typer.Argument(help="A run file (.h5) written by tuitrain.", metavar="RUN.h5")],
    csv_dir: Annotated[
        Path | None,
        typer.Option("--csv", help="Write tidy CSV tables into DIR (docs/export.md).", metavar="DIR"),
    ] = None,
    tb_dir: Annotated[
        Path | None,
        typer.Option("--tensorboard", help="Write TensorBoard event files into DIR.", metavar="DIR"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files an earlier export wrote.")
    ] = False,
) -> None:
    """Export a run file as CSV tables and/or TensorBoard event files, for other tools."""
    from tuitrain.commands.export import export_file

    export_file(run_file, csv_dir, tb_dir, overwrite)


@app.command()
def report(
    run_files: Annotated[
        list[Path],
        typer.Argument(help="Run files (.h5) written by tuitrain, or sweep folders.", metavar="RUN.h5..."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The report folder (created if missing).", metavar="DIR")
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="Figure format: png, svg or pdf (PNG is always written too).")
    ] = "png",
    epochs: Annotated[
        str | None, typer.Option("--epochs", help="Epochs the figures show, e.g. 1,5.", metavar="LIST")
    ] = None,
    steps: Annotated[
        str | None, typer.Option("--steps", help="Steps the figures show, e.g. 100,2000.", metavar="LIST")
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", help="Leave out layers matching PATTERN (fnmatch).", metavar="PATTERN"),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files an earlier report wrote.")
    ] = False,
) -> None:
    """Write a report of runs into DIR: README.md, the final table (Markdown, CSV, LaTeX), the figures."""
    from tuitrain.commands.report import report_files

    report_files(run_files, out, fmt, epochs, steps, exclude or [], overwrite)


@app.command()
def replay(
    run_files: Annotated[
        list[Path],
        typer.Argument(
            help="Run files (.h5) written by tuitrain, or sweep folders; several are compared.",
            metavar="RUN.h5...",
        ),
    ],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep up with runs another process is still "
            "writing; shows when they finish or their writer dies.",
        ),
    ] = False,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            "-m",
            help="The overlaid curve: loss, acc, lr, samples_per_s, "
            "step_time, train_loss, train_acc, val_loss, val_acc.",
        ),
    ] = "loss",
    print_only: Annotated[
        bool,
        typer.Option(
            "--print",
            help="No TUI: print the final table and a chart of "
            "--metric to stdout (the default when stdout is not a terminal).",
        ),
    ] = False,
) -> None:
    """Scrub through finished runs, follow running ones, compare several side by side."""
    replay_files(run_files, follow, metric, print_only)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        _leave(EXIT_STOPPED)
    except SystemExit as e:
        _leave(e.code)


def _leave(code: object) -> None:
    """Exit with ``code``; after a run file failed to write, without the interpreter's shutdown: HDF5
    objects of the failed file can crash its last garbage collection (see runfile.diskfull)."""
    diskfull = sys.modules.get("tuitrain.runfile.diskfull")
    if diskfull is not None and diskfull.hdf5_poisoned():
        if isinstance(code, str):
            print(code, file=sys.stderr)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    sys.exit(code)


if __name__ == "__main__":
    main()
