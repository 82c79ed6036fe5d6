"""The renderer draws exactly the geometry and palette of issue 2."""

from __future__ import annotations

import numpy as np
import pytest

from pixlm.data.shapes import BACKGROUND, PALETTE, SHAPES, Scene, ShapeObject, render

WHITE = BACKGROUND


def draw(shape: str, color: str = "red", size: str = "large", row: int = 1, col: int = 1,
         jitter: tuple[float, float] = (0.0, 0.0), canvas: int = 64) -> np.ndarray:
    return np.asarray(render(Scene([ShapeObject(shape, color, size, row, col)], [jitter]), canvas), dtype=np.uint8)


def coverage(arr: np.ndarray, color: str) -> np.ndarray:
    """Per-pixel fraction of the object colour (anti-aliased pixels blend linearly with white)."""
    return (255.0 - arr.min(axis=2)) / (255.0 - min(PALETTE[color]))


def stats(arr: np.ndarray, color: str) -> tuple[float, float, float]:
    """Area, centroid x, centroid y of the coloured mass, in pixels."""
    cov = coverage(arr, color)
    ys, xs = np.mgrid[0 : arr.shape[0], 0 : arr.shape[1]] + 0.5
    area = float(cov.sum())
    return area, float((cov * xs).sum() / area), float((cov * ys).sum() / area)


def test_background_is_white_and_canvas_64() -> None:
    arr = np.asarray(render(Scene([])))
    assert arr.shape == (64, 64, 3)
    assert (arr == WHITE).all()


@pytest.mark.parametrize("color", list(PALETTE))
@pytest.mark.parametrize("shape", SHAPES)
def test_centre_pixel_is_exact_palette_colour(shape: str, color: str) -> None:
    arr = draw(shape, color, "small", row=1, col=1)
    # The centre cell's box centre is (32, 32): pixels 31 and 32 around it lie well inside every shape.
    assert tuple(arr[32, 32]) == PALETTE[color]
    assert tuple(arr[32, 31]) == PALETTE[color]
    assert tuple(arr[0, 0]) == WHITE


def test_palette_is_the_issue_palette() -> None:
    assert PALETTE == {
        "red": (220, 40, 40), "orange": (245, 140, 30), "yellow": (235, 200, 30), "green": (40, 160, 60),
        "cyan": (30, 180, 200), "blue": (40, 80, 220), "purple": (140, 60, 180), "pink": (230, 90, 170),
    }


def test_only_white_palette_and_blends_appear() -> None:
    arr = draw("circle", "blue")
    cov = coverage(arr, "blue")[..., None]
    expected = cov * np.array(PALETTE["blue"]) + (1 - cov) * 255.0  # every pixel: blue over white
    assert np.abs(arr - expected).max() <= 1.5


# Large box: side 0.8 × 64/3 = 17.07 px centred at (32, 32), i.e. x, y in [23.47, 40.53].
def test_square_fills_its_box() -> None:
    arr = draw("square")
    red = PALETTE["red"]
    for y, x in [(24, 24), (24, 39), (39, 24), (39, 39)]:  # pixels fully inside the box corners
        assert tuple(arr[y, x]) == red
    for y, x in [(22, 22), (22, 41), (41, 22), (41, 41), (32, 22), (32, 41)]:  # just outside
        assert tuple(arr[y, x]) == WHITE


def test_circle_leaves_box_corners_white() -> None:
    arr = draw("circle")
    for y, x in [(24, 24), (24, 39), (39, 24), (39, 39)]:
        assert tuple(arr[y, x]) == WHITE
    for y, x in [(24, 32), (39, 32), (32, 24), (32, 39)]:  # edge midpoints of the box touch the disk
        assert tuple(arr[y, x]) != WHITE


def test_triangle_apex_on_top_base_at_bottom() -> None:
    arr = draw("triangle")
    red = PALETTE["red"]
    for y, x in [(24, 24), (24, 39), (28, 25), (28, 38)]:  # top corners of the box are empty
        assert tuple(arr[y, x]) == WHITE
    for y, x in [(39, 25), (39, 38), (39, 32)]:  # the base runs along the bottom edge
        assert tuple(arr[y, x]) == red
    top = np.nonzero(coverage(arr, "red").sum(axis=1) > 0.05)[0].min()
    assert top in (23, 24)  # apex at the top of the box...
    inked = np.nonzero(coverage(arr, "red")[top + 1] > 0.05)[0]
    assert abs(inked.mean() + 0.5 - 32) <= 0.75  # ...and in its middle


def test_diamond_vertices_at_edge_midpoints() -> None:
    arr = draw("diamond")
    for y, x in [(24, 24), (24, 39), (39, 24), (39, 39), (26, 26), (37, 37)]:
        assert tuple(arr[y, x]) == WHITE
    for y, x in [(24, 32), (39, 32), (32, 24), (32, 39)]:
        assert tuple(arr[y, x]) != WHITE
    cov = coverage(arr, "red")
    assert abs(cov[:32].sum() - cov[32:].sum()) < 0.05 * cov.sum()  # balanced top/bottom


@pytest.mark.parametrize(("shape", "fill", "dy"), [("square", 1.0, 0.0), ("circle", np.pi / 4, 0.0),
                                                   ("triangle", 0.5, 1 / 6), ("diamond", 0.5, 0.0)])
@pytest.mark.parametrize("size", ["large", "small"])
@pytest.mark.parametrize(("row", "col", "jitter"), [(1, 1, (0.0, 0.0)), (0, 2, (1.0, -1.0)), (2, 0, (-0.5, 0.7))])
def test_area_and_position(shape: str, fill: float, dy: float, size: str, row: int, col: int,
                           jitter: tuple[float, float]) -> None:
    """Box side 0.8/0.5 × cell, centre = cell centre + jitter × 64/48; area = fill × side² (anti-aliased)."""
    side = {"large": 0.8, "small": 0.5}[size] * 64 / 3
    area, cx, cy = stats(draw(shape, "green", size, row, col, jitter), "green")
    assert area == pytest.approx(fill * side**2, rel=0.1)
    assert cx == pytest.approx((col + 0.5) * 64 / 3 + jitter[0] * 64 / 48, abs=0.3)
    assert cy == pytest.approx((row + 0.5) * 64 / 3 + jitter[1] * 64 / 48 + dy * side, abs=0.3)


def test_large_and_small_sides() -> None:
    def side(size: str) -> float:
        return float(coverage(draw("square", "blue", size), "blue").sum(axis=1).max())

    assert side("large") == pytest.approx(0.8 * 64 / 3, abs=0.4)
    assert side("small") == pytest.approx(0.5 * 64 / 3, abs=0.4)


def test_size_option_scales_everything() -> None:
    small, big = draw("square", canvas=64), draw("square", canvas=128)
    assert big.shape == (128, 128, 3)
    a64, x64, y64 = stats(small, "red")
    a128, x128, y128 = stats(big, "red")
    assert a128 == pytest.approx(4 * a64, rel=0.03)
    assert (x128, y128) == pytest.approx((2 * x64, 2 * y64), abs=0.3)


def test_objects_stay_inside_their_cell() -> None:
    """With maximal jitter a large object still never touches a neighbouring cell."""
    for jitter in [(1.0, 1.0), (-1.0, -1.0)]:
        arr = draw("square", "red", "large", 1, 1, jitter)
        inked = np.argwhere(coverage(arr, "red") > 0)
        lo, hi = 64 / 3, 2 * 64 / 3
        assert inked.min() >= int(lo) and inked.max() < int(np.ceil(hi))
