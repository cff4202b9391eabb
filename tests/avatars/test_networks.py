"""The avatars trainer's networks: the fast ops and synthesis forward equal the inference modules, the
discriminator's shapes and minibatch std, and the default generator's layout."""

from __future__ import annotations

import pytest
import torch

from sfvq.avatars.networks import (
    Discriminator,
    EqualizedConv2d,
    _fir,
    _modconv,
    init_generator,
    minibatch_std,
    new_generator,
    synthesis_forward,
)
from sfvq.avatars.train import TrainConfig
from sfvq.generators.stylegan2 import build_stylegan2, fir_filter2d, modulated_conv2d

TINY = dict(
    resolution=16,
    z_dim=16,
    w_dim=16,
    mapping_layers=2,
    channel_base=128,
    channel_max=16,
    batch=4,
    r1_interval=2,
    ema_kimg=0.01,
    ema_rampup=None,
    use_noise=True,
)


def _perturbed(config: TrainConfig) -> torch.nn.Module:
    G = init_generator(new_generator(config), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in G.parameters():  # non-zero noise strengths and biases, so every term is exercised
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return G


def test_fast_ops_equal_the_inference_ops() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1]))
    f = f / f.sum()
    x = torch.randn(3, 5, 8, 8, generator=g)
    for pad, gain in (((1, 1, 1, 1), 4.0), ((2, 1, 2, 1), 4.0), ((2, 2, 2, 2), 1.0)):
        torch.testing.assert_close(_fir(x, pad, gain), fir_filter2d(x, f, pad, gain), atol=1e-5, rtol=1e-5)
    w = torch.randn(6, 5, 3, 3, generator=g)
    s = torch.randn(3, 5, generator=g)
    for up in (1, 2):
        want = modulated_conv2d(x, w, s, demodulate=True, up=up, padding=1, resample_filter=f)
        torch.testing.assert_close(_modconv(x, w, s, True, up, 1), want, atol=1e-5, rtol=1e-5)
    w1 = torch.randn(3, 5, 1, 1, generator=g)
    want = modulated_conv2d(x, w1, s, demodulate=False)
    torch.testing.assert_close(_modconv(x, w1, s, False, 1, 0), want, atol=1e-5, rtol=1e-5)


def test_synthesis_forward_equals_the_module_forward() -> None:
    config = TrainConfig(**TINY)
    G = _perturbed(config)
    ws = G.mapping(torch.randn(3, config.z_dim, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        want = G.synthesis(ws, noise_mode="const")
        got = synthesis_forward(G.synthesis, ws)
    assert want.shape == (3, 3, 16, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        noisy = synthesis_forward(G.synthesis, ws, lambda n, r: torch.randn(n, 1, r, r))
    assert not torch.allclose(noisy, want)


def test_discriminator_shapes_and_minibatch_std() -> None:
    config = TrainConfig(**TINY)
    D = Discriminator(config).initialise(torch.Generator().manual_seed(0))
    assert D(torch.randn(6, 3, 16, 16)).shape == (6,)
    x = torch.randn(8, 2, 4, 4)
    y = minibatch_std(x, 4)
    assert y.shape == (8, 3, 4, 4)
    same = torch.ones(8, 2, 4, 4)
    assert torch.allclose(minibatch_std(same, 4)[:, 2], torch.full((8, 4, 4), 1e-4), atol=1e-6)
    assert minibatch_std(torch.randn(6, 2, 4, 4), 4).shape == (6, 3, 4, 4)  # group 3 divides 6
    with pytest.raises(ValueError, match="unsupported conv kernel 5 / down 1"):
        EqualizedConv2d(3, 3, 5)


def test_default_generator_has_no_noise_and_loads_through_build_stylegan2() -> None:
    config = TrainConfig()
    G = init_generator(new_generator(config), torch.Generator().manual_seed(0))
    sd = G.state_dict()
    assert not any("noise" in k for k in sd)
    assert G.num_ws == 8 and G.w_dim == 128 and G.img_resolution == 32
    assert sd["synthesis.b32.conv1.weight"].shape == (32, 32, 3, 3)
    net = build_stylegan2(config.init_kwargs(), sd)
    z = torch.randn(2, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net(z), G(z))
        torch.testing.assert_close(synthesis_forward(G.synthesis, G.mapping(z)), G(z), atol=1e-5, rtol=1e-5)
