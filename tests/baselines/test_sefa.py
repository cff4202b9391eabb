"""SeFa: the first layer's matrix of a DCGAN, style affines of StyleGAN2/3 by W+ index, eigenvectors."""

import numpy as np
import pytest
import torch

from sfvq.baselines.sefa import dcgan_first_layer, sefa, sefa_dcgan, sefa_stylegan, style_affines
from sfvq.generators.dcgan import DCGANGenerator, DCGANNet
from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir


def tiny_dcgan(seed: int = 0, z_dim: int = 8) -> DCGANGenerator:
    torch.manual_seed(seed)
    net = DCGANNet(z_dim, [16, 8], 3)
    bn = net.blocks[0][1]
    bn.weight.data = torch.rand(16) + 0.5  # a BatchNorm that is not the identity
    bn.running_var.data = torch.rand(16) + 0.5
    bn.running_mean.data = torch.randn(16)
    return DCGANGenerator(net, "tiny-dcgan")


def test_dcgan_matrix_is_the_first_layer_up_to_its_batchnorm():
    G = tiny_dcgan()
    A = dcgan_first_layer(G)  # (16*16, 8)
    assert A.shape == (16 * 16, 8)
    first = G.net.blocks[0][:2]  # ConvTranspose + BatchNorm (eval), before the ReLU
    z = torch.randn(5, 8)
    with torch.no_grad():
        out = first(z[:, :, None, None]) - first(torch.zeros(1, 8, 1, 1))  # (5, 16, 4, 4), offset removed
    np.testing.assert_allclose((z.double() @ A.T).numpy(), out.reshape(5, -1).numpy(), atol=1e-4)
    raw = dcgan_first_layer(G, fold_batchnorm=False)
    W = G.net.blocks[0][0].weight.detach()  # (8, 16, 4, 4)
    np.testing.assert_allclose(raw.numpy(), W.reshape(8, -1).T.double().numpy())


def test_dcgan_top_direction_is_the_one_the_layer_amplifies_most():
    G = tiny_dcgan()
    with torch.no_grad():
        G.net.blocks[0][0].weight[3] *= 20  # z[3] now drives the first layer far more than the rest
    dset, vals = sefa_dcgan(G, k=4)
    assert dset.names == ["sefa0", "sefa1", "sefa2", "sefa3"]
    assert abs(float(dset.vectors[0, 3])) > 0.99
    assert torch.all(vals[:-1] >= vals[1:])
    V = dset.vectors.double()
    np.testing.assert_allclose((V @ V.T).numpy(), np.eye(4), atol=1e-5)
    # The eigenvalue is |A v|^2 and no unit vector does better than the top one.
    A = dcgan_first_layer(G)
    np.testing.assert_allclose((A @ V.T).pow(2).sum(0).numpy(), vals.double().numpy(), rtol=1e-4)
    rand = torch.nn.functional.normalize(torch.randn(200, 8, dtype=torch.float64), dim=1)
    assert float((A @ rand.T).pow(2).sum(0).max()) <= float(vals[0]) * (1 + 1e-6)


def _affine_inputs(G, ws):
    """Which affine modules see which input for ws (1, num_ws, w_dim): name -> input tensor."""
    seen = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].clone()))
        for name, m in G.network.synthesis.named_modules()
        if name.endswith("affine")
    ]
    try:
        with torch.no_grad():
            G.network.synthesis(ws)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("fixture", ["sg2ada_uncond", "sg3_t"])
def test_style_affines_read_the_ws_entry_the_synthesis_feeds_them(shared_dir, fixture):
    G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan" / fixture)
    found = style_affines(G, include_torgb=True)
    assert len({name for _, name, _ in found}) == len(found)
    base = torch.zeros(1, G.num_ws, G.w_dim)
    ref = _affine_inputs(G, base)
    for i in range(G.num_ws):
        ws = base.clone()
        ws[0, i] = 1.0  # change only W+ entry i
        moved = {
            f"synthesis.{n}.weight" for n, x in _affine_inputs(G, ws).items() if not torch.equal(x, ref[n])
        }
        assert moved == {n for j, n, _ in found if j == i}, f"W+ entry {i}"
    convs = style_affines(G)
    if fixture.startswith("sg2"):
        assert [i for i, _, _ in convs] == list(range(G.num_ws - 1))  # toRGB-only last entry left out
        assert not any("torgb" in n for _, n, _ in convs)
    for _, name, w in found:
        assert w.shape[1] == G.w_dim and name.endswith("affine.weight")


def test_sefa_stylegan_uses_only_the_chosen_layers(shared_dir):
    G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")
    dset, vals = sefa_stylegan(G, k=5, layers=(2, 5))
    assert dset.meta["weights"] == [
        "synthesis.b8.conv1.affine.weight",
        "synthesis.b16.conv0.affine.weight",
        "synthesis.b16.conv1.affine.weight",
    ]
    assert all(d.layers == (2, 5) for d in dset)
    # Independent check: right singular vectors of the row-normalised stacked weights.
    sd = G.network.state_dict()
    A = torch.cat([sd[n].double() for n in dset.meta["weights"]])
    A = A / A.norm(dim=1, keepdim=True)
    _, s, vt = torch.linalg.svd(A, full_matrices=False)
    np.testing.assert_allclose(vals.double().numpy(), (s[:5] ** 2).numpy(), rtol=1e-4)
    np.testing.assert_allclose((dset.vectors.double() @ vt[:5].T).abs().diagonal().numpy(), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        sefa_stylegan(G, k=2, layers=(6, 9))


def test_sefa_dispatch_and_errors(shared_dir):
    G = tiny_dcgan()
    d = sefa(G, k=3)
    assert d.meta["space"]["kind"] == "z" and d.dim == 8
    with pytest.raises(ValueError, match="no style layers"):
        sefa(G, k=3, layers=(0, 1))
    S = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg3_t")
    w = sefa(S, k=3, layers=(1, 4))
    assert w.meta["space"]["kind"] == "w" and w.dim == S.w_dim and w[0].layers == (1, 4)
