"""Surviving a full disk: space set aside to finish the file with, and an HDF5 close that cannot crash.

What happened before (issue 9, a 2 MB tmpfs): a flush failed with ENOSPC, the file's ``close()`` then
failed too ("Can't decrement id ref count"), which leaves the file open inside the HDF5 library with
dirty metadata it can never write; at interpreter exit the library's own shutdown tries again and the
process dies with SIGSEGV (exit 139) or SIGBUS (135). Measured with h5py 3.16 / HDF5 2.0.

Nor can HDF5 be asked to try again: once a flush has failed midway, every later flush fails too
("slist already enabled?"), even with space freed. So the writer must stop *before* HDF5 meets a full
disk. Before it writes rows it checks the free space (:func:`space_left`, one ``statvfs``); below
:data:`MARGIN_BYTES` plus twice the rows pending it stops as if the disk were full. And before it
creates the file it sets aside some disk space in an unnamed file (:class:`Slack`, ``O_TMPFILE`` where
there is one; freed by the kernel when the process dies, so a SIGKILL leaves nothing behind), which
it frees to finish the file with: the rows pending, the status ``failed`` and the error, then a clean
close. That covers the disk another process fills between two checks too. The amount pending is
about one flush period of rows plus the HDF5 metadata, tens of KB for the presets; 1 MiB (a quarter
of the free space on tiny disks) is ample.

If even that is not enough, :func:`close_h5` swaps HDF5's file descriptor for an in-memory file
(``memfd``) before closing: what HDF5 could not write is dropped (the file on disk keeps what its last
successful flush wrote), and the close, and the process's exit, succeed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

import h5py

SLACK_BYTES = 1 << 20
SLACK_MIN_BYTES = 64 << 10
# Below this much free space (plus twice the rows pending) the writer stops before HDF5 hits the wall.
MARGIN_BYTES = 256 << 10


def space_left(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``directory``'s file system; None if unknown
    (no statvfs, or a file system that reports no size at all, as some FUSE ones do: never a false
    "disk full")."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize if st.f_blocks else None


class Slack:
    """Disk space held in reserve on ``directory``'s file system until :meth:`free` is called."""

    def __init__(self, directory: Path, size: int = SLACK_BYTES) -> None:
        self.size = _slack_size(directory, size)
        self._fh = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - held open on purpose
        try:
            _allocate(self._fh.fileno(), self.size)
        except BaseException:
            self._fh.close()
            raise

    def free(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def _slack_size(directory: Path, wanted: int) -> int:
    free = space_left(directory)
    return wanted if free is None else max(SLACK_MIN_BYTES, min(wanted, free // 4))


def _allocate(fd: int, size: int) -> None:
    """Really allocate ``size`` bytes (a sparse file would reserve nothing)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:
        pass
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: write zeros instead
            raise
    block = b"\0" * 65536
    left = size
    while left > 0:
        left -= os.write(fd, block[: min(left, len(block))])
    os.fsync(fd)


def close_h5(f: h5py.File, flushed: bool) -> bool:
    """Close ``f`` once, in a way that cannot crash the process. ``flushed``: its last flush succeeded,
    so a normal close has next to nothing left to write (the superblock's "closed" mark, in place).
    Otherwise a normal close would fail and poison the exit (see the module docstring): HDF5's file
    descriptor is swapped for an in-memory file first, which drops what it could not write; the file
    on disk keeps its last good flush. A second close after a failed one does not help, so it is
    one or the other. Returns True if everything reached the disk."""
    if flushed:
        try:
            f.close()
            return True
        except Exception:  # noqa: BLE001 - keep the object alive: its __del__ would retry and crash
            _KEEP.append(f)
            _POISONED.append(True)
            return False
    _POISONED.append(True)
    try:
        fd = f.id.get_vfd_handle()
        sink = os.memfd_create("tuitrain-unwritable")
    except Exception:  # noqa: BLE001 - not the sec2 driver, or no memfd (not Linux): nothing better
        _KEEP.append(f)
        return False
    try:
        os.dup2(sink, fd)  # what HDF5 still holds now goes to memory, and the close succeeds
    finally:
        os.close(sink)
    try:
        f.close()
    except Exception:  # noqa: BLE001
        _KEEP.append(f)
    return False


_KEEP: list[h5py.File] = []
_POISONED: list[bool] = []


def hdf5_poisoned() -> bool:
    """Whether a file of this process failed to write: HDF5 objects left behind can then crash the
    interpreter's last garbage collection at exit (SIGSEGV after the run's last line, exit -11 instead
    of 1), so the CLI leaves with ``os._exit`` (tuitrain.cli.main)."""
    return bool(_POISONED)


def free_quietly(slack: Slack | None) -> None:
    if slack is not None:
        with contextlib.suppress(OSError):
            slack.free()
