"""`sfvq run` end to end through click on the tiny StyleGAN2 pickle and the built-in DCGAN."""

import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sfvq import SFVQ
from sfvq.cli import main
from sfvq.report import Z_SPACE_NOTE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generators"))

from pkl_writer import write_stylegan_pkl  # noqa: E402

SMALL = [
    "--bits",
    "3",
    "--n",
    "300",
    "--walk-frames",
    "8",
    "--edit-seeds",
    "0-1",
    "--sigmas",
    "-2,0,2",
    "--quiet",
]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def sg2_pkl(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkl") / "sg2.pkl"
    return write_stylegan_pkl(shared_dir / "fixtures/stylegan/sg2ada_uncond", out)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.ids, self.hrefs, self.text = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("img", "video"):  # the walk is an embedded video
            self.imgs.append(a.get("src", ""))
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a":
            self.hrefs.append(a.get("href", ""))

    def handle_data(self, data):
        self.text.append(data)


def check_run(out: Path, bits: int, edit_bits: int, walk_frames: int, size: int) -> dict:
    """Every output of a run exists and is valid; returns summary.json."""
    import imageio_ffmpeg

    for name in (
        "model.safetensors",
        "space.json",
        "latents.npy",
        "latents.json",
        "summary.json",
        "options.json",
    ):
        assert (out / name).is_file(), name
    for name in ("loss.png", "curve.png", "usage.png"):
        with Image.open(out / name) as im:
            im.verify()
    for b in range(2, bits + 1):
        for kind in ("map", "strip"):
            with Image.open(out / "maps" / f"{kind}_{b}bit.png") as im:
                assert im.format == "PNG" and im.width >= size
                im.load()
    with Image.open(out / "maps" / f"strip_{bits}bit.png") as im:
        assert im.width >= 2**bits * size  # one row of all corners
    edits = sorted(p.name for p in (out / "edits").iterdir())
    assert edits == [f"{edit_bits}bit_seg{i:03d}.png" for i in range(2**edit_bits - 1)]
    for name in edits:
        with Image.open(out / "edits" / name) as im:
            im.load()
    with Image.open(out / "walks" / "walk.gif") as im:
        assert im.n_frames == walk_frames and im.size == (size, size)
    reader = imageio_ffmpeg.read_frames(str(out / "walks" / "walk.mp4"))
    next(reader)
    assert sum(1 for _ in reader) == walk_frames
    assert not list(out.rglob(".*.tmp"))  # no temporary file left

    page = (out / "report.html").read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert len(parsed.imgs) >= (bits - 1) + 2**edit_bits - 1 + 4
    assert all(src.startswith(("data:image/", "data:video/mp4")) for src in parsed.imgs)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert all(h.startswith("#") and h[1:] in parsed.ids for h in parsed.hrefs)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["bits"] for r in summary["smoothness"]] == list(range(2, bits + 1))
    return summary


def test_run_on_stylegan_pickle(sg2_pkl, tmp_path):
    out = tmp_path / "run"
    r = _run("run", "--network", sg2_pkl, *SMALL, "--trunc", "0.7", "--outdir", out)
    assert r.exit_code == 0, r.output
    summary = check_run(out, bits=3, edit_bits=3, walk_frames=8, size=32)
    assert summary["space"]["kind"] == "w" and summary["dim"] == 32
    model = SFVQ.load(out / "model.safetensors")
    assert model.metadata_["network"] == str(sg2_pkl) and model.metadata_["space"]["truncation_psi"] == 0.7
    opts = json.loads((out / "options.json").read_text())
    assert opts["command"] == "run" and opts["options"]["truncation_psi"] == 0.7
    assert opts["options"]["edit_seeds"] == [0, 1] and opts["options"]["sigmas"] == [-2.0, 0.0, 2.0]
    assert "smoothness" in r.output and "report.html" in r.output
    text = (out / "report.html").read_text()
    assert "truncation psi" in text and "noise mode" in text and Z_SPACE_NOTE not in text


