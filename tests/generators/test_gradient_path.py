"""The generator protocol's gradient path (projection): the adapters that have one compute their plain
forward pass with gradients; the rest say they have none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sfvq.generators.base import GeneratorError
from sfvq.generators.dcgan import load_faces_dcgan
from sfvq.generators.stylegan import stylegan_from_fixture_dir

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"
IMG_TOL = 1e-4


@pytest.mark.parametrize("name", ["sg2ada_cond", "sg3_t"])
def test_stylegan_gradient_path_matches_the_fixture(name: str) -> None:
    G = stylegan_from_fixture_dir(FIXTURES / name)
    cases = load_file(str(FIXTURES / name / "cases.safetensors"))
    assert G.has_gradient_path
    c = cases.get("c")
    z = cases["z"].clone().requires_grad_(True)
    ws = G.differentiable_mapping(z, c, 0.5)  # (4, num_ws, w_dim), conditional where the fixture is
    assert ws.requires_grad and (ws - cases["ws_psi0.5"]).abs().max().item() < 1e-5
    img = G.differentiable_synthesis(ws, "const")
    assert img.requires_grad and (img - cases["img_G_forward_psi0.5_const"]).abs().max().item() < IMG_TOL
    (grad,) = torch.autograd.grad(img.square().sum(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        none = G.differentiable_synthesis(cases["ws_psi1"], "none")
        feats = G.differentiable_render_features("w", cases["ws_psi1"], noise_mode="none")
    assert (none - cases["img_none_psi1"]).abs().max().item() < IMG_TOL
    torch.testing.assert_close(feats, none)
    with pytest.raises(ValueError, match="noise_mode must be one of"):
        G.differentiable_synthesis(cases["ws_psi1"], "loud")
    with pytest.raises(ValueError, match="unknown layer"):
        G.differentiable_render_features("b8", cases["ws_psi1"])


def test_stylegan2_noise_inputs_are_the_constant_maps_it_renders_with() -> None:
    G = stylegan_from_fixture_dir(FIXTURES / "sg2ada_uncond")
    cases = load_file(str(FIXTURES / "sg2ada_uncond" / "cases.safetensors"))
    maps = G.noise_inputs()  # (r, r) each, in forward order
    assert maps and all(m.ndim == 2 and m.shape[0] == m.shape[1] for m in maps)
    assert [m.shape[0] for m in maps] == sorted(m.shape[0] for m in maps)
    ws = cases["ws_psi1"]
    with torch.no_grad():
        given = G.differentiable_synthesis(ws, "none", [m[None, None] for m in maps])
        zeros = G.differentiable_synthesis(ws, "const", [torch.zeros(1, 1, *m.shape) for m in maps])
    assert (given - cases["img_const_psi1"]).abs().max().item() < IMG_TOL  # the maps replace the mode
    assert (zeros - cases["img_none_psi1"]).abs().max().item() < IMG_TOL
    with pytest.raises(ValueError, match=f"got 1 noise maps for {len(maps)} noise inputs"):
        G.differentiable_synthesis(ws, "const", maps[:1])
    sg3 = stylegan_from_fixture_dir(FIXTURES / "sg3_t")
    assert sg3.noise_inputs() == []
    with pytest.raises(ValueError, match="without noise inputs"):
        sg3.differentiable_synthesis(torch.zeros(1, sg3.num_ws, sg3.w_dim), "const", maps[:1])


def test_dcgan_gradient_path_is_its_forward_pass() -> None:
    G = load_faces_dcgan()
    assert G.has_gradient_path and G.noise_inputs() == []
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    ws = G.differentiable_mapping(z, None, 0.7)
    img = G.differentiable_synthesis(ws)
    assert img.requires_grad
    torch.testing.assert_close(img, G.synthesis(G.mapping(z.detach(), None, 0.7)))
    f = -G.features(z.detach(), None, "block2")  # below zero: the render clamps it as render_features does
    f.requires_grad_(True)
    out = G.differentiable_render_features("block2", f)
    assert out.requires_grad
    torch.testing.assert_close(out, G.render_features("block2", f.detach()))
    with pytest.raises(ValueError, match="without noise inputs"):
        G.differentiable_synthesis(ws, "const", [torch.zeros(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="expected block2 features of shape"):
        G.differentiable_render_features("block2", f[:, :3])


def test_generators_without_a_gradient_path_say_so(tmp_path: Path) -> None:
    from test_biggan import SMALL_CONFIG, make_state_dict, write_biggan

    from sfvq.generators import load_generator

    G = load_generator(write_biggan(tmp_path / "tiny", SMALL_CONFIG, make_state_dict(SMALL_CONFIG)))
    assert not G.has_gradient_path
    with pytest.raises(GeneratorError, match=f"{G.name} has no gradient path"):
        G.differentiable_synthesis(torch.zeros(1, 1, G.z_dim))
