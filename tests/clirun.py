"""Running the real CLI in a subprocess, and the shape every bad-input answer must have."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import REPO, cli_env, tuitrain_cmd


def tt(
    *args: str, timeout: float = 120, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*tuitrain_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(),
        cwd=cwd,
    )


def assert_clean_error(p: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    """Exit ``code``, no traceback, and every needle somewhere in what was printed."""
    out = p.stdout + p.stderr
    assert p.returncode == code, out
    assert "Traceback" not in out, out
    for n in needles:
        assert n in out, out
