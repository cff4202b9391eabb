"""builtin:faces-dcgan: our network rebuilt from the gan-face-generate weights, and the DCGAN builder."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from sfvq.generators.base import Generator, GeneratorError, to_uint8
from sfvq.generators.dcgan import (
    FACES_DCGAN_KEY,
    FACES_DCGAN_PIP,
    DCGANGenerator,
    build_dcgan,
    faces_dcgan_weights_path,
    load_faces_dcgan,
)


@pytest.fixture(scope="module")
def G() -> DCGANGenerator:
    return load_faces_dcgan()


@pytest.fixture(scope="module")
def raw_state() -> dict[str, torch.Tensor]:
    return torch.load(faces_dcgan_weights_path(), map_location="cpu", weights_only=True)[FACES_DCGAN_KEY]


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 100, generator=torch.Generator().manual_seed(seed))


def test_attributes_and_protocol(G: DCGANGenerator) -> None:
    assert isinstance(G, Generator)
    assert G.name == "builtin:faces-dcgan"
    assert (G.z_dim, G.w_dim, G.num_ws, G.c_dim) == (100, None, 1, 0)
    assert (G.img_resolution, G.img_channels) == (64, 3)
    assert G.spaces == ("z",)
    assert G.layers == ("block1", "block2", "block3", "block4")
    assert G.device == torch.device("cpu")
    assert not G.net.training
    assert all(not p.requires_grad for p in G.net.parameters())


def test_matches_functional_reference(G: DCGANGenerator, raw_state: dict[str, torch.Tensor]) -> None:
    """An independent forward pass with torch.nn.functional straight from the raw state dict."""
    z = _z(5)
    x = z[:, :, None, None]  # (N, 100, 1, 1)
    for i in range(4):
        stride, padding = (1, 0) if i == 0 else (2, 1)
        x = F.conv_transpose2d(x, raw_state[f"main.{3 * i}.weight"], stride=stride, padding=padding)
        bn = f"main.{3 * i + 1}"
        x = F.batch_norm(
            x,
            raw_state[f"{bn}.running_mean"],
            raw_state[f"{bn}.running_var"],
            raw_state[f"{bn}.weight"],
            raw_state[f"{bn}.bias"],
            training=False,
            eps=1e-5,
        )
        x = F.relu(x)
    ref = torch.tanh(
        F.conv_transpose2d(x, raw_state["main.12.weight"], stride=2, padding=1)
    )  # (N, 3, 64, 64)
    out = G.synthesis(G.mapping(z))
    assert out.shape == (5, 3, 64, 64)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_output_range_deterministic_and_batch_independent(G: DCGANGenerator) -> None:
    z = _z(6, seed=1)
    a = G.synthesis(G.mapping(z))
    b = G.synthesis(G.mapping(z))
    assert torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert a.std() > 0.1  # not a constant image
    single = G.synthesis(G.mapping(z[2:3]))  # eval-mode BatchNorm: no mixing across the batch
    torch.testing.assert_close(single[0], a[2], atol=1e-5, rtol=0)
    u8 = to_uint8(a)
    assert u8.shape == (6, 64, 64, 3)


@pytest.mark.parametrize("layer", ["block1", "block2", "block3", "block4"])
def test_synthesis_from_features_is_exact(G: DCGANGenerator, layer: str) -> None:
    z = _z(4, seed=2)
    full = G.synthesis(G.mapping(z))
    feats = G.features(z, None, layer)
    k = int(layer[-1]) - 1
    res = 4 * 2**k
    assert feats.shape == (4, 512 // 2**k, res, res)
    assert feats.min() >= 0  # after ReLU
    assert torch.equal(G.synthesis_from(layer, feats), full)


def test_mapping_truncation(G: DCGANGenerator) -> None:
    z = _z(3, seed=3)
    ws = G.mapping(z)
    assert ws.shape == (3, 1, 100)
    assert torch.equal(ws[:, 0], z)
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.5)[:, 0], 0.5 * z)
    assert torch.equal(G.mapping(z, truncation_psi=0.5, truncation_cutoff=0)[:, 0], z)
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.5, truncation_cutoff=1)[:, 0], 0.5 * z)


def test_bad_inputs(G: DCGANGenerator) -> None:
    z = _z(2)
    with pytest.raises(ValueError, match=r"\(N, 100\)"):
        G.mapping(torch.zeros(2, 99))
    with pytest.raises(ValueError, match="unconditional"):
        G.mapping(z, torch.ones(2, 3))
    with pytest.raises(ValueError, match="block1, block2"):
        G.features(z, None, "block9")
    with pytest.raises(ValueError, match="block2 features"):
        G.synthesis_from("block2", torch.zeros(2, 512, 4, 4))
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(G.mapping(z), noise_mode="loud")
    with pytest.raises(ValueError, match=r"\(N, 1, 100\)"):
        G.synthesis(z)
    with pytest.raises(ValueError, match="finite"):
        G.mapping(z, truncation_psi=float("nan"))


def test_does_not_import_the_package() -> None:
    before = "gan_face_generate" in sys.modules
    load_faces_dcgan()
    assert ("gan_face_generate" in sys.modules) == before


def test_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *args, **kwargs):
        return None if name == "gan_face_generate" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(GeneratorError) as info:
        load_faces_dcgan()
    assert FACES_DCGAN_PIP in str(info.value)
    assert "not installed" in str(info.value)


def _fake_package(monkeypatch: pytest.MonkeyPatch, location) -> None:
    real = importlib.util.find_spec
    spec = types.SimpleNamespace(submodule_search_locations=[str(location)])

    def fake(name: str, *args, **kwargs):
        return spec if name == "gan_face_generate" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_package_without_weights(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(GeneratorError, match="no weights.tar"):
        load_faces_dcgan()


def test_corrupt_weights(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    full = faces_dcgan_weights_path().read_bytes()
    (tmp_path / "weights.tar").write_bytes(full[: len(full) // 3])  # truncated archive
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(GeneratorError, match="cannot read"):
        load_faces_dcgan()


def test_weights_without_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    torch.save({"netD_state_dict": {}}, tmp_path / "weights.tar")
    _fake_package(monkeypatch, tmp_path)
    with pytest.raises(GeneratorError, match="netG_state_dict.*netD_state_dict"):
        load_faces_dcgan()


def _small_state(z_dim: int = 8, channels: tuple[int, ...] = (16, 8), nc: int = 3) -> dict[str, torch.Tensor]:
    """A random state dict in the main.<i>.<param> layout."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    in_ch = z_dim
    for i, ch in enumerate(channels):
        sd[f"main.{3 * i}.weight"] = torch.randn(in_ch, ch, 4, 4, generator=g) * 0.2
        sd[f"main.{3 * i + 1}.weight"] = torch.rand(ch, generator=g) + 0.5
        sd[f"main.{3 * i + 1}.bias"] = torch.randn(ch, generator=g) * 0.1
        sd[f"main.{3 * i + 1}.running_mean"] = torch.randn(ch, generator=g) * 0.1
        sd[f"main.{3 * i + 1}.running_var"] = torch.rand(ch, generator=g) + 0.5
        sd[f"main.{3 * i + 1}.num_batches_tracked"] = torch.tensor(10)
        in_ch = ch
    sd[f"main.{3 * len(channels)}.weight"] = torch.randn(in_ch, nc, 4, 4, generator=g) * 0.2
    return sd


