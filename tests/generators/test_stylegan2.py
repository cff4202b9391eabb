"""The clean-room StyleGAN2 network against the official-code fixtures (sg2ada_uncond, sg2ada_cond)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sfvq.generators.base import GeneratorError
from sfvq.generators.stylegan2 import build_stylegan2

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"
SG2 = ["sg2ada_uncond", "sg2ada_cond"]
WS_TOL = 1e-5
IMG_TOL = 1e-4


def _fixture(name: str) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    d = FIXTURES / name
    cfg = json.loads((d / "config.json").read_text())
    return cfg, load_file(str(d / "weights.safetensors")), load_file(str(d / "cases.safetensors"))


@pytest.fixture(scope="module", params=SG2)
def sg2(request: pytest.FixtureRequest) -> tuple[str, dict, dict, dict, torch.nn.Module]:
    cfg, sd, cases = _fixture(request.param)
    net = build_stylegan2(cfg["G_ema"]["init_kwargs"], sd)
    return request.param, cfg, sd, cases, net


def _c(cases: dict[str, torch.Tensor]) -> torch.Tensor:
    return cases.get("c", torch.zeros(cases["z"].shape[0], 0))


def test_attributes_match_config(sg2: tuple) -> None:
    _, cfg, _, _, net = sg2
    g = cfg["G_ema"]
    for attr in ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels"):
        assert getattr(net, attr) == g[attr]
    assert not any(p.requires_grad for p in net.parameters())
    assert set(net.state_dict()) == set(cfg["state_dict_shapes"])


@pytest.mark.parametrize(
    ("key", "psi", "cutoff"),
    [("ws_psi1", 1.0, None), ("ws_psi0.5", 0.5, None), ("ws_psi0.5_cutoff2", 0.5, 2)],
)
def test_mapping_matches_fixture(sg2: tuple, key: str, psi: float, cutoff: int | None) -> None:
    _, _, _, cases, net = sg2
    with torch.no_grad():
        ws = net.mapping(cases["z"], _c(cases), truncation_psi=psi, truncation_cutoff=cutoff)
    assert ws.shape == cases[key].shape
    assert (ws - cases[key]).abs().max().item() < WS_TOL


@pytest.mark.parametrize(
    ("key", "ws_key", "noise_mode"),
    [
        ("img_const_psi1", "ws_psi1", "const"),
        ("img_none_psi1", "ws_psi1", "none"),
        ("img_const_psi0.5", "ws_psi0.5", "const"),
    ],
)
def test_synthesis_matches_fixture(sg2: tuple, key: str, ws_key: str, noise_mode: str) -> None:
    _, _, _, cases, net = sg2
    with torch.no_grad():
        img = net.synthesis(cases[ws_key], noise_mode=noise_mode)
    assert img.dtype == torch.float32 and img.shape == cases[key].shape
    assert (img - cases[key]).abs().max().item() < IMG_TOL


def test_end_to_end_forward_matches_fixture(sg2: tuple) -> None:
    _, _, _, cases, net = sg2
    with torch.no_grad():
        img = net(cases["z"], _c(cases), truncation_psi=0.5, noise_mode="const")
    assert (img - cases["img_G_forward_psi0.5_const"]).abs().max().item() < IMG_TOL


def test_per_block_intermediates(sg2: tuple) -> None:
    name, _, _, cases, net = sg2
    inter = load_file(str(FIXTURES / name / "intermediates.safetensors"))
    ws = cases["ws_psi1"][0:1]
    x = img = None
    w_idx = 0
    with torch.no_grad():
        for block in net.synthesis.blocks():
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], "const")
            w_idx += block.num_conv
            r = block.resolution
            assert (x - inter[f"synthesis.b{r}.x"]).abs().max().item() < IMG_TOL, f"b{r}.x"
            assert (img - inter[f"synthesis.b{r}.img"]).abs().max().item() < IMG_TOL, f"b{r}.img"


def test_random_noise_differs_from_const(sg2: tuple) -> None:
    _, _, _, cases, net = sg2
    torch.manual_seed(0)
    with torch.no_grad():
        rnd = net.synthesis(cases["ws_psi1"], noise_mode="random")
        rnd2 = net.synthesis(cases["ws_psi1"], noise_mode="random")
        const = net.synthesis(cases["ws_psi1"], noise_mode="const")
    assert rnd.shape == const.shape and torch.isfinite(rnd).all()
    assert (rnd - const).abs().max().item() > 0.1
    assert (rnd - rnd2).abs().max().item() > 0.1


def test_flattened_kwargs_stylegan3_repo_style() -> None:
    """The SG2 class of the stylegan3 repo flattens synthesis kwargs (and defaults conv_clamp to 256)."""
    cfg, sd, cases = _fixture("sg2ada_cond")
    nested = cfg["G_ema"]["init_kwargs"]
    flat = {k: v for k, v in nested.items() if k != "synthesis_kwargs"}
    flat.update(nested["synthesis_kwargs"])
    flat["fused_modconv_default"] = "inference_only"
    net = build_stylegan2(flat, sd)
    with torch.no_grad():
        img = net(cases["z"], cases["c"], truncation_psi=0.5)
    assert (img - cases["img_G_forward_psi0.5_const"]).abs().max().item() < IMG_TOL
    del flat["conv_clamp"]
    assert build_stylegan2(flat, sd).synthesis.b4.conv1.conv_clamp == 256
    nested_no_clamp = copy.deepcopy(nested)
    del nested_no_clamp["synthesis_kwargs"]["conv_clamp"]
    assert build_stylegan2(nested_no_clamp, sd).synthesis.b4.conv1.conv_clamp is None


def test_state_dict_problems_are_named() -> None:
    cfg, sd, _ = _fixture("sg2ada_uncond")
    kwargs = cfg["G_ema"]["init_kwargs"]
    missing = {k: v for k, v in sd.items() if k != "synthesis.b8.conv0.noise_const"}
    with pytest.raises(GeneratorError, match=r"missing key\(s\): synthesis\.b8\.conv0\.noise_const"):
        build_stylegan2(kwargs, missing)
    extra = {**sd, "synthesis.b8.conv9.weight": torch.zeros(1)}
    with pytest.raises(GeneratorError, match=r"unexpected key\(s\): synthesis\.b8\.conv9\.weight"):
        build_stylegan2(kwargs, extra)
    bad = {**sd, "mapping.fc1.weight": torch.zeros(32, 31)}
    with pytest.raises(
        GeneratorError, match=r"misshapen key\(s\): mapping\.fc1\.weight \(expected \[32, 32\]"
    ):
        build_stylegan2(kwargs, bad)


def test_unsupported_or_broken_kwargs() -> None:
    cfg, sd, _ = _fixture("sg2ada_uncond")
    kwargs = cfg["G_ema"]["init_kwargs"]
    resnet = copy.deepcopy(kwargs)
    resnet["synthesis_kwargs"]["architecture"] = "resnet"
    with pytest.raises(GeneratorError, match="architecture 'resnet'"):
        build_stylegan2(resnet, sd)
    odd = copy.deepcopy(kwargs)
    odd["synthesis_kwargs"]["mystery_knob"] = 3
    with pytest.raises(GeneratorError, match="mystery_knob"):
        build_stylegan2(odd, sd)
    no_z = {k: v for k, v in kwargs.items() if k != "z_dim"}
    with pytest.raises(GeneratorError, match="z_dim"):
        build_stylegan2(no_z, sd)
    bad_res = {**kwargs, "img_resolution": 48}
    with pytest.raises(GeneratorError, match="power of two"):
        build_stylegan2(bad_res, sd)


def test_ws_shape_is_checked(sg2: tuple) -> None:
    _, _, _, cases, net = sg2
    with pytest.raises(ValueError, match=r"ws must have shape \(N, 8, 32\)"):
        net.synthesis(cases["ws_psi1"][:, :7])
    with pytest.raises(ValueError, match="noise_mode"):
        net.synthesis(cases["ws_psi1"], noise_mode="loud")
