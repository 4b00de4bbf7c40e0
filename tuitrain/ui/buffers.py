"""Bounded numpy buffers behind the dashboard's history: a decimating series of per-step rows, a ring of
the latest probe rows, and whole-run log10 time buckets. No textual, no torch.

* :class:`DecimatingSeries`: full resolution up to ``cap`` rows, then every other row is dropped and
  later rows are kept at the coarser stride (a 10-hour run at 10,000 steps/s still fits);
* :class:`Ring`: the most recent ``cap`` rows in full, with their step keys (the bars read its last
  row; the time cursor looks rows up by step);
* :class:`LogBuckets`: the whole run as log10 bucket means whose bucket width doubles when full (the
  heatmap and the sparklines read it).
"""

from __future__ import annotations

import numpy as np


class DecimatingSeries:
    """Rows of ``width`` float64 columns with bounded memory.

    Appends are amortised O(rows). When ``cap`` rows are held, every other row is dropped and the
    stride doubles: from then on only every ``stride``-th appended row is kept, so the buffer always
    spans the whole run at a uniform stride. ``epoch`` counts compactions (caches key on it).
    Stored column by column: the chart reads whole columns (a pass over a column of row-major rows
    touches a cache line per value, several times the memory traffic).
    """

    def __init__(self, width: int, cap: int = 1 << 18, initial: int = 4096) -> None:
        if cap < 4 or cap % 2:
            raise ValueError("cap must be an even number >= 4")
        self.width = width
        self.cap = cap
        self._data = np.empty((width, min(initial, cap)), dtype=np.float64)  # (column, row)
        self.n = 0
        self.stride = 1
        self.epoch = 0  # bumped at each compaction
        self._skip = 0  # rows to skip before the next kept one (when stride > 1)

    def __len__(self) -> int:
        return self.n

    @property
    def data(self) -> np.ndarray:
        """The kept rows, oldest first, shape (rows, width); each column contiguous (a view: copy it
        if you keep it across appends)."""
        return self._data[:, : self.n].T

    def add_columns(self, k: int, fill: float = np.nan) -> None:
        """``k`` more columns on the right, ``fill`` in every row already held (a run's scalar that
        first appears mid-run: the rows before it had none)."""
        if k <= 0:
            return
        extra = np.full((k, self._data.shape[1]), fill, dtype=np.float64)
        self._data = np.concatenate([self._data, extra], axis=0)
        self.width += k

    def append(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.width)
        while rows.shape[0]:
            k = rows.shape[0]
            s, p = self.stride, self._skip
            idx = np.arange(p, k, s)  # the rows of this chunk that are kept
            room = self.cap - self.n
            if idx.shape[0] <= room:
                self._put(rows[idx])
                self._skip = (s - 1 - (k - 1 - int(idx[-1]))) if idx.shape[0] else p - k
                return
            if room:
                self._put(rows[idx[:room]])
                rows = rows[int(idx[room - 1]) + 1 :]
                self._skip = s - 1
            self._compact()

    def _put(self, rows: np.ndarray) -> None:
        k = rows.shape[0]
        if not k:
            return
        need = self.n + k
        if need > self._data.shape[1]:
            size = self._data.shape[1]
            while size < need:
                size *= 2
            new = np.empty((self.width, min(size, self.cap)), dtype=np.float64)
            new[:, : self.n] = self._data[:, : self.n]
            self._data = new
        self._data[:, self.n : need] = rows.T
        self.n = need

    def _compact(self) -> None:
        """Keep stored rows 0, 2, 4, ... and double the stride, keeping the phase of later appends."""
        old = self.stride
        since = old - 1 - self._skip  # raw rows appended since the last stored row
        last_survives = (self.n - 1) % 2 == 0
        kept = self._data[:, : self.n : 2].copy()
        self.n = kept.shape[1]
        self._data[:, : self.n] = kept
        self.stride = old * 2
        self._skip = (self.stride - 1 - since) if last_survives else (old - 1 - since)
        self.epoch += 1


