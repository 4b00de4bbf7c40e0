"""From ``run``/``watch`` arguments to what to train and where: a preset path or name, the options
that override it, a validated :class:`~tuitrain.config.RunConfig`, and a writable run-file path."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from tuitrain.config import DATASET_CLASSES, ConfigError, RunConfig, is_own_model, load_config


def presets_dir() -> Path:
    """The presets shipped inside the package (``tuitrain/presets``), present in every install.

    The checkout's ``presets`` is a link to this folder, so there is one copy of each preset.
    """
    return Path(__file__).resolve().parent.parent / "presets"


def project_presets_dir() -> Path | None:
    """``./presets`` of the user's own project (the working directory), if that folder exists."""
    local = Path("presets")
    return local if local.is_dir() else None


def preset_folders() -> list[tuple[str, Path]]:
    """Where a preset *name* is looked up, first match first: the project's ``./presets``, then the
    package's. Each comes with a label saying whose it is. A ``./presets`` that is the package's own
    folder (the checkout's link) is listed once, as the package's."""
    package = presets_dir()
    folders: list[tuple[str, Path]] = []
    local = project_presets_dir()
    if local is not None and local.resolve() != package.resolve():
        folders.append(("this project", local))
    folders.append(("tuitrain", package))
    return folders


def preset_names() -> list[str]:
    """Every preset name that resolves, in lookup order, each once."""
    names: list[str] = []
    for _, folder in preset_folders():
        names.extend(f.stem for f in sorted(folder.glob("*.toml")) if f.stem not in names)
    return names


def _looks_like_path(preset: str) -> bool:
    return preset.endswith(".toml") or os.sep in preset or bool(os.altsep and os.altsep in preset)


def resolve_preset(preset: str) -> Path:
    """A preset argument -> the file to load. Lookup order: ``preset`` as a path, if it exists; else
    ``./presets/<preset>.toml`` of the user's project; else the package's ``<preset>.toml``.

    Raises :class:`ConfigError` naming what was tried, with a did-you-mean among the known names, when
    nothing matches (a path that does not exist, or a name no folder has).
    """
    path = Path(preset)
    if path.exists():
        return path
    names = preset_names()
    how = (
        "A preset is a .toml file or the name of one in ./presets or in tuitrain's own presets; "
        "`tuitrain presets` lists them all."
    )
    if _looks_like_path(preset):
        stem = path.name[: -len(".toml")] if path.name.endswith(".toml") else path.name
        if stem in names:
            hint = f" The name `{stem}` alone finds the preset {resolve_preset(stem)}."
        else:
            hint = _did_you_mean(stem, names)
        raise ConfigError(f"{preset}: no such preset file.{hint} {how}")
    for _, folder in preset_folders():
        candidate = folder / f"{preset}.toml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{preset}: no preset of that name and no such file.{_did_you_mean(preset, names)} {how}"
    )


def _did_you_mean(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


def build_config(
    preset: str,
    sets: list[str] | None,
    data: str | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    name: str | None = None,
) -> RunConfig:
    extra = options_extra(data_dir, epochs, max_steps, batch_size, device, seed, name)
    path = resolve_preset(preset)
    if data is not None:
        original = load_config(path).data.name  # what the preset was written for
        if data != original:
            extra["data.name"] = data
            user_keys = {s.split("=", 1)[0].strip() for s in sets or []}
            # Keep the head of the model: a CIFAR-100 preset on synthetic data gets 100 synthetic classes.
            if data == "synthetic" and original in DATASET_CLASSES and "data.classes" not in user_keys:
                extra["data.classes"] = DATASET_CLASSES[original]
            # Split sizes belong to the dataset they were written for: the new one starts from its defaults.
            for key in ("data.train_size", "data.val_size", "data.test_size"):
                if key not in user_keys:
                    extra[key] = 0
    cfg = load_config(path, sets, extra)
    check_own_model(cfg)
    return cfg


def options_extra(
    data_dir: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    seed: int | None = None,
    name: str | None = None,
    **_: Any,
) -> dict[str, Any]:
    """The dotted config keys of the dedicated options of ``run``/``watch`` that were given
    (``--data`` is not among them: it needs the preset's own dataset to decide, see build_config)."""
    extra: dict[str, Any] = {}
    for key, value in (
        ("data.dir", data_dir),
        ("train.epochs", epochs),
        ("train.max_steps", max_steps),
        ("train.batch_size", batch_size),
        ("train.device", device),
        ("train.seed", seed),
        ("name", name),
    ):
        if value is not None:
            extra[key] = value
    return extra


def check_own_model(cfg: RunConfig) -> None:
    """A model of the user's own (``model.name = "module:function"``) whose module cannot be found is
    bad input before anything starts; found without importing it (it may import torch, which the
    dashboard's process never does). What importing or calling it finds is said where it is built."""
    if is_own_model(cfg.model.name):
        from tuitrain.train.own_model import check_importable

        check_importable(cfg.model.name)


def default_out(cfg: RunConfig) -> Path:
    """``cfg.out``, or ``runs/<name>-<time>.h5``, a name no other run has or is taking (the rule is
    :func:`tuitrain.runfile.claim.claim_default_out`'s, shared with ``tuitrain.init``)."""
    from tuitrain.runfile.claim import claim_default_out

    if cfg.out:
        return Path(cfg.out)
    return claim_default_out(cfg.name)


def check_out(out: Path, overwrite: bool = False) -> None:
    """Refuse, as bad input (exit 2) and before anything starts, an ``--out`` that is not a run-file
    path, cannot be written, holds a run (unless ``overwrite``) or is being written by another run.
    The training process's writer checks the last two again, atomically (:mod:`tuitrain.runfile.claim`).
    ``overwrite`` is passed on to the training processes this command starts through
    ``$TUITRAIN_OVERWRITE`` (see :mod:`tuitrain.runfile.claim`)."""
    from tuitrain.runfile.claim import COMPANION_SUFFIXES, OVERWRITE_ENV, check_free, launched_rank

    launched = launched_rank()
    if launched:  # a rank of our own launcher: the launching command checked and decided already
        overwrite = overwrite or os.environ.get(OVERWRITE_ENV, "") == "1"
    else:  # this command's option alone decides, for this process and those it starts
        os.environ[OVERWRITE_ENV] = "1" if overwrite else "0"

    if "\0" in str(out):
        raise ConfigError("--out contains a NUL character; give a file path such as runs/run.h5.")
    if out.suffix in COMPANION_SUFFIXES.values():
        raise ConfigError(
            f"--out {out}: {out.suffix} is the suffix of a file beside each run "
            f"({', '.join(COMPANION_SUFFIXES.values())}); give a run-file path such as {out.with_suffix('.h5')}."
        )
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file path such as {out / 'run.h5'}.")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the directory {parent}: {e.strerror}.") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: the directory {parent} is not writable.")
    if launched or os.environ.get("RANK", "0") not in ("", "0"):
        return  # our launcher's ranks: checked by it; under another launcher, rank 0 checks
    try:
        check_free(out, overwrite)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot check it: {e.strerror or e}.") from None
