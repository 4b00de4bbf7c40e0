"""The sweep folder's manifest, ``DIR/sweep.json``: which variants a sweep has, how each is run, its file.

The runner is the manifest's only writer; everyone else (``replay DIR``, ``report DIR``, a login node
watching a SLURM array) only reads it. Writes are atomic (a temp file in the same folder, then
``os.replace``), so a reader never sees half a manifest.

**The run file owns its status.** The manifest's ``status`` of a variant is what the runner knew last
(``queued``, or ``failed`` before any file existed: bad input, a child that died at start); once the
variant's run file exists, its status is the file's (:func:`status_of`). A variant run by a scheduler
from ``--print-commands`` stays ``queued`` in the manifest for ever, and that is fine.

No torch, no textual here; h5py only inside :func:`status_of`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tuitrain.events import STATUSES as RUN_STATUSES

FORMAT = "tuitrain-sweep"
VERSION = 1
MANIFEST_NAME = "sweep.json"
QUEUED = "queued"
STARTING = "starting"
INCOMPLETE = "incomplete"
# What a variant's status can be: the run file's statuses, "incomplete" (a file whose writer is gone
# before it finished), and "queued" (no file yet, not started).
STATUSES: tuple[str, ...] = (QUEUED, *RUN_STATUSES, INCOMPLETE)


class ManifestError(ValueError):
    """A folder that is not a sweep, or a manifest that cannot be read; the message is one paragraph."""


@dataclass
class Variant:
    """One variant of a sweep: a ``tuitrain run`` child writing ``file`` (relative to the sweep folder)."""

    name: str
    preset: str
    sets: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    file: str = ""
    command: list[str] = field(default_factory=list)
    status: str = QUEUED
    exit_code: int | None = None
    started: float | None = None
    ended: float | None = None
    error: str = ""
    # The child's process id while the runner runs it (None before and after): what
    # :class:`tuitrain.sweep.control.SweepControl` signals, after checking it is still that child.
    pid: int | None = None


@dataclass
class Manifest:
    """A sweep: its name, when and by which command it was made, its parallelism and its variants."""

    name: str
    created: float
    command: list[str] = field(default_factory=list)
    parallel: int = 1
    variants: list[Variant] = field(default_factory=list)
    # The runner's process id while it runs (None before and after), and the GPUs it spreads the
    # variants over: a detached runner (``sweep --_run-folder DIR``) reads them from here.
    runner_pid: int | None = None
    gpus: list[int] = field(default_factory=list)
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # format and version first: what a person opening the file wants to see at the top.
        return {"format": data.pop("format"), "version": data.pop("version"), **data}


def manifest_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / MANIFEST_NAME


def is_sweep_dir(path: str | os.PathLike[str]) -> bool:
    """A folder holding a ``sweep.json`` (valid or not: :func:`load` says what is wrong with it)."""
    p = Path(path)
    return p.is_dir() and manifest_path(p).is_file()


def save(manifest: Manifest, directory: str | os.PathLike[str]) -> Path:
    """Write ``DIR/sweep.json`` atomically (temp file + ``os.replace``); creates DIR if missing."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    target = manifest_path(d)
    fd, tmp = tempfile.mkstemp(prefix=".sweep.", suffix=".json.tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def load(directory: str | os.PathLike[str]) -> Manifest:
    """Read ``DIR/sweep.json``. Raises :class:`ManifestError` (one paragraph naming the folder) when DIR
    is not a sweep folder or its manifest is broken."""
    d = Path(directory)
    path = manifest_path(d)
    if not d.is_dir():
        raise ManifestError(f"{d}: no such folder; a sweep folder is what `tuitrain sweep --out DIR` makes.")
    if not path.is_file():
        raise ManifestError(
            f"{d}: is a directory, not a run file (expected an .h5 file), and not a sweep folder (no "
            f"{MANIFEST_NAME}): `tuitrain sweep` or its --print-commands writes one. For single runs, give "
            "their .h5 files instead."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: cannot read the sweep manifest: {e}.") from None
    return _from_json(path, data)


def _from_json(path: Path, data: Any) -> Manifest:
    def broken(why: str) -> ManifestError:
        return ManifestError(f"{path}: not a valid sweep manifest: {why}.")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise broken(f'"format" must be "{FORMAT}"')
    if data.get("version") != VERSION:
        raise broken(f"version {data.get('version')!r} is not one this tuitrain reads ({VERSION})")
    variants = data.get("variants")
    if not isinstance(variants, list):
        raise broken('"variants" must be a list')
    known = {f.name for f in fields(Variant)}
    out: list[Variant] = []
    for i, v in enumerate(variants):
        if (
            not isinstance(v, dict)
            or not isinstance(v.get("name"), str)
            or not isinstance(v.get("file"), str)
        ):
            raise broken(f"variant {i} needs a name and a file")
        if v.get("status", QUEUED) not in STATUSES:
            raise broken(f"variant {v['name']!r} has the unknown status {v.get('status')!r}")
        file = Path(v["file"])
        if file.is_absolute() or ".." in file.parts or not v["file"]:
            raise broken(f"variant {v['name']!r}: its file must be a name inside the sweep folder")
        try:
            out.append(Variant(**{k: val for k, val in v.items() if k in known}))
        except TypeError as e:
            raise broken(f"variant {v['name']!r}: {e}") from None
    try:
        return Manifest(
            name=str(data.get("name", path.parent.name)),
            created=float(data.get("created", 0.0)),
            command=list(data.get("command", [])),
            parallel=int(data.get("parallel", 1)),
            variants=out,
            runner_pid=_pid(data.get("runner_pid")),
            gpus=[int(g) for g in data.get("gpus", [])],
        )
    except (TypeError, ValueError) as e:
        raise broken(str(e)) from None


def _pid(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def variant_path(variant: Variant, directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / variant.file


def run_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The variants' run files that exist, in variant order (raises :class:`ManifestError` like load)."""
    d = Path(directory)
    return [p for v in load(d).variants if (p := variant_path(v, d)).is_file()]


def status_of(variant: Variant, directory: str | os.PathLike[str]) -> str:
    """The variant's status: its run file's when the file exists (``incomplete`` when its writer is
    gone before it finished; ``starting`` while the file cannot be opened yet, just created), the
    manifest's otherwise."""
    path = variant_path(variant, directory)
    if not path.is_file():
        return variant.status
    from tuitrain.runfile.reader import RunFileError, open_run

    try:
        with open_run(path) as rf:
            return INCOMPLETE if rf.incomplete else rf.status
    except (RunFileError, OSError):
        return STARTING
