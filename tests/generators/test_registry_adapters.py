"""The registry, latent sampling and `sfvq sample` / `sfvq generate` on real (tiny) rosinality and BigGAN
files, built with the helpers of those adapters' own tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_biggan import SMALL_CONFIG, make_state_dict, write_biggan
from test_rosinality import SMALL, make_g_ema

from sfvq.cli import main
from sfvq.generators import load_generator
from sfvq.generators.base import to_uint8
from sfvq.generators.biggan import BigGANGenerator, truncated_noise
from sfvq.generators.rosinality import RosinalityGenerator
from sfvq.io import read_json
from sfvq.latents import latents_from_z, sample_latents, z_for_seeds, z_from_seeds


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ros_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sd = make_g_ema(SMALL, style_dim=64, n_mlp=2, seed=1)
    path = tmp_path_factory.mktemp("ros") / "small.pt"
    torch.save({"g_ema": sd, "latent_avg": torch.randn(64, generator=torch.Generator().manual_seed(2))}, path)
    return path


@pytest.fixture(scope="module")
def biggan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_biggan(tmp_path_factory.mktemp("bg") / "tiny", SMALL_CONFIG, make_state_dict(SMALL_CONFIG))


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_rosinality_through_registry_and_sample(ros_path: Path, tmp_path: Path) -> None:
    G = load_generator(ros_path)
    assert isinstance(G, RosinalityGenerator)
    res = _invoke(
        "sample", "--network", ros_path, "--space", "w+", "--n", 6, "--trunc", "0.5", "--outdir", tmp_path
    )
    assert res.exit_code == 0, res.output
    lat = np.load(tmp_path / "latents.npy")
    assert lat.shape == (6, G.num_ws * G.w_dim)
    expected = latents_from_z(G, np.random.RandomState(0).randn(6, G.z_dim), "w+", truncation_psi=0.5)
    np.testing.assert_allclose(lat, expected, atol=1e-5)
    meta = read_json(tmp_path / "latents.json")
    assert meta["num_ws"] == G.num_ws and meta["truncation_applied"] is True


def test_rosinality_default_space_is_w_and_generate(ros_path: Path, tmp_path: Path) -> None:
    res = _invoke("sample", "--network", ros_path, "--n", 3, "--outdir", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert read_json(tmp_path / "s" / "latents.json")["space"] == "w"
    res = _invoke("generate", "--network", ros_path, "--seeds", "4,5", "--outdir", tmp_path / "g")
    assert res.exit_code == 0, res.output
    G = load_generator(ros_path)
    ws = G.mapping(torch.from_numpy(z_from_seeds([4, 5], G.z_dim)))
    expected = to_uint8(G.synthesis(ws, noise_mode="const"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g" / "seed0005.png")), expected[1])


def test_biggan_latents_are_truncated_noise(biggan_dir: Path, tmp_path: Path) -> None:
    G = load_generator(biggan_dir)
    assert isinstance(G, BigGANGenerator)
    a = sample_latents(G, n=9, seed=4, truncation_psi=0.5, class_idx=3, batch_size=4, progress=False)
    np.testing.assert_array_equal(a, truncated_noise(9, G.z_dim, 0.5, 4).numpy())
    assert np.abs(a).max() <= 1.0  # |noise| <= 2, times psi
    b = z_for_seeds(G, [7, 8], 0.5)
    np.testing.assert_array_equal(b[1], truncated_noise(1, G.z_dim, 0.5, 8).numpy()[0])
    res = _invoke(
        "sample", "--network", biggan_dir, "--n", 5, "--class", 3, "--trunc", "0.4", "--outdir", tmp_path
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(
        np.load(tmp_path / "latents.npy"), truncated_noise(5, G.z_dim, 0.4, 0).numpy()
    )
    meta = read_json(tmp_path / "latents.json")
    assert (meta["class_idx"], meta["truncation_applied"], meta["c_dim"]) == (3, True, 10)
    assert len(meta["generator_sha256"]) == 64


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "conditional (10 classes): give a class in 0..9"),
        (["--class", "10"], "class 10 is out of range"),
        (["--class", "1", "--trunc", "1.5"], "refuses these options"),
        (["--class", "1", "--trunc-cutoff", "1"], "no style layers"),
    ],
)
def test_biggan_bad_options(biggan_dir: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    res = _invoke("sample", "--network", biggan_dir, "--n", 2, *args, "--outdir", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert fragment in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()


def test_biggan_generate(biggan_dir: Path, tmp_path: Path) -> None:
    res = _invoke(
        "generate",
        "--network",
        biggan_dir,
        "--seeds",
        "0-1",
        "--class",
        2,
        "--trunc",
        "0.6",
        "--outdir",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    G = load_generator(biggan_dir)
    z = torch.from_numpy(z_for_seeds(G, [0, 1], 0.6))
    c = torch.zeros(2, 10)
    c[:, 2] = 1
    expected = to_uint8(G.synthesis(G.mapping(z, c, truncation_psi=0.6)))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "seed0001.png")), expected[1])
    assert (tmp_path / "grid.png").is_file()


# ---------------------------------------------------------------------------------------- StyleGAN pickles

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "stylegan"


@pytest.fixture(scope="module")
def sg2_cond_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pkl_writer import write_stylegan_pkl

    return write_stylegan_pkl(FIXTURES / "sg2ada_cond", tmp_path_factory.mktemp("pkl") / "sg2_cond.pkl")


def test_stylegan_pkl_latents_match_fixture(sg2_cond_pkl: Path) -> None:
    from safetensors.torch import load_file

    from sfvq.generators.stylegan_pkl import StyleGANGenerator

    G = load_generator(sg2_cond_pkl)
    assert isinstance(G, StyleGANGenerator) and G.c_dim == 5
    cases = load_file(str(FIXTURES / "sg2ada_cond" / "cases.safetensors"))
    for i in range(3):  # rows 0-2 have one-hot classes
        k = int(cases["c"][i].argmax())
        z = cases["z"][i : i + 1].numpy()
        wp = latents_from_z(G, z, "w+", truncation_psi=0.5, truncation_cutoff=2, class_idx=k)
        expected = cases["ws_psi0.5_cutoff2"][i].reshape(1, -1).numpy()
        np.testing.assert_allclose(wp, expected, atol=1e-5, rtol=0)
        w = latents_from_z(G, z, "w", class_idx=k)
        np.testing.assert_allclose(w, cases["ws_psi1"][i, 0:1].numpy(), atol=1e-5, rtol=0)


def test_stylegan_pkl_sample_and_generate(sg2_cond_pkl: Path, tmp_path: Path) -> None:
    res = _invoke("sample", "--network", sg2_cond_pkl, "--n", 5, "--class", 4, "--outdir", tmp_path / "s")
    assert res.exit_code == 0, res.output
    lat = np.load(tmp_path / "s" / "latents.npy")
    G = load_generator(sg2_cond_pkl)
    np.testing.assert_allclose(
        lat, latents_from_z(G, np.random.RandomState(0).randn(5, 32), "w", class_idx=4), atol=1e-6
    )
    res = _invoke(
        "generate", "--network", sg2_cond_pkl, "--seeds", "3", "--class", 0, "--outdir", tmp_path / "g"
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g" / "seed0003.png").is_file() and (tmp_path / "g" / "grid.png").is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "conditional (5 classes): give a class in 0..4"),
        (["--class", "5"], "class 5 is out of range"),
        (["--class", "1", "--trunc-cutoff", "9"], "cutoff must be in [0, 8]"),
    ],
)
def test_stylegan_pkl_bad_options(sg2_cond_pkl: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    res = _invoke("sample", "--network", sg2_cond_pkl, "--n", 2, *args, "--outdir", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert fragment in " ".join(res.output.split())
    assert not (tmp_path / "o").exists()


def test_evil_pickle_refused_through_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SFVQ_PWNED_MARKER", str(marker))
    monkeypatch.chdir(tmp_path)
    res = _invoke("generate", "--network", FIXTURES / "evil.pkl", "--seeds", "0", "--outdir", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert "posix.system" in res.output
    assert not marker.exists() and not (tmp_path / "sfvq-pwned-marker").exists()
    assert not (tmp_path / "o").exists()
