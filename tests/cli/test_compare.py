"""``sfvq compare`` and ``sfvq evaluate`` end to end: the built-in DCGAN (z and features) and a tiny StyleGAN2
(W+ layer ranges); evaluate runs with fake scorers injected in place of the face scorers."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sfvq_runs import invoke, make_run, sg2_pickle

import sfvq.cli.compare as compare_cli
from sfvq.baselines import load_method
from sfvq.directions import DirectionSet
from sfvq.evaluation import Scorers
from sfvq.generators.registry import load_generator


def _png(path):
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def dcgan_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "out"
    res = invoke("compare", "--network", "builtin:faces-dcgan", "--methods", "sefa,ganspace-latent,ganspace",
                 "--k", 2, "--seeds", "0-1", "--sigma", "-2,0,2", "--n-samples", 200,
                 "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def test_compare_writes_a_grid_per_method_an_index_and_the_directions(dcgan_compare):
    out = dcgan_compare
    for m in ("sefa", "ganspace-latent", "ganspace"):
        grid = _png(out / f"{m}.png")
        assert grid.shape[0] > 2 * 64 and grid.shape[1] > 6 * 64  # 2 directions x (2 seeds x 3 sigmas)
        md = load_method(out / "directions" / m, load_generator("builtin:faces-dcgan"))
        assert len(md.directions) == 2 and md.space.kind == "z" and md.directions.meta["method"] == m
        assert all(d.std is not None and d.std > 0 for d in md.directions)
    page = (out / "index.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3
    assert "http:" not in page and "https:" not in page
    opts = json.loads((out / "options.json").read_text())
    assert opts["command"] == "compare" and opts["options"]["methods"] == [
        "sefa",
        "ganspace-latent",
        "ganspace",
    ]
    assert opts["options"]["spaces"]["sefa"]["kind"] == "z" and opts["options"]["sigma"] == [-2.0, 0.0, 2.0]


def test_compare_with_saved_directions_redraws_the_same_grid(dcgan_compare, tmp_path):
    res = invoke("compare", "--network", "builtin:faces-dcgan", "--methods", "sefa", "--k", 2,
                 "--seeds", "0-1", "--sigma", "-2,0,2",
                 "--directions", f"sefa={dcgan_compare / 'directions' / 'sefa'}",
                 "--outdir", tmp_path / "again")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "read 2 directions" in res.output
    assert np.array_equal(_png(tmp_path / "again" / "sefa.png"), _png(dcgan_compare / "sefa.png"))


def test_compare_on_stylegan_keeps_the_layer_range(shared_dir, tmp_path):
    pkl = sg2_pickle(shared_dir, tmp_path)
    make_run(tmp_path / "run", str(pkl), "w", n=300)
    out = tmp_path / "out"
    res = invoke("compare", "--model", tmp_path / "run", "--methods", "sfvq,sefa,ganspace,latentclr",
                 "--layers", "2-4", "--k", 2, "--latentclr-steps", 2, "--seeds", "0", "--sigma", "-1,0,1",
                 "--n-samples", 300, "--add-to-run", "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    G = load_generator(str(pkl))
    for m in ("sfvq", "sefa", "ganspace", "latentclr"):
        md = load_method(out / "directions" / m, G)
        assert md.space.kind == "w" and all(d.layers == (2, 5) for d in md.directions), m
    sefa = load_method(out / "directions" / "sefa", G).directions
    assert sefa.meta["weights"] == [
        "synthesis.b8.conv1.affine.weight",
        "synthesis.b16.conv0.affine.weight",
        "synthesis.b16.conv1.affine.weight",
    ]
    sfvq = load_method(out / "directions" / "sfvq", G).directions
    assert all(d.name.startswith("4:") for d in sfvq)  # segments of the run's 4-bit curve
    assert "layers 2-4 of 0-7" in (out / "index.html").read_text()
    assert json.loads((out / "options.json").read_text())["options"]["layers"] == [2, 5]
    # --add-to-run: the baselines (all in the run's W) are saved in the run, usable by sfvq edit.
    saved = DirectionSet.load(tmp_path / "run" / "directions")
    assert saved.names == ["sefa-sefa0", "sefa-sefa1", "ganspace-pc0", "ganspace-pc1", "latentclr-clr0",
                           "latentclr-clr1"]  # fmt: skip
    assert torch.equal(saved["sefa-sefa1"].vector, sefa[1].vector) and saved["sefa-sefa1"].layers == (2, 5)
    res = invoke("edit", "--model", tmp_path / "run", "--direction", "sefa-sefa0", "--sigma", "-1,0,1",
                 "--units", "std", "--seeds", "0", "--outdir", tmp_path / "edit")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "layers 2-4 of 0-7" in res.output


@pytest.mark.parametrize(
    "args, hint",
    [
        (["--network", "builtin:faces-dcgan", "--methods", "sefa,pca"], "--methods"),
        (["--network", "builtin:faces-dcgan", "--methods", "sefa", "--layers", "0-1"], "--layers"),
        (["--network", "builtin:faces-dcgan", "--methods", "sefa", "--directions", "sefa"], "--directions"),
        (["--network", "builtin:faces-dcgan", "--methods", "sefa", "--directions", "sfvq=x"], "--directions"),
        (["--network", "builtin:faces-dcgan", "--methods", "sefa", "--model", "nowhere"], "--model"),
        (["--methods", "sefa"], "--network"),
        (["--network", "builtin:faces-dcgan", "--methods", "sefa", "--add-to-run"], "--add-to-run"),
        (["--network", "builtin:nope", "--methods", "sefa"], "--network"),
    ],
)
def test_compare_errors_name_the_option(tmp_path, args, hint):
    res = invoke("compare", *args, "--outdir", tmp_path / "o")
    assert res.exit_code == 2, res.output
    assert hint in res.output


# ---------------------------------------------------------------------------------------------- evaluate
class FakeAttributes:
    """age/gender/smile/yaw from image statistics; counts its calls; has close() like the real one."""

    def __init__(self):
        self.closed = False

    def score(self, images):
        x = images.float()
        W = x.shape[-1]
        return {
            "age": 30 + 20 * x.mean((1, 2, 3)).numpy(),
            "gender": (x[:, 2] - x[:, 0]).mean((1, 2)).numpy(),
            "smile": x[:, :, W // 2 :].mean((1, 2, 3)).numpy(),
            "yaw": (x[..., : W // 2].mean((1, 2, 3)) - x[..., W // 2 :].mean((1, 2, 3))).numpy(),
            "detected": np.ones(len(x), bool),
        }

    def close(self):
        self.closed = True


class FakeIdentity:
    def embed(self, images):
        return F.adaptive_avg_pool2d(images.float(), 8).flatten(1).numpy()

    @staticmethod
    def distance(a, b):
        return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


def fake_ssim(a, b):
    return 1 - (a - b).abs().mean((1, 2, 3)).numpy()


def test_evaluate_with_injected_scorers(tmp_path, monkeypatch):
    fake = FakeAttributes()
    monkeypatch.setattr(
        compare_cli, "_scorers", lambda ssim: Scorers(fake, FakeIdentity(), fake_ssim if ssim else None)
    )
    out = tmp_path / "ev"
    res = invoke("evaluate", "--network", "builtin:faces-dcgan", "--methods", "sefa,ganspace-latent",
                 "--k", 3, "--n", 4, "--screen-n", 2, "--steps", "1,2", "--bootstrap", 10, "--n-samples", 200,
                 "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert fake.closed
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 2 * 4
    assert {r["attribute"] for r in results["rows"]} == {"age", "gender", "smile", "yaw"}
    for r in results["rows"]:
        assert r["direction"] in ("sefa0", "sefa1", "sefa2", "pc0", "pc1", "pc2") and r["sign"] in (1, -1)
        gains = np.array(results["methods"][r["method"]]["screen_gains"])  # (k, 2, A)
        j = results["attributes"].index(r["attribute"])
        assert r["screen_slope"] == pytest.approx(gains[:, :, j].max())  # the largest one-sided increase
    assert results["config"]["steps"] == [1.0, 2.0] and results["config"]["n"] == 4
    table = (out / "table.md").read_text()
    assert table.count("| sefa |") == 4 and "### yaw" in table and table in res.output
    for m in ("sefa", "ganspace-latent"):
        assert _png(out / "figures" / f"{m}.png").shape[0] > 4 * 64  # 4 attributes x 2 seeds
    assert (out / "curves.png").stat().st_size > 1000
    opts = json.loads((out / "options.json").read_text())
    assert opts["command"] == "evaluate" and opts["options"]["n"] == 4


def test_evaluate_refuses_bad_steps_before_any_work(tmp_path, monkeypatch):
    def no_scorers(ssim):
        raise AssertionError("scorers must not start for bad options")

    monkeypatch.setattr(compare_cli, "_scorers", no_scorers)
    res = invoke("evaluate", "--network", "builtin:faces-dcgan", "--steps", "0,1", "--outdir", tmp_path / "o")
    assert res.exit_code == 2 and "--steps" in res.output
    res = invoke("evaluate", "--network", "builtin:faces-dcgan", "--match", "1.5", "--outdir", tmp_path / "o")
    assert res.exit_code == 2 and "--match" in res.output
    assert not (tmp_path / "o").exists()


def test_dcgan_sfvq_method_fits_a_feature_space_curve(tmp_path):
    """Without --model the sfvq method fits a curve on the spot in the DCGAN's first-layer features."""
    from sfvq.baselines import method_directions

    G = load_generator("builtin:faces-dcgan")
    md = method_directions("sfvq", G, k=3, n=300, bits=2)
    assert md.space.kind == "features" and len(md.directions) == 3 and md.directions.dim == md.space.dim
    stds = [d.std for d in md.directions]
    assert stds == sorted(stds, reverse=True)
    full = md.space.encode_seeds([0])
    assert torch.equal(md.space.edit(full, md.directions[0].vector, 0.0), full)


