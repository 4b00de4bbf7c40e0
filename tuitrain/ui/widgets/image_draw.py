"""The Images screen's drawers that are more than one picture fitted to a panel: the decision boundary
with the test points painted at the terminal's own resolution, the misclassified samples as tiles with
"true→pred" under each, and the misclassified 2-D points as a list. Each returns a function of the
panel's (width, height) in cells (an :data:`~tuitrain.ui.widgets.image_panel.Drawer`).

The pictures themselves come from :mod:`tuitrain.view.images` (the report draws the same ones)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rich.text import Text

from tuitrain.ui.widgets.image_panel import Drawer
from tuitrain.view.halfblock import fit, halfblock, resample
from tuitrain.view.images import Picture, boundary_picture, points_pixels, sample_grid, with_points


def wrong_points(pred: np.ndarray, xy: np.ndarray, labels: np.ndarray, extent: Sequence[float]) -> np.ndarray:
    """Which test points the boundary grid misclassifies: the predicted class of the cell a point falls
    in differs from its label (points off the grid count as right: the grid says nothing of them)."""
    row, col, inside = points_pixels(xy, extent, pred.shape)
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    return inside & (pred[row, col].astype(np.int64) != lab)


def boundary_drawer(
    pred: np.ndarray,
    prob: np.ndarray,
    num_classes: int,
    extent: Sequence[float] | None = None,
    xy: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    wrong: np.ndarray | None = None,
) -> Drawer:
    """The boundary grid resampled to the panel's pixels first, then each test point painted as one
    pixel there (painting on the 48x48 grid and shrinking it would drop points), misclassified ones
    black (:func:`tuitrain.view.images.with_points`); then flipped so that high y is on top."""
    pic = boundary_picture(pred, prob, num_classes)

    def draw(width: int, height: int) -> Text:
        ph, pw = fit(pic.rgb.shape[:2], width, height)
        rgb = resample(pic.rgb, ph, pw)
        if xy is not None and labels is not None and extent is not None and len(xy):
            rgb = with_points(Picture(rgb, 1, (ph, pw), (1, 1)), xy, labels, extent, wrong).rgb
        return halfblock(rgb[::-1], width, height)

    return draw


def tile_layout(
    n: int, aspect: float, width: int, height: int, readable: int = 8
) -> tuple[int, int, int, int]:
    """(cols, rows, tile width, tile height) in cells for ``n`` tiles of pixel aspect ``aspect`` (h / w),
    each with a label line under it and a column of space between. Tiles at least ``readable`` cells
    wide come first (a sample smaller than that is unrecognisable, and "cat→dog 0.91" needs the
    room), then the most tiles that fit, then the largest (never under 4 cells)."""
    best = (1, 1, max(1, width), max(1, height - 1))
    best_score = (False, -1, -1)
    for tw in range(min(width, 24), 3, -1):
        th = max(1, math.ceil(tw * aspect / 2))
        cols = max(1, (width + 1) // (tw + 1))
        rows = max(0, height // (th + 1))
        shown = min(n, cols * rows)
        if shown and (tw >= readable, shown, tw) > best_score:
            best_score = (tw >= readable, shown, tw)
            best = (min(cols, n), max(1, math.ceil(shown / max(1, cols))), tw, th)
    return best


def samples_drawer(images: np.ndarray, labels: Sequence[str]) -> Drawer:
    """The samples ((n, c, h, w) uint8) as tiles with their label under each, as many as fit (the rest
    counted on the last line when there is room)."""
    n = int(images.shape[0])
    aspect = images.shape[2] / max(1, images.shape[3])
    tiles = [sample_grid(images[i : i + 1]).rgb for i in range(n)]

    def draw(width: int, height: int) -> Text:
        cols, rows, tw, th = tile_layout(n, aspect, width, height, min(8, int(images.shape[3])))
        shown = min(n, cols * rows)
        out = Text(no_wrap=True, overflow="crop")
        for r in range(rows):
            picks = list(range(r * cols, min(shown, (r + 1) * cols)))
            if not picks:
                break
            pics = [halfblock(tiles[i], tw, th).split("\n", allow_blank=True) for i in picks]
            for line in range(th):
                for k, lines in enumerate(pics):
                    if k:
                        out.append(" ")
                    out.append_text(lines[line] if line < len(lines) else Text(" " * tw))
                out.append("\n")
            for k, i in enumerate(picks):
                if k:
                    out.append(" ")
                label = labels[i] if i < len(labels) else ""
                out.append(label[:tw].center(tw), "bold" if k % 2 == 0 else "")
            out.append("\n")
        if shown < n and rows * (th + 1) < height:
            out.append(f"+{n - shown} more (a wider terminal shows more)", "dim")
        out.rstrip()
        return out

    return draw


def points_drawer(xy: np.ndarray, labels: Sequence[str], index: np.ndarray | None = None) -> Drawer:
    """Misclassified 2-D points as lines "#index  (x, y)  true→pred prob", as many as fit."""

    def draw(width: int, height: int) -> Text:
        out = Text(no_wrap=True, overflow="crop")
        n = int(xy.shape[0])
        room = height if n <= height else max(0, height - 1)
        for i in range(min(n, room)):
            at = f"#{int(index[i])}" if index is not None else f"{i + 1}."
            out.append(f"{at:>6} ({float(xy[i, 0]):+.2f}, {float(xy[i, 1]):+.2f})  ", "dim")
            out.append(labels[i] if i < len(labels) else "")
            out.append("\n")
        if room < n:
            out.append(f"+{n - room} more", "dim")
        out.rstrip()
        return out

    return draw
