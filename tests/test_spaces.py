"""Latent spaces: sampling, the way back to images, edits, persistence."""

import numpy as np
import pytest
import torch

from sfvq.latents import z_for_seeds
from sfvq.spaces import LatentSpace, default_space


@pytest.fixture(scope="module")
def dcgan():
    from sfvq.generators.registry import load_generator

    return load_generator("builtin:faces-dcgan")


@pytest.fixture(scope="module")
def sg2(shared_dir):
    from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir

    return stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")


def test_feature_space_round_trip(dcgan, tmp_path):
    sp = LatentSpace(dcgan, "features")
    assert default_space(dcgan) == "features" and sp.layer == "block1"
    V = sp.sample(400, seed=0, progress=False, pca_max=50)
    assert V.shape == (400, sp.dim) and sp.dim <= 50 and sp.feature_shape == (512, 4, 4)
    # PCA coordinates are centred and ordered by variance.
    assert np.abs(V.mean(0)).max() < 1e-3
    var = V.var(0)
    assert (np.diff(var) <= 1e-4).all()
    # Seeds render exactly as the plain generator renders them, and a zero edit changes nothing.
    full = sp.encode_seeds([0, 1])
    z = torch.from_numpy(z_for_seeds(dcgan, [0, 1]))
    ref = dcgan.synthesis(dcgan.mapping(z))
    torch.testing.assert_close(sp.render_full(full), ref)
    d = torch.from_numpy(V[1] - V[0])
    torch.testing.assert_close(sp.render_full(sp.edit(full, d, 0.0)), ref)
    assert (sp.render_full(sp.edit(full, d, 3.0)) - ref).abs().max() > 0.05
    # Persistence: the loaded space renders the same images.
    sp.save(tmp_path)
    again = LatentSpace.load(tmp_path, dcgan)
    torch.testing.assert_close(again.render(V[:3]), sp.render(V[:3]))
    assert again.describe() == sp.describe()


def test_w_space_edits_only_the_named_layers(sg2):
    sp = LatentSpace(sg2, "w", truncation_psi=0.5)
    assert default_space(sg2) == "w" and sp.num_ws == 8
    V = sp.sample(64, seed=0, progress=False)
    assert V.shape == (64, 32)
    full = sp.encode_seeds([3])
    edited = sp.edit(full, torch.ones(32), 2.0, layers=(2, 5))
    changed = (edited - full).abs().amax(dim=2)[0]
    assert changed[2:5].min() == pytest.approx(2.0) and changed[:2].max() == 0 and changed[5:].max() == 0
    torch.testing.assert_close(sp.render_full(full), sg2.synthesis(full, noise_mode="const"))
    with pytest.raises(ValueError, match="outside this space's layers 0-7"):
        sp.edit(full, torch.ones(32), 1.0, layers=(6, 9))
    img = sp.render(V[:2])
    assert img.shape == (2, 3, 32, 32)


def test_bad_space_requests(dcgan):
    with pytest.raises(ValueError, match="no mapping network, so no W space"):
        LatentSpace(dcgan, "w")
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        LatentSpace(dcgan, "features", layer="conv9")
    with pytest.raises(ValueError, match="space must be one of"):
        LatentSpace(dcgan, "x")
    sp = LatentSpace(dcgan, "z")
    with pytest.raises(ValueError, match=r"expected space vectors of shape \(N, 100\)"):
        sp.render(np.zeros((2, 5), np.float32))


def test_load_refuses_a_foreign_directory(dcgan, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an sfvq run directory"):
        LatentSpace.load(tmp_path, dcgan)


def test_feature_space_applies_truncation_like_a_plain_forward_pass(dcgan):
    sp = LatentSpace(dcgan, "features", truncation_psi=0.5)
    sp.sample(300, seed=0, progress=False, pca_max=40)
    z = torch.from_numpy(z_for_seeds(dcgan, [4, 5]))
    ref = dcgan.synthesis(dcgan.mapping(z, truncation_psi=0.5))
    torch.testing.assert_close(sp.render_full(sp.encode_seeds([4, 5])), ref)
    plain = LatentSpace(dcgan, "features")
    plain.sample(300, seed=0, progress=False, pca_max=40)
    assert (plain.render_full(plain.encode_seeds([4, 5])) - ref).abs().max() > 0.05


def test_feature_edits_stay_in_the_relu_range(dcgan):
    sp = LatentSpace(dcgan, "features")
    V = sp.sample(300, seed=0, progress=False, pca_max=40)
    full = sp.encode_seeds([0])
    assert full.min() >= 0  # post-ReLU activations
    d = torch.from_numpy(V[0] - V[1])
    edited = sp.edit(full, d, -50.0)
    assert edited.min() < 0  # the raw edit leaves the activation range...
    f = edited[:, 0].reshape(1, *sp.feature_shape)
    torch.testing.assert_close(sp.render_full(edited), dcgan.synthesis_from("block1", f.clamp_min(0)))


def test_every_kind_renders_at_a_preview_resolution(sg2, dcgan):
    import torch.nn.functional as F

    w = LatentSpace(sg2, "w")
    full = w.encode_seeds([0, 3])
    torch.testing.assert_close(w.render_full(full, resolution=8), sg2.synthesis_at(full, 8))
    assert w.render_full(full, resolution=8).shape == (2, 3, 8, 8)
    z = LatentSpace(sg2, "z", truncation_psi=0.5)
    zfull = z.encode_seeds([1])
    ws = sg2.mapping(zfull[:, 0], None, 0.5)
    torch.testing.assert_close(z.render_full(zfull, resolution=16), sg2.synthesis_at(ws, 16))
    V = torch.randn(2, w.dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(w.render(V, 1, resolution=16), w.render_full(w.to_full(V), 2, 16))
    f = LatentSpace(dcgan, "features")
    f.sample(50, seed=0, progress=False, pca_max=10)
    ffull = f.encode_seeds([0])
    torch.testing.assert_close(f.render_full(ffull, resolution=32), F.avg_pool2d(f.render_full(ffull), 2))
