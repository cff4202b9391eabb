"""Previews below the full resolution (exact skip images for StyleGAN2, render-and-shrink for the rest), the
memory estimate of one render, and the reduced-precision path of the fp16-flagged StyleGAN2 blocks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sfvq.generators import load_generator
from sfvq.generators.base import downsample, preview_size
from sfvq.generators.stylegan import stylegan_from_fixture_dir
from sfvq.spaces import LatentSpace

FIXTURES = "fixtures/stylegan"


@pytest.fixture(scope="module")
def sg2(shared_dir):
    return stylegan_from_fixture_dir(shared_dir / FIXTURES / "sg2ada_uncond")


@pytest.fixture(scope="module")
def sg2_fp16(shared_dir):
    return stylegan_from_fixture_dir(shared_dir / FIXTURES / "sg2ada_cond")  # num_fp16_res 4


@pytest.fixture(scope="module")
def sg3(shared_dir):
    return stylegan_from_fixture_dir(shared_dir / FIXTURES / "sg3_t")


def _ws(G, n: int = 3, seed: int = 0, c=None) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    return G.mapping(z, c)  # (n, num_ws, w_dim)


def _block_images(G, ws: torch.Tensor, noise_mode: str = "const") -> dict[int, torch.Tensor]:
    """The skip image after every block of one full synthesis pass, read with forward hooks."""
    found: dict[int, torch.Tensor] = {}
    syn = G.network.synthesis
    hooks = [
        block.register_forward_hook(lambda m, args, out, r=block.resolution: found.__setitem__(r, out[1]))
        for block in syn.blocks()
    ]
    try:
        full = G.synthesis(ws, noise_mode=noise_mode)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(found[G.img_resolution], full)
    return found


# ---------------------------------------------------------------------------------------------- StyleGAN2
def test_stylegan2_preview_is_the_full_pass_intermediate_image(sg2):
    ws = _ws(sg2)
    inner = _block_images(sg2, ws)
    assert sorted(inner) == [4, 8, 16, 32]
    for r in (4, 8, 16):
        got = sg2.synthesis_at(ws, r)
        assert got.shape == (3, 3, r, r)
        torch.testing.assert_close(got, inner[r], rtol=0, atol=0)  # exact: the same ops, stopped early
    torch.testing.assert_close(sg2.synthesis_at(ws, None), sg2.synthesis(ws), rtol=0, atol=0)
    torch.testing.assert_close(sg2.synthesis_at(ws, 64), inner[32], rtol=0, atol=0)  # never larger


def test_stylegan2_preview_between_blocks_shrinks_the_next_block(sg2):
    ws = _ws(sg2, 2)
    inner = _block_images(sg2, ws)
    got = sg2.synthesis_at(ws, 12)  # no 12 px block: the 16 px skip image, shrunk
    assert got.shape == (2, 3, 12, 12)
    torch.testing.assert_close(got, downsample(inner[16], 12))
    assert sg2.network.synthesis.stop_resolution(12) == 16 and sg2.network.synthesis.stop_resolution(4) == 4


def test_builtin_avatars_preview_is_exact(tmp_path):
    G = load_generator("builtin:avatars-sg2")
    ws = _ws(G, 2)
    inner = _block_images(G, ws)
    torch.testing.assert_close(G.synthesis_at(ws, 16), inner[16], rtol=0, atol=0)
    sp = LatentSpace(G, "w")
    full = ws[:, :1].expand(-1, G.num_ws, -1).contiguous()  # one w per image, as a W-space curve point
    torch.testing.assert_close(sp.render_full(full, resolution=16), G.synthesis_at(full, 16))


def test_random_noise_preview_matches_the_full_pass_with_the_same_seed(sg2):
    ws = _ws(sg2, 2)
    torch.manual_seed(5)
    inner = _block_images(sg2, ws, noise_mode="random")
    torch.manual_seed(5)
    torch.testing.assert_close(sg2.synthesis_at(ws, 8, noise_mode="random"), inner[8], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- fallbacks
def test_stylegan3_preview_renders_full_size_and_averages_blocks(sg3):
    ws = _ws(sg3, 2)
    full = sg3.synthesis(ws)
    got = sg3.synthesis_at(ws, 16)
    assert got.shape == (2, 3, 16, 16)
    torch.testing.assert_close(got, F.avg_pool2d(full, 2), rtol=0, atol=0)


def test_feature_space_preview_of_the_dcgan_is_the_full_render_shrunk():
    G = load_generator("builtin:faces-dcgan")  # 64 px, no mapping network: features:block1
    sp = LatentSpace(G, "features")
    sp.sample(64, 0, progress=False, pca_samples=64)
    full = sp.encode_seeds([0, 1])
    big = sp.render_full(full)
    small = sp.render_full(full, resolution=16)
    assert big.shape[2:] == (64, 64) and small.shape == (2, 3, 16, 16)
    torch.testing.assert_close(small, F.avg_pool2d(big, 4))
    edits = sp.render_edits(full, [torch.ones(sp.dim)], [0.0, 1.0], resolution=16)
    assert edits.shape == (2, 1, 2, 3, 16, 16)
    torch.testing.assert_close(edits[:, 0, 0], small)


def test_downsample_and_preview_size():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.testing.assert_close(downsample(x, 4), x.reshape(2, 3, 4, 2, 4, 2).mean((3, 5)))
    assert downsample(x, None) is x and downsample(x, 8) is x and downsample(x, 100) is x
    odd = downsample(x, 5)
    assert odd.shape == (2, 3, 5, 5)
    assert float(odd.min()) >= float(x.min()) and float(odd.max()) <= float(x.max())  # no overshoot here
    assert preview_size(64, 32, 16) == (16, 8) and preview_size(64, 32, None) == (64, 32)
    with pytest.raises(ValueError, match="N, C, H, W"):
        downsample(x[0], 4)
    with pytest.raises(ValueError, match=">= 1 px"):
        preview_size(8, 8, 0)


# ---------------------------------------------------------------------------------------------- fp16
def test_fp16_flags_follow_the_pickle(shared_dir, sg2_fp16, sg2):
    cfg = json.loads((shared_dir / FIXTURES / "sg2ada_cond" / "config.json").read_text())
    recorded = {name: b["use_fp16"] for name, b in cfg["synthesis"]["blocks"].items()}
    assert {f"b{b.resolution}": b.use_fp16 for b in sg2_fp16.network.synthesis.blocks()} == recorded
    assert not any(b.use_fp16 for b in sg2.network.synthesis.blocks())  # num_fp16_res 0
    assert sg2_fp16.half_dtype() is None  # fp32 on the CPU unless asked


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 3e-2), (torch.bfloat16, 1.5e-1)])
def test_fp16_blocks_in_reduced_precision_stay_close_to_float32(sg2_fp16, dtype, tol):
    G = sg2_fp16
    ws = _ws(G, 4, seed=3, c=1)
    ref = G.synthesis(ws)
    seen: list[torch.dtype] = []
    hook = G.network.synthesis.b16.conv1.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    try:
        G.fp16_dtype = dtype
        assert G.half_dtype() == dtype
        low = G.synthesis(ws)
        low_preview = G.synthesis_at(ws, 16)
    finally:
        G.fp16_dtype = None
        hook.remove()
    assert seen == [dtype, dtype]  # the flagged blocks really ran in it
    assert low.dtype == torch.float32 and low.shape == ref.shape
    err = (low - ref).abs().max().item()
    assert 0 < err < tol, err  # differs (it did run in reduced precision), but within tolerance
    scale = ref.abs().max().item()
    assert err < tol * max(1.0, scale)
    inner = _block_images(G, ws)  # back in float32
    assert (low_preview - inner[16]).abs().max().item() < tol
    torch.testing.assert_close(G.synthesis(ws), ref, rtol=0, atol=0)


def test_float32_override_and_unflagged_networks_are_untouched(sg2, sg2_fp16):
    ws = _ws(sg2, 2)
    ref = sg2.synthesis(ws)
    sg2.fp16_dtype = torch.float16  # no block is flagged: nothing changes
    try:
        torch.testing.assert_close(sg2.synthesis(ws), ref, rtol=0, atol=0)
    finally:
        sg2.fp16_dtype = None
    sg2_fp16.fp16_dtype = torch.float32
    try:
        assert sg2_fp16.half_dtype() is None
    finally:
        sg2_fp16.fp16_dtype = None
