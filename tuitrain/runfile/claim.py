"""Claiming a run's paths so that no run is ever lost, overwritten or written through a planted link.

A run owns ``<out>`` (the HDF5 run file) and the companions beside it: ``<out stem>.pt`` (the checkpoint),
``.log`` (the ``watch`` worker's log) and ``.lock``. The rules, each one the answer to a way runs were
lost (issue 9, section 3):

* **Refuse, don't replace.** An existing run file, checkpoint or log (a symbolic link counts) is only
  replaced with ``--overwrite``. :func:`check_free` says so as bad input before anything starts; the
  writer checks again when it puts the file in place, atomically (``link()`` fails if the name exists).
* **One writer per run.** :class:`RunLock` is an ``flock`` on ``<out stem>.lock``, held for the life of
  the writer, so a second run on the same ``--out`` is refused instead of renaming its file over the
  first one's. It is a separate file, not the ``.h5``: HDF5 takes its own locks on the ``.h5`` (and
  ``HDF5_USE_FILE_LOCKING`` changes them), and readers (``info``, ``watch``, ``replay --follow``) never
  touch the ``.lock``, so they read a run that is being written exactly as before. The holder removes
  the lock file when it ends; a killed holder leaves an unlocked one behind, which means nothing.
* **Never through a link.** Everything is created under a fresh random name in the same directory
  (``mkstemp``: ``O_EXCL``, mode 0600) and renamed into place, or opened with ``O_EXCL|O_NOFOLLOW``; a
  rename replaces a symbolic link itself, never its target.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from tuitrain.config import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; the other rules still hold
    fcntl = None  # type: ignore[assignment]


class OutTaken(ConfigError):
    """``--out`` names a run that exists or is being written: bad input (exit 2), nothing was touched."""


class RunFileWriteError(Exception):
    """The run file could not be written (disk full, I/O error). One paragraph meant for the user; it
    names the run file, never a temporary name. The engine ends the run ``failed`` with it (exit 1)."""


OVERWRITE_ENV = "TUITRAIN_OVERWRITE"  # "1": --overwrite was given; travels to the training processes
# Set by tuitrain's own torchrun launcher for its ranks: the launching command checked --out already
# (and a data-parallel `watch` worker created <out>.log itself), so the ranks do not check it again.
LAUNCHED_ENV = "TUITRAIN_LAUNCHED"


def overwrite_asked() -> bool:
    """``--overwrite`` as the training processes see it: ``run``/``watch`` set :data:`OVERWRITE_ENV`
    for the processes they start (the ``watch`` worker, torchrun's ranks), which inherit it. A value in
    the user's own shell counts for nothing: the command sets it from its own option every time."""
    return os.environ.get(OVERWRITE_ENV, "") == "1"


def launched_rank() -> bool:
    """Whether this process is a rank started by tuitrain's own launcher (see :data:`LAUNCHED_ENV`)."""
    return os.environ.get(LAUNCHED_ENV, "") == "1" and "RANK" in os.environ


def companions(out: Path) -> dict[str, Path]:
    """The files beside a run file that belong to it (one owner for the names)."""
    return {what: out.with_suffix(suffix) for what, suffix in COMPANION_SUFFIXES.items()}


COMPANION_SUFFIXES = {"checkpoint": ".pt", "log": ".log", "lock": ".lock"}


def lock_path(out: Path) -> Path:
    return out.with_suffix(COMPANION_SUFFIXES["lock"])


def existing(out: Path) -> list[Path]:
    """The run file and the companions a new run would replace, where they exist (links included)."""
    c = companions(out)
    return [p for p in (out, c["checkpoint"], c["log"]) if os.path.lexists(p)]


def check_free(out: Path, overwrite: bool) -> None:
    """Refuse (as :class:`OutTaken`) an ``--out`` that another run is writing, or that holds a run,
    unless ``overwrite``. Nothing is created or changed."""
    pid = RunLock(out).holder()
    if pid is not None:
        raise OutTaken(
            f"--out {out}: another tuitrain run ({pid}) is writing it now; wait for it to end, "
            "or choose another --out. (`tuitrain info` and `replay --follow` can read it meanwhile.)"
        )
    found = existing(out)
    if found and not overwrite:
        names = ", ".join(str(p) + (" (a symbolic link)" if p.is_symlink() else "") for p in found)
        raise OutTaken(
            f"--out {out}: {names} already exist{'s' if len(found) == 1 else ''}; tuitrain never "
            "replaces a run without being asked: choose another --out, or add --overwrite to replace "
            f"{'it' if len(found) == 1 else 'them'}."
        )


def drop_replaced_checkpoint(out: Path) -> None:
    """With ``--overwrite``, once the new run file is in place: remove the replaced run's checkpoint
    (the link itself if it is one, never its target), so that a ``.pt`` beside the run file is always
    this run's. (The ``watch`` worker's ``.log`` is already this run's: it was created anew.) Never
    fails the run: a directory in the way is left alone (saving the checkpoint then warns about it),
    and so is anything that cannot be removed."""
    path = companions(out)["checkpoint"]
    with contextlib.suppress(OSError):
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)


