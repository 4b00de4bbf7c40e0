"""Export a run file for other tools: tidy CSV tables (:mod:`tuitrain.export.csv`) and TensorBoard
event files (:mod:`tuitrain.export.tensorboard`), for ``tuitrain export RUN.h5 --csv DIR
--tensorboard DIR`` (docs/export.md documents every column).

Both read the run file only through :class:`~tuitrain.runfile.reader.RunFile`'s public API, so they
work on every schema the reader opens (tests/data/run_v1.h5 too). Neither imports torch at module
level: the TensorBoard writer imports it inside its function, and only that command pays for it.
"""

from __future__ import annotations

from tuitrain.export.csv import csv_tables, export_csv
from tuitrain.export.tensorboard import TensorBoardMissing, export_tensorboard, tensorboard_scalars

__all__ = ["TensorBoardMissing", "csv_tables", "export_csv", "export_tensorboard", "tensorboard_scalars"]
