"""Segment annotations (sfvq.annotate) and the scorer interface (sfvq.scorers.interface)."""

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "cli"))

from sfvq_runs import sg2_test_run  # noqa: E402

from sfvq.annotate import (  # noqa: E402
    AnnotationError,
    Renderer,
    annotate_run,
    auto_layers,
    choose_range,
    choose_range_by_purity,
    connected_regions,
    default_sigma,
    heat_image,
    heat_map,
    layer_groups,
    locality,
    range_fit,
    range_purity,
    read_annotations,
    segment_annotation,
    summary_line,
)
from sfvq.scorers.interface import (  # noqa: E402
    ScorerError,
    check_scorer,
    load_user_scorer,
    make_scorer,
    run_scorer,
)

# ---------------------------------------------------------------------------------------------- heat maps


def test_heat_map_is_the_mean_absolute_change_over_seeds_signs_and_channels():
    base = torch.zeros(2, 3, 4, 4)
    edited = torch.zeros(2, 2, 3, 4, 4)
    edited[0, 0, :, 1, 1] = 1.0  # seed 0, +step: all channels of one pixel
    edited[1, 1, 0, 2, 3] = -2.0  # seed 1, -step: one channel of another
    heat = heat_map(base, edited)
    assert heat.shape == (4, 4)
    assert heat[1, 1] == pytest.approx(3 / 12)  # |1| x 3 channels / (2 seeds x 2 signs x 3 channels)
    assert heat[2, 3] == pytest.approx(2 / 12)
    assert float(heat.sum()) == pytest.approx(5 / 12)


def test_locality_of_hand_made_changes():
    one_blob = np.zeros((32, 32))
    one_blob[4:10, 20:26] = 1.0
    assert locality(one_blob) == pytest.approx(1.0)  # all the change in one region
    two = one_blob.copy()
    two[20:23, 2:5] = 2.0  # 9 px x 2 = 18 vs the first blob's 36
    assert locality(two) == pytest.approx(36 / 54)
    assert locality(np.ones((32, 32))) == 0.0  # even change: no pixel is twice the mean
    assert locality(np.zeros((8, 8))) == 0.0
    # A weak change everywhere plus a strong blob: the share counts the whole image's change.
    mixed = np.full((32, 32), 0.01)
    mixed[10:14, 10:14] = 1.0
    total = 0.01 * (1024 - 16) + 16
    assert locality(mixed) == pytest.approx(16 / total)
    # Diagonal neighbours join one region (8-connectivity).
    diag = np.zeros((16, 16))
    for i in range(4):
        diag[3 + i, 3 + i] = 1.0
    labels, n = connected_regions(diag > 0)
    assert n == 1 and locality(diag) == pytest.approx(1.0)


def test_locality_is_computed_on_a_reduced_map_for_large_images():
    heat = np.zeros((512, 512))
    heat[100:140, 300:340] = 1.0
    assert locality(heat) == pytest.approx(1.0)


def test_heat_image_is_upscaled_without_smoothing():
    heat = np.zeros((32, 32))
    heat[0, 0] = 1.0
    img = heat_image(heat)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    assert (img[:3, :3] == img[0, 0]).all() and not (img[3, 3] == img[0, 0]).all()


# ---------------------------------------------------------------------------------------------- layers


def test_layer_groups():
    assert layer_groups(8) == [(i, i + 1) for i in range(8)]
    assert layer_groups(18) == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 18)]
    assert layer_groups(14) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14)]


