"""`sfvq sample` and `sfvq generate` through click's CliRunner on builtin:faces-dcgan."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from sfvq import __version__
from sfvq.cli import main
from sfvq.generators.base import to_uint8
from sfvq.generators.dcgan import faces_dcgan_weights_path, load_faces_dcgan
from sfvq.io import read_json
from sfvq.latents import z_from_seeds

NET = "builtin:faces-dcgan"


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _usage_error(res, *fragments: str) -> None:
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())  # click wraps long messages
    for fragment in fragments:
        assert fragment in text, text


def test_sample_writes_latents_sidecar_and_options(tmp_path: Path) -> None:
    out = tmp_path / "s"
    res = _invoke("sample", "--network", NET, "--n", 300, "--seed", 7, "--batch-size", 64, "--outdir", out)
    assert res.exit_code == 0, res.output
    assert "(300, 100) float32, space z" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["latents.json", "latents.npy", "options.json"]
    z = np.load(out / "latents.npy")
    np.testing.assert_array_equal(z, np.random.RandomState(7).randn(300, 100).astype(np.float32))
    meta = read_json(out / "latents.json")
    assert meta["generator"] == NET and meta["space"] == "z" and meta["seed"] == 7
    assert meta["generator_sha256"] == hashlib.sha256(faces_dcgan_weights_path().read_bytes()).hexdigest()
    options = read_json(out / "options.json")
    assert options["command"] == "sample" and options["version"] == __version__
    assert options["options"]["space"] == "z"  # resolved default for a z-only generator
    assert (options["options"]["n"], options["options"]["seed"], options["options"]["batch_size"]) == (
        300,
        7,
        64,
    )


def test_sample_seed_list(tmp_path: Path) -> None:
    res = _invoke("sample", "--network", NET, "--seeds", "0-4,9", "--outdir", tmp_path)
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "latents.npy"), z_from_seeds([0, 1, 2, 3, 4, 9], 100))
    assert read_json(tmp_path / "latents.json")["seeds"] == "0-4,9"


def test_sample_z_with_trunc_notes_it(tmp_path: Path) -> None:
    res = _invoke("sample", "--network", NET, "--n", 5, "--trunc", "0.7", "--outdir", tmp_path)
    assert res.exit_code == 0, res.output
    assert "space z stores the raw z" in res.output
    assert read_json(tmp_path / "latents.json")["truncation_psi"] == 0.7


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--space", "w"], ["Invalid value for '--space'", "has no 'w' space (it offers: z)"]),
        (["--class", "3"], ["Invalid value for '--class'", "unconditional"]),
        (["--trunc-cutoff", "2"], ["Invalid value for '--trunc-cutoff'", "no style layers"]),
        (["--trunc", "nan"], ["Invalid value for '--trunc'", "not a finite number"]),
        (["--n", "0"], ["Invalid value for '--n'"]),
        (["--seeds", "3-1"], ["Invalid value for '--seeds'", "reversed"]),
        (["--seeds", "0-3", "--n", "4"], ["do not combine it with --n or --seed"]),
        (["--space", "q"], ["Invalid value for '--space'"]),
        (["--device", "nonsense"], ["Invalid value for '--device'"]),
    ],
)
def test_sample_bad_options(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "out"
    size = [] if {"--n", "--seeds"} & set(args) else ["--n", "4"]
    res = _invoke("sample", "--network", NET, *size, *args, "--outdir", out)
    _usage_error(res, *fragments)
    assert not (out / "latents.npy").exists() and not (out / "options.json").exists()


@pytest.mark.parametrize(
    ("network", "fragment"),
    [
        ("missing/dir/net.pkl", "no such file or directory"),
        ("https://example.com/net.pkl", "never downloads"),
        ("builtin:nope", "known: builtin:avatars-sg2, builtin:faces-dcgan"),
    ],
)
def test_bad_network(tmp_path: Path, network: str, fragment: str) -> None:
    for command in ("sample", "generate"):
        extra = ["--seeds", "0"] if command == "generate" else []
        res = _invoke(command, "--network", network, *extra, "--outdir", tmp_path / command)
        _usage_error(res, "Invalid value for '--network'", fragment)
        assert not (tmp_path / command).exists()


def test_unrecognised_file_format(tmp_path: Path) -> None:
    bad = tmp_path / "net.pkl"
    bad.write_text("not a network")
    res = _invoke("sample", "--network", bad, "--n", 3, "--outdir", tmp_path / "o")
    _usage_error(res, "unrecognised generator format", "a text file starting with 'not a network'")


def test_generate_writes_pngs_grid_and_options(tmp_path: Path) -> None:
    out = tmp_path / "g"
    res = _invoke(
        "generate",
        "--network",
        NET,
        "--seeds",
        "0-2,20",
        "--trunc",
        "0.7",
        "--batch-size",
        3,
        "--outdir",
        out,
    )
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "grid.png",
        "options.json",
        "seed0000.png",
        "seed0001.png",
        "seed0002.png",
        "seed0020.png",
    ]
    G = load_faces_dcgan()
    z = torch.from_numpy(z_from_seeds([0, 1, 2, 20], 100))
    expected = to_uint8(G.synthesis(G.mapping(z, truncation_psi=0.7)))  # (4, 64, 64, 3)
    for i, s in enumerate([0, 1, 2, 20]):
        img = np.asarray(Image.open(out / f"seed{s:04d}.png"))
        np.testing.assert_array_equal(img, expected[i])
    grid = Image.open(out / "grid.png")
    assert grid.width >= 2 * 64 and grid.height > 2 * 64  # 2x2 tiles plus labels
    options = read_json(out / "options.json")
    assert options["command"] == "generate"
    assert options["options"]["seeds"] == "0-2,20" and options["options"]["trunc"] == 0.7
    assert options["options"]["noise_mode"] == "const"


def test_generate_no_grid_and_cols(tmp_path: Path) -> None:
    res = _invoke("generate", "--network", NET, "--seeds", "5", "--no-grid", "--outdir", tmp_path / "a")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["options.json", "seed0005.png"]
    res = _invoke(
        "generate", "--network", NET, "--seeds", "0-2", "--grid-cols", "3", "--outdir", tmp_path / "b"
    )
    assert res.exit_code == 0, res.output
    wide = Image.open(tmp_path / "b" / "grid.png")
    assert wide.width > 3 * 64 and wide.height < 2 * 64  # one row of three


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--seeds", "1,1"], ["Invalid value for '--seeds'", "seed 1 is listed more than once"]),
        (["--seeds", "0", "--noise-mode", "loud"], ["Invalid value for '--noise-mode'"]),
        (["--seeds", "0", "--class", "1"], ["Invalid value for '--class'", "unconditional"]),
        (["--seeds", "0-20000"], ["more than 10000 seeds"]),
        ([], ["Missing option '--seeds'"]),
    ],
)
def test_generate_bad_options(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    res = _invoke("generate", "--network", NET, *args, "--outdir", tmp_path / "o")
    _usage_error(res, *fragments)
    assert not (tmp_path / "o").exists()
