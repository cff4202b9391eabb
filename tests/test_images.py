"""Image layout: plain tiles and the labelled grid."""

from __future__ import annotations

import numpy as np
import pytest

from sfvq.images import FLAG_COLOUR, image_grid, labelled_grid


def test_image_grid_tiles_in_order_on_white() -> None:
    images = np.arange(3 * 2 * 4 * 3, dtype=np.uint8).reshape(3, 2, 4, 3)  # (N, H, W, 3)
    grid = image_grid(images, cols=2, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1:3, 1:5], images[0])
    np.testing.assert_array_equal(grid[1:3, 6:10], images[1])
    np.testing.assert_array_equal(grid[4:6, 1:5], images[2])
    assert (grid[4:6, 6:10] == 255).all() and (grid[0] == 255).all()  # the empty cell and the padding


def test_flagged_cells_get_a_red_frame() -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    plain = np.asarray(labelled_grid(images, ["a", "b"], flagged=[]))
    flagged = np.asarray(labelled_grid(images, ["a", "b"], flagged=[1]))
    assert plain.shape == flagged.shape  # the frames' room is reserved either way
    red = (flagged == np.array(FLAG_COLOUR)).all(2)
    assert red.any() and not (plain == np.array(FLAG_COLOUR)).all(2).any()
    assert red[:, : flagged.shape[1] // 2].sum() == 0  # only the second cell is framed


def test_labelled_grid_layout() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(5, 20, 30, 3), dtype=np.uint8)
    grid = labelled_grid(images, [f"seed {i}" for i in range(5)], cols=3, pad=2)
    arr = np.asarray(grid)
    # 3 columns, 2 rows; each cell at least the image plus a label strip below it
    cell_w = (grid.width - 4 * 2) // 3
    cell_h = (grid.height - 3 * 2) // 2
    assert cell_w >= 30 and cell_h > 20 + 5
    for i in range(5):
        r, c = divmod(i, 3)
        x0 = 2 + c * (cell_w + 2) + (cell_w - 30) // 2
        y0 = 2 + r * (cell_h + 2)
        np.testing.assert_array_equal(arr[y0 : y0 + 20, x0 : x0 + 30], images[i])  # image in place
        label = arr[y0 + 20 : y0 + cell_h, 2 + c * (cell_w + 2) : 2 + c * (cell_w + 2) + cell_w]
        assert (label < 128).any(), f"no label drawn under image {i}"
    empty_cell = arr[2 + cell_h + 2 :, 2 + 2 * (cell_w + 2) :]  # row 1, col 2 holds nothing
    assert (empty_cell == 255).all()


def test_labelled_grid_errors() -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="got 1 labels for 2 images"):
        labelled_grid(images, ["a"])
    with pytest.raises(ValueError, match="uint8"):
        labelled_grid(images.astype(np.float32), ["a", "b"])
    assert labelled_grid(images[:, :, :, :1], ["a", "b"]).mode == "RGB"