def test_range_fit_and_choice_on_a_synthetic_per_layer_effect():
    """Layers 2-4 change the region, layer 6 changes the rest: the range 2-4 keeps the effect without
    the change elsewhere, although the full range keeps all of it."""
    H = W = 8
    region = torch.zeros(H, W, dtype=torch.bool)
    region[2:5, 2:5] = True
    rng = torch.Generator().manual_seed(0)
    layer = [torch.zeros(1, 1, H, W) for _ in range(8)]
    for i in (2, 3, 4):
        layer[i][0, 0][region] = torch.rand(9, generator=rng) + 0.5
    layer[6][0, 0][~region] = 0.3
    full = sum(layer)
    ranges = [(a, b) for a in range(8) for b in range(a + 1, 9)]
    fits = [range_fit(full, sum(layer[a:b]), region) for a, b in ranges]
    k, o = fits[ranges.index((0, 8))]
    assert k == pytest.approx(1.0) and o > 0.02  # the full range: everything, and change elsewhere
    pick = ranges[choose_range(ranges, [f[0] for f in fits], [f[1] for f in fits])]
    assert pick == (2, 5)
    # Nothing but the full range keeps 80 %: it is chosen.
    assert choose_range([(0, 1), (0, 2)], [0.5, 1.0], [0.0, 0.4]) == 1
    # Within the tolerance, fewer layers win; outside it the better score wins.
    assert choose_range([(0, 4), (1, 3)], [1.0, 0.99], [0.0, 0.0]) == 1
    assert choose_range([(0, 4), (1, 3)], [1.0, 0.9], [0.0, 0.0]) == 0
    with pytest.raises(AnnotationError):
        choose_range([(0, 1)], [0.1], [0.0])


class LinearSpace:
    """A made-up W+ space with 8 layers whose images are linear in the latents: layers 2-4 draw a blob,
    layer 6 (weakly) the background, the other layers nothing."""

    kind, name, num_ws, dim, full_dim, noise_mode = "w", "w", 8, 4, 4, "const"

    class G:
        img_resolution = 16

    def __init__(self) -> None:
        self.maps = torch.zeros(8, 4, 1, 16, 16)  # layer, dim -> image
        blob = torch.zeros(16, 16, dtype=torch.bool)
        blob[4:8, 9:13] = True
        for layer in (2, 3, 4):
            self.maps[layer, 0, 0][blob] = 1.0
        self.maps[6, 0, 0][~blob] = 0.2

    def encode_seeds(self, seeds):
        g = torch.Generator().manual_seed(sum(seeds))
        return torch.randn(len(seeds), 1, 4, generator=g).expand(-1, 8, -1).clone()

    def edit(self, full, direction, sigma, layers=None):
        a, b = layers if layers is not None else (0, 8)
        out = full.clone()
        out[:, a:b] += sigma * torch.as_tensor(direction, dtype=torch.float32)
        return out

    def render_full(self, full, batch_size=None, resolution=None):
        return torch.einsum("nld,ldchw->nchw", full, self.maps)


@pytest.mark.parametrize("search", ["shrink", "exact"])
def test_renderer_finds_the_layers_that_carry_the_effect(search):
    r = Renderer(LinearSpace(), [0, 1], search=search)
    a = r.annotate(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2.0)
    assert a.layers == (2, 5)
    assert a.layer_share == pytest.approx(1.0) and a.layer_outside == pytest.approx(0.0)
    assert a.locality == pytest.approx(0.5)  # blob: 16 px x 6 = 96; background: 240 px x 0.4 = 96
    # A direction the images do not see changes nothing: no range.
    none = r.annotate(torch.tensor([0.0, 1.0, 0.0, 0.0]), 2.0)
    assert none.change == 0.0 and none.layers is None


# ---------------------------------------------------------------------------------------------- scorers


class ToyScorer:
    """Mean brightness and red share of images; ``diff`` is paired (mean absolute change)."""

    label = "toy"
    names = ("brightness", "red", "diff")
    paired = ("diff",)
    scales = {"brightness": 0.5}

    def score(self, images):
        return {"brightness": images.mean(dim=(1, 2, 3)), "red": images[:, 0].mean(dim=(1, 2))}

    def compare(self, before, after):
        return {"diff": (after - before).abs().mean(dim=(1, 2, 3))}


def test_toy_scorer_through_the_interface():
    s = check_scorer(ToyScorer())
    images = torch.zeros(3, 3, 4, 4)
    images[1] = 1.0
    out = run_scorer(s, images)
    assert set(out) == {"brightness", "red"}  # paired names come from compare
    assert out["brightness"].tolist() == [0.0, 1.0, 0.0]


