"""The reduced-precision path of the StyleGAN3 layers a pickle marks for fp16 (``num_fp16_res``).

Error bound, not tuned to the measurement: a reduced-precision layer rounds four times to the dtype's unit
roundoff u (float16 2^-11, bfloat16 2^-8), relative to the signal: the styled input, the convolution, its
scaling by the demodulation coefficients and the stored output (the filtered leaky ReLU itself computes in
float32). Through the demodulated (norm-keeping) layers these errors add at most about linearly, so
max |low - ref| <= 4 * (flagged layers) * u * max |ref|. On the 32-px fixtures (15 flagged layers, images
within +-0.4) that is 0.011 for float16 and 0.09 for bfloat16; measured about a tenth of it. Float16 must
also stay under NVIDIA's own fp16-vs-fp32 difference (about 3e-2 at 1024 px).
"""

from __future__ import annotations

import json

import pytest
import torch

from sfvq.generators.base import GeneratorError
from sfvq.generators.stylegan import StyleGANGenerator, stylegan_from_fixture_dir
from sfvq.generators.stylegan3 import (
    StyleGAN3Generator,
    _modulated_conv2d,
    _modulated_conv2d_reduced,
    build_stylegan3,
    resolve_stylegan3_config,
)

FIXTURES = "fixtures/stylegan"
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
NVIDIA_FP16_DIFF = 3e-2  # NVIDIA's own fp16-vs-fp32 image difference at 1024 px
ROUNDINGS_PER_LAYER = 4  # styled input, convolution, demodulation scaling, stored output


def _bound(layers: int, dtype: torch.dtype, ref: torch.Tensor) -> float:
    """The largest image difference ``layers`` reduced-precision layers may make (module docstring)."""
    return ROUNDINGS_PER_LAYER * layers * UNIT_ROUNDOFF[dtype] * ref.abs().max().item()


@pytest.fixture(scope="module", params=["sg3_t", "sg3_r"])
def sg3(request, shared_dir) -> tuple[str, StyleGANGenerator]:
    return request.param, stylegan_from_fixture_dir(shared_dir / FIXTURES / request.param)


def _ws(G: StyleGANGenerator, n: int, seed: int) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, 1 if G.c_dim else None)  # (n, num_ws, w_dim)


def _render(G: StyleGANGenerator, ws: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, list]:
    """G.synthesis(ws) with ``fp16_dtype = dtype``, and each layer's (use_fp16, output dtype)."""
    seen: list[tuple[bool, torch.dtype]] = []
    hooks = [
        layer.register_forward_hook(lambda m, a, out: seen.append((m.use_fp16, out.dtype)))
        for layer in G.network.synthesis.layers()
    ]
    try:
        G.fp16_dtype = dtype
        assert G.half_dtype() == dtype
        return G.synthesis(ws), seen
    finally:
        G.fp16_dtype = None
        for h in hooks:
            h.remove()


def test_fp16_flags_follow_the_pickle(shared_dir, sg3) -> None:
    name, G = sg3
    cfg = json.loads((shared_dir / FIXTURES / name / "config.json").read_text())
    recorded = {layer: spec["use_fp16"] for layer, spec in cfg["synthesis"]["layers"].items()}
    assert {layer.spec.name: layer.use_fp16 for layer in G.network.synthesis.layers()} == recorded
    assert G.half_dtype() is None  # float32 on the CPU unless asked


def test_fp16_flags_are_the_highest_sampling_rates_at_full_size() -> None:
    """FFHQ-1024 (num_fp16_res 4): exactly the layers whose output sampling rate is 128..1024 px; none
    when num_fp16_res is 0 or absent."""
    kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3}
    cfg = resolve_stylegan3_config({**kwargs, "num_fp16_res": 4})
    flagged = {spec.name for spec in cfg.layers if cfg.use_fp16(spec)}
    assert flagged == {spec.name for spec in cfg.layers if spec.out_sampling_rate >= 128}
    assert 0 < len(flagged) < len(cfg.layers)
    rates = sorted({spec.out_sampling_rate for spec in cfg.layers})
    assert rates[-4:] == [128, 256, 512, 1024]
    for none in ({**kwargs, "num_fp16_res": 0}, kwargs):
        cfg0 = resolve_stylegan3_config(none)
        assert not any(cfg0.use_fp16(spec) for spec in cfg0.layers)
    assert all(resolve_stylegan3_config({**kwargs, "num_fp16_res": 10**9}).use_fp16(s) for s in cfg.layers)


