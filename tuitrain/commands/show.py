"""What ``tuitrain presets`` and ``tuitrain info`` print: rich tables on the console (rich, and torch
for counting parameters, are imported when a table is drawn)."""

from __future__ import annotations

import math
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from tuitrain.config import DATASET_CLASSES, ConfigError, RunConfig, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib


def print_presets(groups: list[tuple[str, Path, list[Path]]]) -> None:
    """One table per folder of presets, ``(whose, folder, files)``, titled with the folder it lists:
    name, model, dataset, parameters, description; a preset that does not load gets a row saying why."""
    from rich.console import Console

    console = Console(highlight=False)
    with console.status("counting parameters (loading torch)..."):
        tables = [(_title(whose, folder), [_preset_row(f) for f in files]) for whose, folder, files in groups]
    for n, (title, rows) in enumerate(tables):
        if n:
            console.print()
        console.print(title, style="bold", soft_wrap=True)
        for k, line in enumerate(preset_lines(rows, console.width)):
            console.print(line, style="bold" if k == 0 else "", soft_wrap=True, markup=False)
    names = [[row[0] for row in rows] for _, rows in tables]
    shadowed = sorted(set(names[0]).intersection(*names[1:])) if len(names) > 1 else []
    if shadowed:
        console.print(
            f"\nFound first by name: {', '.join(shadowed)} from {groups[0][1]}.", soft_wrap=True, markup=False
        )


def _title(whose: str, folder: Path) -> str:
    note = {"this project": " (this project's, found first by name)", "tuitrain": " (shipped with tuitrain)"}
    return f"Presets in {folder}{note.get(whose, '')}"


def _preset_row(f: Path) -> tuple[str, str, str, str, str]:
    """``(name, model, dataset, params, description)`` of one preset file, or why it does not load."""
    from tuitrain.train.models import build_model

    try:
        cfg = load_config(f)
    except ConfigError as e:
        return (f.stem, "invalid", "", "", str(e))
    shape = (2,) if cfg.data.name == "toy2d" else (3, cfg.data.image_size, cfg.data.image_size)
    classes = DATASET_CLASSES.get(cfg.data.name, cfg.data.classes)
    model = build_model(cfg.model, shape, classes)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (f.stem, model_label(cfg), cfg.data.name, f"{params:,}", cfg.description)


def preset_lines(rows: list[tuple[str, str, str, str, str]], width: int) -> list[str]:
    """The preset table as plain lines for a ``width``-column console (a header line first).

    Laid out by hand rather than by a rich Table, which shrinks any column to fit: here names, models,
    datasets and counts are never wrapped or cut (a name cut in two cannot be pasted into a command),
    only descriptions wrap. Descriptions get the room left of ``width``; with less than 24 columns
    left they go on their own indented lines below the row. No line has trailing spaces.
    """
    header = ("name", "model", "dataset", "params", "description")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]
    gutter = "  " if 1 + sum(widths) + 8 <= width else " "  # one space between columns when narrow
    left = 1 + sum(widths) + len(gutter) * 4  # a space in front, like rich's tables
    room = width - left

    def cells(r: tuple[str, ...]) -> str:
        return " " + gutter.join(c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(cols(r)))

    def cols(r: tuple[str, ...]) -> list[tuple[str, int]]:
        return [(r[i], widths[i]) for i in range(4)]

    lines: list[str] = []
    if room >= 24:
        for r in (header, *rows):
            desc = textwrap.wrap(r[4], room) or [""]
            lines.append((cells(r) + gutter + desc[0]).rstrip())
            lines.extend(" " * left + d for d in desc[1:])
    else:
        lines.append(cells(header).rstrip())
        for r in rows:
            lines.append(cells(r).rstrip())
            lines.extend("     " + d for d in textwrap.wrap(r[4], max(24, width - 5)))
    return lines


def model_label(cfg: RunConfig) -> str:
    m = cfg.model
    if m.name == "vgg":
        extras = [x for x, on in (("BN", m.batch_norm), ("RC", m.residual)) if on]
        return f"vgg {2 + m.stages * (2 * m.blocks_per_stage + 2)}" + (
            f" +{'+'.join(extras)}" if extras else ""
        )
    if m.name == "mlp":
        return f"mlp {len(m.hidden)}x{m.activation}" + (" +BN" if m.batch_norm else "")
    if m.name == "mlp_mixer":
        return f"mixer p{m.patch_size} d{m.embed_dim} x{m.num_blocks}"
    return m.name


