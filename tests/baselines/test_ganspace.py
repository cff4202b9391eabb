"""GANSpace: PCA of latents (components and their std), and the activation variant regressed back to z."""

import numpy as np
import pytest
import torch

from sfvq.baselines.ganspace import fit_activation_regression, ganspace_activations, ganspace_latent, pca
from sfvq.directions import DirectionSet
from sfvq.generators.dcgan import DCGANGenerator, DCGANNet
from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir
from sfvq.spaces import LatentSpace


def tiny_dcgan(seed: int = 0, z_dim: int = 8) -> DCGANGenerator:
    torch.manual_seed(seed)
    net = DCGANNet(z_dim, [16, 8], 3)  # 1x1 -> 4x4 -> 8x8 -> 16x16 images
    return DCGANGenerator(net, "tiny-dcgan")


def test_pca_finds_known_axes_and_their_std():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))  # orthonormal axes (columns)
    stds = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    X = (rng.standard_normal((20000, 6)) * stds) @ Q.T + 7.0  # (N, 6), mean 7
    p = pca(X, 3)
    assert p.components.shape == (3, 6)
    np.testing.assert_allclose(p.components @ p.components.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.abs(p.components.numpy() @ Q[:, :3]), np.eye(3), atol=0.02)
    np.testing.assert_allclose(p.std.numpy(), stds[:3], rtol=0.03)
    np.testing.assert_allclose(p.mean.numpy(), np.full(6, 7.0), atol=0.1)
    np.testing.assert_allclose(p.explained.numpy(), stds[:3] ** 2 / (stds**2).sum(), rtol=0.05)
    # Sign convention: each component's largest-magnitude entry is positive.
    comp = p.components.numpy()
    assert np.all(comp[np.arange(3), np.abs(comp).argmax(1)] > 0)


def test_pca_randomised_path_agrees_with_exact_svd():
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(3000, 20, generator=g))[0].T  # (20, 3000) orthonormal rows
    X = (torch.randn(700, 20, generator=g) * torch.linspace(6, 1, 20)) @ basis  # rank 20, D = 3000 > 512
    p = pca(X, 5)  # N=700 and D=3000 both > 512: randomised
    _, s, vt = torch.linalg.svd((X - X.mean(0)).double(), full_matrices=False)
    np.testing.assert_allclose(p.std.numpy(), (s[:5] ** 2 / 699).sqrt().numpy(), rtol=1e-3)
    np.testing.assert_allclose((p.components.double() @ vt[:5].T).abs().diagonal().numpy(), 1.0, atol=1e-3)


def test_pca_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 samples"):
        pca(np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        pca(np.zeros(5), 1)
    with pytest.raises(ValueError, match="positive integer"):
        pca(np.zeros((5, 3)), 0)


def test_ganspace_latent_in_w_of_a_tiny_stylegan(shared_dir, tmp_path):
    G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")
    space = LatentSpace(G, "w")
    X = space.sample(600, seed=0, progress=False)  # (600, 32)
    dset = ganspace_latent(space, X, k=4)
    assert dset.names == ["pc0", "pc1", "pc2", "pc3"] and dset.dim == 32
    V = dset.vectors.numpy()
    np.testing.assert_allclose(V @ V.T, np.eye(4), atol=1e-5)
    evals = np.linalg.eigvalsh(np.cov(X.T))[::-1]  # sample covariance (ddof 1), descending
    np.testing.assert_allclose([d.std for d in dset], np.sqrt(evals[:4]), rtol=1e-4)
    # The std is the data's spread along the direction.
    proj = (X - X.mean(0)) @ V.T
    np.testing.assert_allclose(proj.std(0, ddof=1), [d.std for d in dset], rtol=1e-4)
    assert dset.meta["space"]["kind"] == "w"
    dset.save(tmp_path / "g")
    back = DirectionSet.load(tmp_path / "g")
    assert back.names == dset.names and torch.equal(back.vectors, dset.vectors)
    assert back[0].source["method"] == "ganspace"
    with pytest.raises(ValueError, match=r"shape \(N, 32\)"):
        ganspace_latent(space, X[:, :5], k=2)


def test_activation_regression_recovers_z_from_a_linear_layer():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 4, generator=g)  # (N, 4)
    M = torch.randn(4, 50, generator=g)
    feats = z @ M + 0.3  # a linear "first layer": 4 components hold all of its variance
    full = fit_activation_regression(z, feats, 4)
    assert full.r2 > 0.9999  # z is exactly a linear function of all 4 PCA coordinates
    x = (feats - full.pca.mean) @ full.pca.components.T  # (N, 4)
    np.testing.assert_allclose((x @ full.U.T + full.b).numpy(), z.numpy(), atol=1e-3)
    part = fit_activation_regression(z, feats, 2)
    assert 0.2 < part.r2 < 0.9  # two components explain only part of z
    # Direction j in z moves the features along component j (and no other kept component).
    u = part.U / part.U.norm(dim=0)  # (4, 2)
    moved = (u.T @ M) @ part.pca.components.T  # (2, 2): feature change per unit z step, in PCA coords
    assert abs(moved[0, 0]) > 5 * abs(moved[0, 1]) and abs(moved[1, 1]) > 5 * abs(moved[1, 0])


def test_ganspace_activations_on_a_tiny_dcgan():
    G = tiny_dcgan()
    dset = ganspace_activations(G, k=3, n=400, seed=0)
    assert dset.names == ["act0", "act1", "act2"] and dset.dim == G.z_dim
    np.testing.assert_allclose(dset.vectors.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert all(d.source["layer"] == "block1" and 0 < d.std < 2 for d in dset)  # z is N(0, I): std ~ 1
    assert dset.meta["space"]["kind"] == "z" and 0 < dset.meta["r2"] < 1
    again = ganspace_activations(G, k=3, n=400, seed=0)
    assert torch.equal(again.vectors, dset.vectors)  # seeded
    with pytest.raises(ValueError, match="unknown layer"):
        ganspace_activations(G, k=3, n=400, layer="block9")
    with pytest.raises(ValueError, match="at least 2 k"):
        ganspace_activations(G, k=3, n=5)
