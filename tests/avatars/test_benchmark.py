"""The ground-truth benchmark: the measures on worlds whose answer is known, and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sfvq.avatars.benchmark import (
    FACTOR_GROUPS,
    GroundTruthConfig,
    at_matched_change,
    curve_mutual_information,
    direction_effects,
    factor_groups,
    grouped,
    markdown_report,
    normalised_mi,
    purity_threshold,
    random_directions,
    run_ground_truth,
    summarise_effects,
)
from sfvq.directions import Direction, DirectionSet
from sfvq.generators.registry import load_generator
from sfvq.spaces import LatentSpace


def test_normalised_mi_limits() -> None:
    labels = np.repeat(np.arange(4), 25)  # (100,)
    assert normalised_mi(labels, labels) == pytest.approx(1.0)
    assert normalised_mi(labels * 7 + 3, labels) == pytest.approx(1.0)  # names of groups do not matter
    assert normalised_mi(np.zeros(100), labels) == pytest.approx(0.0)
    assert normalised_mi(labels, np.zeros(100)) == 0.0  # a constant factor carries no information
    halves = labels // 2  # groups of two label values: I = H(halves) = log 2 of H(labels) = log 4
    assert normalised_mi(halves, labels) == pytest.approx(0.5)


def test_curve_ranges_beat_shuffled_corners_only_when_neighbours_agree() -> None:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 32, 4000)  # samples' nearest corners among 32
    ordered = {"f": idx // 8}  # the factor occupies 4 runs of 8 consecutive corners
    scattered = {"f": (idx * 5) % 4}  # the same 4 values spread along the curve
    a = curve_mutual_information(idx, ordered, 32, ranges=4, shuffles=20, seed=0)
    assert a["factors"]["f"]["cell"] == pytest.approx(1.0)
    assert a["factors"]["f"]["curve"] == pytest.approx(1.0)
    assert a["factors"]["f"]["shuffled"] < 0.5 and a["curve_over_shuffled"] > 2
    b = curve_mutual_information(idx, scattered, 32, ranges=4, shuffles=20, seed=0)
    assert b["factors"]["f"]["cell"] == pytest.approx(1.0)
    assert b["factors"]["f"]["curve"] < 0.05 and b["corners"] == 32 and b["ranges"] == 4


def test_summary_purity_and_coverage() -> None:
    factors = ["a", "b", "c"]
    effects = np.zeros((3, 2, 3))
    effects[0, :, 0] = [0.2, 0.4]  # pure on a
    effects[1] = [[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]]  # even: purity 1/3
    effects[2, :, 2] = [0.01, 0.02]  # pure on c but too small to count
    s = summarise_effects(effects, factors, purity=0.5, floor=0.1)
    assert s["main"][0] == "a" and s["purity"][0] == pytest.approx(1.0)
    assert s["purity"][1] == pytest.approx(1 / 3)
    assert s["pure"] == 1 and s["coverage"] == 1 and s["covered"] == ["a"]
    assert s["main_shift"][0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"\(M, T, 3\)"):
        summarise_effects(effects[:, :, :2], factors)
    # a factor whose reading moves under any edit does not win by its noise once chance is divided out
    noisy = np.array([[[0.30, 0.35, 0.05]]])  # (1, 1, 3): a moves 6x its chance, b about its chance
    assert summarise_effects(noisy, factors)["main"] == ["b"]
    fair = summarise_effects(noisy, factors, 0.5, 0.1, chance=np.array([0.05, 0.3, 0.05]))
    assert fair["main"] == ["a"] and fair["main_shift"] == [0.30]  # reported shifts stay raw
    assert fair["purity"][0] == pytest.approx(6 / (6 + 0.35 / 0.3 + 1))
    assert purity_threshold(GroundTruthConfig(purity=0.3), effects, factors) == (0.3, "given")
    assert purity_threshold(GroundTruthConfig(), None, factors)[0] == 0.5
    value, source = purity_threshold(GroundTruthConfig(), effects[1:], factors)  # purest random: 1.0
    assert value > 1.0 and "random" in source


def test_groups_nest_fine_factors_and_take_the_largest() -> None:
    groups = factor_groups(["smile", "mouth", "skin", "other"])
    assert groups == {"mouth": ("mouth", "smile"), "skin": ("skin",), "other": ("other",)}
    eff = np.array([[[0.1, 0.3, 0.2, 0.0]]])  # (1, 1, 4) smile, mouth, skin, other
    assert grouped(eff, ["smile", "mouth", "skin", "other"], groups).tolist() == [[[0.3, 0.2, 0.0]]]
    assert all(members[0] == g or g in members for g, members in FACTOR_GROUPS.items())


class _LinearSpace:
    """A fake W space of dim 3 whose 'image' is the latent itself in three channels."""

    num_ws = 1

    def edit(self, full: torch.Tensor, v: torch.Tensor, sigma: float, layers=None) -> torch.Tensor:
        return full + sigma * v.reshape(1, 1, -1)

    def render_full(self, full: torch.Tensor, batch_size: int = 32, resolution: int | None = None):
        return full[:, 0, :, None, None].expand(-1, 3, 4, 4)  # (N, 3, 4, 4)

    render_edits = LatentSpace.render_edits  # the real edit-and-render, on this fake's edit and render_full


class _ThresholdClassifier:
    """Reads factor 'a' from channel 0 and 'b' from channel 1 (sharp sigmoids), and 'c' from the size of
    channel 2 whatever its sign (a change that both signs of an edit make alike, as a blur would)."""

    vocab = {"a": ("no", "yes"), "b": ("no", "yes"), "c": ("x", "y")}

    def predict_proba(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        m = images.mean(dim=(2, 3))  # (N, 3)
        pa, pb = torch.sigmoid(8 * m[:, 0]), torch.sigmoid(8 * m[:, 1])
        pc = torch.sigmoid(8 * (m[:, 2].abs() - 0.2))
        return {k: torch.stack([1 - p, p], 1) for k, p in (("a", pa), ("b", pb), ("c", pc))}


def test_direction_effects_find_the_axis_that_moves_one_factor() -> None:
    space, clf = _LinearSpace(), _ThresholdClassifier()
    full = torch.randn(64, 1, 3, generator=torch.Generator().manual_seed(0)) * 0.1 + 0.3  # mostly 'yes'
    full[:, :, 2] = 0.0  # 'c' reads the same at +s and -s
    eye = torch.eye(3)
    dirs = DirectionSet(
        [
            Direction("a", eye[0], std=1.0),
            Direction("b", eye[1], std=1.0),
            Direction("ab", (eye[0] + eye[1]) / 2**0.5, std=1.0),
            Direction("none", eye[2], std=1.0),
        ]
    )
    shift, change = direction_effects(space, dirs, clf, full, (0.5, 1.0))
    assert shift.shape == change.shape == (4, 2, 3)
    assert np.all(shift >= 0) and np.all(shift <= 2 * change + 1e-6)  # TV(+s, -s) <= TV(+s, 0) + TV(0, -s)
    s = summarise_effects(shift, list(clf.vocab), purity=0.9, floor=0.1)
    assert s["main"][:2] == ["a", "b"] and s["purity"][0] > 0.99 and s["purity"][1] > 0.99
    assert 0.4 < s["purity"][2] < 0.6  # the diagonal splits its change between a and b
    assert s["main_shift"][3] == pytest.approx(0.0, abs=1e-6)  # 'none' changes 'c' only symmetrically...
    assert change[3, -1, 2] > 0.3  # ...though every face's reading of 'c' changes
    assert s["covered"] == ["a", "b"]
    assert shift[0, 1, 0] > shift[0, 0, 0]  # the shift grows with the step
    with pytest.raises(ValueError, match="no std"):
        direction_effects(space, DirectionSet([Direction("x", eye[0])]), clf, full, (1.0,))


def test_matched_change_interpolates_between_steps() -> None:
    steps = (0.5, 1.0)
    effects = np.array([[[0.1, 0.0], [0.3, 0.2]], [[0.0, 0.0], [0.0, 0.1]]])  # (2, 2, 2)
    change = np.array([[0.5, 1.5], [0.1, 0.2]])  # direction 0 reaches 1.0 halfway to step 1; 1 never
    eff, step, reached = at_matched_change(effects, change, steps, 1.0)
    assert reached.tolist() == [True, False]
    np.testing.assert_allclose(eff[0], [0.2, 0.1])
    assert step[0] == pytest.approx(0.75) and np.isnan(step[1]) and np.isnan(eff[1]).all()
    eff, step, _ = at_matched_change(effects, change, steps, 0.25)  # before the first step: from 0
    np.testing.assert_allclose(eff[0], [0.05, 0.0])
    assert step[0] == pytest.approx(0.25)


def test_random_directions_are_unit_and_seeded() -> None:
    X = np.random.default_rng(0).normal(size=(500, 6)) * np.arange(1, 7)
    a, b = random_directions(6, 4, 3, X), random_directions(6, 4, 3, X)
    assert torch.equal(a.vectors, b.vectors) and len(a) == 4
    torch.testing.assert_close(a.vectors.norm(dim=1), torch.ones(4))
    assert all(d.std is not None and d.std > 0 for d in a)


def _tiny_world(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny exported avatars-style generator (untrained) and a tiny untrained factor classifier."""
    from sfvq.avatars.classifier import FactorClassifier, save_classifier
    from sfvq.avatars.dataset import factor_vocabularies
    from sfvq.avatars.export import export_generator
    from sfvq.avatars.train import TrainConfig, Trainer

    config = TrainConfig(
        resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16
    )
    images = np.zeros((2, 16, 16, 3), np.uint8)
    ckpt = Trainer(images, config).save_checkpoint(tmp_path / "run" / "checkpoint.pt", extra={"data": {}})
    weights, _ = export_generator(ckpt, tmp_path / "weights")
    torch.manual_seed(0)
    clf = FactorClassifier(factor_vocabularies(), resolution=16, width=4, hidden=16).eval()
    return weights, save_classifier(clf, tmp_path / "clf" / "clf.safetensors", {})


