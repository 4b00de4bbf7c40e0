"""What ``tuitrain presets`` and ``tuitrain info`` print: rich tables on the console (rich, and torch
for counting parameters, are imported when a table is drawn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuitrain.config import DATASET_CLASSES, ConfigError, RunConfig, load_config


def print_presets(folder: Path, files: list[Path]) -> None:
    """A table of the presets ``files`` in ``folder``: name, model, dataset, parameters, description;
    a preset that does not load gets a row saying why."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    with console.status("counting parameters (loading torch)..."):
        from tuitrain.train.models import build_model

        table = Table(title=f"Presets in {folder}", title_justify="left")
        for col in ("name", "model", "dataset", "params", "description"):
            table.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
        for f in files:
            try:
                cfg = load_config(f)
                shape = (2,) if cfg.data.name == "toy2d" else (3, cfg.data.image_size, cfg.data.image_size)
                classes = DATASET_CLASSES.get(cfg.data.name, cfg.data.classes)
                model = build_model(cfg.model, shape, classes)
                params = sum(p.numel() for p in model.parameters() if p.requires_grad)
                table.add_row(f.stem, model_label(cfg), cfg.data.name, f"{params:,}", cfg.description)
            except ConfigError as e:
                table.add_row(f.stem, "[red]invalid[/]", "", "", str(e))
    console.print(table)


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


def print_info(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.table import Table

    from tuitrain.train.sinks import final_table, fmt_count

    c = Console()
    status = s["status"] + (
        " (incomplete: the writer stopped without closing the file)" if s.get("incomplete") else ""
    )
    c.print(f"[bold]{s['run_name']}[/]  {s['path']}")
    c.print(
        f"status {status}; {s['model_name']} with {fmt_count(s['params'])} params, {fmt_count(s['flops'])} "
        f"FLOPs/sample; {s['dataset']}; device {s['device']}"
    )
    c.print(
        f"{s['n_steps']} steps, {s['n_epochs']} of {s['epochs']} epochs; started {s['started']}, "
        f"ended {s['ended'] or '-'}"
    )
    if s.get("error"):
        c.print(f"[bold red]error:[/] {s['error']}")
    c.print(final_table([{**s["final"], "run": s["run_name"]}]))
    mods = Table(title="Model summary", title_justify="left")
    for col in ("module", "type", "params", "FLOPs"):
        mods.add_column(col, justify="left" if col in ("module", "type") else "right")
    for m in s["modules"]:
        mods.add_row(m["name"], m["type"], f"{m['params']:,}", fmt_count(m.get("flops", 0)))
    c.print(mods)
    c.print(Syntax(s["config_toml"], "toml", theme="ansi_dark", background_color="default"))