def test_bad_scorers_are_refused_with_the_reason():
    class NoNames:
        names = ()

        def score(self, images):
            return {}

    with pytest.raises(ScorerError, match="names"):
        check_scorer(NoNames())

    class WrongLength(ToyScorer):
        def score(self, images):
            return {"brightness": torch.zeros(1), "red": torch.zeros(images.shape[0])}

    with pytest.raises(ScorerError, match="1 values for 3 images"):
        run_scorer(WrongLength(), torch.zeros(3, 3, 4, 4))

    class Missing(ToyScorer):
        def score(self, images):
            return {"brightness": torch.zeros(images.shape[0])}

    with pytest.raises(ScorerError, match="gave no red"):
        run_scorer(Missing(), torch.zeros(2, 3, 4, 4))


USER_FILE = """
import torch

class Brightness:
    names = ("brightness",)

    def score(self, images):
        return {"brightness": images.mean(dim=(1, 2, 3))}

def make_scorer():
    return Brightness()

def broken():
    raise RuntimeError("no weights here")

def not_a_scorer():
    return 42
"""


def test_user_entry_points(tmp_path, monkeypatch):
    path = tmp_path / "my_scorers.py"
    path.write_text(textwrap.dedent(USER_FILE))
    s = load_user_scorer(f"{path}:make_scorer")
    assert s.names == ("brightness",) and s.label == f"{path}:make_scorer"
    monkeypatch.syspath_prepend(str(tmp_path))
    s2, line = make_scorer("my_scorers:make_scorer")
    assert s2.names == ("brightness",) and "my_scorers:make_scorer" in line
    for spec, message in [
        (f"{path}:broken", "no weights here"),
        (f"{path}:not_a_scorer", "names"),
        (f"{path}:missing", "no function 'missing'"),
        (f"{tmp_path / 'nope.py'}:make_scorer", "no such file"),
        ("no_such_module_xyz:make", "cannot import module"),
        ("justtext", "entry point"),
    ]:
        with pytest.raises(ScorerError, match=message):
            make_scorer(spec)


def test_default_scorer_follows_the_generator():
    assert make_scorer("none")[0] is None

    class Plain:
        name = "some-gan"

    s, line = make_scorer("auto", "some.pkl", Plain())
    assert s is None and "no scorer fits some-gan" in line
    avatars, line = make_scorer("auto", "builtin:avatars-sg2")
    assert avatars.label == "avatars-classifier" and "mouth=smile" in avatars.names
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    out = run_scorer(avatars, images)
    smile = out["smile=no"] + out["smile=yes"]
    assert torch.allclose(smile, torch.ones(2, dtype=torch.float64), atol=1e-5)


def test_summary_line_ranks_by_scale():
    effects = {"age": 4.0, "smile": 0.3, "yaw": -0.01, "identity": 0.25}
    line = summary_line(effects, {"age": 10.0, "identity": 0.6}, paired=("identity",))
    assert line == "identity 0.25, age +4.00, smile +0.30"
    assert summary_line({"a": 0.001}) == "no clear change in the scores"


# ---------------------------------------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def sg2_run(shared_dir, tmp_path_factory):
    run_dir, model, space, X = sg2_test_run(shared_dir, tmp_path_factory)
    return run_dir


def test_annotations_json_of_a_tiny_run(sg2_run):
    from sfvq.runs import Run

    run = Run.open(sg2_run)
    path = annotate_run(run, 3, seeds=[0, 1], scorer=ToyScorer(), progress=False)
    data = json.loads(path.read_text())
    assert data["format"] == "sfvq.annotations" and data["scorer"] == "toy"
    assert data["seeds"] == [0, 1] and data["num_ws"] == 8
    assert data["sigmas"] == {"3": pytest.approx(default_sigma(run.latents, run.model, 3))}
    assert data["sigmas"]["3"] > 0
    rows = data["bits"]["3"]
    assert [r["segment"] for r in rows] == list(range(7))
    for r in rows:
        assert (sg2_run / r["heat"]).is_file() and r["heat"] == f"annotations/b3_s{r['segment']:03d}.png"
        assert 0 <= r["locality"] <= 1 and r["change"] > 0
        assert set(r["effects"]) == {"brightness", "red", "diff"} and r["effects"]["diff"] > 0
        a, b = r["layers"]
        assert 0 <= a < b <= 8 and r["layer_share"] >= 0.8
        assert r["summary"]
    # A second bitrate with the same settings keeps the first.
    annotate_run(run, 2, seeds=[0, 1], scorer=ToyScorer(), progress=False)
    data = read_annotations(sg2_run)
    assert set(data["bits"]) == {"2", "3"} and set(data["sigmas"]) == {"2", "3"}
    # --layers auto reads a segment's range from the file ...
    from sfvq.directions import spec_direction

    d = spec_direction(run.model, "3:4", run.latents)
    used, where = auto_layers(run, d, run.space)
    assert used == tuple(segment_annotation(data, 3, 4)["layers"]) and "annotations.json" in where
    # ... and computes it for a direction the file lacks.
    d = spec_direction(run.model, "4:1-3", run.latents)
    used, where = auto_layers(run, d, run.space)
    assert 0 <= used[0] < used[1] <= 8 and "computed" in where
    # Annotations of another curve (another run id) are not read.
    raw = json.loads((sg2_run / "annotations.json").read_text())
    raw["run_id"] = "someotherrun"
    (sg2_run / "annotations.json").write_text(json.dumps(raw))
    assert read_annotations(sg2_run, run_id="thisrun") is None