@pytest.mark.parametrize("bad", [-1, 1.5, "4", True])
def test_bad_num_fp16_res_is_refused(bad) -> None:
    kwargs = {
        "z_dim": 8,
        "c_dim": 0,
        "w_dim": 8,
        "img_resolution": 16,
        "img_channels": 3,
        "num_fp16_res": bad,
    }
    with pytest.raises(GeneratorError, match="num_fp16_res"):
        resolve_stylegan3_config(kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_flagged_layers_in_reduced_precision_stay_close_to_float32(sg3, dtype) -> None:
    _, G = sg3
    ws = _ws(G, 3, seed=3)
    ref = G.synthesis(ws)
    low, seen = _render(G, ws, dtype)
    layers = len(G.network.synthesis.layer_names)
    assert seen == [(True, dtype)] * layers  # every layer is flagged in the fixtures, and ran in dtype
    assert low.dtype == torch.float32 and low.shape == ref.shape and bool(torch.isfinite(low).all())
    err = (low - ref).abs().max().item()
    bound = _bound(layers, dtype, ref)
    assert 0 < err < bound, (err, bound)  # it differs (it did run in reduced precision), within the bound
    if dtype == torch.float16:
        assert err < NVIDIA_FP16_DIFF
    # One image at a time (the per-sample convolution) and from style codes: the same bound.
    G.fp16_dtype = dtype
    try:
        single = torch.cat([G.synthesis(ws[i : i + 1]) for i in range(ws.shape[0])])
        from_s = G.synthesis_from_styles_at(G.styles(ws))
    finally:
        G.fp16_dtype = None
    assert 0 < (single - ref).abs().max().item() < bound
    assert (from_s - ref).abs().max().item() < bound


def test_float32_path_is_unchanged(sg3) -> None:
    """None on the CPU and an explicit float32 give the network's float32 render bit for bit, also
    right after a reduced-precision render (nothing is left behind)."""
    _, G = sg3
    ws = _ws(G, 2, seed=5)
    with torch.no_grad():
        plain = G.network.synthesis(ws)
    assert torch.equal(G.synthesis(ws), plain)
    _render(G, ws, torch.bfloat16)
    G.fp16_dtype = torch.float32
    try:
        assert G.half_dtype() is None
        assert torch.equal(G.synthesis(ws), plain)
    finally:
        G.fp16_dtype = None
    assert torch.equal(G.synthesis(ws), plain)


def _random_sg3(num_fp16_res: int) -> StyleGANGenerator:
    """A 64-px, 6-layer StyleGAN3-R-like network (radial down filters) with random weights."""
    kwargs = {
        "z_dim": 8,
        "c_dim": 0,
        "w_dim": 16,
        "img_resolution": 64,
        "img_channels": 3,
        "channel_base": 256,
        "channel_max": 16,
        "num_layers": 6,
        "use_radial_filters": True,
        "num_fp16_res": num_fp16_res,
    }
    gen = torch.Generator().manual_seed(0)
    shapes = {
        k: v.shape for k, v in StyleGAN3Generator(resolve_stylegan3_config(kwargs)).state_dict().items()
    }
    state = {k: torch.randn(s, generator=gen) * 0.5 for k, s in shapes.items()}
    for key in state:
        if key.endswith("magnitude_ema"):
            state[key] = torch.tensor(0.8)
        if key.endswith("_filter"):
            state[key] = state[key].abs() / state[key].abs().sum()
        if key.endswith("freqs"):
            state[key] = state[key] * 4
    return StyleGANGenerator(build_stylegan3(kwargs, state), name="random", family="stylegan3")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_only_the_highest_rates_run_reduced_after_float32_layers(dtype) -> None:
    """num_fp16_res 1 at 64 px: the float32 layers hand over to the reduced-precision ones (rate 64)."""
    G = _random_sg3(1)
    layers = G.network.synthesis.layers()
    flags = [layer.use_fp16 for layer in layers]
    assert flags == [layer.spec.out_sampling_rate > 32 for layer in layers]
    assert not flags[0] and flags[-1]
    ws = _ws(G, 3, seed=1)
    ref = G.synthesis(ws)
    low, seen = _render(G, ws, dtype)
    assert seen == [(f, dtype if f else torch.float32) for f in flags]
    err = (low - ref).abs().max().item()
    bound = _bound(sum(flags), dtype, ref)
    assert 0 < err < bound, (err, bound)


@pytest.mark.parametrize("n", [1, 3])
def test_reduced_conv_does_not_overflow_at_the_clamp(n) -> None:
    """The worst case at full width: 512 input channels at conv_clamp (256), weights and styles all
    positive, so every product adds up. A demodulated 3x3 conv gives at most 256 sqrt(512*9) = 17,400,
    which fits float16, but a convolution of the styled input with the merely normalised weight would
    reach 256*512*9 = 1.2e6 and overflow; the ToRGB (1x1, styles / sqrt(512), no demodulation) gives
    about 5,800. The float16 result is finite and within the module docstring's one-layer bound."""
    gen = torch.Generator().manual_seed(0)
    x = torch.full((n, 512, 4, 4), 256.0)
    styles = torch.rand(n, 512, generator=gen) + 0.5  # (N, I)
    styles[:, 0] = 40.0  # one dominant style
    gain = torch.tensor(0.9)
    for k, demodulate, scale in ((3, True, 1.0), (1, False, 512**-0.5)):
        weight = torch.rand(16, 512, k, k, generator=gen) + 0.5  # (O, I, k, k)
        ref = _modulated_conv2d(x, weight, styles * scale, demodulate, gain)  # (N, O, 4+k-1, 4+k-1)
        low = _modulated_conv2d_reduced(x.half(), weight, styles * scale, demodulate, gain)
        assert low.dtype == torch.float16 and low.shape == ref.shape
        assert bool(torch.isfinite(low).all()) and ref.abs().max().item() > 4000
        err = (low.float() - ref).abs().max().item()
        assert err <= ROUNDINGS_PER_LAYER * UNIT_ROUNDOFF[torch.float16] * ref.abs().max().item(), err