def test_run_and_cli_on_a_tiny_world(tmp_path: Path) -> None:
    from sfvq.avatars.classifier import load_classifier
    from sfvq.cli import main

    weights, clf_path = _tiny_world(tmp_path)
    G, clf = load_generator(str(weights)), load_classifier(clf_path)
    config = GroundTruthConfig(n=4, steps=(1.0,), k=2, bits=(2, 3), fit_n=300, mi_n=64, shuffles=3,
                               latentclr_steps=2, random_k=3)  # fmt: skip
    res = run_ground_truth(G, clf, config)
    d = res.to_dict()
    assert list(d["methods"]) == ["sfvq-2bit", "sfvq-3bit", "ganspace", "sefa", "latentclr", "random"]
    assert d["methods"]["sfvq-3bit"]["directions"] <= 7 and d["methods"]["random"]["directions"] == 3
    assert np.asarray(d["effects"]["ganspace"]).shape == (2, 1, len(d["groups"]))
    assert set(d["curve_mi"]) == {"2", "3"} and d["curve_mi"]["3"]["corners"] == 8
    for s in d["methods"].values():
        assert all(0 <= p <= 1 for p in s["purity"]) and 0 <= s["coverage"] <= len(d["groups"])
    table = markdown_report(d)
    assert "| sfvq-3bit |" in table and "curve / shuffled" in table and "matched" in table
    for s in d["methods"].values():
        m = s["matched"]
        assert 0 <= m["reached"] <= s["directions"]
        if m["reached"]:
            assert len(m["purity"]) == len(m["names"]) == m["reached"] and 0 < m["mean_purity"] <= 1
    # no direction counts as pure unless it is purer than every random direction
    assert list(d["chance"]) == list(d["groups"]) and all(v >= 0 for v in d["chance"].values())
    best_random = max(d["methods"]["random"]["purity"])
    assert d["purity_threshold"]["value"] > best_random and d["methods"]["random"]["pure"] == 0
    for s in d["methods"].values():
        pure = [
            p > best_random and m >= config.floor for p, m in zip(s["purity"], s["main_shift"], strict=True)
        ]
        assert s["pure"] == sum(pure)

    out = tmp_path / "bench"
    args = ["avatars", "benchmark", "--network", weights, "--classifier", clf_path, "--outdir", out]
    args += [
        "--bits",
        "2",
        "--methods",
        "random,sefa",
        "--k",
        "2",
        "--random-k",
        "2",
        "--n",
        "3",
        "--steps",
        "1",
    ]
    args += ["--fit-n", "300", "--mi-n", "32", "--layers", "2-3", "--quiet", "--device", "cpu"]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "benchmark.json").read_text())
    assert list(saved["methods"]) == ["sfvq-2bit", "random", "sefa"]  # in the order asked
    assert saved["config"]["layers"] == [2, 4]  # edits touched W+ layers 2-3 only
    assert (out / "benchmark.md").read_text() in r.output
    bad = CliRunner().invoke(main, [str(a) for a in [*args[:-2], "--methods", "pca"]])
    assert bad.exit_code == 2 and "unknown methods" in bad.output
    bad = CliRunner().invoke(main, [str(a) for a in [*args, "--layers", "4-9"]])
    assert bad.exit_code == 2 and "outside" in bad.output
    bad = CliRunner().invoke(main, [str(a) for a in [*args, "--bits", "x"]])
    assert bad.exit_code == 2 and "--bits" in bad.output
    dcgan = ["avatars", "benchmark", "--network", "builtin:faces-dcgan", "--classifier", str(clf_path)]
    bad = CliRunner().invoke(main, [*dcgan, "--outdir", str(tmp_path / "b2"), "--quiet"])
    assert bad.exit_code == 2 and "no W space" in bad.output