def test_sfvq_run_annotate_step(shared_dir, tmp_path):
    """``sfvq run --annotate``: an annotate step before the report annotates the finest and the edit
    bitrate into the published run, with the edit grids' largest sigma."""
    from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir
    from sfvq.pipeline import STEPS, RunConfig, run_pipeline, steps_for

    G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")
    config = RunConfig(network="sg2-fixture", outdir=tmp_path / "run", bits=3, edit_bits=2, n=256,
                       edit_seeds=(0, 1), sigmas=(-2.0, 0.0, 2.0), walk_frames=4, progress=False,
                       annotate=True)  # fmt: skip
    assert steps_for(RunConfig(network="x", outdir=tmp_path)) == STEPS
    result = run_pipeline(config, G=G)
    assert list(result.timings) == [*STEPS[:-1], "annotate", "report"]
    data = read_annotations(tmp_path / "run", run_id=result.model.metadata_["run_id"])
    assert data is not None and set(data["bits"]) == {"2", "3"} and data["sigmas"] == {"2": 2.0, "3": 2.0}
    assert data["seeds"] == [0, 1] and data["scorer"] == "none"
    assert all((tmp_path / "run" / r["heat"]).is_file() for r in data["bits"]["3"])


def test_face_scorer_adapter_with_fake_parts():
    """The face adapter turns the attribute scorer's arrays into the interface's scores and the identity
    scorer's paired distances into the paired name ``identity``."""
    from sfvq.scorers.interface import FaceScorer, run_compare

    class FakeAttributes:
        def score(self, images):
            n = images.shape[0]
            return {"age": np.full(n, 30.0), "gender": np.zeros(n), "smile": np.linspace(0, 1, n),
                    "yaw": np.zeros(n), "detected": np.ones(n, bool)}  # fmt: skip

    class FakeIdentity:
        def distances(self, a, b):
            return (a - b).abs().mean(dim=(1, 2, 3)).numpy()

    s = check_scorer(FaceScorer(FakeAttributes(), FakeIdentity()))
    assert s.names == ("age", "gender", "smile", "yaw", "identity") and s.paired == ("identity",)
    images = torch.zeros(3, 3, 8, 8)
    out = run_scorer(s, images)
    assert set(out) == {"age", "gender", "smile", "yaw"} and out["smile"].tolist() == [0.0, 0.5, 1.0]
    d = run_compare(s, images, images + 0.5)
    assert d["identity"].tolist() == [0.5, 0.5, 0.5]
    only_identity = FaceScorer(identity=FakeIdentity())
    assert only_identity.names == ("identity",) and run_scorer(only_identity, images) == {}
    with pytest.raises(ScorerError):
        FaceScorer()


def test_layer_choice_parsing():
    from sfvq.parsing import parse_layer_choice

    assert parse_layer_choice("auto") == "auto" and parse_layer_choice(" AUTO ") == "auto"
    assert parse_layer_choice("4-7") == (4, 8) and parse_layer_choice("5") == (5, 6)
    with pytest.raises(ValueError, match="not a layer index"):
        parse_layer_choice("automatic")


# ---------------------------------------------------------------------------------------- purity criterion


