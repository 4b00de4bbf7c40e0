"""The run file's optional tables (issue 11): /modules and /findings, declared in the root attribute
``tables``. A real RunFileWriter fed real events, read back through RunFile, a live SWMR reader in
another process, the real CLI (``info``, ``diagnose``), h5py edits for a declared table gone missing,
``h5ls`` (Debian's HDF5 1.10 tools) on a new file, and the two old fixtures of tests/data, which have
no tables and must keep working."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.clirun import assert_clean_error, tt
from tests.conftest import cli_env
from tuitrain.diagnosis import current, from_runfile, line
from tuitrain.events import (
    ACT_PROBE,
    GRAD_PROBE,
    STEP_SCALARS,
    Finding,
    LayerInfo,
    ModuleInfo,
    ProbeBlock,
    RunFinished,
    RunStarted,
    StepBatch,
)
from tuitrain.runfile import AppendRefused, RunFileError, RunFileWriter, open_run

HERE = Path(__file__).resolve().parent
V1 = HERE / "data" / "run_v1.h5"
V2_NOTABLES = HERE / "data" / "run_v2_notables.h5"
ACT = replace(ACT_PROBE, every=10)  # the act probe of these files: a row every 10 steps
MODULES = [
    ModuleInfo("fc0", "Linear", "leaf"),
    ModuleInfo("act0", "ReLU", "leaf"),
    ModuleInfo("fc1", "Linear", "leaf"),
    ModuleInfo("blocks.0", "Residual", "block"),
]
OPENED = Finding(
    "dead_units", "warning", "act0", 10, None, {"dead_frac": 0.75, "ratio": float("inf")}, "75% dead",
    "lower the learning rate", at_step=19,
)  # fmt: skip
CLOSED = Finding(
    "dead_units", "warning", "act0", 10, 30, {"dead_frac": 0.75, "ratio": float("inf")}, "75% dead",
    "lower the learning rate", at_step=39,
)  # fmt: skip
EURO = "€" * 200  # 600 UTF-8 bytes: longer than a 512-byte field, and 512 is not a multiple of 3
LONG = Finding(
    "signal_collapse", "error", "blocks.0." + "x" * 300, 20, None,
    {f"quantity_{i:02d}": 1.0 / (i + 3) for i in range(40)}, EURO, "ü" * 300, at_step=29,
)  # fmt: skip
RUN_LEVEL = Finding("plateau", "info", "", 0, None, {}, "loss flat", "raise the learning rate", at_step=39)


def started(modules: list[ModuleInfo] | None = None, **kw: object) -> RunStarted:
    fields: dict[str, object] = dict(
        run_name="tables",
        config_toml="",
        model_name="Net",
        layers=[LayerInfo(f"fc{i}.weight", (4, 4), 16, "weight", f"fc{i}", "Linear") for i in range(2)],
        started_at=1_700_000_000.0,
        probes=[GRAD_PROBE, ACT],
        source="script",
        modules=MODULES if modules is None else modules,
    )
    fields.update(kw)
    return RunStarted(**fields)  # type: ignore[arg-type]


def batch(start: int, n: int, act: bool = True, n_layers: int = 2) -> StepBatch:
    rng = np.random.default_rng(start)
    steps = np.arange(start, start + n, dtype=np.int64)
    blocks = {"grad": ProbeBlock("grad", steps, rng.random((n, 4, n_layers)).astype(np.float32))}
    if act:
        a = steps[steps % ACT.every == 0]
        blocks["act"] = ProbeBlock("act", a, rng.random((len(a), 5, len(MODULES))).astype(np.float32))
    return StepBatch(
        steps=steps,
        epochs=np.zeros(n, np.int32),
        scalars=rng.random((n, len(STEP_SCALARS))),
        scalar_names=STEP_SCALARS,
        blocks=blocks,
        time=1_700_000_001.0,
    )


def write(path: Path, findings: tuple[Finding, ...] = (OPENED, LONG, CLOSED, RUN_LEVEL)) -> Path:
    """40 steps (act rows every 10); each finding sent after the batch holding its at_step."""
    with RunFileWriter(path, background=False) as w:
        w.emit(started())
        for lo in range(0, 40, 10):
            w.emit(batch(lo, 10))
            for f in findings:
                if lo <= f.at_step < lo + 10:
                    w.emit(f)
        w.emit(RunFinished("completed", 39, time=1_700_000_002.0))
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("tables") / "run.h5")


def test_modules_probes_and_findings_read_back_as_sent(written: Path) -> None:
    with open_run(written) as rf:
        assert rf.tables == ("modules", "findings") and rf.has_findings
        assert rf.modules == MODULES and rf.probe_specs == [GRAD_PROBE, ACT]
        assert rf.probe("std", probe="act").shape == (4, len(MODULES))
        np.testing.assert_array_equal(rf.probe_steps(probe="act"), [0, 10, 20, 30])
        got = rf.findings()
        assert rf.n_findings == 4 and got[0] == OPENED and got[2] == CLOSED and got[3] == RUN_LEVEL
        assert got[0].last_step is None and got[0].evidence["ratio"] == float("inf")
        assert rf.findings(2) == got[2:] and rf.findings(4) == []
        long = got[1]  # cut to its fields: at a character boundary, evidence by whole entries
        assert long.message == "€" * 170 and long.suggestion == "ü" * 256 and len(long.layer.encode()) == 256
        assert 0 < len(long.evidence) < len(LONG.evidence)
        assert long.evidence == dict(list(LONG.evidence.items())[: len(long.evidence)])
        assert rf.run_started().modules == MODULES
        assert from_runfile(rf).activations.modules == [m.name for m in MODULES]  # type: ignore[union-attr]
        # replay: each finding right after the batch holding its at_step, in file order
        kinds = [
            (type(e).__name__, int(e.steps[-1]) if isinstance(e, StepBatch) else getattr(e, "at_step", -1))
            for e in rf.to_events(batch_steps=10)
        ]
        assert kinds == [
            ("RunStarted", -1),
            ("StepBatch", 9),
            ("StepBatch", 19),
            ("Finding", 19),
            ("StepBatch", 29),
            ("Finding", 29),
            ("StepBatch", 39),
            ("Finding", 39),
            ("Finding", 39),
            ("RunFinished", -1),
        ]
        # open ones first, worst first: the long error, the run-level info, then the closed warning
        assert [f.key for f in current(rf.findings())] == [long.key, RUN_LEVEL.key, CLOSED.key]


def test_h5ls_of_hdf5_1_10_reads_a_new_file(written: Path) -> None:
    h5ls = shutil.which("h5ls") or "/usr/bin/h5ls"
    if not Path(h5ls).exists():
        pytest.skip("h5ls (hdf5-tools) is not installed")
    p = subprocess.run([h5ls, "-r", str(written)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "/modules/name            Dataset {4}" in p.stdout
    assert "/findings/evidence       Dataset {4/Inf}" in p.stdout
    p = subprocess.run([h5ls, "-d", f"{written}/findings/kind"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and '"dead_units"' in p.stdout, p.stdout + p.stderr


def test_info_lists_the_stored_findings_and_modules(written: Path, tmp_path: Path) -> None:
    p = tt("info", str(written), env={**cli_env(), "COLUMNS": "80"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "findings: 3 (2 open)" in p.stdout and "4 probed modules" in p.stdout
    words = " ".join(p.stdout.split())  # lines are wrapped at spaces to the terminal's 80 columns
    with open_run(written) as rf:
        for f in current(rf.findings()):
            assert " ".join(line(f).split()) in words, p.stdout
    head = p.stdout[: p.stdout.index("Final metrics")].splitlines()[1:]
    long_words = [w for w in words.split() if len(w) > 76]  # the long finding's texts are one word each
    assert all(len(x) <= 80 or any(w in x for w in long_words) for x in head), head
    p = tt("info", "--json", str(written))
    s = json.loads(p.stdout)
    assert len(s["findings"]) == 4 and s["findings"][0]["evidence"]["ratio"] is None  # strict JSON: null
    assert [f["kind"] for f in s["findings_current"]] == ["signal_collapse", "plateau", "dead_units"]
    assert s["findings_current"][0]["line"].startswith("error   signal_collapse at blocks.0.xxx")
    assert s["n_modules"] == 4
    empty = write(tmp_path / "empty.h5", findings=())
    p = tt("info", str(empty))
    assert p.returncode == 0 and "findings: none" in p.stdout, p.stdout + p.stderr


@pytest.mark.parametrize("old", [V1, V2_NOTABLES], ids=["schema1", "schema2_notables"])
def test_old_files_have_no_tables_and_still_work(old: Path, tmp_path: Path) -> None:
    with open_run(old) as rf:
        assert rf.tables == () and rf.modules == [] and not rf.has_findings
        assert rf.n_findings == 0 and rf.findings() == []
        events = list(rf.to_events())
        assert isinstance(events[-1], RunFinished) and not any(isinstance(e, Finding) for e in events)
        assert rf.summary()["findings"] is None
    p = tt("info", str(old))
    assert p.returncode == 0 and f"no findings stored (run `tuitrain diagnose {old}`)" in p.stdout, p.stdout
    p = tt("diagnose", str(old))
    assert p.returncode == 0 and f"{old}:" in p.stdout and "Traceback" not in p.stderr, p.stdout + p.stderr


def _copy(src: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def test_a_declared_table_missing_or_a_bad_row_is_a_clear_error(written: Path, tmp_path: Path) -> None:
    gone = _copy(written, tmp_path, "gone.h5")
    with h5py.File(gone, "r+") as f:
        del f["findings/message"]
    with pytest.raises(RunFileError, match=r"declares the table /findings .* lacks /findings/message"):
        open_run(gone)
    assert_clean_error(tt("info", str(gone)), str(gone), "declares the table /findings")
    no_modules = _copy(written, tmp_path, "nomodules.h5")
    with h5py.File(no_modules, "r+") as f:
        del f["modules"]
    with pytest.raises(RunFileError, match=r"declares the table /modules"):
        open_run(no_modules)
    for bad in ('{"findings": 1}', '["findings", "findings"]', "[3]"):
        corrupt = _copy(written, tmp_path, "badtables.h5")
        with h5py.File(corrupt, "r+") as f:
            f.attrs["tables"] = bad
        with pytest.raises(RunFileError, match="attribute `tables`"):
            open_run(corrupt)

    def kind_as_group(f: h5py.File) -> None:
        del f["findings/kind"]
        f.create_group("findings/kind")

    def std_too_narrow(f: h5py.File) -> None:
        del f["probes/act/std"]
        f.create_dataset("probes/act/std", data=np.zeros((4, 3), np.float32))

    def write_at(name: str, row: int, value: object) -> Callable[[h5py.File], None]:
        def edit(f: h5py.File) -> None:
            f[name][row] = value

        return edit

    cases = [
        (write_at("findings/evidence", 1, b"[1, 2]"), r"/findings/evidence row 1 is not a JSON object"),
        (write_at("findings/evidence", 2, b'{"a": "high"}'), r"/findings/evidence row 2 is not a JSON"),
        (write_at("findings/severity", 0, b"fatal"), r"/findings/severity row 0 = 'fatal' is not a severity"),
        (write_at("findings/last_step", 2, 3), r"/findings row 2 has first_step 10, last_step 3"),
        (write_at("findings/time", 3, 1e300), r"/findings/time row 3 = 1e\+300 is not a time"),
        (write_at("modules/kind", 1, "branch"), r"/modules/kind row 1 = 'branch' is not a module kind"),
        (kind_as_group, r"/findings/kind is a group"),
        (std_too_narrow, r"/probes/act/std has shape \(4, 3\); expected \(rows, 4\), a column per module"),
    ]
    for i, (edit, message) in enumerate(cases):
        bad = _copy(written, tmp_path, f"bad{i}.h5")
        with h5py.File(bad, "r+") as f:
            edit(f)
        with pytest.raises(RunFileError, match=message):
            open_run(bad)
    assert_clean_error(tt("info", "--json", str(bad)), str(bad), "/probes/act/std")


def test_undeclared_tables_are_not_required_nor_read(written: Path, tmp_path: Path) -> None:
    """Without the attribute (an older file, or one that lost it) the tables are ignored; a table name
    this tuitrain does not know (a newer writer's) is not required either."""
    undeclared = _copy(written, tmp_path, "undeclared.h5")
    with h5py.File(undeclared, "r+") as f:
        del f.attrs["tables"]
    with open_run(undeclared) as rf:
        assert rf.tables == () and rf.modules == [] and not rf.has_findings and rf.findings() == []
        acts = from_runfile(rf).activations  # the columns are numbered: nothing names them
        assert acts is not None and acts.modules == [f"module {i}" for i in range(4)]
    newer = _copy(written, tmp_path, "newer.h5")
    with h5py.File(newer, "r+") as f:
        f.attrs["tables"] = json.dumps(["modules", "findings", "from_the_future"])
    with open_run(newer) as rf:
        assert rf.tables == ("modules", "findings") and rf.n_findings == 4


def test_a_module_probe_needs_its_modules(tmp_path: Path) -> None:
    with (
        RunFileWriter(tmp_path / "m.h5", background=False) as w,
        pytest.raises(ValueError, match="probe 'act' on axis 'module' but lists no modules"),
    ):
        w.emit(started(modules=[]))
    assert not (tmp_path / "m.h5").exists()
    with RunFileWriter(tmp_path / "nomods.h5", background=False) as w:  # no module probe: no /modules
        w.emit(started(modules=[], probes=[GRAD_PROBE]))
        w.emit(RunFinished("completed", -1))
    with open_run(tmp_path / "nomods.h5") as rf:
        assert rf.tables == ("findings",) and rf.modules == [] and rf.n_findings == 0


def test_resume_keeps_the_tables_and_extends_an_old_file(written: Path, tmp_path: Path) -> None:
    """A resumed run appends to a file with tables as to any; a file from before issue 11 gets what
    the resumed run adds (the activation probe and /modules, from the resumed step on, and /findings),
    declared; a probe or the modules of the file changed is refused, the file unchanged."""
    new = _copy(written, tmp_path, "new.h5")
    more = Finding("plateau", "info", "", 40, None, {"x": 1.0}, "flat", "wait", at_step=49)
    with RunFileWriter(new, append=True, background=False) as w:
        w.emit(started())
        w.emit(batch(40, 10))
        w.emit(more)
        w.emit(RunFinished("completed", 49))
    with open_run(new) as rf:
        assert rf.tables == ("modules", "findings") and rf.modules == MODULES
        assert rf.n_findings == 5 and rf.findings(4) == [more] and rf.probe_rows("act") == 5
    before = new.read_bytes()
    for refused in (started(modules=MODULES[::-1]), started(probes=[GRAD_PROBE])):
        with RunFileWriter(new, append=True, background=False) as w, pytest.raises(AppendRefused) as e:
            w.emit(refused)
        assert "/modules" in str(e.value) or "activations_every" in str(e.value)
    assert new.read_bytes() == before

    old = _copy(V2_NOTABLES, tmp_path, "old.h5")
    with open_run(old) as rf:
        ev, last, n_layers = rf.run_started(), rf.last_step, rf.n_layers
    ev = replace(ev, probes=[*ev.probes, ACT], modules=MODULES)
    with RunFileWriter(old, append=True, background=False) as w:
        w.emit(ev)
        w.emit(batch(last + 1, 20, n_layers=n_layers))
        w.emit(Finding("plateau", "info", "", 31, None, {}, "flat", "wait", at_step=last + 20))
        w.emit(RunFinished("completed", last + 20))
    with open_run(old) as rf:
        assert rf.tables == ("modules", "findings") and rf.modules == MODULES and rf.n_steps == last + 21
        assert rf.probe_specs == [GRAD_PROBE, ACT] and rf.probe_rows("grad") == last + 21
        np.testing.assert_array_equal(rf.probe_steps(probe="act"), [30, 40])  # from the resumed step
        assert [f.kind for f in rf.findings()] == ["plateau"]
        assert from_runfile(rf).activations.modules == [m.name for m in MODULES]  # type: ignore[union-attr]


WRITER = """
import sys
sys.path.insert(0, {root!r})
from tests.test_runfile_tables import CLOSED, OPENED, batch, started
from tuitrain.events import RunFinished
from tuitrain.runfile import RunFileWriter

w = RunFileWriter({path!r}, flush_seconds=1e9, background=False)  # only what is shown flushes
w.emit(started())
w.emit(batch(0, 20))
w.emit(OPENED)
print("opened", flush=True)
sys.stdin.readline()
w.emit(batch(20, 20))
w.emit(CLOSED)
print("closed", flush=True)
sys.stdin.readline()
w.emit(RunFinished("completed", 39))
w.close()
"""


def test_a_live_reader_sees_each_finding_as_soon_as_it_is_sent(tmp_path: Path) -> None:
    """Findings are flushed at once (like alerts: a person sees them), so a SWMR reader has each one
    while the writer is still open, even with rows held back for a long flush period."""
    path = tmp_path / "live.h5"
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER.format(root=str(HERE.parent), path=str(path))))
    proc = subprocess.Popen(
        [sys.executable, "-u", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "opened"
        with open_run(path) as rf:
            assert rf.opened_swmr and rf.is_live and rf.n_findings == 1 and rf.findings() == [OPENED]
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "closed"
            assert rf.refresh() and rf.n_findings == 2 and rf.findings(1) == [CLOSED]
            assert [f.last_step for f in current(rf.findings())] == [30]
            proc.stdin.write("\n")
            proc.stdin.flush()
            assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