class _LayeredSpace:
    """A fake W+ space (4 layers, dim 2) whose 4x4 one-channel image has one row per layer: row ``l`` is
    ``w[l] * x[l, 0] + u[l] * x[l, 1]``, so direction (1, 0) acts through the layers where ``w`` is set
    and (0, 1) through those where ``u`` is set: the range ``--layers auto`` must pick is known."""

    num_ws, dim, noise_mode, name = 4, 2, "const", "fake-w"

    def __init__(self, w: list[float], u: list[float]) -> None:
        self.G = type("G", (), {"img_resolution": 4})()
        self.w, self.u = torch.tensor(w), torch.tensor(u)

    def encode_seeds(self, seeds) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(max(seeds) + 1, 1, 2, generator=g)[list(seeds)]  # (S, 1, 2)
        return x.expand(-1, 4, -1).clone()  # (S, 4, 2)

    def edit(self, full: torch.Tensor, v: torch.Tensor, sigma: float, layers=None) -> torch.Tensor:
        a, b = layers if layers is not None else (0, 4)
        out = full.clone()
        out[:, a:b] += sigma * v.reshape(1, 1, -1)
        return out

    def render_full(self, full: torch.Tensor, batch_size: int = 32, resolution: int | None = None):
        rows = self.w * full[..., 0] + self.u * full[..., 1]  # (N, 4)
        return rows[:, None, :, None].expand(-1, 1, 4, 4).contiguous()  # (N, 1, 4, 4)


