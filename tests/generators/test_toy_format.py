"""A new generator format needs one adapter module and one registry entry, nothing else.

The adapter below is written to a file in the test's temporary directory, imported from there, and
registered with ``register_format``; the generator it loads is then sampled, rendered through both kinds
of LatentSpace and given to SeFa and LatentCLR, all without sfvq knowing the format.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from sfvq.baselines.latentclr import train_latentclr
from sfvq.baselines.sefa import sefa
from sfvq.generators import Generator, GeneratorError, generator_formats, load_generator
from sfvq.generators.registry import generator_sha256, register_format, unregister_format
from sfvq.io import read_json
from sfvq.latents import sample_latents, z_for_seeds
from sfvq.spaces import LatentSpace

# A complete adapter for "toygan" files: a magic line, then JSON with two weight matrices.
# z (N, 4) -> hidden = relu(W1 z) (N, 8) -> image = tanh(W2 hidden) as (N, 3, 2, 2). Its z prior is
# its own (uniform with unit variance), its hidden layer ends in a ReLU, SeFa reads W1 and LatentCLR
# reads the hidden layer.
ADAPTER = """
import json
import math

import numpy as np
import torch

from sfvq.generators.base import GeneratorBase, GeneratorError

MAGIC = b"TOYGAN\\n"


def sniff(path):
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def load(path, device=None):
    raw = path.read_bytes()[len(MAGIC):]
    try:
        d = json.loads(raw)
        w1, w2 = torch.tensor(d["w1"]), torch.tensor(d["w2"])
    except (ValueError, KeyError) as e:
        raise GeneratorError(f"{path}: not a readable toygan file ({e})") from e
    return ToyGenerator(w1, w2, name=str(path))