def json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


SOURCES = {"preset": "a preset", "script": "your own loop (tuitrain.init)", "lightning": "Lightning"}


def info_summary(rf: Any) -> dict[str, Any]:
    """``RunFile.summary()`` plus what ``info`` shows of any run, from RunFile's public API: the
    declared probes in full, the divergence by the rule for a user loop's sparsely logged loss
    (:mod:`tuitrain.view.divergence`), and the final table's row with the run's own metrics."""
    from tuitrain.commands.info_snapshots import snapshots_summary
    from tuitrain.ui.replay.compare import file_divergence, rows_from_files

    s = rf.summary()
    diverged = file_divergence(rf)
    s["diverged_at"] = diverged
    s["probe_specs"] = [
        {
            "name": p.name,
            "axis": p.axis,
            "every": p.every,
            "quantities": [{"name": q.name, "label": q.label, "unit": q.unit} for q in p.quantities],
        }
        for p in rf.probe_specs
    ]
    # the table's row exactly as replay --print and the compare view build it (one implementation)
    (row,), _ = rows_from_files([rf], [rf.run_name])
    s["final"] = dict(row.metrics)
    s["final_extra"] = dict(row.extra)  # the table's user-metric columns
    s["final_status"] = row.status  # the table's Status cell: "incomplete" for a writer that died
    s.update(findings_summary(rf))
    s["snapshots"] = snapshots_summary(rf)
    return s


def findings_summary(rf: Any) -> dict[str, Any]:
    """The stored findings for ``info``: ``findings`` (every stored row: openings and closings, in
    order) and ``findings_current`` (the latest state of each, ranked as the Diagnosis panel ranks them,
    each with the line ``diagnose`` prints); both None for a file without the table (written before
    issue 11). Evidence that is not finite is null, as in ``diagnose --json``."""
    if not rf.has_findings:
        return {"findings": None, "findings_current": None}
    from tuitrain.diagnosis import current, line

    stored = rf.findings()

    def row(f: Any, **extra: Any) -> dict[str, Any]:
        d = {**f.to_dict(), "at_step": f.at_step, **extra}
        d["evidence"] = {k: v if math.isfinite(v) else None for k, v in d["evidence"].items()}
        return d

    return {
        "findings": [row(f) for f in stored],
        "findings_current": [row(f, line=line(f)) for f in current(stored)],
    }


