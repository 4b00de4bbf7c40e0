"""On-disk layout of a tuitrain run file: names, dtypes and chunk shapes, in one place.

The writer creates exactly what is listed here (plus what a run declares: its probes and step columns,
:mod:`tuitrain.runfile.declaration`) and the reader expects exactly that, so the two cannot drift
apart; docs/run-file.md describes the same layout for people reading files without tuitrain.

Chunking and compression were chosen by measurement (bench/runfile.py, tests/test_runfile.py):

* Nothing is compressed. Under SWMR every flush rewrites the partly filled last chunk of each dataset;
  a compressed chunk changes size when rewritten, HDF5 moves it, and the old space is never reused in
  SWMR mode (``fs_strategy="fsm", fs_persist=True`` did not change that). Measured on a 20,000-step x
  50-layer run: gzip files grew to 1.7x (100 rows per flush) and 7.7x (10 rows per flush) a write-once
  baseline, while uncompressed files stayed at 1.00x at every flush rate. gzip also costs ~60 us per
  step of 200-layer probes, over the writer's budget, and only saved ~20% on float32 gradient
  statistics. Run files can be compressed after the run with ``h5repack -L -f GZIP=4``
  (``-L``: a file that can still be continued, see docs/run-file.md).
* Per-layer probes are ``(rows, layers)`` with chunks spanning every layer: reading one step's row for
  all layers touches one chunk per probe, and a strided overview (``probe[::1000]``) touches one chunk
  per sampled row, which is what the heatmap UI does on long runs.
"""

from __future__ import annotations

import numpy as np

from tuitrain.events import PROBE_NAMES, STATUSES, STEP_SCALARS

FORMAT = "tuitrain-run"
SCHEMA_VERSION = 2  # bump on any change a reader of this version could misread; see docs/run-file.md
# Schema 2 (issue 10): the file declares its probes and step scalars (root attributes below), each probe
# keeps its rows in /probes/<probe>/, and /metrics holds keys a run logged beyond its declared columns.
# Still schema 2 (issue 11): optional tables (/modules, /findings) that the root attribute `tables` names;
# a file without the attribute has none, and a reader that predates them never looks at them.

# Statuses after which the writer is gone for good.
FINAL_STATUSES: tuple[str, ...] = ("completed", "stopped", "failed")
LIVE_STATUSES: tuple[str, ...] = tuple(s for s in STATUSES if s not in FINAL_STATUSES)

# Event-table kinds the writer itself uses; Alert.kind must not reuse them.
KIND_STATUS = "status"  # a StatusChanged event; message is the new status
KIND_FINISHED = "finished"  # the RunFinished event (or the crash path); message is the final status

# --- groups -----------------------------------------------------------------------------------
LAYERS = "layers"
STEPS = "steps"
PROBES = "probes"
EPOCHS = "epochs"
TEST = "test"
EVENTS = "events"
METRICS = "metrics"  # schema 2
# Optional tables (issue 11): a file holds those its root attribute `tables` names (absent: none).
MODULES = "modules"  # fixed, one row per probed module: the columns of axis "module"
FINDINGS = "findings"  # growable, one row per Finding event (opening and closing)
TABLES: tuple[str, ...] = (MODULES, FINDINGS)  # the optional tables this tuitrain knows, in this order
# Snapshots (issue 12): /snapshots/<name>/ per spec the root attribute `snapshots` declares (absent: none).
SNAPSHOTS = "snapshots"
SNAPSHOT_EPOCH_DTYPE = np.dtype(np.int32)  # /snapshots/<name>/epoch: -1 for a row taken before training
SNAPSHOT_STEP_DTYPE = np.dtype(np.int64)
SNAPSHOT_CHUNK_BYTES = 32 << 10  # a chunk holds about this much, never under one row (runfile/snapshots.py)

STR = np.dtype(object)  # variable-length UTF-8 (h5py.string_dtype()); only in data written before SWMR

