"""Reading the ``/metrics`` long table (schema 2) by scope and key, decoded once per table size.

The table holds a row per value (step, epoch, scope, key, value); readers want columns per key. The
decoding (fixed-length UTF-8 keys, grouping in first-seen order) is vectorised with numpy and kept
until the table grows, so replaying a run in many batches decodes it once.
"""

from __future__ import annotations

from collections.abc import Callable

import h5py
import numpy as np

Columns = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


class MetricsView:
    """The decoded table, by scope then key, for the first ``n`` rows last asked for."""

    def __init__(self) -> None:
        self._n = -1
        self._by_scope: dict[str, Columns] = {}

    def scope(self, scope: str, n: int, ds: Callable[[str], h5py.Dataset]) -> Columns:
        if n != self._n:
            self._by_scope = _decode(n, ds)
            self._n = n
        return self._by_scope.get(scope, {})


def _decode(n: int, ds: Callable[[str], h5py.Dataset]) -> dict[str, Columns]:
    steps = ds("step")[:n].astype(np.int64)
    epochs = ds("epoch")[:n].astype(np.int32)
    scopes = ds("scope")[:n]
    keys = ds("key")[:n]
    values = ds("value")[:n].astype(np.float64)
    out: dict[str, Columns] = {}
    for scope in np.unique(scopes):
        rows = np.flatnonzero(scopes == scope)
        uniq, first, inverse = np.unique(keys[rows], return_index=True, return_inverse=True)
        cols: Columns = {}
        for k in np.argsort(first, kind="stable"):  # keys in first-seen order
            sel = rows[inverse == k]
            cols[_text(uniq[k])] = (steps[sel], epochs[sel], values[sel])
        out[_text(scope)] = cols
    return out


def _text(b: bytes | np.bytes_) -> str:
    return bytes(b).decode("utf-8", "replace")