def print_info(s: dict[str, Any]) -> None:
    """The human form of ``tuitrain info``. Short lines that fit 80 columns; paths and names are
    never wrapped by rich (a terminal may still fold them, copying them back gives them whole); the
    config comes last, printed plainly so that it stays valid TOML (a user loop's: JSON) at any width
    and when piped. What a run does not know (a user loop: no dataset, FLOPs, epoch count or module
    summary) is left out rather than printed as 0."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tuitrain.view.table import extra_metrics, fmt_count, rich_table, row_from_dict, unmeasured_missing

    c = Console(highlight=False)
    source = str(s.get("source", "preset"))
    status = s["status"] + (
        " (incomplete: the writer stopped without closing the file)" if s.get("incomplete") else ""
    )
    if s.get("diverged_at") is not None:
        status += f" (diverged: the training loss is not finite from step {s['diverged_at']:,})"
    c.print(f"[bold]{escape(str(s['run_name']))}[/]  {escape(str(s['path']))}", soft_wrap=True)
    c.print(
        f"status {escape(status)}" + (f"; device {escape(str(s['device']))}" if s["device"] else ""),
        soft_wrap=True,
    )
    if source == "preset":
        c.print(
            f"{escape(str(s['model_name']))}, {fmt_count(s['params'])} params, {fmt_count(s['flops'])} "
            f"FLOPs/sample; data {escape(str(s['dataset']))}",
            soft_wrap=True,
        )
    else:
        known = [str(s["model_name"] or "")]
        known += [f"{fmt_count(s['params'])} params"] if s["params"] else []
        known += [f"{fmt_count(s['flops'])} FLOPs/sample"] if s["flops"] else []
        known += [f"data {s['dataset']}"] if s["dataset"] else []
        c.print(escape(", ".join(k for k in known if k) or "model unknown"), soft_wrap=True)
        c.print(f"source {escape(SOURCES.get(source, source))}", soft_wrap=True)
    versions = s.get("versions") or {}
    if versions.get("torch_threads"):  # recorded since train.threads existed
        auto = versions.get("threads") == "auto"
        c.print(
            f"CPU threads {versions['torch_threads']} at start, train.threads = {versions.get('threads')}"
            + (" (changes: see the events)" if auto else ""),
            highlight=False,
        )
    of = f" of {s['epochs']}" if s["epochs"] or source == "preset" else ""
    c.print(f"{s['n_steps']} steps, {s['n_epochs']}{of} epochs", soft_wrap=True)
    if source != "preset":  # a preset's probes and scalars are always the standard ones
        _print_declared(c, s)
    if s.get("n_modules"):
        c.print(f"{s['n_modules']} probed modules (the activation probe's columns)", soft_wrap=True)
    c.print(f"started {s['started']}, ended {s['ended'] or '-'}", soft_wrap=True)
    if s.get("error"):
        c.print(f"[bold red]error:[/] {escape(str(s['error']))}")
    _print_findings(c, s)
    if "snapshots" in s:  # info_summary's (a plain RunFile.summary() has none)
        from tuitrain.commands.info_snapshots import snapshot_lines

        for text in snapshot_lines(s["snapshots"]):
            c.print(escape(text), soft_wrap=True, highlight=False)
    extra = s.get("final_extra")
    if extra is None:  # a plain RunFile.summary(): its last epoch's and the test's own metrics
        extra = extra_metrics(s.get("epoch_metrics") or {}, s.get("test_metrics") or {})
    final = unmeasured_missing(s["final"], source, s.get("diverged_at") is not None)
    row = row_from_dict({**final, "run": s["run_name"], "extra": extra})
    # a run that did not complete gets the Status column, as in replay --print and the compare view
    row.status = s.get("final_status") or ("incomplete" if s.get("incomplete") else s["status"])
    c.print(rich_table([row]))
    if s["modules"] or source == "preset":
        mods = Table(title="Model summary", title_justify="left")
        for col in ("module", "type", "params", "FLOPs"):
            mods.add_column(col, justify="left" if col in ("module", "type") else "right", no_wrap=True)
        for m in s["modules"]:
            mods.add_row(
                escape(m["name"]), escape(m["type"]), f"{m['params']:,}", fmt_count(m.get("flops", 0))
            )
        c.print(mods)
    c.print()
    if s["config_toml"] or source == "preset":
        c.out(config_block(s["config_toml"]), highlight=False)
    else:
        c.out(user_config_block(s.get("user_config") or {}), highlight=False)


def wrapped(text: str, width: int, indent: str = "") -> str:
    """``text`` wrapped to ``width`` at spaces only (names and paths stay whole, so they can be copied),
    continuation lines indented four more than ``indent``."""
    return textwrap.fill(
        text,
        max(40, width),
        initial_indent=indent,
        subsequent_indent=indent + "    ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _print_findings(c: Any, s: dict[str, Any]) -> None:
    """The stored findings' latest state, one line each (as ``tuitrain diagnose`` prints them), or that
    the file stores none (written before findings were stored: ``diagnose`` computes them)."""
    from rich.markup import escape

    def say(text: str, indent: str = "") -> None:
        c.print(escape(wrapped(text, c.width, indent)), soft_wrap=True)

    now = s.get("findings_current")
    if now is None:
        say(f"findings: no findings stored (run `tuitrain diagnose {shlex.quote(str(s['path']))}`)")
    elif not now:
        say("findings: none")
    else:
        n_open = sum(1 for f in now if f["last_step"] is None)
        say(f"findings: {len(now)} ({n_open} open)")
        for f in now:
            say(f["line"], "  ")


def _print_declared(c: Any, s: dict[str, Any]) -> None:
    """What the file declares it holds: its probes (or none: ``run.watch`` was not called) and its
    per-step scalars, the run's own keys after the standard ones."""
    from rich.markup import escape

    from tuitrain.events import STEP_SCALARS

    specs = s.get("probe_specs")
    if specs is None:  # a summary without the full declaration: the names only
        specs = [{"name": n, "axis": "", "every": 1, "quantities": []} for n in s.get("probes", [])]
    if not specs:
        c.print("probes none (per-layer probes need run.watch(model, optimizer))", soft_wrap=True)
    for p in specs:
        qs = ", ".join(q["name"] for q in p["quantities"])
        every = f", every {p['every']} steps" if p["every"] != 1 else ""
        axis = f" per {p['axis']}" if p["axis"] else ""
        text = f"probe {p['name']}{axis}{every}" + (f": {qs}" if qs else "")
        c.print(escape(wrapped(text, c.width)), soft_wrap=True)
    own = [k for k in s.get("step_scalars", []) if k not in STEP_SCALARS]
    c.print(
        escape(
            "step scalars " + ", ".join(STEP_SCALARS) + (f"; the run's own: {', '.join(own)}" if own else "")
        ),
        soft_wrap=True,
    )