# --- /layers: one row per monitored parameter tensor, fixed size L ------------------------------
LAYER_FIELDS: dict[str, np.dtype] = {
    "name": STR,
    "shape": STR,  # "32x3x3x3"; "" for a scalar parameter
    "numel": np.dtype(np.int64),
    "kind": STR,
    "module": STR,
    "module_type": STR,
}

# --- /modules (declared): one row per probed module (RunStarted.modules), fixed size M --------------
# The columns of every probe on axis "module" (the activation probe), in the order outputs are produced.
MODULE_FIELDS: dict[str, np.dtype] = {
    "name": STR,  # as in model.named_modules(), e.g. "stages.0.blocks.1.conv0"
    "type": STR,  # the module's class, e.g. "Conv2d"
    "kind": STR,  # "leaf" | "block"
}
MODULE_KINDS: tuple[str, ...] = ("leaf", "block")

# --- /steps: one row per training step ---------------------------------------------------------
STEP_INDEX: dict[str, np.dtype] = {"step": np.dtype(np.int64), "epoch": np.dtype(np.int32)}
STEP_SCALAR_DTYPE = np.dtype(np.float32)
STEP_FIELDS: dict[str, np.dtype] = {**STEP_INDEX, **dict.fromkeys(STEP_SCALARS, STEP_SCALAR_DTYPE)}
USER_SCALAR_DTYPE = np.dtype(np.float64)  # a user loop's own declared columns (schema 2): kept exactly
STEP_INDEX_COLUMNS: tuple[str, ...] = ("step", "epoch", "time")  # never a declared scalar's name
NAME_MAX_BYTES = 255  # a probe, quantity or declared step-scalar name (one HDF5 link name)
STEP_CHUNK = 4096  # rows; 16-32 KiB per chunk: the last 1000 rows are one or two chunks

# --- /probes: one row per probed step (every monitor.every steps) -------------------------------
PROBE_STEP_DTYPE = np.dtype(np.int64)
PROBE_DTYPE = np.dtype(np.float32)
PROBE_CHUNK_BYTES = 64 * 1024  # target bytes per (rows, L) chunk
PROBE_CHUNK_MIN_ROWS = 8
PROBE_CHUNK_MAX_ROWS = 4096

# --- /epochs: one row per finished epoch -------------------------------------------------------
EPOCH_FIELDS: dict[str, np.dtype] = {
    "epoch": np.dtype(np.int32),
    "step": np.dtype(np.int64),
    "train_loss": np.dtype(np.float64),
    "train_acc": np.dtype(np.float64),
    "val_loss": np.dtype(np.float64),
    "val_acc": np.dtype(np.float64),
    "lr": np.dtype(np.float64),
    "seconds": np.dtype(np.float64),
    "time": np.dtype(np.float64),
}
EPOCH_CHUNK = 64

# --- /metrics (schema 2): a long table of values beyond the declared columns -----------------------
# scope "step": a step key first logged after RunStarted (only values a step logged: NaN = not logged);
# "epoch": EpochEnd.metrics (step and epoch of the EpochEnd); "test": TestResult.metrics (the last step
# and epoch written before it). Keys longer than 64 UTF-8 bytes are cut at a character boundary.
METRIC_FIELDS: dict[str, np.dtype] = {
    "step": np.dtype(np.int64),
    "epoch": np.dtype(np.int32),
    "scope": np.dtype("S8"),
    "key": np.dtype("S64"),
    "value": np.dtype(np.float64),
}
METRIC_SCOPES: tuple[str, ...] = ("step", "epoch", "test")
METRIC_CHUNK = 512  # rows of 92 bytes

# --- /events: alerts and status changes --------------------------------------------------------
# Fixed-length UTF-8 (longer text is cut at a character boundary): variable-length strings live in
# the global heap, which a SWMR reader cannot follow ("address of object past end of allocation").
EVENT_FIELDS: dict[str, np.dtype] = {
    "step": np.dtype(np.int64),
    "time": np.dtype(np.float64),
    "level": np.dtype("S16"),
    "kind": np.dtype("S32"),
    "message": np.dtype("S512"),
}
EVENT_CHUNK = 32  # rows of ~580 bytes

