"""The run file: one HDF5 file per run holding its full history, written live and readable any time.

``RunFileWriter`` is the sink the training process feeds; ``open_run`` gives the UI (and anyone with a
notebook) lazy access to a finished, live or crashed run. Neither imports torch or textual. The on-disk
layout is in :mod:`tuitrain.runfile.schema` and docs/run-file.md.
"""

from tuitrain.runfile.append import AppendRefused, check_appendable
from tuitrain.runfile.reader import RunFile, RunFileError, open_run
from tuitrain.runfile.schema import FORMAT, SCHEMA_VERSION
from tuitrain.runfile.snapshots import SnapshotRows
from tuitrain.runfile.writer import RunFileWriter

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "AppendRefused",
    "RunFile",
    "RunFileError",
    "RunFileWriter",
    "SnapshotRows",
    "check_appendable",
    "open_run",
]