def test_auto_layer_ranges_find_the_layers_a_direction_acts_through() -> None:
    from sfvq.avatars.benchmark import auto_layer_ranges, auto_range_row, on_auto_layers

    space = _LayeredSpace(w=[0, 0, 1, 1], u=[1, 0, 0, 0])
    dirs = DirectionSet(
        [Direction("x", torch.tensor([1.0, 0.0]), std=0.5), Direction("y", torch.eye(2)[1], std=2.0)]
    )
    ranges = auto_layer_ranges(space, dirs, 2.0, [0, 1, 2])
    assert [r for r, _ in ranges] == [(2, 4), (0, 1)]  # x acts through layers 2-3, y through layer 0
    assert all(share == pytest.approx(1.0) for _, share in ranges)
    moved = on_auto_layers(dirs, ranges)
    assert [d.layers for d in moved] == [(2, 4), (0, 1)] and [d.layers for d in dirs] == [None, None]
    assert torch.equal(moved.vectors, dirs.vectors) and moved.meta["layers"] == "auto"
    assert (
        auto_range_row("x@auto", [[2, 4], [0, 4], [2, 4]], 2.0, 4)
        == "| x@auto | 2.00 | 2.7 | 1 | 2-3 (2), 0-3 (1) |"
    )
    nothing = _LayeredSpace(w=[0, 0, 0, 0], u=[1, 0, 0, 0])  # x changes nothing: every layer
    assert auto_layer_ranges(nothing, dirs, 2.0, [0])[0] == ((0, 4), None)
    with pytest.raises(ValueError, match="no std"):
        auto_layer_ranges(space, DirectionSet([Direction("z", torch.eye(2)[0])]), 2.0, [0])
    with pytest.raises(ValueError, match="not both"):
        GroundTruthConfig(layers=(0, 2), auto_layers=True).check()
    with pytest.raises(ValueError, match="--layers auto"):
        GroundTruthConfig(auto_sigma=2.0).check()