def test_build_small_dcgan_from_layout() -> None:
    net = build_dcgan(_small_state(z_dim=8, channels=(16, 8), nc=1))
    G = DCGANGenerator(net, "small")
    assert (G.z_dim, G.img_resolution, G.img_channels, G.layers) == (8, 16, 1, ("block1", "block2"))
    img = G.synthesis(G.mapping(torch.randn(2, 8)))
    assert img.shape == (2, 1, 16, 16)


def test_build_rejects_bad_layouts() -> None:
    sd = _small_state()
    del sd["main.1.running_var"]
    with pytest.raises(GeneratorError, match=r"missing keys \['main.1.running_var'\]"):
        build_dcgan(sd)

    sd = _small_state()
    sd["main.2.weight"] = torch.ones(3)
    with pytest.raises(GeneratorError, match=r"unexpected keys \['main.2.weight'\]"):
        build_dcgan(sd)

    sd = _small_state()
    sd["module.extra"] = torch.ones(1)
    with pytest.raises(GeneratorError, match="module.extra"):
        build_dcgan(sd)

    sd = _small_state()
    sd["main.4.bias"] = torch.zeros(5)
    with pytest.raises(GeneratorError, match=r"misshapen.*blocks.1.1.bias: \(5,\)"):
        build_dcgan(sd)

    sd = _small_state()
    sd["main.9.weight"] = sd.pop("main.6.weight")
    with pytest.raises(GeneratorError, match="conv weights at"):
        build_dcgan(sd)