def user_config_block(config: dict[str, Any]) -> str:
    """A user loop's config (``tuitrain.init(config=...)``) as it was stored: JSON, indented."""
    import json

    if not config:
        return f"{CONFIG_HEADER}: none (tuitrain.init was given no config)\n"
    return (
        f"{CONFIG_HEADER} of this run (tuitrain.init(config=...), as JSON)\n{json.dumps(config, indent=2)}\n"
    )


CONFIG_HEADER = "# config"


def config_block(config_toml: str) -> str:
    """The run's stored config as TOML for people: the [model] table holds only the keys that the
    run's model family reads (:data:`tuitrain.config.MODEL_KEYS`), so a VGG run lists no ``hidden``
    or ``patch_size``; everything else is as stored. It parses with any TOML reader and, loaded as a
    preset, trains the same run. A config that does not parse is printed as stored, and says so."""
    import tomli_w

    from tuitrain.config import MODEL_KEYS

    try:
        table = tomllib.loads(config_toml)
    except tomllib.TOMLDecodeError as e:
        return f"{CONFIG_HEADER}: as stored in the run file, which is not valid TOML ({e}):\n{config_toml}"
    model = table.get("model")
    note = ""
    name = model.get("name") if isinstance(model, dict) else None
    if isinstance(model, dict) and isinstance(name, str) and name in MODEL_KEYS:  # unknown: show all
        keep = MODEL_KEYS[model["name"]]
        left_out = [k for k in model if k not in keep]
        if left_out:
            table["model"] = {k: v for k, v in model.items() if k in keep}
            note = f" ([model]: the keys {model['name']} reads; the run file has all)"
    try:
        text = _inline_lists_toml(table)
        if text is None or tomllib.loads(text) != table:
            text = tomli_w.dumps(table)
    except (TypeError, ValueError):
        return f"{CONFIG_HEADER}: as stored in the run file:\n{config_toml}"
    return f"{CONFIG_HEADER} of this run{note}\n{text}"


def _inline_lists_toml(table: dict[str, Any]) -> str | None:
    """``table`` (top-level values, then sections of values) as TOML with each list on one line
    (``hidden = [32, 32]``, where tomli-w gives a line per item: 66 lines for deep_mlp). Every key and
    scalar is still written by tomli-w; None for a shape this does not cover (the caller then uses
    tomli-w for all of it, as it does when the result would not read back equal)."""
    import tomli_w

    def key(k: str) -> str:
        return tomli_w.dumps({k: 0}).rsplit(" = ", 1)[0]

    def scalar(v: Any) -> str:
        return tomli_w.dumps({"v": v})[len("v = ") :].rstrip("\n")

    def line(k: str, v: Any) -> str:
        if isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (list, dict)) for x in v)):
            raise ValueError("nested")
        text = "[" + ", ".join(scalar(x) for x in v) + "]" if isinstance(v, list) else scalar(v)
        return f"{key(k)} = {text}"

    try:
        lines = [line(k, v) for k, v in table.items() if not isinstance(v, dict)]
        for name, section in table.items():
            if isinstance(section, dict):
                lines += ["", f"[{key(name)}]", *(line(k, v) for k, v in section.items())]
    except ValueError:
        return None
    return "\n".join(lines) + "\n"
