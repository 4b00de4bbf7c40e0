"""tuitrain.view.images: the pictures the report and the Images screen draw from snapshots. Each test
builds the arrays a snapshot holds and checks the pixels where the layout says the tiles are."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tuitrain.view.images import (
    BACKGROUND,
    CLASS_COLORS,
    Picture,
    boundary_picture,
    kernel_grid,
    points_pixels,
    sample_grid,
    snapshot_at,
    token_grid,
    with_points,
)

BG = np.asarray(BACKGROUND, np.float32)


def _tiles(pic: Picture, gap: int = 1) -> list[np.ndarray]:
    h, w = pic.tile_shape
    out = []
    for i in range(pic.tiles):
        y, x = pic.tile_origin(i, gap)
        out.append(pic.rgb[y : y + h, x : x + w])
    return out


def _gap_mask(pic: Picture, gap: int = 1) -> np.ndarray:
    """True on every pixel no tile covers (the gaps and the empty cells of the last row)."""
    mask = np.ones(pic.rgb.shape[:2], bool)
    h, w = pic.tile_shape
    for i in range(pic.tiles):
        y, x = pic.tile_origin(i, gap)
        mask[y : y + h, x : x + w] = False
    return mask


@pytest.mark.parametrize("c", [1, 3, 5])
def test_kernel_grid_one_normalised_tile_per_kernel(c: int) -> None:
    rng = np.random.default_rng(c)
    k = 10
    w = rng.normal(size=(k, c, 3, 3)).astype(np.float32) * np.arange(1, k + 1)[:, None, None, None]
    pic = kernel_grid(w)
    assert pic.tiles == k and pic.tile_shape == (3, 3) and pic.grid == (3, 4)  # ceil(sqrt(10)) = 4 cols
    assert pic.rgb.shape == (3 * 3 + 2, 4 * 3 + 3, 3) and pic.rgb.dtype == np.float32
    assert pic.labels == ()
    for i, tile in enumerate(_tiles(pic)):
        assert tile.min() == 0.0 and tile.max() == pytest.approx(1.0), i
        if c == 3:
            span = w[i].max() - w[i].min()
            expect = (np.moveaxis(w[i], 0, -1) - w[i].min()) / span
            np.testing.assert_allclose(tile, expect, atol=1e-6)
        else:
            assert np.all(tile[..., 0] == tile[..., 1]) and np.all(tile[..., 1] == tile[..., 2])  # grey
            g = w[i].mean(axis=0)
            np.testing.assert_allclose(tile[..., 0], (g - g.min()) / (g.max() - g.min()), atol=1e-6)
    gaps = _gap_mask(pic)
    assert gaps.sum() == pic.rgb.shape[0] * pic.rgb.shape[1] - k * 9
    assert np.all(pic.rgb[gaps] == BG)


def test_kernel_grid_64_filters_in_8x8_and_columns() -> None:
    w = np.random.default_rng(0).normal(size=(64, 3, 7, 7))
    pic = kernel_grid(w)
    assert pic.grid == (8, 8) and pic.rgb.shape == (8 * 7 + 7, 8 * 7 + 7, 3)
    wide = kernel_grid(w, cols=16, gap=2)
    assert wide.grid == (4, 16) and wide.rgb.shape == (4 * 7 + 3 * 2, 16 * 7 + 15 * 2, 3)
    assert all(t.min() == 0 and t.max() == pytest.approx(1) for t in _tiles(wide, gap=2))
    assert np.all(wide.rgb[_gap_mask(wide, gap=2)] == BG)
    none = kernel_grid(w[:3], gap=0)
    assert none.grid == (2, 2) and none.rgb.shape == (14, 14, 3) and not _gap_mask(none, 0)[:7].any()


def test_kernel_grid_constant_kernel_is_mid_grey() -> None:
    w = np.zeros((2, 1, 2, 2))
    w[1] = np.arange(4).reshape(2, 2)
    a, b = _tiles(kernel_grid(w))
    assert np.all(a == 0.5)
    np.testing.assert_allclose(b[..., 0], [[0, 1 / 3], [2 / 3, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="kh, kw"):
        kernel_grid(np.zeros((3, 3)))


def test_token_grid_symmetric_bwr_per_unit() -> None:
    gh, gw = 2, 3
    w = np.array(
        [
            [0.0, 0.5, -0.5, 1.0, -1.0, 0.25],  # max |w| = 1
            [0.0, 4.0, -2.0, 0.0, 0.0, -4.0],  # max |w| = 4: the same colours at 4x the weights
            [0.0] * 6,  # all zero: white
        ]
    )
    pic = token_grid(w, (gh, gw))
    assert pic.tiles == 3 and pic.tile_shape == (2, 3) and pic.grid == (2, 2)
    u0, u1, u2 = _tiles(pic)
    white, red, blue = [1, 1, 1], [1, 0, 0], [0, 0, 1]
    # token t at row t // gw, col t % gw
    np.testing.assert_allclose(u0[0, 0], white)
    np.testing.assert_allclose(u0[1, 0], red)  # token 3 = +1.0
    np.testing.assert_allclose(u0[1, 1], blue)  # token 4 = -1.0
    np.testing.assert_allclose(u0[0, 1], [1, 0.5, 0.5])  # half red
    np.testing.assert_allclose(u0[0, 2], [0.5, 0.5, 1])  # half blue
    np.testing.assert_allclose(u1[0, 1], red)
    np.testing.assert_allclose(u1[1, 2], blue)
    np.testing.assert_allclose(u1[0, 2], [0.5, 0.5, 1])
    assert np.all(u2 == 1.0)
    assert np.all(pic.rgb[_gap_mask(pic)] == BG)
    with pytest.raises(ValueError, match="2x3"):
        token_grid(np.zeros((2, 5)), (2, 3))


def _strength(px: np.ndarray, c: int) -> np.ndarray:
    """How far a pixel is from white toward class c's colour, per channel the colour moves in (1: full)."""
    full = 1 - np.asarray(CLASS_COLORS[c])
    moves = full > 0.05
    return (1 - px[moves]) / full[moves]


