"""Crafted run files: copies of one real run file, each with one attribute, dataset or link changed by
h5py the way a bug, a disk error or a hostile hand could change it. :func:`crafted_files` makes the
whole variety; each case says whether tuitrain must refuse the file (exit 2, naming ``element``) or
may read it (a table column one row short is what a live file mid-flush looks like)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from tuitrain.runfile import schema as S
from tuitrain.runfile.opening import REQUIRED

JSON_ATTRS = ("versions", "module_summary", "probes", "step_scalars")


@dataclass(frozen=True)
class Case:
    label: str
    path: Path
    element: str  # what the refusal must name ("" when the file is fine)
    refused: bool


def _wrong_type(default: object) -> object:
    if isinstance(default, str):
        return np.int64(7)
    return "seven"  # for int and float attributes


def _replace(f: h5py.File, name: str, data: np.ndarray | None = None, group: bool = False) -> None:
    del f[name]
    if group:
        f.create_group(name)
    else:
        f.create_dataset(name, data=data)


def _string_data(n: int) -> np.ndarray:
    return np.array([f"s{i}" for i in range(n)], dtype=h5py.string_dtype())


def _mutations(base: h5py.File) -> list[tuple[str, str, bool, Callable[[h5py.File, Path], None]]]:
    """(label, element, refused, mutate) for every case; ``mutate(f, dir)`` edits an open copy."""
    out: list[tuple[str, str, bool, Callable[[h5py.File, Path], None]]] = []

    def add(label: str, element: str, refused: bool = True):
        def deco(fn: Callable[[h5py.File, Path], None]) -> Callable[[h5py.File, Path], None]:
            out.append((label, element, refused, fn))
            return fn

        return deco

    # -- root attributes: wrong type, invalid JSON, missing, an array instead of one value -------------
    for name, default in S.ROOT_ATTRS.items():
        wrong = _wrong_type(default)
        add(f"attr {name}: wrong type", name)(lambda f, d, n=name, v=wrong: f.attrs.__setitem__(n, v))
        add(f"attr {name}: missing", name)(lambda f, d, n=name: f.attrs.__delitem__(n))
        if name in JSON_ATTRS:
            add(f"attr {name}: invalid JSON", name)(lambda f, d, n=name: f.attrs.__setitem__(n, "{not json"))
            add(f"attr {name}: JSON nested 5000 deep", name)(
                lambda f, d, n=name: f.attrs.__setitem__(n, "[" * 5000 + "]" * 5000)
            )
    for name, default in S.OPTIONAL_ROOT_ATTRS.items():  # newer attributes: typed when present
        if name in base.attrs:
            wrong = _wrong_type(default if default is not None else 0.0)
            add(f"attr {name}: wrong type", name)(lambda f, d, n=name, v=wrong: f.attrs.__setitem__(n, v))
            add(f"attr {name}: missing (an older file)", "", refused=False)(
                lambda f, d, n=name: f.attrs.__delitem__(n)
            )
    add("attr params: an array", "params")(lambda f, d: f.attrs.__setitem__("params", np.arange(3)))
    add("attr run_name: bytes not UTF-8", "run_name")(
        lambda f, d: f.attrs.__setitem__("run_name", np.bytes_(b"\xff\xfe"))
    )
    add("attr epochs: boolean", "epochs")(lambda f, d: f.attrs.__setitem__("epochs", np.bool_(True)))
    add("attr versions: a JSON list", "versions")(lambda f, d: f.attrs.__setitem__("versions", "[1, 2]"))
    add("attr module_summary: a JSON object", "module_summary")(
        lambda f, d: f.attrs.__setitem__("module_summary", '{"a": 1}')
    )
    add("attr module_summary: rows of the wrong shape", "module_summary")(
        lambda f, d: f.attrs.__setitem__(
            "module_summary", json.dumps([{"name": 1, "type": "x", "params": "many"}])
        )
    )
    for t in (1e300, -1.0, float("nan"), float("inf")):
        add(f"attr started_at = {t}", "started_at")(lambda f, d, t=t: f.attrs.__setitem__("started_at", t))
    for t in (1e300, -1.0, float("-inf")):
        add(f"attr ended_at = {t}", "ended_at")(lambda f, d, t=t: f.attrs.__setitem__("ended_at", t))
    add("attr ended_at = nan (a run still going)", "", refused=False)(
        lambda f, d: f.attrs.__setitem__("ended_at", float("nan"))
    )
    for pid in (2**40, -5):
        add(f"attr writer_pid = {pid}", "writer_pid")(
            lambda f, d, p=pid: f.attrs.__setitem__("writer_pid", p)
        )
    add("attr writer_pid = 1.5", "writer_pid")(lambda f, d: f.attrs.__setitem__("writer_pid", 1.5))
    add("attr status = bogus", "status")(lambda f, d: f.attrs.__setitem__("status", "bogus"))
    add("attr last_step = -7", "last_step")(lambda f, d: f.attrs.__setitem__("last_step", -7))
    add("attr schema_version = 99", "schema_version")(lambda f, d: f.attrs.__setitem__("schema_version", 99))
    add("attr format = other", "format")(lambda f, d: f.attrs.__setitem__("format", "other"))
    add("/test/time = 1e300", "/test")(lambda f, d: f["test"].attrs.__setitem__("time", 1e300))
    add("/test/loss wrong type", "/test")(lambda f, d: f["test"].attrs.__setitem__("loss", "low"))
    add("/test is a dataset", "/test")(lambda f, d: _replace(f, "test", np.zeros(3)))

    # -- every dataset: a group in its place, wrong rank, wrong dtype, one row short, missing --------
    optional = [S.path(S.STEPS, n) for n in S.OPTIONAL_STEP_FIELDS if S.path(S.STEPS, n) in base]
    for p in [*REQUIRED, *optional]:
        ds = base[p]
        n = ds.shape[0]
        el = f"/{p}"
        add(f"{el}: a group", el)(lambda f, d, p=p: _replace(f, p, group=True))
        if ds.ndim == 1:
            wrong_rank = np.zeros((n, 2), np.float32 if ds.dtype.kind == "f" else np.int64)
        else:
            wrong_rank = np.zeros(n, np.float32)
        add(f"{el}: wrong rank", el)(lambda f, d, p=p, a=wrong_rank: _replace(f, p, a))
        add(f"{el}: a scalar", el)(lambda f, d, p=p: _replace(f, p, np.float64(1.0)))
        if h5py.check_string_dtype(ds.dtype) is not None:
            wrong_dtype = np.zeros(n, np.float64)
        else:
            wrong_dtype = _string_data(n) if ds.ndim == 1 else np.zeros(ds.shape, "S8")
        add(f"{el}: wrong dtype", el)(lambda f, d, p=p, a=wrong_dtype: _replace(f, p, a))
        short = p.startswith("layers/")  # /layers columns must agree; table columns may lag (SWMR)
        add(f"{el}: one row short", el if short else "", refused=short)(
            lambda f, d, p=p: _replace(f, p, f[p][:-1])
        )
        required = p in REQUIRED
        add(f"{el}: missing", el if required else "", refused=required)(lambda f, d, p=p: f.__delitem__(p))

    # -- links and storage out of the run file --------------------------------------------------------
    def other_file(d: Path) -> Path:
        # A valid HDF5 file with a dataset that would pass every check: following the link would work.
        target = d / "elsewhere.h5"
        with h5py.File(target, "w") as g:
            g.create_dataset("loss", data=np.zeros(base["steps/loss"].shape, np.float32))
            grp = g.create_group("steps")
            for name in S.STEP_FIELDS:
                grp.create_dataset(name, data=base[f"steps/{name}"][()])
        return target

    def ext_dataset(f: h5py.File, d: Path) -> None:
        del f["steps/loss"]
        f["steps/loss"] = h5py.ExternalLink(str(other_file(d)), "/loss")

    def ext_group(f: h5py.File, d: Path) -> None:
        del f["steps"]
        f["steps"] = h5py.ExternalLink(str(other_file(d)), "/steps")

    def soft(f: h5py.File, d: Path) -> None:
        del f["steps/loss"]
        f["steps/loss"] = h5py.SoftLink("/steps/acc")

    def ext_storage(f: h5py.File, d: Path) -> None:
        raw = d / "raw.bin"
        data = base["steps/loss"][()]
        raw.write_bytes(data.tobytes())
        del f["steps/loss"]
        f.create_dataset(
            "steps/loss", shape=data.shape, dtype=data.dtype, external=[(str(raw), 0, data.nbytes)]
        )

    def virtual(f: h5py.File, d: Path) -> None:
        target = other_file(d)
        n = base["steps/loss"].shape[0]
        layout = h5py.VirtualLayout(shape=(n,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(target), "loss", shape=(n,))
        del f["steps/loss"]
        f.create_virtual_dataset("steps/loss", layout)

    # -- what the file declares (schema 2): required; anything undeclared is ignored, never followed ----
    add("attr probes: a probe without quantities", "probes")(
        lambda f, d: f.attrs.__setitem__(
            "probes", json.dumps([{"name": "grad", "axis": "tensor", "quantities": []}])
        )
    )
    add("attr probes: an unknown axis", "probes")(
        lambda f, d: f.attrs.__setitem__("probes", f.attrs["probes"].replace('"tensor"', '"galaxy"'))
    )
    add("attr step_scalars: a reserved name", "step_scalars")(
        lambda f, d: f.attrs.__setitem__("step_scalars", json.dumps(["loss", "time"]))
    )
    add("attr step_scalars: declares a column the file lacks", "/steps/tokens")(
        lambda f, d: f.attrs.__setitem__(
            "step_scalars", json.dumps([*json.loads(f.attrs["step_scalars"]), "tokens"])
        )
    )
    add("attr config_json: a JSON list", "config_json")(
        lambda f, d: f.attrs.__setitem__("config_json", "[1]")
    )
    add("an undeclared probe group and dataset", "", refused=False)(
        lambda f, d: (
            f.create_dataset("probes/other/x", data=np.zeros((2, 2))),
            f.create_dataset("steps/extra", data=[1]),
        )
    )
    add("an undeclared dataset that is an external link", "", refused=False)(
        lambda f, d: f.__setitem__("steps/elsewhere", h5py.ExternalLink(str(other_file(d)), "/loss"))
    )
    add("/steps/loss: an external link", "/steps/loss")(ext_dataset)
    add("/steps: an external link", "/steps")(ext_group)
    add("/steps/loss: a soft link", "/steps/loss")(soft)
    add("/steps/loss: external raw storage", "/steps/loss")(ext_storage)
    add("/steps/loss: a virtual dataset", "/steps/loss")(virtual)

    # -- contents of the small tables ------------------------------------------------------------------
    def set_row(p: str, value: object, row: int = 0) -> Callable[[h5py.File, Path], None]:
        return lambda f, d: f[p].__setitem__(row, value)

    add("/layers/shape: not a shape", "/layers/shape")(set_row("layers/shape", "axb"))
    add("/layers/numel: negative", "/layers/numel")(set_row("layers/numel", -4))
    add("/events/time: 1e300", "/events/time")(set_row("events/time", 1e300))
    add("/events/time: -1", "/events/time")(set_row("events/time", -1.0))
    add("/epochs/time: 1e300", "/epochs/time")(set_row("epochs/time", 1e300))
    add("/events/message: an unknown status", "/events/message")(lambda f, d: _status_row(f, "bogus"))
    add("/steps/loss: NaN values (a diverged run)", "", refused=False)(
        lambda f, d: _replace(f, "steps/loss", np.full(base["steps/loss"].shape, np.nan, np.float32))
    )
    return out


def _status_row(f: h5py.File, message: str) -> None:
    kinds = [bytes(k) for k in f["events/kind"][()]]
    f["events/message"][kinds.index(S.KIND_FINISHED.encode())] = message.encode()


def crafted_files(base: Path, out: Path) -> list[Case]:
    """Every crafted variant of the real run file ``base``, written under ``out``."""
    cases = []
    with h5py.File(base, "r") as b:  # open throughout: the mutations read from it
        for i, (label, element, refused, mutate) in enumerate(_mutations(b)):
            d = out / f"c{i:03d}"
            d.mkdir(parents=True)
            path = d / "run.h5"
            shutil.copyfile(base, path)
            with h5py.File(path, "r+") as f:
                mutate(f, d)
            cases.append(Case(label, path, element, refused))
    return cases
