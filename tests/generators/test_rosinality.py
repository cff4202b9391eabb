"""Tests for the rosinality stylegan2-pytorch checkpoint adapter.

Checkpoints are built here from random tensors in rosinality's state-dict layout. The numerical checks
compare against an independent float64 reference written in this file (per-sample modulated weights,
explicit zero-insertion upsampling and shifted-sum FIR filtering).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfvq.generators.base import Generator, GeneratorError, downsample
from sfvq.generators.rosinality import RosinalityGenerator, infer_rosinality_config, load_rosinality

LR_MLP = 0.01
BLUR_1D = [1.0, 3.0, 3.0, 1.0]


def _kernel2d(k1d: list[float], row: list[float] | None = None) -> torch.Tensor:
    """Outer-product FIR kernel normalised to sum 1 (a separate row taps list makes it asymmetric)."""
    a = torch.tensor(k1d, dtype=torch.float64)
    b = torch.tensor(row if row is not None else k1d, dtype=torch.float64)
    k = a[:, None] * b[None, :]
    return k / k.sum()


def make_g_ema(
    channels: dict[int, int],
    style_dim: int,
    n_mlp: int,
    seed: int = 0,
    make: Callable[[tuple[int, ...], str], torch.Tensor] | None = None,
    blur: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """A g_ema state dict in rosinality's layout; ``channels`` maps resolution 4..size to widths.

    ``make(shape, kind)`` overrides tensor creation (e.g. shape-only tensors); default: seeded random
    values with realistic scales (mapping weights ~N(0, 1/lr_mlp^2), modulation bias ~1, non-zero noise).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(shape: tuple[int, ...], kind: str) -> torch.Tensor:
        r = torch.randn(shape, generator=g)
        return {
            "map_w": r / LR_MLP,
            "map_b": r * 0.2 / LR_MLP,
            "mod_b": 1 + 0.2 * r,
            "noise_w": 0.3 + 0.1 * r,
            "small": 0.2 * r,
        }.get(kind, r)

    mk = make or rnd
    blur = blur if blur is not None else _kernel2d(BLUR_1D)
    sd: dict[str, torch.Tensor] = {}
    D = style_dim
    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"] = mk((D, D), "map_w")
        sd[f"style.{i}.bias"] = mk((D,), "map_b")
    res = sorted(channels)
    c0 = channels[res[0]]
    sd["input.input"] = mk((1, c0, 4, 4), "w")

    def styled(prefix: str, cin: int, cout: int, up: bool) -> None:
        sd[f"{prefix}.conv.weight"] = mk((1, cout, cin, 3, 3), "w")
        if up:
            sd[f"{prefix}.conv.blur.kernel"] = (blur * 4).float() if make is None else mk((4, 4), "k")
        sd[f"{prefix}.conv.modulation.weight"] = mk((cin, D), "w")
        sd[f"{prefix}.conv.modulation.bias"] = mk((cin,), "mod_b")
        sd[f"{prefix}.noise.weight"] = mk((1,), "noise_w")
        sd[f"{prefix}.activate.bias"] = mk((cout,), "small")

    def to_rgb(prefix: str, cin: int, up: bool) -> None:
        if up:
            sd[f"{prefix}.upsample.kernel"] = (blur * 4).float() if make is None else mk((4, 4), "k")
        sd[f"{prefix}.conv.weight"] = mk((1, 3, cin, 1, 1), "w")
        sd[f"{prefix}.conv.modulation.weight"] = mk((cin, D), "w")
        sd[f"{prefix}.conv.modulation.bias"] = mk((cin,), "mod_b")
        sd[f"{prefix}.bias"] = mk((1, 3, 1, 1), "small")

    styled("conv1", c0, c0, False)
    to_rgb("to_rgb1", c0, False)
    for b, r in enumerate(res[1:]):
        cin, cout = channels[r // 2], channels[r]
        styled(f"convs.{2 * b}", cin, cout, True)
        styled(f"convs.{2 * b + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{b}", cout, True)
    for j in range(2 * (len(res) - 1) + 1):
        r = 4 * 2 ** ((j + 1) // 2)
        sd[f"noises.noise_{j}"] = mk((1, 1, r, r), "w")
    return sd


def rosinality_channels(size: int, cm: int) -> dict[int, int]:
    """rosinality's channel table (a fact of its layout) for resolutions 4..size."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm}
    table[1024] = 16 * cm
    return {r: table[r] for r in table if r <= size}


SMALL = {4: 32, 8: 32, 16: 16, 32: 8}  # reduced widths for fast tests (size 32)


@pytest.fixture(scope="module")
def small_ckpt(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, torch.Tensor], torch.Tensor]:
    sd = make_g_ema(SMALL, style_dim=64, n_mlp=2, seed=1)
    latent_avg = torch.randn(64, generator=torch.Generator().manual_seed(2))
    path = tmp_path_factory.mktemp("ros") / "small.pt"
    torch.save({"g_ema": sd, "latent_avg": latent_avg}, path)
    return path, sd, latent_avg


@pytest.fixture(scope="module")
def small_gen(small_ckpt: tuple[Path, dict, torch.Tensor]) -> RosinalityGenerator:
    return load_rosinality(small_ckpt[0])


# ------------------------------------------------------------------------------ hyper-parameters


def test_infer_reduced_channels(small_gen: RosinalityGenerator) -> None:
    cfg = small_gen.config
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.num_ws) == (32, 64, 2, 8)
    assert cfg.channels == SMALL
    assert cfg.channel_multiplier is None and not cfg.standard_channels
    assert (cfg.img_channels, cfg.conv_kernel, cfg.num_noise_layers) == (3, 3, 7)


@pytest.mark.parametrize(
    ("size", "cm", "n_mlp", "style_dim"),
    [(256, 2, 8, 512), (1024, 2, 8, 512), (64, 1, 4, 128), (128, 4, 8, 512), (32, 2, 8, 512)],
)
def test_infer_standard_layouts(size: int, cm: int, n_mlp: int, style_dim: int) -> None:
    # Shape-only tensors (expanded scalars): inference reads shapes, never values, so even 1024x1024 is free.
    sd = make_g_ema(
        rosinality_channels(size, cm), style_dim, n_mlp, make=lambda s, k: torch.zeros(()).expand(s)
    )
    cfg = infer_rosinality_config(sd)
    assert cfg.size == size and cfg.n_mlp == n_mlp and cfg.style_dim == style_dim
    assert cfg.num_ws == int(math.log2(size)) * 2 - 2
    assert cfg.standard_channels
    assert cfg.channel_multiplier == (cm if size >= 64 else None)


# ------------------------------------------------------------------------------ protocol and shapes


def test_protocol_and_shapes(small_gen: RosinalityGenerator, small_ckpt: tuple) -> None:
    g = small_gen
    assert isinstance(g, Generator)
    assert (g.z_dim, g.w_dim, g.num_ws, g.c_dim, g.img_resolution, g.img_channels) == (64, 64, 8, 0, 32, 3)
    assert g.spaces == ("z", "w", "w+") and g.layers == ("w",)
    assert g.device == torch.device("cpu") and g.name == str(small_ckpt[0])
    z = torch.randn(3, 64)
    ws = g.mapping(z)
    assert ws.shape == (3, 8, 64) and ws.dtype == torch.float32
    assert torch.equal(ws[:, 0], ws[:, 7])  # psi = 1: the same w broadcast to every layer
    img = g.synthesis(ws)
    assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()
    assert not torch.allclose(img[0], img[1])
    assert torch.equal(g.features(z, None, "w"), ws)
    assert torch.equal(g.synthesis_from("w", ws), img)
    assert torch.equal(g.features(z, torch.zeros(3, 0), "w"), ws)


def test_bad_arguments(small_gen: RosinalityGenerator) -> None:
    g = small_gen
    with pytest.raises(ValueError, match=r"z of shape \(N, 64\)"):
        g.mapping(torch.randn(2, 63))
    with pytest.raises(ValueError, match="unconditional"):
        g.mapping(torch.randn(2, 64), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"ws of shape \(N, 8, 64\)"):
        g.synthesis(torch.randn(2, 7, 64))
    with pytest.raises(ValueError, match="noise_mode"):
        g.synthesis(torch.randn(1, 8, 64), noise_mode="fixed")
    with pytest.raises(ValueError, match="unknown layer 'b4'"):
        g.features(torch.randn(1, 64), None, "b4")


# ------------------------------------------------------------------------------ numerics


def test_mapping_matches_hand_computation(small_gen: RosinalityGenerator, small_ckpt: tuple) -> None:
    _, sd, _ = small_ckpt
    z = torch.randn(2, 64, generator=torch.Generator().manual_seed(5))
    ws = small_gen.mapping(z)
    for n in range(2):
        x = z[n].double().numpy()
        x = x / np.sqrt(np.mean(x**2) + 1e-8)  # PixelNorm
        for i in (1, 2):
            W = sd[f"style.{i}.weight"].double().numpy()
            b = sd[f"style.{i}.bias"].double().numpy()
            y = (W * (LR_MLP / np.sqrt(64))) @ x + b * LR_MLP  # equalised-lr linear
            x = np.where(y >= 0, y, 0.2 * y) * np.sqrt(2)  # fused leaky ReLU
        np.testing.assert_allclose(ws[n].double().numpy(), np.broadcast_to(x, (8, 64)), rtol=1e-5, atol=1e-5)


def _ref_fir(x: torch.Tensor, k: torch.Tensor, pad0: int, pad1: int) -> torch.Tensor:
    """Pad, then true 2-D convolution with k as an explicit shifted sum: (C, H, W) -> (C, H', W')."""
    x = torch.nn.functional.pad(x, [pad0, pad1, pad0, pad1])
    K = k.shape[0]
    H, W = x.shape[1] - K + 1, x.shape[2] - K + 1
    out = torch.zeros(x.shape[0], H, W, dtype=x.dtype)
    for a in range(K):
        for b in range(K):
            out += k[K - 1 - a, K - 1 - b] * x[:, a : a + H, b : b + W]
    return out


def _ref_zero_insert(x: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (C, 2H, 2W) with the samples at even positions and zeros elsewhere."""
    up = torch.zeros(x.shape[0], 2 * x.shape[1], 2 * x.shape[2], dtype=x.dtype)
    up[:, ::2, ::2] = x
    return up


def _ref_modconv(
    sd: dict, prefix: str, x: torch.Tensor, w: torch.Tensor, demod: bool, up: bool
) -> torch.Tensor:
    """One sample: explicit per-sample weight (scale * W * s, demodulated), then conv. x (Cin, H, W)."""
    F = torch.nn.functional
    W = sd[f"{prefix}.conv.weight"][0].double()  # (Cout, Cin, k, k)
    cout, cin, k, _ = W.shape
    s = sd[f"{prefix}.conv.modulation.weight"].double() @ w / math.sqrt(w.numel())
    s = s + sd[f"{prefix}.conv.modulation.bias"].double()  # (Cin,)
    wt = W / math.sqrt(cin * k * k) * s[None, :, None, None]  # per-sample weight
    if demod:
        wt = wt / torch.sqrt((wt**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    if not up:
        return F.conv2d(x[None], wt, padding=k // 2)[0]
    # Transposed stride-2 conv == zero insertion (no trailing zero) + full true convolution.
    u = _ref_zero_insert(x)[:, :-1, :-1]
    y = F.conv2d(F.pad(u[None], [k - 1] * 4), wt.flip([2, 3]))[0]  # (Cout, 2H + k - 2, ...)
    # Blur after the transposed conv: padding (1, 1) for a 4-tap kernel and 3x3 conv (rosinality layout).
    return torch.stack(
        [_ref_fir(y[c : c + 1], sd[f"{prefix}.conv.blur.kernel"].double(), 1, 1)[0] for c in range(cout)]
    )


def _ref_synthesis(sd: dict, ws: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """Float64 reference for one sample, const noise. ws (num_ws, D) -> (3, R, R)."""

    def styled(prefix: str, x: torch.Tensor, w: torch.Tensor, j: int, up: bool) -> torch.Tensor:
        y = _ref_modconv(sd, prefix, x, w, True, up)
        y = y + sd[f"{prefix}.noise.weight"].double() * sd[f"noises.noise_{j}"][0].double()
        y = y + sd[f"{prefix}.activate.bias"].double()[:, None, None]
        return torch.where(y >= 0, y, 0.2 * y) * math.sqrt(2)

    def rgb(prefix: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _ref_modconv(sd, prefix, x, w, False, False) + sd[f"{prefix}.bias"][0].double()

    ws = ws.double()
    x = sd["input.input"][0].double()
    x = styled("conv1", x, ws[0], 0, False)
    img = rgb("to_rgb1", x, ws[1])
    for b in range(n_blocks):
        i = 2 * b + 1
        x = styled(f"convs.{2 * b}", x, ws[i], i, True)
        x = styled(f"convs.{2 * b + 1}", x, ws[i + 1], i + 1, False)
        # Skip upsampling: zero insertion then the 4-tap FIR with padding (2, 1) (rosinality layout).
        skip = _ref_fir(_ref_zero_insert(img), sd[f"to_rgbs.{b}.upsample.kernel"].double(), 2, 1)
        img = rgb(f"to_rgbs.{b}", x, ws[i + 2]) + skip
    return img


def test_synthesis_matches_reference(tmp_path: Path) -> None:
    # An asymmetric blur kernel also pins down the filter orientation (true convolution, not correlation).
    blur = _kernel2d([1.0, 2.0, 4.0, 1.0], row=[1.0, 3.0, 2.0, 2.0])
    sd = make_g_ema({4: 12, 8: 10, 16: 6}, style_dim=24, n_mlp=2, seed=7, blur=blur)
    path = tmp_path / "ref.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(24)}, path)
    g = load_rosinality(path)
    ws = torch.randn(2, g.num_ws, 24, generator=torch.Generator().manual_seed(3))  # a genuine w+ input
    img = g.synthesis(ws, noise_mode="const")
    assert img.shape == (2, 3, 16, 16)
    for n in range(2):
        ref = _ref_synthesis(sd, ws[n], n_blocks=2)
        err = (img[n].double() - ref).abs().max().item()
        assert err < 1e-4 * max(1.0, ref.abs().max().item()), err
    # The 'none' path is the same network without the noise term.
    sd_nonoise = {k: (torch.zeros_like(v) if k.endswith("noise.weight") else v) for k, v in sd.items()}
    ref0 = _ref_synthesis(sd_nonoise, ws[0], n_blocks=2)
    assert (g.synthesis(ws[:1], noise_mode="none")[0].double() - ref0).abs().max().item() < 1e-4


def test_noise_modes(small_gen: RosinalityGenerator) -> None:
    ws = small_gen.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(9)))
    const1, const2 = small_gen.synthesis(ws, "const"), small_gen.synthesis(ws, "const")
    assert torch.equal(const1, const2)
    none = small_gen.synthesis(ws, "none")
    assert torch.equal(none, small_gen.synthesis(ws, "none"))
    assert (none - const1).abs().max() > 1e-3
    torch.manual_seed(0)
    r1 = small_gen.synthesis(ws, "random")
    r2 = small_gen.synthesis(ws, "random")
    assert (r1 - r2).abs().max() > 1e-3 and (r1 - const1).abs().max() > 1e-3


# ------------------------------------------------------------------------------ truncation


def test_truncation(small_gen: RosinalityGenerator, small_ckpt: tuple) -> None:
    avg = small_ckpt[2]
    z = torch.randn(4, 64, generator=torch.Generator().manual_seed(11))
    w = small_gen.mapping(z)
    w0 = small_gen.mapping(z, truncation_psi=0.0)
    assert torch.allclose(w0, avg.expand(4, 8, 64), atol=1e-6)
    wc = small_gen.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(wc[:, :3], avg + 0.5 * (w[:, :3] - avg), atol=1e-5)
    assert torch.equal(wc[:, 3:], w[:, 3:])
    assert torch.allclose(
        small_gen.mapping(z, truncation_psi=0.7, truncation_cutoff=None), avg + 0.7 * (w - avg), atol=1e-5
    )


def test_latent_avg_estimated_when_absent(tmp_path: Path, small_ckpt: tuple) -> None:
    path = tmp_path / "noavg.pt"
    torch.save({"g_ema": small_ckpt[1]}, path)
    g = load_rosinality(path)
    assert g.latent_avg_estimated
    w0 = g.mapping(torch.randn(2, 64), truncation_psi=0.0)
    assert torch.equal(w0[0], w0[1])
    # The estimate is the mean w: close to an independent sample mean.
    ind = g.mapping(torch.randn(4096, 64, generator=torch.Generator().manual_seed(123)))[:, 0].mean(0)
    spread = g.mapping(torch.randn(256, 64))[:, 0].std(0)
    assert ((w0[0, 0] - ind).abs() < 0.15 * spread + 1e-6).all()


# ------------------------------------------------------------------------------ previews


def _skip_images(
    g: RosinalityGenerator, ws: torch.Tensor, noise_mode: str = "const"
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """One full synthesis pass with a hook on every toRGB: the full image and the skip image after every
    block (the upsampled, summed toRGB outputs so far), by resolution."""
    inner: dict[int, torch.Tensor] = {}
    to_rgb = g._to_rgb

    def rgb_hook(x, prefix, *args, **kwargs):
        out = to_rgb(x, prefix, *args, **kwargs)  # (N, 3, R, R)
        inner[out.shape[-1]] = out.clone()
        return out

    g._to_rgb = rgb_hook  # an instance attribute shadows the method
    try:
        full = g.synthesis(ws, noise_mode=noise_mode)
    finally:
        del g._to_rgb
    return full, inner


def test_preview_is_the_full_pass_skip_image(small_gen: RosinalityGenerator, small_ckpt: tuple) -> None:
    g = small_gen
    ws = g.mapping(torch.randn(3, 64, generator=torch.Generator().manual_seed(21)))
    full, inner = _skip_images(g, ws)
    assert sorted(inner) == [4, 8, 16, 32] and torch.equal(inner[32], full)
    for r in (4, 8, 16):
        got = g.synthesis_at(ws, r)
        assert got.shape == (3, 3, r, r) and got.dtype == torch.float32
        torch.testing.assert_close(got, inner[r], rtol=0, atol=0)  # exact: the same ops, stopped early
    torch.testing.assert_close(g.synthesis_at(ws, None), full, rtol=0, atol=0)
    torch.testing.assert_close(g.synthesis_at(ws, 64), full, rtol=0, atol=0)  # never larger
    # Independently of the adapter's code: the float64 reference run for one block fewer.
    ref = _ref_synthesis(small_ckpt[1], ws[1], n_blocks=2)  # (3, 16, 16)
    got = g.synthesis_at(ws[1:2], 16)[0].double()
    assert (got - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())
    # The skip image is not the full image shrunk (what render-and-downsample would give).
    assert (inner[16] - F.avg_pool2d(full, 2)).abs().max().item() > 1e-3


def test_preview_stops_after_the_asked_block(small_gen: RosinalityGenerator) -> None:
    g = small_gen
    ws = g.mapping(torch.randn(1, 64, generator=torch.Generator().manual_seed(22)))
    ran: list[str] = []
    styled, to_rgb = g._styled, g._to_rgb
    g._styled = lambda x, prefix, *a, **k: ran.append(prefix) or styled(x, prefix, *a, **k)
    g._to_rgb = lambda x, prefix, *a, **k: ran.append(prefix) or to_rgb(x, prefix, *a, **k)
    try:
        g.synthesis_at(ws, 8)
    finally:
        del g._styled, g._to_rgb
    assert ran == ["conv1", "to_rgb1", "convs.0", "convs.1", "to_rgbs.0"]
    assert g.block_resolutions == (4, 8, 16, 32)
    assert [g.stop_resolution(r) for r in (None, 1, 4, 5, 8, 12, 32, 100)] == [32, 4, 4, 8, 8, 16, 32, 32]
    with pytest.raises(ValueError, match=">= 1 px"):
        g.synthesis_at(ws, 0)


def test_preview_between_blocks_shrinks_the_next_block(small_gen: RosinalityGenerator) -> None:
    g = small_gen
    ws = g.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(23)))
    _, inner = _skip_images(g, ws)
    got = g.synthesis_at(ws, 12)  # no 12 px block: the 16 px skip image, shrunk
    assert got.shape == (2, 3, 12, 12)
    torch.testing.assert_close(got, downsample(inner[16], 12), rtol=0, atol=0)
    torch.testing.assert_close(g.synthesis_at(ws, 2), F.avg_pool2d(inner[4], 2), rtol=0, atol=0)
    assert g.synthesis_at(ws[:0], 16).shape == (0, 3, 16, 16)


@pytest.mark.parametrize("noise_mode", ["random", "none"])
def test_preview_noise_modes_match_the_full_pass(small_gen: RosinalityGenerator, noise_mode: str) -> None:
    g = small_gen
    ws = g.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(24)))
    torch.manual_seed(5)
    _, inner = _skip_images(g, ws, noise_mode)
    torch.manual_seed(5)  # 'random' draws the same noise for the blocks before the stop
    torch.testing.assert_close(g.synthesis_at(ws, 8, noise_mode=noise_mode), inner[8], rtol=0, atol=0)


def test_feature_space_preview_renders_the_same_way(small_gen: RosinalityGenerator) -> None:
    from sfvq.spaces import LatentSpace

    g = small_gen
    ws = g.mapping(torch.randn(2, 64, generator=torch.Generator().manual_seed(25)))
    want = g.synthesis_at(ws, 16)
    torch.testing.assert_close(g.render_features_at("w", ws, resolution=16), want, rtol=0, atol=0)
    torch.testing.assert_close(g.render_features_at("w", ws), g.synthesis(ws), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown layer"):
        g.render_features_at("b8", ws, resolution=16)
    with pytest.raises(ValueError, match="unconditional"):
        g.render_features_at("w", ws, torch.ones(2, 3), resolution=16)
    sp = LatentSpace(g, "w")
    torch.testing.assert_close(sp.render_full(ws, resolution=16), want, rtol=0, atol=0)


# ------------------------------------------------------------------------------ checkpoint variants


def test_training_checkpoint_with_args_and_optimisers(tmp_path: Path, small_ckpt: tuple) -> None:
    _, sd, avg = small_ckpt
    path = tmp_path / "train.pt"
    opt = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
        "param_groups": [{"lr": 0.002}],
    }
    args = argparse.Namespace(size=32, latent=64, n_mlp=2, channel_multiplier=2, name="run")
    torch.save(
        {
            "g": sd,
            "d": {"x": torch.zeros(1)},
            "g_ema": sd,
            "g_optim": opt,
            "d_optim": opt,
            "args": args,
            "ada_aug_p": 0.1,
            "latent_avg": avg,
        },
        path,
    )
    g = load_rosinality(path)
    z = torch.randn(1, 64)
    ref = load_rosinality(small_ckpt[0])
    assert torch.equal(g.synthesis(g.mapping(z)), ref.synthesis(ref.mapping(z)))


def test_dataparallel_prefix_and_missing_noise_buffers(tmp_path: Path, small_ckpt: tuple) -> None:
    _, sd, avg = small_ckpt
    path = tmp_path / "old.pt"
    stripped = {f"module.{k}": v for k, v in sd.items() if not k.startswith("noises.")}
    torch.save({"g_ema": stripped, "latent_avg": avg}, path)
    g = load_rosinality(path)
    assert not g.noise_buffers_stored
    ws = g.mapping(torch.randn(1, 64))
    assert torch.equal(g.synthesis(ws), g.synthesis(ws))
    assert torch.equal(load_rosinality(path).synthesis(ws), g.synthesis(ws))  # fixed across loads


# ------------------------------------------------------------------------------ errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="no such file"):
        load_rosinality(tmp_path / "nope.pt")


def test_not_a_torch_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "text.pt"
    path.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(GeneratorError, match="not a readable PyTorch checkpoint"):
        load_rosinality(path)


def test_truncated_checkpoint(tmp_path: Path, small_ckpt: tuple) -> None:
    data = small_ckpt[0].read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GeneratorError, match="not a readable PyTorch checkpoint"):
        load_rosinality(path)


def test_missing_g_ema(tmp_path: Path) -> None:
    path = tmp_path / "nog.pt"
    torch.save({"g": {"a": torch.zeros(1)}, "latent_avg": torch.zeros(4)}, path)
    with pytest.raises(GeneratorError, match=r"no 'g_ema' entry \(found keys: g, latent_avg\)"):
        load_rosinality(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(GeneratorError, match="found a list"):
        load_rosinality(path)


def test_inconsistent_shapes(tmp_path: Path, small_ckpt: tuple) -> None:
    _, sd, avg = small_ckpt
    path = tmp_path / "bad.pt"
    bad = dict(sd)
    bad["convs.1.conv.weight"] = torch.zeros(1, 32, 20, 3, 3)  # in-channels should be 32 (convs.0's out)
    torch.save({"g_ema": bad, "latent_avg": avg}, path)
    with pytest.raises(
        GeneratorError, match=r"convs\.1\.conv\.weight.*\(1, 32, 20, 3, 3\).*\(1, 32, 32, 3, 3\)"
    ):
        load_rosinality(path)
    bad = dict(sd)
    bad["noises.noise_3"] = torch.zeros(1, 1, 8, 8)  # layer 3 runs at 16x16
    torch.save({"g_ema": bad, "latent_avg": avg}, path)
    with pytest.raises(GeneratorError, match=r"noises\.noise_3"):
        load_rosinality(path)
    torch.save({"g_ema": sd, "latent_avg": torch.zeros(63)}, path)
    with pytest.raises(GeneratorError, match=r"latent_avg has shape \(63,\)"):
        load_rosinality(path)


def test_missing_and_unexpected_keys(tmp_path: Path, small_ckpt: tuple) -> None:
    _, sd, avg = small_ckpt
    path = tmp_path / "keys.pt"
    torch.save({"g_ema": {k: v for k, v in sd.items() if k != "to_rgbs.1.bias"}, "latent_avg": avg}, path)
    with pytest.raises(GeneratorError, match=r"missing 1 key.*to_rgbs\.1\.bias"):
        load_rosinality(path)
    torch.save({"g_ema": {**sd, "extra.weight": torch.zeros(2)}, "latent_avg": avg}, path)
    with pytest.raises(GeneratorError, match=r"unexpected key.*extra\.weight"):
        load_rosinality(path)
    torch.save(
        {"g_ema": {k: v for k, v in sd.items() if k != "convs.5.conv.weight"}, "latent_avg": avg}, path
    )
    with pytest.raises(GeneratorError, match="two convs per to_rgb"):
        load_rosinality(path)
    torch.save(
        {"g_ema": {k: v for k, v in sd.items() if not k.startswith("style.")}, "latent_avg": avg}, path
    )
    with pytest.raises(GeneratorError, match="no mapping layers"):
        load_rosinality(path)


class _Evil:
    """Pickles as a call to builtins.open(marker, 'w'): loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_refuses_checkpoint_needing_full_unpickling(tmp_path: Path, small_ckpt: tuple) -> None:
    _, sd, avg = small_ckpt
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": sd, "latent_avg": avg, "hook": _Evil(marker)}, path)
    with pytest.raises(GeneratorError, match=r"refusing to load.*'(io|builtins)\.open'.*weights_only=False"):
        load_rosinality(path)
    assert not marker.exists()


def test_four_d_activation_bias_layout(tmp_path: Path, small_ckpt: tuple) -> None:
    _, sd, avg = small_ckpt
    path = tmp_path / "fork.pt"
    fork = {k: (v.reshape(1, -1, 1, 1) if k.endswith("activate.bias") else v) for k, v in sd.items()}
    torch.save({"g_ema": fork, "latent_avg": avg}, path)
    g, ref = load_rosinality(path), load_rosinality(small_ckpt[0])
    ws = ref.mapping(torch.randn(1, 64))
    assert torch.equal(g.synthesis(ws), ref.synthesis(ws))
    fork["convs.2.activate.bias"] = torch.zeros(1, 7, 1, 1)  # convs.2 has 16 output channels
    torch.save({"g_ema": fork, "latent_avg": avg}, path)
    with pytest.raises(GeneratorError, match=r"convs\.2\.activate\.bias.*\(1, 7, 1, 1\).*\(1, 16, 1, 1\)"):
        load_rosinality(path)


def test_g_ema_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save({"g_ema": {"style.1.weight": 3.0}}, path)
    with pytest.raises(GeneratorError, match="'g_ema' is not a state dict of tensors"):
        load_rosinality(path)