def test_boundary_colours_per_class_fading_with_prob() -> None:
    assert len(CLASS_COLORS) >= 10 and len(set(CLASS_COLORS)) == len(CLASS_COLORS)
    pred = np.array([[0, 1, 2], [0, 1, 12]], np.int16)
    prob = np.array([[1.0, 1.0, 1.0], [0.4, 0.7, 1.0]], np.float16)
    pic = boundary_picture(pred, prob, num_classes=3)
    assert pic.tiles == 1 and pic.grid == (1, 1) and pic.tile_shape == (2, 3)
    assert pic.rgb.shape == (2, 3, 3) and pic.rgb.dtype == np.float32
    for j in range(3):
        np.testing.assert_allclose(pic.rgb[0, j], CLASS_COLORS[j], atol=1e-6)  # certain: the class colour
    np.testing.assert_allclose(pic.rgb[1, 2], CLASS_COLORS[2], atol=1e-6)  # class 12 cycles to colour 2
    # less sure -> nearer white, but still the class's hue (same direction from white)
    for j in (0, 1):
        s = _strength(pic.rgb[1, j], j)
        assert 0.2 <= s.mean() < 1 and np.allclose(s, s.mean(), atol=1e-3)
    assert (1 - pic.rgb[1, 0]).sum() < (1 - pic.rgb[0, 0]).sum()
    low = boundary_picture(np.zeros((1, 2), np.int16), np.array([[0.5, 0.75]]), num_classes=2)
    s0, s1 = _strength(low.rgb[0, 0], 0), _strength(low.rgb[0, 1], 0)
    assert s0.mean() == pytest.approx(0.2, abs=1e-3) and s1.mean() == pytest.approx(0.6, abs=1e-3)


def test_points_on_the_boundary_grid() -> None:
    pic = boundary_picture(np.zeros((4, 4), np.int16), np.ones((4, 4)), 2)
    xy = np.array([[0.1, 0.1], [3.9, 0.1], [0.1, 3.9], [9.0, 0.0]], np.float32)
    row, col, inside = points_pixels(xy, [0, 4, 0, 4], (4, 4))
    assert row.tolist()[:3] == [0, 0, 3] and col.tolist()[:3] == [0, 3, 0]  # row 0 = lowest y
    assert inside.tolist() == [True, True, True, False]
    drawn = with_points(pic, xy, np.array([1, 1, 0, 1]), [0, 4, 0, 4], wrong=[1])
    np.testing.assert_allclose(drawn.rgb[0, 0], 0.7 * np.asarray(CLASS_COLORS[1]), atol=1e-6)
    assert np.all(drawn.rgb[0, 3] == 0) and np.all(pic.rgb[0, 3] != 0)  # misclassified: black; source kept
    np.testing.assert_allclose(drawn.rgb[3, 0], 0.7 * np.asarray(CLASS_COLORS[0]), atol=1e-6)


@pytest.mark.parametrize("c", [1, 3])
def test_sample_grid_reproduces_the_stored_pixels(c: int) -> None:
    rng = np.random.default_rng(c)
    n = 7
    imgs = rng.integers(0, 256, size=(n, c, 4, 5), dtype=np.uint8)
    imgs[0] = 0
    imgs[1] = 255
    labels = [f"{i}→{i + 1} 0.9{i}" for i in range(n)]
    pic = sample_grid(imgs, labels)
    assert pic.tiles == n and pic.tile_shape == (4, 5) and pic.grid == (3, 3) and pic.labels == tuple(labels)
    for i, tile in enumerate(_tiles(pic)):
        expect = np.moveaxis(imgs[i], 0, -1).astype(np.float32) / 255
        if c == 1:
            expect = np.repeat(expect, 3, axis=-1)
        assert np.array_equal(tile, expect), i
        assert np.array_equal(
            np.round(tile * 255).astype(np.uint8), np.repeat(np.moveaxis(imgs[i], 0, -1), 3 // c, -1)
        )
    assert np.all(pic.rgb[_gap_mask(pic)] == BG)
    assert sample_grid(imgs).labels == ()
    with pytest.raises(ValueError, match="labels"):
        sample_grid(imgs, labels[:2])


def test_snapshot_at_follows_the_cursor() -> None:
    rows = SimpleNamespace(epoch=np.array([-1, 0, 1, 2], np.int32), step=np.array([0, 10, 20, 30], np.int64))
    assert snapshot_at(rows, -1) is None
    assert snapshot_at(rows, 0) == 0
    assert snapshot_at(rows, 9) == 0
    assert snapshot_at(rows, 10) == 1
    assert snapshot_at(rows, 25) == 2
    assert snapshot_at(rows, 10**9) == 3
    late = SimpleNamespace(step=np.array([5], np.int64))
    assert snapshot_at(late, 4) is None and snapshot_at(late, 5) == 0
    assert snapshot_at(SimpleNamespace(step=np.zeros(0, np.int64)), 100) is None