class RunLock:
    """An exclusive ``flock`` on ``<out stem>.lock``: one tuitrain writer per run file at a time."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = lock_path(self.out)
        self._fd: int | None = None

    def acquire(self, wait: float = 0.25) -> None:
        """Take the lock or raise :class:`OutTaken`. ``wait`` rides out a concurrent :meth:`holder`
        probe (it holds a shared lock for microseconds); a real holder keeps it for a whole run."""
        deadline = time.monotonic() + wait
        while True:
            fd = self._open(os.O_RDWR | os.O_CREAT)
            if fcntl is None or _try_flock(fd, exclusive=True):
                # A holder that is ending unlinks the file while it still holds the lock: if the name
                # now points elsewhere (or nowhere), this lock guards nothing; take the new file's.
                if _same_file(fd, self.path):
                    self._fd = fd
                    with contextlib.suppress(OSError):  # who holds it: for messages only (disk full?)
                        os.ftruncate(fd, 0)
                        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                    return
                os.close(fd)
                continue
            holder = _read(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise OutTaken(
                    f"--out {self.out}: another tuitrain run ({holder or 'unknown pid'}) is writing it "
                    "now; wait for it to end, or choose another --out."
                )
            time.sleep(0.02)

    def holder(self) -> str | None:
        """Who holds the lock (``"pid N on HOST"``) or None when nobody does; takes nothing."""
        if fcntl is None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _link_refused(self.path, e) from None
        try:
            if _try_flock(fd, exclusive=False):
                return None
            return _read(fd) or "unknown pid"
        finally:
            os.close(fd)  # closing drops a probe's shared lock

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: see :meth:`acquire`)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if _same_file(fd, self.path):
                os.unlink(self.path)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise _link_refused(self.path, e) from None


def reserve(out: Path) -> bool:
    """Claim a default run-file name for this process: create its lock file with ``O_EXCL``, so two runs
    started in the same second never pick the same name. False if the name is taken. A reservation
    nobody took the lock of (the command failed before training) is removed at exit."""
    try:
        fd = os.open(
            lock_path(out), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
    except FileExistsError:
        return False
    os.close(fd)
    atexit.register(_drop_reservation, lock_path(out))
    return True


def file_name(name: str) -> str:
    """A run name as one safe file name: path separators, control characters and the like become
    ``_``, leading dots go (no ``..``, no hidden files), at most 100 characters; ``run`` if nothing
    is left."""
    safe = re.sub(r"[^\w.+-]+", "_", name, flags=re.UNICODE).lstrip("._-")[:100].rstrip("._-")
    return safe or "run"


def claim_default_out(name: str, runs: Path = Path("runs")) -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>.h5``, a name no other run has or is taking: its run file,
    checkpoint, log and lock are all free, and the lock file is created (``O_EXCL``, :func:`reserve`)
    so two runs started in the same second get ``-2``, ``-3``. The name becomes a plain file name
    (:func:`file_name`): a ``name = "../../x"`` cannot put the run outside ``runs``. The one rule for
    a preset's run (``tuitrain run``) and a script's (``tuitrain.init``). If ``runs`` cannot be
    created, the plain first name is returned: the caller's own check of it says what is wrong."""
    base = f"{file_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError:
        return runs / f"{base}.h5"
    for n in range(1, 10_000):
        path = runs / (f"{base}.h5" if n == 1 else f"{base}-{n}.h5")
        taken = [path, *companions(path).values()]
        if not any(os.path.lexists(p) for p in taken) and reserve(path):
            return path
    raise ConfigError(f"{runs}: no free run-file name for {base}; give --out.")


