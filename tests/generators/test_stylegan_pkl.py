"""StyleGAN .pkl adapter: pickles written from every fixture load and reproduce the fixture cases."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pkl_writer import write_stylegan_pkl
from safetensors.torch import load_file

from sfvq.generators.base import Generator, GeneratorError, to_uint8
from sfvq.generators.stylegan_pkl import (
    StyleGANGenerator,
    load_stylegan_pkl,
    stylegan_from_fixture_dir,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"
ALL = ["sg2ada_uncond", "sg2ada_cond", "sg3_t", "sg3_r"]
SG2 = ["sg2ada_uncond", "sg2ada_cond"]
SG3 = ["sg3_t", "sg3_r"]
WS_TOL = 1e-5
IMG_TOL = 1e-4
WS_CASES = [("ws_psi1", 1.0, None), ("ws_psi0.5", 0.5, None), ("ws_psi0.5_cutoff2", 0.5, 2)]
IMG_CASES = [
    ("img_const_psi1", "ws_psi1", "const"),
    ("img_none_psi1", "ws_psi1", "none"),
    ("img_const_psi0.5", "ws_psi0.5", "const"),
]


@pytest.fixture(scope="module")
def pickles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One pickle per fixture, in its native protocol (3 for SG2-ADA, 4 for SG3)."""
    out = tmp_path_factory.mktemp("pkl")
    return {name: write_stylegan_pkl(FIXTURES / name, out / f"{name}.pkl") for name in ALL}


def _cases(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / name / "cases.safetensors"))