# --- /findings (declared): one row per Finding event, when one opens and when it closes -------------
# Fixed-length UTF-8 like /events (a SWMR reader cannot follow variable-length strings written live);
# longer text is cut at a character boundary, evidence (a JSON object of numbers) by whole entries.
FINDING_FIELDS: dict[str, np.dtype] = {
    "at_step": np.dtype(np.int64),  # the run's step when the rules saw it (-1: found offline)
    "time": np.dtype(np.float64),  # Unix seconds the writer recorded the row
    "kind": np.dtype("S32"),  # the rule, e.g. "vanishing_gradients"
    "severity": np.dtype("S8"),  # "error" | "warning" | "info"
    "layer": np.dtype("S256"),  # the layer or module it names; "" for the run as a whole
    "first_step": np.dtype(np.int64),
    "last_step": np.dtype(np.int64),  # FINDING_OPEN while it holds; the closing row has the last step
    "evidence": np.dtype("S512"),  # JSON object name -> number (NaN/Infinity as Python's json writes)
    "message": np.dtype("S512"),
    "suggestion": np.dtype("S512"),
}
FINDING_OPEN = -1  # /findings/last_step of a finding that still held
FINDING_CHUNK = 16  # rows of ~1.9 KB

# --- root attributes, with the value they hold before the writer knows better ------------------
NAN = float("nan")
ROOT_ATTRS: dict[str, object] = {
    "format": FORMAT,
    "schema_version": SCHEMA_VERSION,
    "tuitrain_version": "",
    "versions": "{}",  # JSON object
    "run_name": "",
    "model_name": "",
    "dataset": "",
    "device": "",
    "params": 0,
    "flops": 0,
    "config_toml": "",
    "module_summary": "[]",  # JSON list
    "epochs": 0,
    "steps_per_epoch": 0,
    "batch_size": 0,
    "num_classes": 0,
    "started_at": NAN,
    "ended_at": NAN,
    "status": "starting",
    "error": "",
    "traceback": "",
    "checkpoint": "",
    "last_step": -1,
    "writer_pid": 0,
    "writer_host": "",
    "writer_start_ticks": 0,  # /proc/<pid>/stat starttime of the writer (Linux), to spot recycled pids
    # schema 2: what the file declares (tuitrain.runfile.declaration); schema-1 files lack these
    "source": "preset",  # "preset" | "script" (tuitrain.init) | "lightning"
    "probes": "[]",  # JSON list of {"name", "axis", "every", "quantities": [{"name", "label", "unit"}]}
    "step_scalars": "[]",  # JSON list of the /steps/<name> columns besides step, epoch, time
    "config_json": "",  # a user loop's config as a JSON object; "" for presets (they have config_toml)
}
ADDED_IN_2: tuple[str, ...] = ("source", "probes", "step_scalars", "config_json")
SOURCES: tuple[str, ...] = ("preset", "script", "lightning")
TEST_ATTRS: dict[str, float] = {"loss": NAN, "acc": NAN, "time": NAN}

# --- root attributes added after schema 1 was first written: files without them still open -------
# Their value when absent: max_steps 0 (no cap), out_path "" (the path the file is opened from),
# vanishing/exploding None (the reader falls back to the stored config's monitor section, then to the
# config schema's defaults).
OPTIONAL_ROOT_ATTRS: dict[str, object] = {
    "max_steps": 0,  # train.max_steps: 0 = no cap; total steps = min(epochs * steps_per_epoch, max_steps)
    "out_path": "",  # where the writer created the file (it may have been moved since)
    "vanishing": None,  # monitor.vanishing: mean |grad| below this is vanishing
    "exploding": None,  # monitor.exploding: grad L2 norm above this is exploding
    "tables": "[]",  # JSON list of the optional tables (TABLES) the file holds; absent: none (issue 11)
    "snapshots": "[]",  # JSON list of the snapshot specs under /snapshots; absent: none (issue 12)
}