class Ring:
    """The last ``cap`` rows of shape ``row_shape`` (and their int64 keys), grown lazily up to ``cap``."""

    def __init__(self, cap: int, row_shape: tuple[int, ...], dtype=np.float32, initial: int = 256) -> None:
        self.cap = max(1, int(cap))
        self.row_shape = tuple(row_shape)
        self._data = np.empty((min(initial, self.cap), *self.row_shape), dtype=dtype)
        self._keys = np.empty(self._data.shape[0], dtype=np.int64)
        self.n = 0  # rows held (<= cap)
        self.total = 0  # rows ever appended
        self._head = 0  # next write position once full

    def __len__(self) -> int:
        return self.n

    def append(self, keys: np.ndarray, rows: np.ndarray) -> None:
        rows = np.asarray(rows).reshape(-1, *self.row_shape)
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        k = rows.shape[0]
        if not k:
            return
        if k >= self.cap:
            rows, keys = rows[-self.cap :], keys[-self.cap :]
            self._grow(self.cap)
            self._data[:] = rows
            self._keys[:] = keys
            self.n, self._head = self.cap, 0
            self.total += k
            return
        if self.n < self.cap:
            need = self.n + k
            if need <= self.cap:
                self._grow(need)
                self._data[self.n : need] = rows
                self._keys[self.n : need] = keys
                self.n = need
                self._head = need % self.cap
                self.total += k
                return
            self._grow(self.cap)
            first = self.cap - self.n
            self._data[self.n :] = rows[:first]
            self._keys[self.n :] = keys[:first]
            self.n, self._head = self.cap, 0
            self.total += first
            rows, keys, k = rows[first:], keys[first:], k - first
        # full: wrap-around write
        end = self._head + k
        if end <= self.cap:
            self._data[self._head : end] = rows
            self._keys[self._head : end] = keys
        else:
            a = self.cap - self._head
            self._data[self._head :] = rows[:a]
            self._keys[self._head :] = keys[:a]
            self._data[: k - a] = rows[a:]
            self._keys[: k - a] = keys[a:]
        self._head = end % self.cap
        self.total += k

    def _grow(self, need: int) -> None:
        size = self._data.shape[0]
        if need <= size:
            return
        while size < need:
            size *= 2
        size = min(size, self.cap)
        data = np.empty((size, *self.row_shape), dtype=self._data.dtype)
        keys = np.empty(size, dtype=np.int64)
        data[: self.n] = self._data[: self.n]
        keys[: self.n] = self._keys[: self.n]
        self._data, self._keys = data, keys

    def last(self) -> tuple[int, np.ndarray] | None:
        if not self.n:
            return None
        i = (self._head - 1) % self.cap if self.n == self.cap else self.n - 1
        return int(self._keys[i]), self._data[i]

    def at(self, key: int) -> tuple[int, np.ndarray] | None:
        """(key, row) of the last row whose key is <= ``key`` (keys ascending), or None when every held
        row is newer (or the ring is empty). A view: copy it if you keep it across appends."""
        if not self.n:
            return None
        # when full, the oldest rows run from the head to the end, then wrap to the start
        segments = [(0, self.n)] if self.n < self.cap else [(0, self._head), (self._head, self.cap)]
        for a, b in segments:  # newest segment first
            if b > a and self._keys[a] <= key:
                i = a + int(np.searchsorted(self._keys[a:b], key, "right")) - 1
                return int(self._keys[i]), self._data[i]
        return None

    def window(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The last ``count`` rows (all held rows by default), oldest first, as copies."""
        count = self.n if count is None else max(0, min(int(count), self.n))
        if self.n < self.cap:
            return self._keys[self.n - count : self.n].copy(), self._data[self.n - count : self.n].copy()
        idx = (np.arange(self._head - count, self._head)) % self.cap
        return self._keys[idx], self._data[idx]


class LogBuckets:
    """The whole run of probe rows as means of log10 values in at most ``cap`` time buckets.

    Starts one row per bucket; when full, neighbouring buckets merge (weighted by their counts) and
    the bucket width doubles. The heatmap and the sparklines only ever need a few hundred columns,
    so ``cap`` of a couple of thousand keeps them exact for short runs and bounded for long ones.
    """

    def __init__(self, cap: int, row_shape: tuple[int, ...]) -> None:
        if cap < 4 or cap % 2:
            raise ValueError("cap must be an even number >= 4")
        self.cap = cap
        self.row_shape = tuple(row_shape)
        self.values = np.zeros((cap, *self.row_shape), dtype=np.float32)
        self.steps = np.zeros(cap, dtype=np.float64)  # mean step of each bucket
        self.counts = np.zeros(cap, dtype=np.int64)
        self.n = 0
        self.width = 1  # rows per full bucket

    def __len__(self) -> int:
        return self.n

    def append(self, steps: np.ndarray, log_rows: np.ndarray) -> None:
        log_rows = np.asarray(log_rows, dtype=np.float32).reshape(-1, *self.row_shape)
        steps = np.asarray(steps, dtype=np.float64).reshape(-1)
        i = 0
        m = log_rows.shape[0]
        while i < m:
            if self.n and self.counts[self.n - 1] < self.width:
                # top up the last, partial bucket
                j = self.n - 1
                take = min(self.width - int(self.counts[j]), m - i)
                c = float(self.counts[j])
                tot = c + take
                self.values[j] = (self.values[j] * c + log_rows[i : i + take].sum(axis=0)) / tot
                self.steps[j] = (self.steps[j] * c + steps[i : i + take].sum()) / tot
                self.counts[j] += take
                i += take
                continue
            if self.n == self.cap:
                self._merge()
                continue
            # whole new buckets, as many as fit
            rem = m - i
            nb = min(self.cap - self.n, -(-rem // self.width))
            take = min(rem, nb * self.width)
            full = take // self.width
            if full:
                blk = log_rows[i : i + full * self.width].reshape(full, self.width, *self.row_shape)
                self.values[self.n : self.n + full] = blk.mean(axis=1)
                self.steps[self.n : self.n + full] = (
                    steps[i : i + full * self.width].reshape(full, -1).mean(axis=1)
                )
                self.counts[self.n : self.n + full] = self.width
                self.n += full
                i += full * self.width
            part = take - full * self.width
            if part:
                self.values[self.n] = log_rows[i : i + part].mean(axis=0)
                self.steps[self.n] = steps[i : i + part].mean()
                self.counts[self.n] = part
                self.n += 1
                i += part

    def _merge(self) -> None:
        h = self.n // 2
        c = self.counts[: 2 * h].reshape(h, 2).astype(np.float64)
        tot = c.sum(axis=1)
        v = self.values[: 2 * h].reshape(h, 2, *self.row_shape).astype(np.float64)
        w = (c / tot[:, None]).reshape(h, 2, *([1] * len(self.row_shape)))
        self.values[:h] = (v * w).sum(axis=1).astype(np.float32).reshape(h, *self.row_shape)
        self.steps[:h] = (self.steps[: 2 * h].reshape(h, 2) * (c / tot[:, None])).sum(axis=1)
        self.counts[:h] = tot.astype(np.int64)
        if self.n % 2:  # an odd bucket out stays as it is
            self.values[h] = self.values[self.n - 1]
            self.steps[h] = self.steps[self.n - 1]
            self.counts[h] = self.counts[self.n - 1]
            h += 1
        self.n = h
        self.width *= 2

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.steps[: self.n], self.values[: self.n]