def test_run_on_builtin_dcgan(tmp_path):
    out = tmp_path / "run"
    r = _run("run", "--network", "builtin:faces-dcgan", *SMALL, "--outdir", out)
    assert r.exit_code == 0, r.output
    summary = check_run(out, bits=3, edit_bits=3, walk_frames=8, size=64)
    assert summary["space"]["kind"] == "features" and summary["space"]["layer"] == "block1"
    assert (out / "space_pca.safetensors").is_file()
    # On the real faces DCGAN, the curve's order means something and k-means' does not.
    for row in summary["smoothness"]:
        assert row["sfvq_latent"] < 0.9 < row["kmeans_latent"]


def test_run_in_z_space_says_it_has_no_structure(tmp_path):
    out = tmp_path / "run"
    small = [
        "--bits",
        "2",
        "--n",
        "64",
        "--walk-frames",
        "3",
        "--edit-seeds",
        "0",
        "--sigmas",
        "0",
        "--quiet",
    ]
    r = _run("run", "--network", "builtin:faces-dcgan", "--space", "z", *small, "--outdir", out)
    assert r.exit_code == 0, r.output
    text = " ".join(_text(out / "report.html"))
    assert Z_SPACE_NOTE in text


def _text(path):
    p = _Page()
    p.feed(path.read_text())
    return p.text


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--space", "w"], "--space", "no W space"),
        (["--layer", "block2", "--space", "z"], "--layer", "needs --space features"),
        (["--layer", "nope"], "--layer", "unknown layer 'nope'"),
        (["--n", "7"], "--n", "too few"),
        (["--edit-bits", "5"], "--edit-bits", r"\[2, 3\]"),
        (["--sigmas", "1,x"], "--sigmas", "'x' is not a number"),
        (["--edit-seeds", "3-1"], "--edit-seeds", "reversed"),
        (["--bits", "13"], "--bits", "13"),
        (["--trunc-cutoff", "2"], "--trunc-cutoff", "no style layers"),
        (["--class", "1"], "--class", "unconditional"),
        (["--noise-mode", "loud"], "--noise-mode", "loud"),
        (["--walk-frames", "1"], "--walk-frames", "1"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, option, message):
    import re

    out = tmp_path / "run"
    base = ["run", "--network", "builtin:faces-dcgan", "--bits", "3", "--quiet", "--outdir", str(out)]
    r = CliRunner().invoke(main, base + args)
    assert r.exit_code == 2, r.output
    assert option in r.output and re.search(message, r.output), r.output
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_unknown_network_and_file_as_outdir(tmp_path):
    r = CliRunner().invoke(main, ["run", "--network", "builtin:nope", "--outdir", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--network" in r.output and "unknown built-in" in r.output
    f = tmp_path / "file"
    f.write_text("x")
    r = CliRunner().invoke(main, ["run", "--network", "builtin:faces-dcgan", "--outdir", str(f)])
    assert r.exit_code == 2 and "--outdir" in r.output


def test_numbers_in_the_report_match_summary(tmp_path):
    # The smoothness and segment tables of the page show the numbers summary.json holds.
    out = tmp_path / "run"
    small = [
        "--bits",
        "2",
        "--n",
        "64",
        "--walk-frames",
        "2",
        "--edit-seeds",
        "0",
        "--sigmas",
        "0",
        "--quiet",
    ]
    r = _run("run", "--network", "builtin:faces-dcgan", *small, "--outdir", out)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    text = " ".join(_text(out / "report.html"))
    row = summary["smoothness"][0]
    assert f"{row['sfvq_image']:.3f}" in text and f"{row['kmeans_latent']:.3f}" in text
    for s in summary["segments"]:
        assert f"{100 * s['usage']:.2f} %" in text
    assert np.load(out / "latents.npy").shape[0] == 64