class ToyGenerator(GeneratorBase):
    w_dim = None
    num_ws = 1
    c_dim = 0
    img_resolution = 2
    img_channels = 3
    spaces = ("z",)
    layers = ("hidden",)
    nonnegative_layers = ("hidden",)
    noise_modes = ("const",)

    def __init__(self, w1, w2, name):
        self.w1, self.w2, self.name = w1.float(), w2.float(), name  # (8, z_dim), (12, 8)
        self.z_dim = self.w1.shape[1]

    @property
    def device(self):
        return self.w1.device

    def mapping(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        return (z * truncation_psi)[:, None, :]  # (N, 1, z_dim)

    def features(self, z, c, layer):
        return torch.relu(z @ self.w1.T)  # (N, 8)

    def synthesis_from(self, layer, features, noise_mode="const"):
        self.check_noise_mode(noise_mode)
        return torch.tanh(features @ self.w2.T).reshape(-1, 3, 2, 2)

    def synthesis(self, ws, noise_mode="const"):
        return self.synthesis_from("hidden", self.features(ws[:, 0], None, "hidden"), noise_mode)

    # its own prior: uniform on [-sqrt(3), sqrt(3)] (unit variance)
    def z_stream(self, n, seed, truncation_psi=1.0, batch_size=1024):
        rs = np.random.RandomState(seed)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            yield rs.uniform(-math.sqrt(3), math.sqrt(3), (b, self.z_dim)).astype(np.float32)

    def z_for_seeds(self, seeds, truncation_psi=1.0):
        rows = [next(self.z_stream(1, s)) for s in seeds]
        return np.concatenate(rows) if rows else np.zeros((0, self.z_dim), np.float32)

    def z_rng_description(self, per_seed):
        return "toygan uniform per seed" if per_seed else "toygan uniform stream"

    # what the direction baselines read
    def first_layer_map(self, fold_batchnorm=True):
        return ("w1",), self.w1.double()  # (8, z_dim)

    @property
    def differentiable_layers(self):
        return self.layers

    def feature_fn(self, layer):
        w1 = self.w1
        return lambda z: torch.relu(z @ w1.T)  # (N, 8)
"""


@pytest.fixture
def toy(tmp_path: Path) -> ModuleType:
    """The adapter module, imported from its own file and registered as the "toygan" format."""
    source = tmp_path / "toygan_adapter.py"
    source.write_text(ADAPTER)
    spec = importlib.util.spec_from_file_location("toygan_adapter", source)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["toygan_adapter"] = mod
    spec.loader.exec_module(mod)
    register_format("toygan", mod.sniff, mod.load, label="toygan file", description="a .toygan file")
    yield mod
    unregister_format("toygan")
    sys.modules.pop("toygan_adapter", None)


@pytest.fixture
def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    w1 = rng.randn(8, 4)
    w1[:, 2] *= 5  # z[2] drives the hidden layer far more than the rest: SeFa's top direction
    return w1, rng.randn(12, 8) * 0.5


@pytest.fixture
def toy_file(tmp_path: Path, weights) -> Path:
    path = tmp_path / "model.bin"  # the name says nothing: the content is sniffed
    path.write_bytes(
        b"TOYGAN\n" + json.dumps({"w1": weights[0].tolist(), "w2": weights[1].tolist()}).encode()
    )
    return path


def _forward(z: np.ndarray, weights, psi: float = 1.0) -> np.ndarray:
    """The toy network in numpy: images (N, 3, 2, 2)."""
    w1, w2 = weights
    hidden = np.maximum((z * psi) @ w1.T, 0)
    return np.tanh(hidden @ w2.T).reshape(-1, 3, 2, 2)


def test_the_registry_loads_the_new_format(toy, toy_file: Path) -> None:
    assert [f.name for f in generator_formats()][-1] == "toygan"
    G = load_generator(toy_file)
    assert isinstance(G, toy.ToyGenerator) and isinstance(G, Generator)
    assert (G.z_dim, G.spaces, G.name) == (4, ("z",), str(toy_file))
    assert generator_sha256(toy_file) == hashlib.sha256(toy_file.read_bytes()).hexdigest()
    bad = toy_file.with_name("broken.toy")
    bad.write_bytes(b"TOYGAN\n{not json")
    with pytest.raises(GeneratorError, match="not a readable toygan file"):
        load_generator(bad)
    other = toy_file.with_name("other.bin")
    other.write_bytes(b"\x00\x01\x02")
    with pytest.raises(GeneratorError, match=r"Expected .*, a \.toygan file, or a built-in name"):
        load_generator(other)


def test_the_format_is_gone_once_unregistered(tmp_path: Path, toy_file: Path) -> None:
    with pytest.raises(GeneratorError, match="unrecognised generator format"):
        load_generator(toy_file)  # no "toy" fixture here: nothing knows the format


def test_sampling_uses_the_adapters_own_prior(toy, toy_file: Path, tmp_path: Path) -> None:
    G = load_generator(toy_file)
    lat = sample_latents(G, 7, "z", seed=3, batch_size=3, progress=False, out_path=tmp_path / "z.npy")
    want = np.random.RandomState(3).uniform(-np.sqrt(3), np.sqrt(3), (7, 4)).astype(np.float32)
    np.testing.assert_array_equal(lat, want)
    meta = read_json(tmp_path / "z.json")
    assert meta["rng"] == "toygan uniform stream" and meta["truncation_applied"] is False
    by_seed = sample_latents(G, space="z", seeds=[5, 6], progress=False)
    np.testing.assert_array_equal(
        by_seed[1], np.random.RandomState(6).uniform(-np.sqrt(3), np.sqrt(3), 4).astype(np.float32)
    )
    np.testing.assert_array_equal(by_seed, z_for_seeds(G, [5, 6]))


def test_latent_spaces_render_it_exactly(toy, toy_file: Path, weights) -> None:
    G = load_generator(toy_file)
    z = z_for_seeds(G, [1, 2])  # (2, 4)
    zs = LatentSpace(G, "z", truncation_psi=0.5)
    np.testing.assert_allclose(
        zs.render_full(zs.encode_seeds([1, 2])).numpy(), _forward(z, weights, 0.5), atol=1e-6
    )
    fs = LatentSpace(G, "features", truncation_psi=0.5)
    V = fs.sample(50, seed=0, progress=False, pca_max=8)
    assert fs.layer == "hidden" and fs.feature_shape == (8,) and V.shape == (50, fs.dim)
    full = fs.encode_seeds([1, 2])
    np.testing.assert_allclose(fs.render_full(full).numpy(), _forward(z, weights, 0.5), atol=1e-6)
    # An edit that steps below zero in the ReLU layer renders clamped, as the adapter declares.
    edited = fs.edit(full, torch.from_numpy(V[0]), -50.0)
    hidden = np.maximum(edited[:, 0].numpy(), 0)
    np.testing.assert_allclose(
        fs.render_full(edited).numpy(), np.tanh(hidden @ weights[1].T).reshape(-1, 3, 2, 2), atol=1e-5
    )
    assert (edited[:, 0] < 0).any()
    with pytest.raises(ValueError, match="noise_mode must be one of const"):
        LatentSpace(G, "z", noise_mode="random").render_full(full[:, :, :4])


def test_sefa_and_latentclr_use_what_the_adapter_declares(toy, toy_file: Path, weights) -> None:
    G = load_generator(toy_file)
    d = sefa(G, k=2)
    assert d.meta["space"]["kind"] == "z" and d.meta["weights"] == ["w1"] and d.dim == 4
    _, _, vt = np.linalg.svd(weights[0])  # SeFa's directions: right singular vectors of W1
    np.testing.assert_allclose(np.abs(d.vectors.double().numpy() @ vt[:2].T).diagonal(), 1.0, atol=1e-5)
    assert abs(float(d.vectors[0, 2])) > 0.9
    res = train_latentclr(G, k=2, steps=4, batch_size=4, pool=64, seed=1)
    assert res.directions.dim == 4 and res.settings["layer"] == "hidden"
    assert res.directions.meta["space"]["kind"] == "z" and np.isfinite(res.history).all()


def test_register_format_refuses_a_taken_name(toy) -> None:
    with pytest.raises(ValueError, match="'toygan' is already registered"):
        register_format("toygan", toy.sniff, toy.load)
    with pytest.raises(ValueError, match="already registered"):
        register_format("biggan", toy.sniff, toy.load)
    with pytest.raises(ValueError, match="no generator format named 'nope'"):
        unregister_format("nope")
