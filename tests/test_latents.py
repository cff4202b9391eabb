"""Seeded latent sampling: NVIDIA-compatible seeds, one stream per run, z / w / w+ layouts, sidecars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sfvq.generators.base import GeneratorBase
from sfvq.generators.dcgan import load_faces_dcgan
from sfvq.io import read_json
from sfvq.latents import (
    class_vectors,
    format_seeds,
    latents_from_z,
    load_latents,
    sample_latents,
    z_from_seeds,
)


class TinyStyle(GeneratorBase):
    """A small conditional generator with a mapping network (z 6 -> ws (N, 3, 4)), for w / w+ tests."""

    def __init__(self, c_dim: int = 2, fail_after: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.name = "tiny-style"
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = 6, 4, 3, c_dim
        self.img_resolution, self.img_channels = 4, 3
        self.spaces = ("z", "w", "w+")
        self.layers = ("w",)
        self.A = torch.randn(6, 4, generator=g)
        self.C = torch.randn(max(c_dim, 1), 4, generator=g)
        self.layer_offsets = torch.randn(3, 4, generator=g)
        self.w_avg = torch.randn(4, generator=g)
        self.calls = 0
        self.fail_after = fail_after
        self.seen: list[tuple] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def mapping(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("mapping failed")
        self.seen.append((None if c is None else c.clone(), truncation_psi, truncation_cutoff))
        w = z @ self.A  # (N, 4)
        if self.c_dim:
            w = w + c @ self.C
        ws = w[:, None, :] + self.layer_offsets  # (N, 3, 4)
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        ws[:, :cutoff] = self.w_avg + truncation_psi * (ws[:, :cutoff] - self.w_avg)
        return ws

    def synthesis(self, ws, noise_mode="const"):
        return torch.zeros(ws.shape[0], 3, 4, 4)

    def features(self, z, c, layer):
        return self.mapping(z, c)

    def synthesis_from(self, layer, features, noise_mode="const"):
        return self.synthesis(features)


@pytest.fixture(scope="module")
def dcgan():
    return load_faces_dcgan()


def test_z_from_seeds_matches_nvidia_definition() -> None:
    seeds = [0, 1, 42, 2**32 - 1]
    z = z_from_seeds(seeds, 512)
    assert z.shape == (4, 512) and z.dtype == np.float32
    for row, s in zip(z, seeds, strict=True):
        np.testing.assert_array_equal(row, np.random.RandomState(s).randn(1, 512)[0].astype(np.float32))
    assert not np.allclose(z[0], z[1])
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            z_from_seeds([bad], 3)


def test_stream_is_one_randomstate_and_batch_size_free(dcgan) -> None:
    a = sample_latents(dcgan, n=37, space="z", seed=5, batch_size=7, progress=False)
    b = sample_latents(dcgan, n=37, space="z", seed=5, batch_size=1000, progress=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.random.RandomState(5).randn(37, 100).astype(np.float32))
    c = sample_latents(dcgan, n=37, space="z", seed=6, batch_size=7, progress=False)
    assert not np.allclose(a, c)


def test_seed_list_gives_one_z_per_seed(dcgan) -> None:
    seeds = [3, 9, 4, 100]
    a = sample_latents(dcgan, space="z", seeds=seeds, batch_size=3, progress=False)
    np.testing.assert_array_equal(a, z_from_seeds(seeds, 100))
    with pytest.raises(ValueError, match=r"n \(5\) and the number of seeds \(4\) disagree"):
        sample_latents(dcgan, n=5, seeds=seeds, progress=False)


def test_written_file_and_sidecar(dcgan, tmp_path: Path) -> None:
    out = tmp_path / "run" / "latents.npy"
    arr = sample_latents(
        dcgan, n=50, space="z", seed=1, batch_size=16, out_path=out, progress=True, generator_sha256="ab" * 32
    )
    assert isinstance(arr, np.memmap)
    np.testing.assert_array_equal(np.load(out), np.random.RandomState(1).randn(50, 100).astype(np.float32))
    meta = read_json(tmp_path / "run" / "latents.json")
    assert meta["generator"] == "builtin:faces-dcgan"
    assert meta["generator_sha256"] == "ab" * 32
    assert (meta["space"], meta["n"], meta["shape"], meta["dtype"]) == ("z", 50, [50, 100], "float32")
    assert (meta["seed"], meta["seeds"], meta["class_idx"]) == (1, None, None)
    assert meta["truncation_psi"] == 1.0 and meta["truncation_cutoff"] is None
    back, meta2 = load_latents(out)
    np.testing.assert_array_equal(back, arr)
    assert meta2 == meta
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["latents.json", "latents.npy"]


def test_w_and_wplus_layouts_with_truncation_and_class() -> None:
    G = TinyStyle()
    z = z_from_seeds([1, 2, 3], 6)
    w = latents_from_z(G, z, "w", truncation_psi=0.5, truncation_cutoff=2, class_idx=1)
    wp = latents_from_z(G, z, "w+", truncation_psi=0.5, truncation_cutoff=2, class_idx=1)
    c = torch.zeros(3, 2)
    c[:, 1] = 1
    ws = G.mapping(torch.from_numpy(z), c, 0.5, 2).numpy()  # (3, 3, 4)
    np.testing.assert_allclose(w, ws[:, 0], atol=1e-6)
    assert wp.shape == (3, 12)
    np.testing.assert_allclose(wp.reshape(3, 3, 4), ws, atol=1e-6)
    c_seen, psi, cutoff = G.seen[0]
    assert torch.equal(c_seen, c) and (psi, cutoff) == (0.5, 2)


def test_sample_w_plus_to_disk(tmp_path: Path) -> None:
    G = TinyStyle()
    out = tmp_path / "latents.npy"
    arr = sample_latents(G, n=10, space="w+", seed=3, class_idx=0, batch_size=4, out_path=out, progress=False)
    z = np.random.RandomState(3).randn(10, 6)
    np.testing.assert_allclose(arr, latents_from_z(G, z, "w+", class_idx=0), atol=1e-6)
    meta = read_json(tmp_path / "latents.json")
    assert (meta["space"], meta["shape"], meta["num_ws"], meta["w_dim"], meta["class_idx"]) == (
        "w+",
        [10, 12],
        3,
        4,
        0,
    )


def test_argument_errors(dcgan) -> None:
    G = TinyStyle()
    with pytest.raises(ValueError, match="no 'w' space"):
        sample_latents(dcgan, n=2, space="w", progress=False)
    with pytest.raises(ValueError, match="unknown latent space 'q'"):
        sample_latents(dcgan, n=2, space="q", progress=False)
    with pytest.raises(ValueError, match="conditional"):
        sample_latents(G, n=2, space="w", progress=False)
    with pytest.raises(ValueError, match=r"class 2 is out of range.*0\.\.1"):
        sample_latents(G, n=2, space="w", class_idx=2, progress=False)
    with pytest.raises(ValueError, match="unconditional"):
        sample_latents(dcgan, n=2, class_idx=0, progress=False)
    with pytest.raises(ValueError, match=r"cutoff must be in \[0, 3\]"):
        sample_latents(G, n=2, space="w", class_idx=0, truncation_cutoff=4, progress=False)
    with pytest.raises(ValueError, match="no style layers"):
        sample_latents(dcgan, n=2, truncation_cutoff=1, progress=False)
    with pytest.raises(ValueError, match="finite"):
        sample_latents(dcgan, n=2, truncation_psi=float("inf"), progress=False)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sample_latents(dcgan, n=0, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        sample_latents(dcgan, n=2, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="seed must be"):
        sample_latents(dcgan, n=2, seed=-3, progress=False)
    assert class_vectors(dcgan, None, 3) is None


def test_failure_leaves_old_results_and_no_partial_files(tmp_path: Path) -> None:
    out = tmp_path / "latents.npy"
    sample_latents(TinyStyle(), n=6, space="w", seed=0, class_idx=0, out_path=out, progress=False)
    old = np.load(out).copy()
    old_meta = (tmp_path / "latents.json").read_text()
    G = TinyStyle(fail_after=2)  # the third batch fails
    with pytest.raises(RuntimeError, match="mapping failed"):
        sample_latents(G, n=20, space="w", seed=1, class_idx=0, batch_size=5, out_path=out, progress=False)
    np.testing.assert_array_equal(np.load(out), old)
    assert (tmp_path / "latents.json").read_text() == old_meta
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latents.json", "latents.npy"]


def test_seeds_recorded_compactly(dcgan, tmp_path: Path) -> None:
    out = tmp_path / "latents.npy"
    sample_latents(dcgan, space="z", seeds=list(range(20)) + [40], out_path=out, progress=False)
    meta = read_json(tmp_path / "latents.json")
    assert meta["seeds"] == format_seeds(list(range(20)) + [40]) == "0-19,40"
    assert meta["seed"] is None and meta["n"] == 21


def test_load_latents_rejects_foreign_sidecar(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.float32))
    (tmp_path / "x.json").write_text('{"shape": [2, 3]}')
    with pytest.raises(ValueError, match="not an sfvq latents sidecar"):
        load_latents(tmp_path / "x.npy")
