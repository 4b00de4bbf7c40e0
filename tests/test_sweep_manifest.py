"""The sweep manifest (tuitrain.sweep.manifest): round trip, atomic writes, clear errors, and the run
file owning a variant's status once it exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.clirun import tt
from tests.test_replay import killed_run
from tuitrain.sweep import manifest as M


def make_manifest(*names: str, status: str = "queued") -> M.Manifest:
    return M.Manifest(
        name="sweep-toy2d_mlp-test",
        created=1764658800.0,
        command=["tuitrain", "sweep", "toy2d_mlp", "--grid", "optim.lr=" + ",".join(names)],
        parallel=2,
        variants=[
            M.Variant(
                name=f"lr={n}",
                preset="toy2d_mlp",
                sets=[f"optim.lr={n}"],
                args=["--epochs", "1"],
                file=f"lr={n}.h5",
                command=["tuitrain", "run", "toy2d_mlp", "--no-ui", "--set", f"optim.lr={n}"],
                status=status,
            )
            for n in names
        ],
    )


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, completed toy2d_mlp run file written by a `tuitrain run` process."""
    out = tmp_path_factory.mktemp("run") / "done.h5"
    p = tt("run", "toy2d_mlp", "--no-ui", "--epochs", "1", "--set", "data.train_size=500", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    return out


def test_round_trip_keeps_every_field_and_the_json_format(tmp_path: Path) -> None:
    m = make_manifest("1e-3", "1e-2")
    m.variants[1].status, m.variants[1].exit_code, m.variants[1].error = "failed", 2, "bad key"
    path = M.save(m, tmp_path / "sw")
    data = json.loads(path.read_text())
    assert list(data)[:2] == ["format", "version"]
    assert data["format"] == "tuitrain-sweep" and data["version"] == 1
    assert set(data["variants"][0]) == {
        "name", "preset", "sets", "args", "file", "command", "status", "exit_code", "started", "ended", "error",
        "pid",
    }  # fmt: skip
    assert M.load(tmp_path / "sw") == m
    # atomic: nothing but the manifest is left in the folder
    assert [p.name for p in (tmp_path / "sw").iterdir()] == ["sweep.json"]
    m.variants[0].status = "running"
    M.save(m, tmp_path / "sw")
    assert M.load(tmp_path / "sw").variants[0].status == "running"


def test_is_sweep_dir(tmp_path: Path) -> None:
    assert not M.is_sweep_dir(tmp_path)
    assert not M.is_sweep_dir(tmp_path / "missing")
    M.save(make_manifest("1e-3"), tmp_path)
    assert M.is_sweep_dir(tmp_path)
    assert not M.is_sweep_dir(tmp_path / "sweep.json")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "not a sweep folder (no sweep.json)"),
        ("{not json", "cannot read the sweep manifest"),
        ('{"format": "other"}', '"format" must be "tuitrain-sweep"'),
        ('{"format": "tuitrain-sweep", "version": 9, "variants": []}', "version 9"),
        ('{"format": "tuitrain-sweep", "version": 1, "variants": {}}', '"variants" must be a list'),
        (
            '{"format": "tuitrain-sweep", "version": 1, "variants": [{"name": "a"}]}',
            "needs a name and a file",
        ),
        (
            '{"format": "tuitrain-sweep", "version": 1, "variants": [{"name": "a", "file": "a.h5", "status": "x"}]}',
            "unknown status 'x'",
        ),
        (
            '{"format": "tuitrain-sweep", "version": 1, "variants": [{"name": "a", "file": "../a.h5"}]}',
            "inside the sweep folder",
        ),
    ],
)
def test_a_broken_or_missing_manifest_is_one_clear_paragraph(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    if content is not None:
        (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(M.ManifestError) as e:
        M.load(tmp_path)
    assert needle in str(e.value)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(M.ManifestError, match="no such folder"):
        M.load(tmp_path / "nope")


def test_run_files_are_the_existing_ones_in_variant_order(tmp_path: Path, completed_run: Path) -> None:
    M.save(make_manifest("1e-1", "1e-2", "1e-3"), tmp_path)
    assert M.run_files(tmp_path) == []
    shutil.copy(completed_run, tmp_path / "lr=1e-3.h5")
    shutil.copy(completed_run, tmp_path / "lr=1e-1.h5")
    assert M.run_files(tmp_path) == [tmp_path / "lr=1e-1.h5", tmp_path / "lr=1e-3.h5"]


def test_the_run_file_owns_the_status(tmp_path: Path, completed_run: Path) -> None:
    m = make_manifest("1e-1", "1e-2", "1e-3", "1e-4", status="running")
    m.variants[3].status = "queued"
    M.save(m, tmp_path)
    shutil.copy(completed_run, tmp_path / "lr=1e-1.h5")  # the manifest says running; the file: completed
    (tmp_path / "lr=1e-2.h5").write_bytes(b"")  # just created by a child, not a run file yet
    killed = killed_run(tmp_path, "k")
    killed.rename(tmp_path / "lr=1e-3.h5")  # its writer died before it finished
    v = M.load(tmp_path).variants
    assert [M.status_of(x, tmp_path) for x in v] == ["completed", "starting", "incomplete", "queued"]