def test_auto_layers_on_a_tiny_world(tmp_path: Path) -> None:
    from sfvq.cli import main

    weights, clf_path = _tiny_world(tmp_path)
    out = tmp_path / "bench"
    args = ["avatars", "benchmark", "--network", weights, "--classifier", clf_path, "--outdir", out]
    args += [
        "--bits",
        "2",
        "--methods",
        "sefa,random",
        "--k",
        "2",
        "--random-k",
        "3",
        "--n",
        "3",
        "--steps",
        "1",
    ]
    args += [
        "--fit-n",
        "300",
        "--mi-n",
        "32",
        "--layers",
        "auto",
        "--auto-seeds",
        "2",
        "--quiet",
        "--device",
        "cpu",
    ]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    d = json.loads((out / "benchmark.json").read_text())
    names = ["sfvq-2bit", "sfvq-2bit@auto", "sefa", "sefa@auto", "random", "random@auto"]
    assert list(d["methods"]) == names and d["config"]["auto_layers"] and d["config"]["layers"] is None
    auto = d["auto_layers"]
    assert auto["seeds"] == [3, 4] and auto["num_ws"] >= 2  # the seeds after the 3 measured ones
    assert set(auto["ranges"]) == {n for n in names if n.endswith("@auto")}
    for name, ranges in auto["ranges"].items():
        assert (
            len(ranges)
            == d["methods"][name]["directions"]
            == d["methods"][name.removesuffix("@auto")]["directions"]
        )
        assert all(0 <= a < b <= auto["num_ws"] for a, b in ranges) and auto["sigmas"][name] > 0
    # the @auto rows are judged against random directions on their own ranges
    best = max(d["methods"]["random@auto"]["purity"])
    assert auto["purity_threshold"]["value"] > best and d["methods"]["random@auto"]["pure"] == 0
    assert list(auto["chance"]) == list(d["groups"])
    for name in names:
        s = d["methods"][name]
        th = (auto if name.endswith("@auto") else d)["purity_threshold"]["value"]
        assert s["pure"] == sum(
            p >= th and m >= 0.25 for p, m in zip(s["purity"], s["main_shift"], strict=True)
        )
        m = s["matched"]  # at the matched change: above the purest random direction of its family there
        if m["reached"]:
            m_th = (auto if name.endswith("@auto") else d)["purity_threshold"]["matched"]
            pure = [p >= m_th for p in m["purity"]]  # no floor: the change is matched
            assert m["pure"] == sum(pure) and m["coverage"] == len(m["covered"]) <= m["pure"]
    assert d["methods"]["random@auto"]["matched"].get("pure", 0) == 0
    table = (out / "benchmark.md").read_text()
    assert "| sefa@auto |" in table and "commonest ranges" in table and "`@auto` rows" in table
    bad = CliRunner().invoke(main, [str(a) for a in [*args, "--auto-sigma", "0"]])
    assert bad.exit_code == 2 and "--auto-sigma" in bad.output