def create_exclusive(path: Path, overwrite: bool, *, append: bool = True) -> int:
    """A new file at ``path``, opened for writing, that is never a link's target: ``O_EXCL|O_NOFOLLOW``
    where nothing may be replaced, else a fresh private name renamed over whatever is there."""
    flags = os.O_WRONLY | (os.O_APPEND if append else 0) | os.O_CLOEXEC
    if not overwrite:
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise OutTaken(f"{path}: already exists; add --overwrite to replace it.") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.fchmod(fd, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if append:  # mkstemp opens O_RDWR without O_APPEND; nothing else writes this new file yet
        os.lseek(fd, 0, os.SEEK_END)
    return fd


@contextlib.contextmanager
def private_temp(final: Path) -> Iterator[Path]:
    """A fresh, empty, private file in ``final``'s directory (a random ``.NAME.*.partial``); removed on
    the way out unless the body renamed it away."""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.fchmod(fd, 0o644 & ~_umask())
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``final``: replacing what is there only with ``overwrite`` (a link is replaced,
    its target untouched), else atomically refusing an existing name (:class:`OutTaken`)."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final, follow_symlinks=False)
    except FileExistsError:
        raise OutTaken(
            f"--out {final}: a file of that name appeared while this run started; it was left as it "
            "is. Choose another --out, or add --overwrite to replace it."
        ) from None
    except OSError:  # no hard links here (some network and FUSE file systems): check, then rename
        if os.path.lexists(final):
            raise OutTaken(f"--out {final}: already exists; add --overwrite to replace it.") from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)


def save_beside(final: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file with ``write(fileobj)`` under a private name and rename it to ``final`` (replacing
    a file or link there, never writing through it). Leaves nothing behind if ``write`` raises."""
    with private_temp(final) as tmp:
        with open(tmp, "r+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


def describe_write_error(path: Path, e: BaseException) -> str:
    """What went wrong writing ``path``, in words, from an h5py/OS error (whose text may name a
    temporary file: it is not repeated)."""
    code = getattr(e, "errno", None)
    text = str(e)
    for num, words in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded")):
        if code == num or f"errno = {num}," in text or words in text:
            return f"{words.lower()}: {path}"
    if code == errno.EIO or "Input/output error" in text:
        return f"input/output error: {path}"
    first = text.split("(", 1)[0].strip() or type(e).__name__
    return f"cannot write {path}: {first}"


def _try_flock(fd: int, exclusive: bool) -> bool:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return True  # a file system without locks: the existence checks still protect runs
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return ""


def _link_refused(path: Path, e: OSError) -> OutTaken | OSError:
    if e.errno == errno.ELOOP:
        return OutTaken(
            f"{path}: is a symbolic link; tuitrain does not follow links beside a run. Remove it."
        )
    return e


def _drop_reservation(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if (fcntl is None or _try_flock(fd, exclusive=True)) and not _read(fd) and _same_file(fd, path):
                os.unlink(path)  # unused: no writer ever took it (a writer writes its pid into it)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux tells (other threads may create files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