def test_range_purity_and_choice_by_purity():
    assert range_purity([0.0, 0.0]) == (0.0, 0)
    assert range_purity([1.0, 3.0]) == (pytest.approx(0.75), 1)
    # Weights (e.g. chance shifts) change which group is the main one.
    assert range_purity([1.0, 3.0], [0.1, 3.0]) == (pytest.approx(10 / 11), 0)
    ranges = [(0, 1), (1, 3), (0, 4)]
    # The purest qualifying range wins; one that moves too little does not qualify.
    assert choose_range_by_purity(ranges, [0.9, 0.8, 0.5], [0.05, 0.3, 0.6], min_shift=0.1) == 1
    assert choose_range_by_purity(ranges, [0.9, 0.8, 0.5], [0.2, 0.3, 0.6], min_shift=0.1) == 0
    # Within the tolerance, fewer layers win.
    assert choose_range_by_purity(ranges, [0.89, 0.9, 0.5], [0.2, 0.3, 0.6], min_shift=0.1) == 0
    # Nothing moves enough: only the full range qualifies.
    assert choose_range_by_purity(ranges, [0.9, 0.8, 0.5], [0, 0, 0], min_shift=0.1, full=(0, 4)) == 2
    with pytest.raises(AnnotationError):
        choose_range_by_purity(ranges, [0.9, 0.8, 0.5], [0, 0, 0], min_shift=0.1)


class RegionScorer:
    """Reads the blob of :class:`LinearSpace` (two values of one factor) and its background."""

    label = "regions"
    names = ("blob=bright", "blob=dark", "bg")

    def score(self, images):
        blob = images[:, 0, 4:8, 9:13].mean(dim=(1, 2))
        bg = (images[:, 0].sum(dim=(1, 2)) - blob * 16) / (256 - 16)
        return {"blob=bright": blob, "blob=dark": -blob, "bg": bg}


def test_purity_criterion_keeps_the_layers_that_change_one_thing():
    """Layers 2-4 move the blob, layer 6 the background: the pixel criterion keeps 2-4 (where the image
    changes), the purity criterion the fewest layers that move only the blob by at least min_shift."""
    e0 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    pixels = Renderer(LinearSpace(), [0, 1], scorer=RegionScorer(), search="exact").annotate(e0, 2.0)
    assert pixels.layers == (2, 5) and pixels.layer_purity is None
    # Blob shift per layer at +-2: |2 - (-2)| / 2 = 2 per value, 4 for the group (two values).
    for min_shift, want in ((1.0, (2, 3)), (6.0, (2, 4)), (10.0, (2, 5)), (100.0, (0, 8))):
        r = Renderer(LinearSpace(), [0, 1], scorer=RegionScorer(), search="exact", criterion="purity",
                     min_shift=min_shift)  # fmt: skip
        a = r.annotate(e0, 2.0)
        assert a.layers == want, min_shift
        assert a.layer_purity == pytest.approx(1.0 if want != (0, 8) else 12 / 12.4)
        assert 0.0 < a.layer_share <= 1.0 + 1e-9
    # Shrink renders fewer ranges and still ends on a range that moves only the blob.
    r = Renderer(LinearSpace(), [0, 1], scorer=RegionScorer(), criterion="purity", min_shift=10.0)
    a = r.annotate(e0, 2.0)
    assert a.layer_purity == pytest.approx(1.0) and a.layers[0] >= 2 and a.layers[1] in (5, 6)
    # A group-shift function replaces the scorer; weights divide its shifts.
    bg_only = Renderer(
        LinearSpace(), [0, 1], search="exact", criterion="purity", min_shift=0.1,
        group_shifts=lambda p, m: RegionScorer().score(p)["bg"].sub(RegionScorer().score(m)["bg"])
        .abs().mean().reshape(1).numpy(),
    )  # fmt: skip
    assert bg_only.annotate(e0, 2.0).layers == (6, 7)


def test_purity_criterion_refuses_bad_settings():
    with pytest.raises(AnnotationError, match="criterion"):
        Renderer(LinearSpace(), [0], criterion="colour")
    with pytest.raises(AnnotationError, match="scorer"):
        Renderer(LinearSpace(), [0], criterion="purity")
    with pytest.raises(AnnotationError, match="min_shift"):
        Renderer(LinearSpace(), [0], scorer=RegionScorer(), criterion="purity", min_shift=-1)