def test_evaluate_says_what_to_install_when_a_scorer_is_missing(tmp_path, monkeypatch):
    import sfvq.scorers as scorers
    from sfvq.scorers import ScorerUnavailable

    def missing(*args, **kwargs):
        raise ScorerUnavailable("the identity scorer needs dlib: pip install 'sfvq[scorers]'")

    monkeypatch.setattr(scorers, "IdentityScorer", missing)
    res = invoke("evaluate", "--network", "builtin:faces-dcgan", "--outdir", tmp_path / "o")
    assert res.exit_code == 2 and "needs the face scorers" in res.output and "sfvq[scorers]" in res.output


@pytest.mark.slow
def test_evaluate_with_the_real_face_scorers(tmp_path):
    """The real scorers (dlib, face-api in Node) through the whole command, on a handful of images."""
    from sfvq.scorers import AttributeScorer, IdentityScorer, ScorerUnavailable

    try:
        IdentityScorer()
        AttributeScorer().close()
    except ScorerUnavailable as e:
        pytest.skip(str(e))
    out = tmp_path / "ev"
    res = invoke("evaluate", "--network", "builtin:faces-dcgan", "--methods", "sefa,ganspace-latent",
                 "--k", 2, "--n", 3, "--screen-n", 2, "--steps", "1.5", "--bootstrap", 5,
                 "--n-samples", 200, "--outdir", out)  # fmt: skip
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 8
    for r in results["rows"]:
        assert isinstance(r["slope"], float) and isinstance(r["detected"], float)
        if isinstance(r["identity"], float):
            assert 0 <= r["identity"] < 2 and 0 < r["ssim"] <= 1
    assert 10 < results["attribute_mean"]["age"] < 80 and 0 <= results["attribute_mean"]["gender"] <= 1
