"""The hard layers, checked in fresh interpreters: training never loads textual, the UI and the run
file never load torch, and the CLI loads neither until a command needs it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("tuitrain.train.engine", {"textual", "textual_plotext", "plotext"}),
        ("tuitrain.train.worker", {"textual", "torch"}),
        ("tuitrain.runfile.reader", {"torch", "textual"}),
        ("tuitrain.runfile.writer", {"torch", "textual"}),
        ("tuitrain.config", {"torch", "textual", "h5py"}),
        ("tuitrain.events", {"torch", "textual", "h5py"}),
        ("tuitrain.cli", {"torch", "torchvision", "textual", "h5py"}),
        ("tuitrain.ui.app", {"torch", "torchvision"}),
        ("tuitrain", {"torch", "textual", "h5py"}),  # `import tuitrain`: the API's names load lazily
        ("tuitrain.hosted", {"torch", "textual", "h5py"}),
        ("tuitrain.api", {"textual", "textual_plotext", "plotext"}),
    ],
)
def test_import_layers(module: str, forbidden: set[str]) -> None:
    assert not (loaded_after(module) & forbidden)


# Every import statement of every module, lazy ones inside functions too: which floors may name which
# packages at all (the fresh-interpreter test above only sees what importing a module loads).
FLOORS: dict[str, set[str]] = {
    "tuitrain/train": {"textual", "textual_plotext", "plotext"},
    "tuitrain/api": {"textual", "textual_plotext", "plotext"},
    "tuitrain/ui": {"torch", "torchvision"},
    "tuitrain/view": {"torch", "torchvision", "textual", "h5py"},
    "tuitrain/runfile": {"torch", "torchvision", "textual"},
    "tuitrain/config": {"torch", "torchvision", "textual", "h5py"},
    "tuitrain/diagnosis": {"torch", "torchvision", "textual", "h5py"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("floor", sorted(FLOORS))
def test_no_module_of_a_floor_names_a_forbidden_package(floor: str) -> None:
    files = sorted((REPO / floor).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(REPO)): sorted(imported_packages(f) & FLOORS[floor]) for f in files}
    assert not {k: v for k, v in bad.items() if v}
