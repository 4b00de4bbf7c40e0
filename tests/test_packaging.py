"""The package as a user gets it: a built wheel installed into a fresh venv, run from a directory
outside the checkout, where the checkout's files (its ``presets`` link above all) cannot help.

The fresh venv gets the dependencies (torch, h5py, ...) without downloading anything: a ``.pth`` file
holds the path of this venv's site-packages. A path line in a ``.pth`` file does not run that
directory's own ``.pth`` files, so the checkout's editable install stays invisible; the test checks
that ``tuitrain`` really is imported from the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import h5py
import pytest

from tests.conftest import PRESETS, REPO

pytestmark = pytest.mark.timeout(600)


def _can_build_wheels() -> str:
    """Why a wheel cannot be built here ("" when it can): the build backend must be importable, as
    ``--no-build-isolation`` builds with this venv's setuptools instead of downloading one."""
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return "setuptools is not installed in the test venv, so no wheel can be built offline"
    return ""


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    why = _can_build_wheels()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("packaging")
    # Build from a copy of what the package is made of, so no build/ folder lands in the checkout and
    # nothing stale from an earlier build can slip into the wheel.
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "tuitrain", src / "tuitrain", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("tuitrain-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    fresh_site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (fresh_site / "_deps_from_test_venv.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    outside = root / "elsewhere"  # not inside the checkout: no ./presets, no tuitrain/ beside it
    outside.mkdir()
    return {"wheel": wheel, "venv": venv, "site": fresh_site, "cwd": outside}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="80", PYTHONUNBUFFERED="1")
    return env


def _tt(inst: dict[str, Path], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [inst["venv"] / "bin" / "tuitrain", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd or inst["cwd"],
        env=_env(),
    )


def test_wheel_ships_every_preset(fresh_install: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(fresh_install["wheel"]).namelist())
    presets = sorted(p.name for p in PRESETS.glob("*.toml"))
    assert len(presets) > 30
    missing = [p for p in presets if f"tuitrain/presets/{p}" not in names]
    assert not missing, missing


def test_installed_tuitrain_is_the_wheel_not_the_checkout(fresh_install: dict[str, Path]) -> None:
    p = subprocess.run(
        [fresh_install["venv"] / "bin" / "python", "-c", "import tuitrain; print(tuitrain.__file__)"],
        capture_output=True,
        text=True,
        cwd=fresh_install["cwd"],
        env=_env(),
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    where = Path(p.stdout.strip()).resolve()
    assert where.is_relative_to(fresh_install["site"].resolve()), where
    assert not where.is_relative_to(REPO), where


def test_version_and_presets_from_outside_the_checkout(fresh_install: dict[str, Path]) -> None:
    from tuitrain import __version__

    v = _tt(fresh_install, "--version")
    assert v.returncode == 0 and v.stdout.strip() == f"tuitrain {__version__}", v.stdout + v.stderr
    p = _tt(fresh_install, "presets")
    assert p.returncode == 0, p.stdout + p.stderr
    assert str(fresh_install["site"] / "tuitrain" / "presets") in p.stdout
    for name in ("vgg08", "vgg38", "vgg38_bn_rc", "toy2d_mlp", "resnet18_cifar10", "mlp_mixer_cifar10"):
        assert any(line.split()[:1] == [name] for line in p.stdout.splitlines()), (name, p.stdout)


def test_run_a_packaged_preset_by_name(fresh_install: dict[str, Path]) -> None:
    p = _tt(fresh_install, "run", "toy2d_mlp", "--no-ui", "--max-steps", "20", "--out", "x.h5")
    assert p.returncode == 0, p.stdout + p.stderr
    with h5py.File(fresh_install["cwd"] / "x.h5", "r") as f:
        assert f.attrs["status"] == "completed"
        assert f["steps/step"].shape[0] == 20


def test_a_users_own_presets_folder_is_found_by_name(fresh_install: dict[str, Path], tmp_path: Path) -> None:
    project = tmp_path / "myproject"
    (project / "presets").mkdir(parents=True)
    (project / "presets" / "mine.toml").write_text(
        'description = "my own tiny MLP"\n'
        '[model]\nname = "mlp"\nhidden = [8]\nactivation = "relu"\n'
        '[data]\nname = "toy2d"\nclasses = 2\n'
        "[train]\nepochs = 1\nbatch_size = 64\n"
    )
    listing = _tt(fresh_install, "presets", cwd=project)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "this project's" in listing.stdout and "shipped with tuitrain" in listing.stdout
    assert listing.stdout.index("mine") < listing.stdout.index("vgg38")  # the project's folder first
    p = _tt(fresh_install, "run", "mine", "--no-ui", "--max-steps", "5", "--out", "m.h5", cwd=project)
    assert p.returncode == 0, p.stdout + p.stderr
    with h5py.File(project / "m.h5", "r") as f:
        assert f.attrs["run_name"] == "mine"
        assert f.attrs["status"] == "completed"