def _config(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


def _check_all_cases(gen: StyleGANGenerator, name: str) -> None:
    cases = _cases(name)
    z, c = cases["z"], cases.get("c")
    for key, psi, cutoff in WS_CASES:
        ws = gen.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        assert ws.shape == cases[key].shape
        err = (ws - cases[key]).abs().max().item()
        assert err < WS_TOL, f"{name} {key}: {err}"
    for key, ws_key, noise_mode in IMG_CASES:
        img = gen.synthesis(cases[ws_key], noise_mode=noise_mode)
        assert img.dtype == torch.float32 and img.shape == cases[key].shape
        err = (img - cases[key]).abs().max().item()
        assert err < IMG_TOL, f"{name} {key}: {err}"
    img = gen.generate(z, c, truncation_psi=0.5, noise_mode="const")
    err = (img - cases["img_G_forward_psi0.5_const"]).abs().max().item()
    assert err < IMG_TOL, f"{name} G_forward: {err}"


@pytest.mark.parametrize("name", ALL)
def test_every_fixture_pickle_loads(pickles: dict[str, Path], name: str) -> None:
    cfg = _config(name)
    family = "stylegan3" if name in SG3 else "stylegan2"
    if family == "stylegan3":
        pytest.importorskip("sfvq.generators.stylegan3")
    gen = load_stylegan_pkl(pickles[name])
    assert isinstance(gen, Generator) and isinstance(gen, StyleGANGenerator)
    assert gen.family == family
    assert gen.name == str(pickles[name])
    for attr in ("z_dim", "c_dim", "w_dim", "num_ws", "img_resolution", "img_channels"):
        assert getattr(gen, attr) == cfg["G_ema"][attr], attr
    assert gen.spaces == ("z", "w", "w+", "s") and gen.layers == ("w",)
    assert gen.device == torch.device("cpu")
    assert gen.training_set_kwargs == cfg["training_set_kwargs"]


@pytest.mark.parametrize("name", SG2)
def test_sg2_pickles_reproduce_every_case(pickles: dict[str, Path], name: str) -> None:
    _check_all_cases(load_stylegan_pkl(pickles[name]), name)


@pytest.mark.parametrize("name", SG3)
def test_sg3_pickles_reproduce_every_case(pickles: dict[str, Path], name: str) -> None:
    pytest.importorskip("sfvq.generators.stylegan3")
    gen = load_stylegan_pkl(pickles[name])
    _check_all_cases(gen, name)
    cases = _cases(name)
    rnd = gen.synthesis(cases["ws_psi1"], noise_mode="random")
    assert (rnd - cases["img_const_psi1"]).abs().max().item() < IMG_TOL  # SG3 has no noise inputs


@pytest.mark.parametrize("name", SG2)
def test_sg2_pickle_in_other_layouts(tmp_path: Path, name: str) -> None:
    path = write_stylegan_pkl(
        FIXTURES / name, tmp_path / "g.pkl", protocol=4, numpy_module="numpy._core", layout="strided"
    )
    _check_all_cases(load_stylegan_pkl(path, device="cpu"), name)


@pytest.mark.parametrize("name", SG2)
def test_sg2_random_noise(pickles: dict[str, Path], name: str) -> None:
    gen = load_stylegan_pkl(pickles[name])
    ws = _cases(name)["ws_psi1"]
    torch.manual_seed(0)
    rnd = gen.synthesis(ws, noise_mode="random")
    const = gen.synthesis(ws, noise_mode="const")
    assert rnd.shape == const.shape and torch.isfinite(rnd).all()
    assert (rnd - const).abs().max().item() > 0.1


@pytest.mark.parametrize("name", SG2)
def test_fixture_dir_builder_matches(name: str) -> None:
    gen = stylegan_from_fixture_dir(FIXTURES / name)
    assert gen.family == "stylegan2"
    _check_all_cases(gen, name)


def test_fixture_dir_builder_sg3() -> None:
    pytest.importorskip("sfvq.generators.stylegan3")
    gen = stylegan_from_fixture_dir(FIXTURES / "sg3_t")
    assert gen.family == "stylegan3" and gen.num_ws == 16


def test_fixture_dir_builder_errors(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError, match="lacks config.json"):
        stylegan_from_fixture_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    shutil.copy(FIXTURES / "sg2ada_uncond" / "weights.safetensors", tmp_path / "weights.safetensors")
    with pytest.raises(GeneratorError, match="init_kwargs"):
        stylegan_from_fixture_dir(tmp_path)


# -- the Generator protocol ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cond(pickles: dict[str, Path]) -> StyleGANGenerator:
    return load_stylegan_pkl(pickles["sg2ada_cond"])


@pytest.fixture(scope="module")
def uncond(pickles: dict[str, Path]) -> StyleGANGenerator:
    return load_stylegan_pkl(pickles["sg2ada_uncond"])


def test_features_and_synthesis_from(cond: StyleGANGenerator) -> None:
    cases = _cases("sg2ada_cond")
    feats = cond.features(cases["z"], cases["c"], "w")
    assert torch.equal(feats, cond.mapping(cases["z"], cases["c"]))
    assert torch.equal(cond.synthesis_from("w", feats), cond.synthesis(feats))
    with pytest.raises(ValueError, match="unknown layer 'b8'"):
        cond.features(cases["z"], cases["c"], "b8")
    with pytest.raises(ValueError, match="unknown layer"):
        cond.synthesis_from("z", feats)


def test_outputs_have_no_grad_and_to_uint8(uncond: StyleGANGenerator) -> None:
    z = torch.randn(3, uncond.z_dim, requires_grad=True)
    img = uncond.generate(z)
    assert not img.requires_grad
    arr = to_uint8(img)
    assert arr.shape == (3, 32, 32, 3) and arr.dtype == np.uint8


def test_batching_gives_the_same_images(uncond: StyleGANGenerator) -> None:
    ws = _cases("sg2ada_uncond")["ws_psi1"]
    whole = uncond.synthesis(ws)
    uncond.max_batch = 3
    try:
        parts = uncond.synthesis(ws)
    finally:
        uncond.max_batch = 32
    assert (whole - parts).abs().max().item() < 1e-5


def test_single_w_is_broadcast(uncond: StyleGANGenerator) -> None:
    ws = _cases("sg2ada_uncond")["ws_psi1"]
    w = ws[:, 0]  # (N, W): ws_psi1 repeats the same w on every layer
    assert torch.equal(uncond.synthesis(w), uncond.synthesis(ws))


def test_bad_shapes_are_explained(uncond: StyleGANGenerator) -> None:
    with pytest.raises(ValueError, match=r"z must have shape \(N, 32\), got \(2, 31\)"):
        uncond.mapping(torch.zeros(2, 31))
    with pytest.raises(ValueError, match=r"ws must have shape \(N, 8, 32\)"):
        uncond.synthesis(torch.zeros(2, 5, 32))
    with pytest.raises(ValueError, match="noise_mode"):
        uncond.synthesis(torch.zeros(2, 8, 32), noise_mode="loud")
    with pytest.raises(ValueError, match="truncation_cutoff"):
        uncond.mapping(torch.zeros(2, 32), truncation_psi=0.5, truncation_cutoff=-1)


def test_class_labels(cond: StyleGANGenerator) -> None:
    z = _cases("sg2ada_cond")["z"]
    onehot = torch.nn.functional.one_hot(torch.tensor([2, 2, 2, 2]), 5).float()
    ref = cond.mapping(z, onehot)
    assert torch.equal(cond.mapping(z, 2), ref)
    assert torch.equal(cond.mapping(z, [2, 2, 2, 2]), ref)
    assert torch.equal(cond.mapping(z, torch.tensor([2, 2, 2, 2])), ref)
    assert not torch.equal(cond.mapping(z, 3), ref)


@pytest.mark.parametrize(
    ("c", "message"),
    [
        (5, r"class index 5 is out of range .*c_dim=5: valid classes 0\.\.4"),
        (-1, "class index -1 is out of range"),
        ([0, 1, 7, 2], "class index 7 is out of range"),
        (None, r"conditional \(c_dim=5\)"),
        (torch.zeros(4, 3), r"c must have shape \(4, 5\), got \(4, 3\)"),
        (torch.zeros(3, 5), r"c must have shape \(4, 5\), got \(3, 5\)"),
        (torch.tensor([1, 2]), r"class indices must have shape \(4,\)"),
        (True, "class must be an int"),
    ],
)
def test_wrong_class_for_conditional_model(cond: StyleGANGenerator, c: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cond.mapping(torch.zeros(4, 32), c)


def test_unconditional_model_refuses_a_class(uncond: StyleGANGenerator) -> None:
    z = torch.zeros(2, 32)
    assert torch.equal(uncond.mapping(z, torch.zeros(2, 0)), uncond.mapping(z))
    with pytest.raises(ValueError, match=r"unconditional \(c_dim=0\)"):
        uncond.mapping(z, 1)


# -- pickle-level problems -------------------------------------------------------------------------


def test_pickle_without_g_ema(tmp_path: Path) -> None:
    path = write_stylegan_pkl(FIXTURES / "sg2ada_uncond", tmp_path / "g.pkl", include_g_ema=False)
    with pytest.raises(GeneratorError, match=r"no 'G_ema' entry \(found keys: 'training_set_kwargs', 'G'"):
        load_stylegan_pkl(path)


def test_conv_clamp_resolved_from_modules(tmp_path: Path) -> None:
    """Kwargs without conv_clamp: the value comes from the resolved layer state, not a repo default."""
    d = tmp_path / "fx"
    shutil.copytree(FIXTURES / "sg2ada_cond", d)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["modules"]["G_ema"]["init_kwargs"]["synthesis_kwargs"]["conv_clamp"]
    (d / "config.json").write_text(json.dumps(cfg))
    gen = load_stylegan_pkl(write_stylegan_pkl(d, tmp_path / "g.pkl"))
    assert gen.network.synthesis.b4.conv1.conv_clamp == 256
    _check_all_cases(gen, "sg2ada_cond")


# -- real NVIDIA-written pickles, when someone provides them ---------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_real_official_pickles_if_available(name: str) -> None:
    """STYLEGAN_FIXTURE_PKL_DIR: a folder of ``<fixture name>.pkl`` files written by the official code."""
    folder = os.environ.get("STYLEGAN_FIXTURE_PKL_DIR")
    if not folder:
        pytest.skip("STYLEGAN_FIXTURE_PKL_DIR is not set (real NVIDIA pickles are not distributed)")
    path = Path(folder) / f"{name}.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    if name in SG3:
        pytest.importorskip("sfvq.generators.stylegan3")
    _check_all_cases(load_stylegan_pkl(path), name)
