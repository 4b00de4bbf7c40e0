"""Finding a step value's row in a sorted on-disk step column without reading the column."""

from __future__ import annotations

import h5py


def search_steps(ds: h5py.Dataset, n: int, value: int, right: bool = False) -> int:
    """``np.searchsorted`` on the first ``n`` rows of a sorted on-disk step column.

    Reads O(log n) single elements instead of the column (8 MB per million steps); steps written by
    tuitrain are consecutive, so the first guess (row = step - first step) almost always hits.
    """
    if n == 0:
        return 0
    first = int(ds[0])
    if value < first or (value == first and not right):
        return 0
    last = int(ds[n - 1])
    if value > last or (value == last and right):
        return n
    guess = value - first + (1 if right else 0)
    if 0 < guess < n and int(ds[guess - 1]) == guess - 1 + first and int(ds[guess]) == guess + first:
        return guess
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        v = int(ds[mid])
        if v < value or (right and v == value):
            lo = mid + 1
        else:
            hi = mid
    return lo
