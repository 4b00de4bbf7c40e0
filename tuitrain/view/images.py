"""Pictures from snapshots: RGB arrays of tiles that the report (matplotlib's ``imshow``) and the
terminal's Images screen (half-block characters) both draw, so a kernel grid looks the same in both.

Pure numpy: no torch, no matplotlib, no textual. Every picture is a :class:`Picture`, a float32
``(H, W, 3)`` array in [0, 1] and what it is made of (tiles, their size, the grid), so a caller can
label a tile or a test can find one without re-deriving the layout. Tiles are laid out row-major,
``gap`` pixels of :data:`BACKGROUND` between them and none around the edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Between tiles: a dark slate, neither black nor white, so that it is never mistaken for a kernel's
# extreme pixel (min-max normalised kernels reach both 0 and 1) nor for a token map's white zero.
BACKGROUND: tuple[float, float, float] = (0.16, 0.17, 0.21)

# Matplotlib's tab10, as floats: ten qualitative colours distinct in print and on a 256-colour terminal;
# class c gets CLASS_COLORS[c % 10] in every figure and on every screen.
CLASS_COLORS: tuple[tuple[float, float, float], ...] = tuple(
    (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255)
    for h in (
        "1f77b4",
        "ff7f0e",
        "2ca02c",
        "d62728",
        "9467bd",
        "8c564b",
        "e377c2",
        "7f7f7f",
        "bcbd22",
        "17becf",
    )
)

# The faintest a boundary cell gets (its probability at chance): still its class's hue, not white.
MIN_STRENGTH = 0.2


@dataclass(frozen=True)
class Picture:
    """An RGB image made of tiles: ``rgb`` (H, W, 3) float32 in [0, 1]; ``tiles`` drawn (kernels, units,
    samples; 1 for a boundary); ``tile_shape`` (h, w) pixels of one tile without the gap; ``grid``
    (rows, cols) of tiles; ``labels`` one per tile (e.g. ``"cat→dog 0.91"``) or ()."""

    rgb: np.ndarray
    tiles: int
    tile_shape: tuple[int, int]
    grid: tuple[int, int]
    labels: tuple[str, ...] = ()

    def tile_origin(self, i: int, gap: int = 1) -> tuple[int, int]:
        """(y, x) of tile ``i``'s top-left pixel in ``rgb`` (for the ``gap`` the picture was made with)."""
        _, cols = self.grid
        h, w = self.tile_shape
        return (i // cols) * (h + gap), (i % cols) * (w + gap)


def _layout(n: int, cols: int | None) -> tuple[int, int]:
    """(rows, cols) for n tiles: ``cols`` default ceil(sqrt(n)) (a square-ish grid, 8x8 for 64)."""
    c = max(1, int(cols) if cols else math.ceil(math.sqrt(max(n, 1))))
    c = min(c, max(n, 1))
    return max(1, math.ceil(n / c)), c


def _tile(tiles: np.ndarray, cols: int | None, gap: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(n, h, w, 3) tiles -> one (H, W, 3) float32 image with ``gap`` background pixels between them."""
    n, h, w, _ = tiles.shape
    rows, c = _layout(n, cols)
    gap = max(0, int(gap))
    out = np.empty((rows * h + (rows - 1) * gap, c * w + (c - 1) * gap, 3), np.float32)
    out[:] = BACKGROUND
    for i in range(n):
        y, x = (i // c) * (h + gap), (i % c) * (w + gap)
        out[y : y + h, x : x + w] = tiles[i]
    return out, (rows, c)


def _minmax(a: np.ndarray) -> np.ndarray:
    """Each item (axis 0) scaled to [0, 1] on its own; a constant item (or a NaN one) becomes 0.5."""
    flat = np.nan_to_num(a.reshape(a.shape[0], -1).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 0.5)
    return out.reshape(a.shape)


def kernel_grid(weight: np.ndarray, cols: int | None = None, gap: int = 1) -> Picture:
    """(k, c, kh, kw) kernels as a grid of tiles, each kernel min-max normalised on its own (as 000
    s4.2 shows ResNet18's 64 first filters): c == 3 is RGB, c == 1 grey, any other c the mean over its
    channels in grey (a channel has no colour of its own then)."""
    w = np.asarray(weight, np.float64)
    if w.ndim != 4:
        raise ValueError(f"kernel_grid wants (k, c, kh, kw) weights, got shape {w.shape}")
    k, c, kh, kw = w.shape
    if c != 3:
        w = w.mean(axis=1, keepdims=True) if c != 1 else w
    norm = _minmax(w)  # (k, 1|3, kh, kw): min-max over the whole kernel, its channels together
    tiles = np.moveaxis(norm, 1, -1)
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    rgb, grid = _tile(tiles.astype(np.float32), cols, gap)
    return Picture(rgb, k, (kh, kw), grid)


def bwr(t: np.ndarray) -> np.ndarray:
    """Matplotlib's ``bwr`` map on [-1, 1]: -1 full blue, 0 white, +1 full red, linear in between."""
    t = np.clip(np.nan_to_num(np.asarray(t, np.float64)), -1.0, 1.0)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    return np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)


def token_grid(weight: np.ndarray, grid: tuple[int, int], cols: int | None = None, gap: int = 1) -> Picture:
    """(k, tokens) token-mixing weights, one tile per unit laid out on the token grid (token t at row
    t // gw, col t % gw), coloured blue-white-red symmetric around 0 per unit (its largest |w| full red
    or blue), as 000 s5.2 draws a Mixer's token-mixing MLP."""
    w = np.asarray(weight, np.float64)
    gh, gw = (int(grid[0]), int(grid[1]))
    if w.ndim != 2 or w.shape[1] != gh * gw:
        raise ValueError(f"token_grid wants (k, {gh * gw}) weights for a {gh}x{gw} grid, got {w.shape}")
    w = np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
    peak = np.abs(w).max(axis=1, keepdims=True)
    t = w / np.where(peak > 0, peak, 1.0)
    tiles = bwr(t.reshape(-1, gh, gw)).astype(np.float32)
    rgb, layout = _tile(tiles, cols, gap)
    return Picture(rgb, w.shape[0], (gh, gw), layout)


def class_color(c: int) -> tuple[float, float, float]:
    """The colour of class ``c`` (cycled through :data:`CLASS_COLORS`)."""
    return CLASS_COLORS[int(c) % len(CLASS_COLORS)]


def boundary_picture(pred: np.ndarray, prob: np.ndarray, num_classes: int) -> Picture:
    """(G, G) predicted classes as their class colours, faded toward white where the model is unsure:
    full colour at probability 1, :data:`MIN_STRENGTH` of it at chance (1 / num_classes) or below, so
    the boundary shows as a pale band between confident regions. Row 0 is the lowest y (matplotlib's
    ``origin="lower"``; the terminal flips it). A negative class (no prediction) is background."""
    p = np.asarray(pred)
    if p.ndim != 2:
        raise ValueError(f"boundary_picture wants a (G, G) grid, got shape {p.shape}")
    palette = np.asarray(CLASS_COLORS, np.float64)
    col = palette[np.mod(p.astype(np.int64), len(palette))]
    chance = 1.0 / max(2, int(num_classes))
    q = np.nan_to_num(np.asarray(prob, np.float64), nan=0.0)
    s = MIN_STRENGTH + (1 - MIN_STRENGTH) * np.clip((q - chance) / (1 - chance), 0.0, 1.0)
    rgb = 1.0 - s[..., None] * (1.0 - col)
    rgb[p < 0] = BACKGROUND
    return Picture(rgb.astype(np.float32), 1, (p.shape[0], p.shape[1]), (1, 1))


def points_pixels(
    xy: np.ndarray, extent: Sequence[float], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, inside) of each 2-D point on a boundary picture of ``shape`` (G, G) spanning
    ``extent`` [x0, x1, y0, y1] with row 0 at the lowest y (the grid cell the point falls in); inside is
    False for points off the grid (their row/col are clipped to the edge)."""
    x0, x1, y0, y1 = (float(v) for v in extent)
    h, w = shape
    pts = np.asarray(xy, np.float64).reshape(-1, 2)
    fx = (pts[:, 0] - x0) / ((x1 - x0) or 1.0) * w
    fy = (pts[:, 1] - y0) / ((y1 - y0) or 1.0) * h
    inside = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
    col = np.clip(np.floor(np.nan_to_num(fx)), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor(np.nan_to_num(fy)), 0, h - 1).astype(np.int64)
    return row, col, inside


def with_points(
    pic: Picture, xy: np.ndarray, labels: np.ndarray, extent: Sequence[float], wrong: Any = None
) -> Picture:
    """The boundary picture with each test point painted over its cell in its true class's full colour
    (darkened, so a point stays visible on its own class's region); cells of points in ``wrong`` (a
    boolean mask or indices of misclassified points) are black. For the terminal, where a point is a
    pixel; the report scatters the points with matplotlib instead."""
    rgb = pic.rgb.copy()
    row, col, inside = points_pixels(xy, extent, rgb.shape[:2])
    lab = np.asarray(labels).reshape(-1)
    palette = 0.7 * np.asarray(CLASS_COLORS, np.float32)
    rgb[row[inside], col[inside]] = palette[np.mod(lab[inside].astype(np.int64), len(palette))]
    if wrong is not None:
        mask = np.zeros(len(lab), bool)
        mask[np.asarray(wrong)] = True
        m = mask & inside
        rgb[row[m], col[m]] = 0.0
    return Picture(rgb, pic.tiles, pic.tile_shape, pic.grid, pic.labels)


def sample_grid(
    images: np.ndarray, labels: Sequence[str] = (), cols: int | None = None, gap: int = 1
) -> Picture:
    """(n, c, h, w) uint8 samples as tiles, their pixels as stored (value / 255): c == 1 grey, c == 3
    RGB, any other c the mean over channels in grey. ``labels``: one per sample, or none."""
    a = np.asarray(images)
    if a.ndim != 4:
        raise ValueError(f"sample_grid wants (n, c, h, w) images, got shape {a.shape}")
    n, c, h, w = a.shape
    if labels and len(labels) != n:
        raise ValueError(f"sample_grid: {len(labels)} labels for {n} images")
    v = a.astype(np.float32) / np.float32(255.0)
    if c not in (1, 3):
        v = v.mean(axis=1, keepdims=True)
    tiles = np.moveaxis(v, 1, -1)
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    rgb, grid = _tile(np.clip(tiles, 0.0, 1.0), cols, gap)
    return Picture(rgb, n, (h, w), grid, tuple(labels))


def snapshot_at(rows: Any, step: int) -> int | None:
    """Index of the last row taken at or before ``step`` (what the replay cursor shows), None before
    the first row. ``rows`` is anything with a ``step`` array (SnapshotRows), rows in step order."""
    steps = np.asarray(rows.step, np.int64).reshape(-1)
    i = int(np.searchsorted(steps, int(step), side="right")) - 1
    return i if i >= 0 else None
