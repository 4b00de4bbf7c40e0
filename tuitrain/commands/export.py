"""What ``tuitrain export RUN.h5 --csv DIR [--tensorboard DIR] [--overwrite]`` does: checks every
input before anything is written (the run file opens, each DIR is usable and holds nothing this export
would replace), then writes the CSV tables and/or the TensorBoard event file (:mod:`tuitrain.export`).
Bad input is one paragraph and exit 2; torch is imported only for ``--tensorboard``."""

from __future__ import annotations

from pathlib import Path

import typer

from tuitrain.commands import fail


def export_file(run_file: Path, csv_dir: Path | None, tb_dir: Path | None, overwrite: bool) -> None:
    if csv_dir is None and tb_dir is None:
        raise fail(
            "export needs somewhere to write: --csv DIR (tidy CSV tables, docs/export.md) and/or "
            "--tensorboard DIR (TensorBoard event files), e.g. tuitrain export RUN.h5 --csv out/."
        )
    from tuitrain.export.csv import ExportError, check_dir, export_csv, planned_files
    from tuitrain.export.tensorboard import check_tb_dir, export_tensorboard, require_tensorboard
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(run_file) as rf:
            if csv_dir is not None:
                check_dir(csv_dir, planned_files(rf), overwrite)
            if tb_dir is not None:
                require_tensorboard()
                check_tb_dir(tb_dir, overwrite)
            if csv_dir is not None:
                written = export_csv(rf, csv_dir, overwrite)
                typer.echo(f"wrote {len(written)} files to {csv_dir}: {', '.join(p.name for p in written)}")
            if tb_dir is not None:
                path = export_tensorboard(rf, tb_dir, overwrite)
                typer.echo(f"wrote {path}; view it with: tensorboard --logdir {tb_dir}")
    except (RunFileError, ExportError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"cannot write the export: {e.strerror or e} ({e.filename or ''})") from None
