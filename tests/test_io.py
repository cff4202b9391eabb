"""Atomic writers, JSON/npy/PNG helpers and the labelled grid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfvq import __version__
from sfvq.io import (
    atomic_open,
    atomic_path,
    labelled_grid,
    load_npy_with_sidecar,
    read_json,
    save_npy,
    save_npy_with_sidecar,
    save_png,
    sha256_file,
    write_json,
    write_options,
)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_atomic_open_success_and_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    with atomic_open(target, "w") as f:
        f.write("one")
    assert target.read_text() == "one"

    with pytest.raises(RuntimeError), atomic_open(target, "w") as f:
        f.write("two, half written")
        raise RuntimeError("boom")
    assert target.read_text() == "one"  # old content intact
    assert _leftovers(target.parent) == []

    with pytest.raises(ValueError, match="mode"), atomic_open(target, "a"):
        pass


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    write_json(tmp_path / "atomic.json", {})
    assert (tmp_path / "atomic.json").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode


def test_atomic_path_never_creates_target_on_error(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        assert tmp.parent == tmp_path and tmp.name.startswith(".x.bin.")
        raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_round_trip_with_paths_numpy_and_nan(tmp_path: Path) -> None:
    obj = {
        "p": Path("/a/b"),
        "i": np.int64(3),
        "f": np.float32(0.5),
        "arr": np.arange(3),
        "bad": float("nan"),
    }
    path = write_json(tmp_path / "o.json", obj)
    back = read_json(path)
    assert back == {"p": "/a/b", "i": 3, "f": 0.5, "arr": [0, 1, 2], "bad": "nan"}
    json.loads(path.read_text())  # strict JSON
    with pytest.raises(TypeError, match="cannot write object"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def test_npy_with_sidecar(tmp_path: Path) -> None:
    a = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    path = save_npy_with_sidecar(tmp_path / "lat.npy", a, {"space": "z"})
    back, meta = load_npy_with_sidecar(path)
    np.testing.assert_array_equal(back, a)
    assert meta == {
        "space": "z",
        "file": "lat.npy",
        "shape": [5, 3],
        "dtype": "float32",
        "version": __version__,
    }
    assert isinstance(back, np.memmap)
    save_npy(tmp_path / "alone.npy", a)
    with pytest.raises(FileNotFoundError, match="no JSON sidecar alone.json"):
        load_npy_with_sidecar(tmp_path / "alone.npy")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_npy_with_sidecar(tmp_path / "none.npy")


def test_save_png_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    save_png(tmp_path / "i.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "i.png")), img)
    gray = img[:, :, :1]
    save_png(tmp_path / "g.png", gray)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), gray[:, :, 0])
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "f.png", img.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        save_png(tmp_path / "f.png", np.zeros((4, 4, 2), np.uint8))
    assert not (tmp_path / "f.png").exists()


def test_sha256_and_options(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    path = write_options(tmp_path / "out", "sample", {"n": 3, "outdir": tmp_path})
    assert read_json(path) == {
        "command": "sample",
        "version": __version__,
        "options": {"n": 3, "outdir": str(tmp_path)},
    }


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
