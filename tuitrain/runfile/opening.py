"""Opening a run file and checking that it is one: every failure, from a missing path to a truncated
file, becomes one :class:`RunFileError` whose message starts with the path; no h5py traceback escapes.

Live files: the writer keeps the file open in SWMR mode, so a plain open is refused ("file is already
open for write") and :func:`open_h5` retries with ``swmr=True``. A SIGKILLed writer leaves the file in
exactly the same state, so "opened with SWMR" alone cannot tell a live run from a dead one; the writer
records its pid, host and :func:`start_ticks` so that a reader on the same host can check that process.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tuitrain.events import PROBE_NAMES, STEP_SCALARS
from tuitrain.runfile import schema as S


class RunFileError(Exception):
    """A run file that cannot be read. The message is one line, starts with the path, meant for users."""


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


# Every dataset a preset's run file of this schema has (the gradient probe, the standard step scalars).
# What a given file must have is what it declares: tuitrain.runfile.validate; this list is for tests.
REQUIRED = (
    [S.path(S.LAYERS, n) for n in S.LAYER_FIELDS]
    + [S.path(S.STEPS, n) for n in (*S.STEP_INDEX, *STEP_SCALARS)]
    + [S.path(S.PROBES, "grad", n) for n in ("step", *PROBE_NAMES)]
    + [S.path(S.EPOCHS, n) for n in S.EPOCH_FIELDS]
    + [S.path(S.EVENTS, n) for n in S.EVENT_FIELDS]
    + [S.path(S.METRICS, n) for n in S.METRIC_FIELDS]
)


def _stored_eof(path: Path) -> int | None:
    """End-of-file address recorded in a version 2/3 superblock at offset 0 (what libver='latest'
    writes), or None for other layouts."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(48)
    except OSError:
        return None
    if head[:8] != b"\x89HDF\r\n\x1a\n" or len(head) < 48 or head[8] not in (2, 3) or head[9] not in (4, 8):
        return None
    fmt = "<3I" if head[9] == 4 else "<3Q"
    base, _ext, eof = struct.unpack_from(fmt, head, 12)
    return int(base + eof)


# A live SWMR writer in the middle of a flush has recorded a larger end of file than it has written yet
# (its superblock's EOF is ahead of the bytes for a moment): a plain open then says "truncated file".
# Such a file is retried for this long before it is called truncated; a file truly cut short (a dead
# writer) is refused as before, this much later.
_MID_FLUSH_SECONDS = 2.0
_RECENT_SECONDS = 10.0  # a file changed this recently may have a writer mid-flush


def _recently_written(path: Path) -> bool:
    """Whether the file changed in the last few seconds: the only kind whose recorded end may be ahead
    of its bytes while it is healthy (a writer mid-flush). HDF5 keeps no on-disk mark of a live SWMR
    writer that a reader could check instead (the superblock's flags byte reads 0 while one writes)."""
    try:
        return time.time() - path.stat().st_mtime < _RECENT_SECONDS
    except OSError:
        return False


def open_h5(path: Path) -> tuple[h5py.File, bool]:
    """Open plain if the file was closed cleanly, else with SWMR (live or killed writer). A file written
    a moment ago whose recorded end is ahead of its bytes (a writer mid-flush) is retried for a moment."""
    deadline = time.monotonic() + _MID_FLUSH_SECONDS
    while True:
        try:
            return _open_once(path)
        except RunFileError as e:
            if "truncated file" not in str(e) or not _recently_written(path) or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _open_once(path: Path) -> tuple[h5py.File, bool]:
    try:
        return h5py.File(path, "r"), False
    except OSError as plain:
        reason = one_line(plain)
        eof = _stored_eof(path)
        # Only a file still marked open for write gets the SWMR retry: on a truncated file a SWMR open
        # retries its metadata reads for minutes instead of failing.
        if "already open for write" in reason and (eof is None or eof <= path.stat().st_size):
            try:
                return h5py.File(path, "r", swmr=True, libver="latest"), True
            except OSError as e:
                reason = (
                    one_line(e)
                    + " (if its writer died before switching to SWMR, `h5clear -s` may recover it)"
                )
        raise RunFileError(f"{path}: truncated or corrupt HDF5 file: {reason}") from None


def open_checked(p: Path) -> tuple[h5py.File, bool]:
    """Open ``p`` if it is an HDF5 file (see :func:`open_h5`); whether it is a run is
    :func:`read_root_attrs`' business."""
    if not p.exists():
        raise RunFileError(f"{p}: no such run file")
    if p.is_dir():
        raise RunFileError(f"{p}: is a directory, not a run file (expected an .h5 file)")
    try:
        is_h5 = h5py.is_hdf5(p)
    except OSError as e:
        raise RunFileError(f"{p}: cannot read: {one_line(e)}") from None
    if not is_h5:
        raise RunFileError(f"{p}: not an HDF5 file (tuitrain run files are HDF5)")
    return open_h5(p)


@contextlib.contextmanager
def guard(path: Path, what: str) -> Iterator[None]:
    """Turn h5py's errors while reading ``what`` into a RunFileError."""
    try:
        yield
    except RunFileError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise RunFileError(f"{path}: cannot read {what}: {one_line(e)}") from None


def read_root_attrs(path: Path, f: h5py.File) -> dict[str, Any]:
    """The root attributes, once the format and schema version say this is a readable run and none of
    its schema's attributes is missing. Resolves no link (the datasets are validate's business)."""
    with guard(path, "the root attributes"):
        attrs = {k: f.attrs[k] for k in f.attrs}
    fmt = attrs.get("format")
    fmt = fmt.decode("utf-8", "replace") if isinstance(fmt, bytes) else fmt
    if fmt != S.FORMAT:
        what = "no `format` attribute" if fmt is None else f"format {fmt!r}"
        raise RunFileError(f"{path}: HDF5 but not a tuitrain run file ({what}, expected {S.FORMAT!r})")
    version = attrs.get("schema_version")
    if not isinstance(version, (int, np.integer)) or version < 1:
        raise RunFileError(f"{path}: bad schema_version {version!r} (corrupt run file)")
    if version > S.SCHEMA_VERSION:
        raise RunFileError(
            f"{path}: schema_version {int(version)} is newer than this tuitrain supports "
            f"({S.SCHEMA_VERSION}); upgrade tuitrain to read it"
        )
    missing = [k for k in S.ROOT_ATTRS if k not in attrs and (version >= 2 or k not in S.ADDED_IN_2)]
    if missing:
        raise RunFileError(f"{path}: incomplete or corrupt run file, missing {', '.join(missing[:4])}")
    return attrs


def start_ticks(pid: int | str) -> int | None:
    """Process start time in clock ticks since boot (Linux /proc), None where unavailable."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