# --- /steps columns added later, absent in older files ----------------------------------------------
OPTIONAL_STEP_FIELDS: dict[str, np.dtype] = {
    "time": np.dtype(np.float64),  # wall time the row's StepBatch left the engine (Unix seconds)
}


def probe_chunk_rows(n_layers: int) -> int:
    """Rows per probe chunk: about PROBE_CHUNK_BYTES, a power of two, clamped to a sane range."""
    per_row = max(n_layers, 1) * PROBE_DTYPE.itemsize
    rows = 1 << max(0, (PROBE_CHUNK_BYTES // per_row).bit_length() - 1)
    return int(min(max(rows, PROBE_CHUNK_MIN_ROWS), PROBE_CHUNK_MAX_ROWS))


# --- what a reader checks when it opens a file (tuitrain.runfile.validate) -------------------------
# A root attribute's type is that of its default above (str, int or float). Beyond the type:
TIME_RANGE = (0.0, 1e10)  # Unix seconds, 1970..2286: outside it a "time" is corruption, not a date
TIME_ATTRS = ("started_at", "ended_at")
TIME_ATTRS_UNSET_NAN = ("ended_at",)  # NaN until the run ends; started_at is set when the file is made
JSON_ATTRS: dict[str, type] = {
    "versions": dict,
    "module_summary": list,
    "probes": list,
    "step_scalars": list,
    "tables": list,
    "snapshots": list,
}
MODULE_SUMMARY_FIELDS: dict[str, type] = {"name": str, "type": str, "params": int}  # and int "flops"
_I64 = 2**63 - 1
INT_ATTR_RANGES: dict[str, tuple[int, int]] = {
    "schema_version": (1, SCHEMA_VERSION),
    "params": (0, _I64),
    "flops": (0, _I64),
    "epochs": (0, 2**31 - 1),
    "steps_per_epoch": (0, _I64),
    "batch_size": (0, _I64),
    "num_classes": (0, _I64),
    "last_step": (-1, _I64),
    "writer_pid": (0, 2**31 - 1),  # a pid_t; 0 = unknown
    "writer_start_ticks": (0, _I64),
    "max_steps": (0, _I64),
}


def escape(name: str) -> str:
    """A name as one HDF5 link name: ``%`` as ``%25`` and ``/`` as ``%2F``, so a user's key such as
    ``train/loss`` (common in other trackers) is one dataset, ``/steps/train%2Floss``; every other
    character, and so every name tuitrain itself uses, is kept as it is. The declaration keeps the
    real name."""
    return name.replace("%", "%25").replace("/", "%2F")


def path(*parts: str) -> str:
    """Dataset path inside the file, e.g. ``path(STEPS, "loss") == "steps/loss"``: the first part is a
    group path, every later part one name (:func:`escape`d)."""
    return "/".join([parts[0], *(escape(p) for p in parts[1:])])


__all__ = [
    "ADDED_IN_2",
    "EPOCH_FIELDS",
    "EVENT_FIELDS",
    "FINAL_STATUSES",
    "FINDING_FIELDS",
    "FORMAT",
    "LAYER_FIELDS",
    "LIVE_STATUSES",
    "METRIC_FIELDS",
    "METRIC_SCOPES",
    "MODULE_FIELDS",
    "OPTIONAL_ROOT_ATTRS",
    "OPTIONAL_STEP_FIELDS",
    "PROBE_NAMES",
    "ROOT_ATTRS",
    "SCHEMA_VERSION",
    "STEP_FIELDS",
    "STEP_SCALARS",
    "TABLES",
    "TEST_ATTRS",
    "probe_chunk_rows",
]
