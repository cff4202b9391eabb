"""LatentCLR: the NT-Xent loss against its formula, and training on tiny generators."""

import math

import numpy as np
import pytest
import torch

from sfvq.baselines.latentclr import feature_function, feature_layers, nt_xent, train_latentclr
from sfvq.directions import DirectionSet
from sfvq.generators.dcgan import DCGANGenerator, DCGANNet
from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir


def tiny_dcgan(seed: int = 0, z_dim: int = 8) -> DCGANGenerator:
    torch.manual_seed(seed)
    return DCGANGenerator(DCGANNet(z_dim, [16, 8, 8], 3), "tiny-dcgan")


def loop_loss(f: torch.Tensor, tau: float) -> float:
    """The paper's formula, anchor by anchor."""
    N, K, _ = f.shape

    def sim(a, b):
        return float(torch.dot(a, b) / (a.norm() * b.norm())) / tau

    total = 0.0
    for i in range(N):
        for k in range(K):
            pos = sum(math.exp(sim(f[i, k], f[j, k])) for j in range(N) if j != i)
            neg = sum(math.exp(sim(f[i, k], f[j, m])) for j in range(N) for m in range(K) if m != k)
            total += -math.log(pos / neg)
    return total / (N * K)


def test_nt_xent_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(3, 4, 5, generator=g)
    for tau in (0.5, 1.0):
        assert float(nt_xent(f, tau)) == pytest.approx(loop_loss(f, tau), rel=1e-5)


def test_nt_xent_is_lower_when_each_direction_has_one_consistent_effect():
    g = torch.Generator().manual_seed(0)
    N, K, F = 6, 4, 16
    consistent = torch.eye(K, F)[None].repeat(N, 1, 1) + 0.05 * torch.randn(N, K, F, generator=g)
    mixed = torch.randn(N, K, F, generator=g)
    assert float(nt_xent(consistent)) < float(nt_xent(mixed)) - 1.0
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match=r"\(N, K, F\)"):
        nt_xent(torch.randn(3, 4))


def test_training_lowers_the_loss_and_gives_distinct_unit_directions(tmp_path):
    G = tiny_dcgan()
    res = train_latentclr(G, k=4, steps=40, batch_size=6, lr=0.05, seed=3, pool=256)
    h = np.array(res.history)
    assert len(h) == 40 and np.isfinite(h).all()
    assert h[-8:].mean() < h[:8].mean() - 0.05
    d = res.directions
    assert d.names == ["clr0", "clr1", "clr2", "clr3"] and d.dim == 8
    V = d.vectors
    np.testing.assert_allclose(V.norm(dim=1).numpy(), 1.0, atol=1e-5)
    cos = (V @ V.T).abs() - torch.eye(4)
    assert float(cos.max()) < 0.95
    assert all(x.std is not None and x.std > 0 for x in d)
    assert d.meta["space"]["kind"] == "z" and d.meta["settings"]["layer"] == "block2"
    again = train_latentclr(G, k=4, steps=40, batch_size=6, lr=0.05, seed=3, pool=256)
    assert torch.equal(again.directions.vectors, V)  # seeded
    d.save(tmp_path / "clr")
    back = DirectionSet.load(tmp_path / "clr")
    assert torch.equal(back.vectors, V) and back.meta["settings"]["steps"] == 40


def test_feature_function_is_differentiable_on_stylegan(shared_dir):
    for fixture in ("sg2ada_uncond", "sg3_t"):
        G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan" / fixture)
        names = feature_layers(G)
        f, layer = feature_function(G)
        assert layer == names[(len(names) - 1) // 2]
        w = torch.randn(2, G.w_dim, requires_grad=True)
        out = f(w)
        assert out.ndim == 2 and out.shape[0] == 2
        out.pow(2).sum().backward()
        assert float(w.grad.abs().sum()) > 0
    res = train_latentclr(G, k=2, steps=2, batch_size=2, pool=64)
    assert res.directions.meta["space"]["kind"] == "w" and res.directions.dim == G.w_dim


def test_bad_settings_are_refused():
    G = tiny_dcgan()
    with pytest.raises(ValueError, match="k >= 2"):
        train_latentclr(G, k=1, steps=1)
    with pytest.raises(ValueError, match="steps"):
        train_latentclr(G, k=2, steps=0)
    with pytest.raises(ValueError, match="tau"):
        train_latentclr(G, k=2, steps=1, tau=0.0)
    with pytest.raises(ValueError, match="unknown layer"):
        train_latentclr(G, k=2, steps=1, layer="block9")
