"""Atomic writers, JSON/npy/PNG helpers and the safetensors reader."""

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


def test_read_safetensors_with_meta_in_the_header_and_in_a_sidecar(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from sfvq.io import read_safetensors_with_meta

    t = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(1)}
    save_file(t, str(tmp_path / "head.safetensors"), metadata={"thing": json.dumps({"format": "x", "n": 2})})
    tensors, meta = read_safetensors_with_meta(tmp_path / "head.safetensors", kind="thing", meta_key="thing")
    assert meta == {"format": "x", "n": 2} and sorted(tensors) == ["a", "b"]
    assert torch.equal(tensors["a"], t["a"])
    save_file(t, str(tmp_path / "side.safetensors"))
    write_json(tmp_path / "side.json", {"format": "y"})
    tensors, meta = read_safetensors_with_meta(tmp_path / "side.safetensors", kind="thing")
    assert meta == {"format": "y"} and torch.equal(tensors["a"], t["a"])


def test_read_safetensors_with_meta_names_what_is_wrong(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from sfvq.io import read_safetensors_with_meta

    class Bad(ValueError):
        pass

    def read(name: str, meta_key: str | None = "thing") -> None:
        read_safetensors_with_meta(tmp_path / name, kind="thing", meta_key=meta_key, error=Bad)

    with pytest.raises(FileNotFoundError, match="no such thing file"):
        read("missing.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(Bad, match="is a directory, not an sfvq thing file"):
        read("dir.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(Bad, match="not an sfvq thing file \\(not a readable safetensors file"):
        read("junk.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(Bad, match="is a safetensors file, not an sfvq thing file \\(no 'thing' metadata\\)"):
        read("plain.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"), metadata={"sfvq": "{}"})
    with pytest.raises(Bad, match="is an sfvq model, not an sfvq thing file"):
        read("model.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "broken.safetensors"), metadata={"thing": "{oops"})
    with pytest.raises(Bad, match="the 'thing' metadata is not valid JSON"):
        read("broken.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "list.safetensors"), metadata={"thing": "[1, 2]"})
    with pytest.raises(Bad, match="must be a JSON object, got list"):
        read("list.safetensors")
    # The sidecar form: missing, then not JSON.
    with pytest.raises(Bad, match="has no JSON sidecar plain.json"):
        read("plain.safetensors", meta_key=None)
    (tmp_path / "plain.json").write_text("{nope", encoding="utf-8")
    with pytest.raises(Bad, match="plain.json is not valid JSON"):
        read("plain.safetensors", meta_key=None)
