"""The re-scoring benchmark's maths, end to end on a generator whose images are linear in z and a fake
scorer that reads the colour channels, so every number has a value computed by hand."""

import json
import math

import numpy as np
import pytest
import torch

from sfvq.baselines import MethodDirections
from sfvq.directions import Direction, DirectionSet
from sfvq.evaluation import (
    Curves,
    EvalConfig,
    Scorers,
    bootstrap_stats,
    curve_stats,
    curves_plot,
    first_crossing,
    markdown_table,
    matched_targets,
    method_figure,
    run_evaluation,
    score_images,
    summarise,
)
from sfvq.generators.base import GeneratorBase
from sfvq.io import to_json_text
from sfvq.spaces import LatentSpace


class LinearGenerator(GeneratorBase):
    """z (N, 4) -> images (N, 3, 8, 8): channel c holds z[c] everywhere, plus z[3] times a left-right ramp
    (which leaves every channel's mean unchanged)."""

    name = "linear"
    z_dim, w_dim, num_ws, c_dim = 4, None, 1, 0
    img_resolution, img_channels = 8, 3
    spaces = ("z",)
    layers = ()
    device = torch.device("cpu")

    def mapping(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        return z[:, None, :] * truncation_psi

    def synthesis(self, ws, noise_mode="const"):
        z = ws[:, 0]
        img = z[:, :3, None, None].expand(-1, 3, 8, 8).clone()
        return img + z[:, 3, None, None, None] * torch.linspace(-1, 1, 8)


class ChannelScorer:
    """Attributes r, g, b: the channel means (N,)."""

    def __init__(self):
        self.calls = 0

    def score(self, images):
        self.calls += 1
        m = images.float().mean((2, 3)).numpy()  # (N, 3)
        return {"r": m[:, 0], "g": m[:, 1], "b": m[:, 2], "detected": np.ones(len(m), bool)}


class PixelIdentity:
    """Embedding = the pixels; distance = Euclidean."""

    def embed(self, images):
        return images.float().flatten(1).numpy()

    @staticmethod
    def distance(a, b):
        return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


def method(name, vectors, names):
    space = LatentSpace(LinearGenerator(), "z")
    dirs = [
        Direction(n, torch.tensor(v, dtype=torch.float32), {"method": name}, std=1.0)
        for v, n in zip(vectors, names, strict=True)
    ]
    return MethodDirections(name, space, DirectionSet(dirs, dim=4, meta={"method": name}))


R2 = 1 / math.sqrt(2)


@pytest.fixture(scope="module")
def result():
    a = method(
        "pure", [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], ["red", "notgreen", "blue", "ramp"]
    )
    b = method("mixed", [[R2, R2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], ["yellow", "blue", "ramp"])
    scorers = Scorers(ChannelScorer(), PixelIdentity(), None, names=("r", "g", "b"))
    config = EvalConfig(n=30, screen_n=4, steps=(1.0, 2.0, 3.0), bootstrap=50, figure_seeds=2, batch_size=16)
    res = run_evaluation([a, b], scorers, config)
    return res, summarise(res)


def row(summary, m, a):
    (r,) = [r for r in summary["rows"] if r["method"] == m and r["attribute"] == a]
    return r


def test_screening_picks_and_orients_the_best_direction(result):
    res, summary = result
    pure = res.methods["pure"]
    forwards = [[1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, 0]]  # per unit step, for each candidate
    np.testing.assert_allclose(pure.screen.gains[:, 0, :3], forwards, atol=1e-5)
    np.testing.assert_allclose(pure.screen.gains[:, 1, :3], -np.array(forwards), atol=1e-5)
    np.testing.assert_allclose(pure.screen.chosen, [1, 1, 1], atol=1e-5)
    assert [row(summary, "pure", a)["direction"] for a in "rgb"] == ["red", "notgreen", "blue"]
    assert [row(summary, "pure", a)["sign"] for a in "rgb"] == [1, -1, 1]  # -notgreen raises g
    assert [row(summary, "mixed", a)["direction"] for a in "rgb"] == ["yellow", "yellow", "blue"]
    assert pure.screen.seeds[0] == 1_000_000  # screened on seeds disjoint from the evaluation seeds


def test_slopes_targets_identity_and_entanglement_match_hand_values(result):
    res, summary = result
    T = 0.9 * 3 * R2  # the mixed method's yellow reaches 3/sqrt(2) in r at step 3
    assert summary["targets"]["r"] == pytest.approx(T, rel=1e-5)
    assert summary["targets"]["b"] == pytest.approx(0.9 * 3, rel=1e-5)
    p, m = row(summary, "pure", "r"), row(summary, "mixed", "r")
    assert p["slope"] == pytest.approx(1, rel=1e-5) and m["slope"] == pytest.approx(R2, rel=1e-5)
    assert p["step"] == pytest.approx(T, rel=1e-5) and m["step"] == pytest.approx(T / R2, rel=1e-5)
    # Identity (pixel distance): pure moves 64 red pixels by T; mixed moves 64 red and 64 green ones by T.
    assert p["identity"] == pytest.approx(8 * T, rel=1e-4)
    assert m["identity"] == pytest.approx(math.sqrt(128) * T, rel=1e-4)
    assert p["other"] == pytest.approx({"g": 0.0, "b": 0.0}, abs=1e-5)
    assert m["other"] == pytest.approx({"g": T, "b": 0.0}, abs=1e-4)
    std_g = summary["attribute_std"]["g"]
    assert p["entanglement"] == pytest.approx(0.0, abs=1e-5)
    assert m["entanglement"] == pytest.approx(T / std_g / 2, rel=1e-4)
    # Exact data: every bootstrap resample gives the same numbers.
    assert p["identity_ci"] == pytest.approx([8 * T, 8 * T], rel=1e-4)
    assert p["reached"] == 1.0 and p["detected"] == 1.0
    g = row(summary, "pure", "g")
    assert g["slope"] == pytest.approx(1, rel=1e-5) and g["direction"] == "notgreen"


def test_reports_figures_and_plot(result, tmp_path):
    res, summary = result
    text = markdown_table(summary)
    assert text.count("| pure |") == 3 and text.count("| mixed |") == 3
    assert "-notgreen" in text and "+yellow" in text
    fig = method_figure(res, "pure")  # rows: 3 attributes x 2 seeds, columns: steps 0..3
    assert fig.size[0] > 4 * 8 and fig.size[1] > 6 * 8
    assert res.methods["pure"].images["r"].shape == (2, 4, 3, 8, 8)
    # Step 0 of every kept row is the unedited image.
    np.testing.assert_allclose(res.methods["pure"].images["r"][:, 0], res.methods["mixed"].images["b"][:, 0])
    # The table can be rebuilt from results.json (NaN is stored as "nan" there).
    back = json.loads(to_json_text(summary))
    assert markdown_table(back) == text
    back["rows"][0]["reached"] = 0.6
    assert "(60 % of resamples reach it)" in markdown_table(back)
    path = curves_plot(res, summary, tmp_path / "c.png")
    assert path.stat().st_size > 1000


def test_first_crossing():
    x = np.array([0.0, 1, 2, 3])
    assert first_crossing(x, np.array([0.0, 2, 4, 6]), 3.0) == pytest.approx(1.5)
    assert first_crossing(x, np.array([0.0, 2, 1, 6]), 1.5) == pytest.approx(0.75)  # the first crossing
    assert math.isnan(first_crossing(x, np.array([0.0, 1, 1, 1]), 3.0))
    assert math.isnan(first_crossing(x, np.array([0.0, 1, 2, 3]), math.nan))
    assert first_crossing(x, np.array([0.0, 1, 4, 6]), 4.0) == pytest.approx(2.0)


def test_matched_targets_leave_out_methods_that_barely_move_an_attribute():
    reaches = {
        "a": np.array([4.0, 1.0, -1.0]),
        "b": np.array([2.0, 0.1, -2.0]),
        "c": np.array([0.5, 2.0, 0.0]),
    }
    t = matched_targets(reaches, match=0.5, floor=0.25)
    assert t[0] == pytest.approx(0.5 * 2.0)  # c's 0.5 < 0.25 * 4: left out
    assert t[1] == pytest.approx(0.5 * 1.0)  # b's 0.1 < 0.25 * 2: left out
    assert math.isnan(t[2])  # nobody raises it
    assert matched_targets(reaches, match=1.0, floor=0.0)[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="match"):
        matched_targets(reaches, match=0.0)


def test_bootstrap_interval_covers_the_truth_and_is_seeded():
    rng = np.random.default_rng(0)
    S, steps = 200, np.array([0.0, 1, 2, 3])
    slope = 2.0
    attrs = np.zeros((S, 4, 2))
    attrs[:, :, 0] = slope * steps + rng.normal(0, 1.0, (S, 4))
    attrs[:, :, 1] = 0.5 * steps + rng.normal(0, 1.0, (S, 4))
    ident = np.abs(steps) * 0.3 + np.abs(rng.normal(0, 0.05, (S, 4)))
    ident[:, 0] = 0
    c = Curves(steps, attrs, ident)
    s = bootstrap_stats(c, 0, 3.0, np.array([1.0, 1.0]), n_boot=300, seed=1)
    lo, hi = s["slope_ci"]
    assert lo < slope < hi and hi - lo < 0.5
    assert s["step_ci"][0] < 1.5 < s["step_ci"][1]
    assert s["reached"] == 1.0
    again = bootstrap_stats(c, 0, 3.0, np.array([1.0, 1.0]), n_boot=300, seed=1)
    assert again["slope_ci"] == s["slope_ci"] and again["identity_ci"] == s["identity_ci"]
    other = bootstrap_stats(c, 0, 3.0, np.array([1.0, 1.0]), n_boot=300, seed=2)
    assert other["slope_ci"] != s["slope_ci"]
    # A target no resample reaches: NaN step and the share reached is 0.
    far = bootstrap_stats(c, 0, 100.0, np.array([1.0, 1.0]), n_boot=20, seed=1)
    assert math.isnan(far["step"]) and math.isnan(far["identity"]) and far["reached"] == 0.0


def test_curve_stats_ignores_missing_scores():
    steps = np.array([0.0, 1, 2])
    attrs = np.array([[[0.0], [1.0], [2.0]], [[0.0], [np.nan], [2.0]]])  # (2, 3, 1)
    s = curve_stats(Curves(steps, attrs), 0, 1.0, np.array([1.0]))
    assert s["slope"] == pytest.approx(1.0) and s["step"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="start at 0"):
        Curves(np.array([1.0, 2.0]), np.zeros((2, 2, 1)))


def test_config_and_scorer_errors():
    with pytest.raises(ValueError, match="steps"):
        EvalConfig(steps=(0.0, 1.0)).check()
    with pytest.raises(ValueError, match="steps"):
        EvalConfig(steps=(2.0, 1.0)).check()
    with pytest.raises(ValueError, match="overlap"):
        EvalConfig(n=10, screen_seed_start=5).check()
    with pytest.raises(ValueError, match="n must be"):
        EvalConfig(n=1).check()
    with pytest.raises(KeyError, match="gave no smile"):
        score_images(Scorers(ChannelScorer(), None, None, names=("r", "smile")), torch.zeros(2, 3, 8, 8))