def test_purity_criterion_settings_and_group_shifts() -> None:
    from sfvq.avatars.benchmark import classifier_group_shifts

    with pytest.raises(ValueError, match="pixels or purity"):
        GroundTruthConfig(auto_layers=True, auto_criterion="colour").check()
    with pytest.raises(ValueError, match="--layers auto"):
        GroundTruthConfig(auto_criterion="purity").check()
    with pytest.raises(ValueError, match="random"):
        GroundTruthConfig(auto_layers=True, auto_criterion="purity", methods=("sefa",)).check()
    GroundTruthConfig(auto_layers=True, auto_criterion="purity").check()

    class Fake:
        """Reads 'mouth' from the red channel's mean and 'smile' (nested in mouth) from the green one."""

        vocab = {"mouth": ["a", "b"], "smile": ["no", "yes"], "skin": ["x", "y"]}

        def predict_proba(self, images):
            r = images[:, 0].mean(dim=(1, 2)).clamp(0, 1)
            g = images[:, 1].mean(dim=(1, 2)).clamp(0, 1)
            return {
                "mouth": torch.stack([1 - r, r], 1),
                "smile": torch.stack([1 - g, g], 1),
                "skin": torch.full((len(images), 2), 0.5),
            }

    groups = {"mouth": ("mouth", "smile"), "skin": ("skin",)}
    plus, minus = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    plus[:, 0], plus[0, 1] = 0.6, 0.8  # mouth: 0.6 -> TV 0.6; smile: mean 0.4 -> TV 0.4
    got = classifier_group_shifts(Fake(), groups)(plus, minus)
    assert got == pytest.approx([0.6, 0.0])  # per group the largest member


def test_purity_criterion_on_a_tiny_world(tmp_path: Path) -> None:
    from sfvq.cli import main

    weights, clf_path = _tiny_world(tmp_path)
    out = tmp_path / "bench"
    args = ["avatars", "benchmark", "--network", weights, "--classifier", clf_path, "--outdir", out]
    args += ["--bits", "2", "--methods", "random", "--random-k", "3", "--n", "3", "--steps", "1"]
    args += ["--fit-n", "300", "--mi-n", "32", "--layers", "auto", "--auto-seeds", "2"]
    args += ["--auto-criterion", "purity", "--auto-sigma", "1", "--quiet", "--device", "cpu"]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    d = json.loads((out / "benchmark.json").read_text())
    assert list(d["methods"]) == ["sfvq-2bit", "sfvq-2bit@auto", "random", "random@auto"]
    auto = d["auto_layers"]
    assert auto["criterion"] == "purity" and d["config"]["auto_criterion"] == "purity"
    assert "sfvq.annotate's purity criterion" in (out / "benchmark.md").read_text()
    assert list(auto["selection_chance"]) == ["1"] and list(auto["selection_chance"]["1"]) == list(
        d["groups"]
    )
    for name, ranges in auto["ranges"].items():
        assert len(ranges) == d["methods"][name.removesuffix("@auto")]["directions"]
        assert all(0 <= a < b <= auto["num_ws"] for a, b in ranges)
    # Without random directions there is no chance to divide by: refused before any work.
    bad = [a for a in args if a != "random"]
    bad[bad.index("--methods") + 1 : bad.index("--methods") + 1] = ["sefa"]
    r = CliRunner().invoke(main, [str(a) for a in bad])
    assert r.exit_code != 0 and "random" in r.output
