"""``run``/``watch --resume RUN.h5``: the config a resumed run trains and the file it writes, decided
and checked before anything starts, without torch (the dashboard's process never imports it).

The config is the run file's stored one (the checkpoint holds the same; the training process
compares them) with this command's ``--set`` and options on top, or a PRESET's when one is given.
Either way the model and the optimizer's kind must stay as they were. Without ``--out`` the run
continues in the same file; with one, in a new file that starts as a copy of the old. The checks that
need the checkpoint itself (its step, its weights) are made by the training process
(:func:`tuitrain.train.resume.restore`); all of them are bad input, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuitrain.commands.resolve import build_config, check_out, check_own_model, default_out, options_extra
from tuitrain.config import ConfigError, RunConfig, load_config


def configure(
    preset: str | None,
    resume: Path | None,
    sets: list[str] | None,
    out: Path | None,
    overwrite: bool,
    **options: Any,
) -> tuple[RunConfig, Path]:
    """What ``run``/``watch`` train and where, for a preset or (``--resume``) a run to continue:
    a validated config and a run-file path that may be written; every problem a ConfigError."""
    if resume is not None:
        return resume_config(resume, preset, sets, out, overwrite, **options)
    if preset is None:
        raise ConfigError(
            "nothing to train: give a preset (tuitrain run vgg38), your own training script "
            "(tuitrain run train.py) or a run to continue (tuitrain run --resume runs/x.h5)."
        )
    cfg = build_config(preset, sets, **options)
    out_path = out or default_out(cfg)
    check_out(out_path, overwrite)
    return cfg, out_path


def resume_config(
    run_file: Path,
    preset: str | None,
    sets: list[str] | None,
    out: Path | None,
    overwrite: bool,
    **options: Any,
) -> tuple[RunConfig, Path]:
    """(config, out path) for ``--resume run_file``; ``options`` are the command's ``data``,
    ``data_dir``, ``epochs``, ``max_steps``, ``batch_size``, ``device``, ``seed`` and ``name``."""
    from tuitrain.runfile.claim import OutTaken, RunLock
    from tuitrain.train.resume import check_config, inspect_run

    if preset is not None and preset.endswith(".py"):
        raise ConfigError(
            f"--resume {run_file}: continues a preset's run; a training script ({preset}) resumes "
            "itself, in its own loop."
        )
    out_path = out if out is not None else run_file
    source = inspect_run(run_file, out_path)
    where = f"--resume {run_file}"
    stored = load_config(None, [], {}, base=source.config_toml, base_where=f"{run_file} (its stored config)")
    if preset is not None:
        cfg = build_config(preset, sets, **options)
    else:
        extra = options_extra(**options)
        if options.get("data") is not None:
            extra["data.name"] = options["data"]
        cfg = load_config(
            None, sets, extra, base=source.config_toml, base_where=f"{run_file} (its stored config)"
        )
    check_own_model(cfg)
    cfg.train.resume = str(run_file)
    cfg.out = ""  # where it writes is decided here, not by the stored run's --out
    check_config(stored, cfg, where, source.next_step, source.n_epochs)
    if source.append:
        holder = RunLock(out_path).holder()
        if holder is not None:
            raise OutTaken(f"{where}: another tuitrain run ({holder}) is writing it now.")
        try:
            from tuitrain.runfile.append import check_appendable
        except ImportError:  # pragma: no cover - the append writer is not in this tree yet
            raise ConfigError(
                f"{where}: this tuitrain cannot continue a file in place; give --out."
            ) from None
        check_appendable(out_path)
    else:
        check_out(out_path, overwrite)
    return cfg, out_path
