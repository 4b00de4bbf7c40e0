"""``tuitrain replay`` and ``tuitrain watch --attach RUN.h5``: one implementation of showing run files,
finished or still being written by another process (a script started on its own, a detached watch)."""

from __future__ import annotations

import sys
from pathlib import Path

from tuitrain.commands import fail


def replay_files(run_files: list[Path], follow: bool, metric: str, print_only: bool) -> None:
    """The replay dashboard on ``run_files`` (``follow``: keep up with runs still being written), or,
    with ``print_only`` or no terminal on stdout, the printed report (after they finish, when
    following). A sweep folder stands for its run files (tuitrain.sweep.paths). A file that is not a
    run file is bad input (exit 2)."""
    from tuitrain.runfile.reader import RunFileError, open_run
    from tuitrain.sweep.paths import expand_sweeps
    from tuitrain.ui.replay.compare import check_metric, declared_metrics

    run_files = expand_sweeps(run_files, follow=follow)
    runs = []
    try:
        for path in run_files:
            runs.append(open_run(path))
        try:  # a per-step scalar or epoch metric the files declare (a user loop's own key) too
            check_metric(metric, declared_metrics(runs))
        except ValueError as e:
            raise fail(str(e)) from None
        if print_only or not sys.stdout.isatty():
            from tuitrain.replay_print import print_report, wait_finished

            if follow:
                wait_finished(runs)
            print_report(runs, metric)
            return
        from tuitrain.ui.replay.launch import run_replay

        run_replay(runs, follow=follow, metric=metric)
    except RunFileError as e:
        raise fail(str(e)) from None
    finally:
        for rf in runs:
            rf.close()
