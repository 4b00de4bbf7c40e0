"""The docs name real things: every test docs/reliability.md cites exists."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO


def test_reliability_table_names_real_tests() -> None:
    text = (REPO / "docs" / "reliability.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(cited) > 30
    missing = []
    for path, name in cited:
        file = REPO / path
        if not file.exists():
            missing.append(path)
            continue
        if name:
            tree = ast.parse(file.read_text())
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            if name not in names:
                missing.append(f"{path}::{name}")
    assert not missing, missing
