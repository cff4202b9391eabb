"""Each adapter's quirks live behind the Generator protocol: BigGAN's z prior and feature-space context,
rosinality's style weights, the defaults of GeneratorBase, and the checks that keep callers generic."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_biggan import SMALL_CONFIG, make_state_dict, write_biggan
from test_rosinality import SMALL, make_g_ema

from sfvq.baselines.latentclr import feature_layers
from sfvq.baselines.sefa import sefa, style_affines
from sfvq.generators import Generator, GeneratorError, load_generator
from sfvq.generators.base import GeneratorBase
from sfvq.generators.biggan import truncated_noise
from sfvq.generators.rosinality import RosinalityGenerator
from sfvq.latents import sample_latents
from sfvq.spaces import LatentSpace

SFVQ = Path(__file__).resolve().parents[2] / "sfvq"


@pytest.fixture(scope="module")
def biggan(tmp_path_factory: pytest.TempPathFactory):
    path = write_biggan(tmp_path_factory.mktemp("bg") / "tiny", SMALL_CONFIG, make_state_dict(SMALL_CONFIG))
    return load_generator(path)


def _one_hot(n: int, k: int, classes: int = 10) -> torch.Tensor:
    c = torch.zeros(n, classes)
    c[:, k] = 1
    return c


def test_biggan_feature_space_conditions_curve_points_on_the_prior_mean(biggan) -> None:
    sp = LatentSpace(biggan, "features", layer="block2", truncation_psi=0.6, class_idx=3)
    full = sp.encode_seeds([1, 5])  # (2, 1, F)
    z = torch.cat([truncated_noise(1, biggan.z_dim, 0.6, s) for s in (1, 5)])  # (2, z_dim)
    f = biggan.features(z, _one_hot(2, 3), "block2", truncation_psi=0.6)  # (2, C, H, W)
    torch.testing.assert_close(full[:, 0], f.flatten(1))
    sp.feature_shape = tuple(f.shape[1:])
    want = biggan.synthesis_from(
        "block2", f, z=torch.zeros(2, biggan.z_dim), c=_one_hot(2, 3), truncation=0.6
    )
    torch.testing.assert_close(sp.render_full(full), want)
    # The prior's mean is not the seed's own z: rendering with it differs from the plain forward pass.
    plain = biggan.synthesis(z, c=_one_hot(2, 3), truncation=0.6)
    assert not torch.allclose(sp.render_full(full), plain, atol=1e-4)
    with pytest.raises(ValueError, match="truncation_cutoff must be None"):
        biggan.features_of_z(z, _one_hot(2, 3), "block2", 0.6, truncation_cutoff=1)


def test_biggan_z_space_is_the_plain_forward_pass(biggan) -> None:
    sp = LatentSpace(biggan, "z", truncation_psi=0.4, class_idx=7)
    full = sp.encode_seeds([2, 9])
    z = torch.cat([truncated_noise(1, biggan.z_dim, 0.4, s) for s in (2, 9)])
    torch.testing.assert_close(full[:, 0], z)
    torch.testing.assert_close(sp.render_full(full), biggan.synthesis(z, c=_one_hot(2, 7), truncation=0.4))


def test_biggan_sidecar_says_how_z_was_drawn(biggan, tmp_path: Path) -> None:
    sample_latents(
        biggan, 3, seed=1, truncation_psi=0.5, class_idx=0, progress=False, out_path=tmp_path / "a.npy"
    )
    sample_latents(
        biggan, seeds=[4], truncation_psi=0.5, class_idx=0, progress=False, out_path=tmp_path / "b.npy"
    )
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a["rng"] == "sfvq.generators.biggan.truncated_noise(n, z_dim, psi, seed), one stream"
    assert b["rng"] == "sfvq.generators.biggan.truncated_noise(1, z_dim, psi, seed) per seed"
    assert a["truncation_applied"] is True and b["truncation_applied"] is True
    with pytest.raises(ValueError, match=r"truncation must lie in \(0, 1\]"):
        sample_latents(
            biggan, 3, truncation_psi=1.5, class_idx=0, progress=False, out_path=tmp_path / "c.npy"
        )
    assert not (tmp_path / "c.npy").exists()


def test_biggan_declares_no_baseline_support(biggan) -> None:
    assert isinstance(biggan, Generator) and biggan.truncation_in_z
    with pytest.raises(GeneratorError, match=f"{re.escape(biggan.name)} exposes no linear first layer"):
        sefa(biggan, k=2)
    with pytest.raises(ValueError, match="LatentCLR needs a differentiable intermediate layer"):
        feature_layers(biggan)
    with pytest.raises(GeneratorError, match="has no style-affine layers"):
        biggan.style_weights()


def test_rosinality_style_weights_are_the_modulations_each_ws_entry_feeds(tmp_path: Path) -> None:
    sd = make_g_ema(SMALL, style_dim=16, n_mlp=1, seed=0)
    G = RosinalityGenerator(sd, torch.zeros(16), name="ros")
    found = G.style_weights(include_torgb=True)
    seen: dict[str, torch.Tensor] = {}
    modconv = G._modconv

    def record(x, prefix, style, demodulate, up=False):
        seen[f"{prefix}.conv.modulation.weight"] = style.clone()
        return modconv(x, prefix, style, demodulate, up)

    G._modconv = record
    base = torch.zeros(1, G.num_ws, G.w_dim)
    G.synthesis(base)
    ref = dict(seen)
    for i in range(G.num_ws):
        ws = base.clone()
        ws[0, i] = 1.0
        G.synthesis(ws)
        moved = {k for k, v in seen.items() if not torch.equal(v, ref[k])}
        assert moved == {name for j, name, _ in found if j == i}, f"W+ entry {i}"
    convs = style_affines(G)
    assert [i for i, _, _ in convs] == list(range(G.num_ws - 1)) and all(
        "to_rgb" not in n for _, n, _ in convs
    )
    d = sefa(G, k=3, layers=(0, 2))
    assert d.meta["space"]["kind"] == "w" and d.dim == 16 and len(d.meta["weights"]) == 2


class _Minimal(GeneratorBase):
    """Only the forward pass: everything else is GeneratorBase's."""

    name, z_dim, w_dim, num_ws, c_dim = "minimal", 3, None, 1, 0
    img_resolution, img_channels, spaces, layers = 1, 1, ("z",), ("x",)
    device = torch.device("cpu")

    def mapping(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        return (z * truncation_psi)[:, None]

    def synthesis(self, ws, noise_mode="const"):
        self.check_noise_mode(noise_mode)
        return ws[:, 0, :1, None, None]

    def features(self, z, c, layer):
        return z

    def synthesis_from(self, layer, features, noise_mode="const"):
        return features[:, :1, None, None]


def test_generator_base_defaults() -> None:
    G = _Minimal()
    assert isinstance(G, Generator)
    np.testing.assert_array_equal(G.z_for_seeds([3]), np.random.RandomState(3).randn(1, 3).astype(np.float32))
    parts = list(G.z_stream(5, seed=2, batch_size=2))
    assert [p.shape for p in parts] == [(2, 3), (2, 3), (1, 3)]
    np.testing.assert_array_equal(
        np.concatenate(parts), np.random.RandomState(2).randn(5, 3).astype(np.float32)
    )
    z = torch.ones(2, 3)
    torch.testing.assert_close(G.features_of_z(z, None, "x", truncation_psi=0.5), z * 0.5)  # no W: mapped
    torch.testing.assert_close(G.render_features("x", -z), -z[:, :1, None, None])  # not a ReLU layer
    with pytest.raises(ValueError, match="noise_mode must be one of const, random, none, got 'x'"):
        G.synthesis(z[:, None], noise_mode="x")
    for call, what in (
        (G.style_weights, "no style-affine layers"),
        (G.first_layer_map, "no linear first layer"),
        (lambda: G.feature_fn("x"), "no differentiable intermediate layer"),
        (lambda: G.differentiable_mapping(z), "has no gradient path"),
        (lambda: G.differentiable_synthesis(z[:, None]), "has no gradient path"),
        (lambda: G.differentiable_render_features("x", z), "has no gradient path"),
    ):
        with pytest.raises(GeneratorError, match=f"minimal .*{what}"):
            call()
    assert G.differentiable_layers == () and G.nonnegative_layers == () and not G.truncation_in_z
    assert not G.has_gradient_path and G.noise_inputs() == []


def test_nothing_outside_the_adapters_branches_on_an_adapter() -> None:
    """The issue's check: outside sfvq/generators no code tests a generator's class or reaches into an
    adapter's internals (its network, its tensors); what differs is asked through the protocol."""
    pattern = (
        r"__name__ ==|_is_biggan|\._p\b|isinstance\([^)]*(DCGAN|BigGAN|Rosinality|StyleGAN)Generator"
        r"|(DCGAN|BigGAN|Rosinality)Generator|\bG\.(net|network)\b|getattr\(G, .(net|network|_p).\)"
    )
    out = subprocess.run(
        ["grep", "-rnE", pattern, str(SFVQ), "--include=*.py"], capture_output=True, text=True, check=False
    ).stdout
    hits = [line for line in out.splitlines() if not line.startswith(f"{SFVQ}/generators/")]
    assert not hits, "\n".join(hits)
