"""Directions: segment sets, the file format, spec resolution, named directions in a run, edits."""

import json

import numpy as np
import pytest
import torch

from sfvq import SFVQ
from sfvq.directions import (
    Direction,
    DirectionFileError,
    DirectionSet,
    DirectionSpecError,
    check_layers,
    check_name,
    edit_full,
    layers_text,
    load_run_directions,
    nearest_segment,
    parse_spec,
    resolve_direction,
    run_latents,
    save_named_direction,
    segment_directions,
    spec_direction,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((300, 6)) * np.array([3, 2, 1, 0.5, 0.3, 0.1])).astype(np.float32)


@pytest.fixture(scope="module")
def model(data):
    return SFVQ(3, epochs=1, batch_size=128, random_state=0, verbose=False).fit(data)


@pytest.fixture
def run(tmp_path, model, data):
    """A run directory with a model, latents and a W-like space.json (8 style layers)."""
    model.save(tmp_path / "model.safetensors")
    np.save(tmp_path / "latents.npy", data)
    (tmp_path / "space.json").write_text(json.dumps({"kind": "w", "num_ws": 8, "dim": 6}))
    return tmp_path


def test_segment_directions_match_the_codebook(model, data):
    C = model.codebooks_[3].double().numpy()
    ds = segment_directions(model, 3, data)
    assert len(ds) == 7 and ds.dim == 6 and ds.names == [f"3:{i}" for i in range(7)]
    for i, d in enumerate(ds):
        raw = C[i + 1] - C[i]
        np.testing.assert_allclose(d.vector.numpy(), raw / np.linalg.norm(raw), rtol=1e-6, atol=1e-7)
        assert d.length == pytest.approx(np.linalg.norm(raw), rel=1e-12)
        # std of the data projected on the unit direction, computed directly
        u = raw / np.linalg.norm(raw)
        assert d.std == pytest.approx((data.astype(np.float64) @ u).std(), rel=1e-6)
        assert d.source == {"method": "sfvq", "bits": 3, "segments": [i], "corners": [i, i + 1]}
        assert d.layers is None
    assert all(d.std is None for d in segment_directions(model, 2))


def test_specs_resolve_to_corner_differences(model):
    C = model.codebooks_[3].double()
    d = spec_direction(model, "3:1-4")
    raw = C[4] - C[1]
    torch.testing.assert_close(d.vector.double(), raw / raw.norm(), rtol=1e-6, atol=1e-7)
    assert d.length == pytest.approx(float(raw.norm()))
    assert d.source["corners"] == [1, 4] and d.name == "3:1-4"
    # "b:i-(i-1)" is the reverse of segment i-1 (the paper writes hat = c9 - c10)
    rev = spec_direction(model, "3:5-4")
    torch.testing.assert_close(rev.vector, -spec_direction(model, "3:4").vector)
    assert parse_spec(" 4 : 9 ") == (4, 9, 10) and parse_spec("4:10-9") == (4, 10, 9)
    assert parse_spec("hat") is None and parse_spec("4:") is None and parse_spec("-1:2") is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("5:1", r"no 5-bit curve in this model; it has bits 2-3"),
        ("3:7", r"segment 7 is out of range: the 3-bit curve has segments 0-6"),
        ("2:1-4", r"corner 4 is out of range: the 2-bit curve has corners 0-3"),
        ("3:2-2", r"is empty: the two corners must differ"),
        ("3:x", r"not a segment spec"),
    ],
)
def test_bad_specs(model, spec, message):
    with pytest.raises(DirectionSpecError, match=message):
        spec_direction(model, spec)


def _sample_set() -> DirectionSet:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 5, generator=g)
    v = v / v.norm(dim=1, keepdim=True)
    return DirectionSet(
        [
            Direction(
                "hat",
                v[0],
                {"method": "sfvq", "bits": 4, "segments": [9], "corners": [10, 9]},
                0,
                4,
                1.2345678901234567,
                0.1 + 0.2,
                -1,
            ),
            Direction("age", v[1], {"method": "paper", "file": "age.npy"}, 3, 8),
            Direction("pc0", v[2], {"method": "ganspace", "component": 0}, std=2.5),
        ],  # fmt: skip
        meta={"num_ws": 18, "note": "ü"},
    )


def test_file_round_trip_is_exact(tmp_path):
    ds = _sample_set()
    path = ds.save(tmp_path / "dirs")
    assert path == tmp_path / "dirs.safetensors" and (tmp_path / "dirs.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirs.json", "dirs.safetensors"]  # no temp files
    for name in ("dirs", "dirs.safetensors", "dirs.json"):
        back = DirectionSet.load(tmp_path / name)
        assert back.names == ds.names and back.meta == ds.meta and back.dim == 5
        assert torch.equal(back.vectors, ds.vectors)
        assert [d.info() for d in back] == [d.info() for d in ds]
    side = json.loads((tmp_path / "dirs.json").read_text())
    assert side["format"] == "sfvq.directions" and side["count"] == 3 and side["file"] == "dirs.safetensors"
    assert side["directions"][0]["layer_stop"] == 4 and side["directions"][0]["sign"] == -1
    # An empty set round-trips too (a run whose last named direction was removed).
    DirectionSet(dim=7).save(tmp_path / "empty")
    empty = DirectionSet.load(tmp_path / "empty.safetensors")
    assert len(empty) == 0 and empty.vectors.shape == (0, 7)


def test_foreign_and_corrupt_files(tmp_path, model):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="no such directions file"):
        DirectionSet.load(tmp_path / "nope")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(DirectionFileError, match="not a readable safetensors file"):
        DirectionSet.load(tmp_path / "junk")
    model.save(tmp_path / "model.safetensors")
    with pytest.raises(DirectionFileError, match="is an sfvq model, not an sfvq directions file"):
        DirectionSet.load(tmp_path / "model.safetensors")
    save_file({"directions": torch.zeros(2, 3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DirectionFileError, match="is a safetensors file, not an sfvq directions file"):
        DirectionSet.load(tmp_path / "plain.safetensors")
    ds = _sample_set()
    desc = json.dumps(ds.describe())
    save_file(
        {"directions": torch.zeros(2, 5)}, str(tmp_path / "short.safetensors"), {"sfvq_directions": desc}
    )
    with pytest.raises(DirectionFileError, match=r"has shape \(2, 5\), the metadata describes \(3, 5\)"):
        DirectionSet.load(tmp_path / "short.safetensors")
    newer = json.dumps({**ds.describe(), "format_version": 99})
    save_file({"directions": ds.vectors}, str(tmp_path / "new.safetensors"), {"sfvq_directions": newer})
    with pytest.raises(DirectionFileError, match="newer sfvq"):
        DirectionSet.load(tmp_path / "new.safetensors")
    save_file({"directions": ds.vectors}, str(tmp_path / "bad.safetensors"), {"sfvq_directions": "{oops"})
    with pytest.raises(DirectionFileError, match="not valid JSON"):
        DirectionSet.load(tmp_path / "bad.safetensors")
    nan = ds.vectors.clone()
    nan[1, 2] = float("nan")
    save_file({"directions": nan}, str(tmp_path / "nan.safetensors"), {"sfvq_directions": desc})
    with pytest.raises(DirectionFileError, match="contains NaN"):
        DirectionSet.load(tmp_path / "nan.safetensors")


def test_set_validation():
    ds = _sample_set()
    with pytest.raises(ValueError, match="already exists"):
        ds.add(Direction("hat", torch.ones(5)))
    with pytest.raises(ValueError, match="has 4 entries, this set holds 5-D ones"):
        ds.add(Direction("x", torch.ones(4)))
    with pytest.raises(ValueError, match="sign must be"):
        ds.add(Direction("x", torch.ones(5), sign=2))
    with pytest.raises(ValueError, match="both be set"):
        ds.add(Direction("x", torch.ones(5), layer_start=2))
    with pytest.raises(ValueError, match="0 <= start < stop"):
        ds.add(Direction("x", torch.ones(5), layer_start=4, layer_stop=4))
    ds.add(Direction("hat", torch.ones(5)), overwrite=True)
    assert torch.equal(ds["hat"].vector, torch.ones(5)) and ds.names == ["hat", "age", "pc0"]
    with pytest.raises(KeyError, match="no direction named 'x'; names: hat, age, pc0"):
        ds["x"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("", "non-empty"),
        ("../evil", "looks like a path"),
        ("a/b", "looks like a path"),
        ("a\\b", "looks like a path"),
        (".hidden", "looks like a path"),
        ("~home", "looks like a path"),
        ("5:1", "kept for segment specs"),
        (" pad", "leading or trailing spaces"),
        ("x" * 65, "64 characters at most"),
        ("a*b", "is not allowed"),
    ],
)
def test_names_that_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        check_name(name)


def test_layer_checks_and_text():
    check_layers((4, 8), 18)
    with pytest.raises(ValueError, match="outside this space's layers 0-17"):
        check_layers((10, 19), 18)
    with pytest.raises(ValueError, match="no style layers"):
        check_layers((0, 1), 1)
    assert layers_text((4, 8)) == "4-7" and layers_text((5, 6)) == "5"
    assert layers_text(None, 18) == "0-17" and layers_text(None, 1) == "all" and layers_text(None) == "all"


def test_named_directions_in_a_run(run, model, data):
    d = save_named_direction(run, "hat", "3:2", (0, 4), model, sign=-1)
    assert d.sign == -1 and d.layers == (0, 4) and d.source["spec"] == "3:2"
    torch.testing.assert_close(d.vector, -spec_direction(model, "3:2").vector)
    assert d.std == pytest.approx(spec_direction(model, "3:2", data).std)  # from <run>/latents.npy
    save_named_direction(run, "wide", "3:1-3", None, model)
    saved = load_run_directions(run)
    assert saved.names == ["hat", "wide"] and saved.meta["num_ws"] == 8
    assert (run / "directions.json").is_file()
    # Resolved by name (layers and sign kept), specs still win over names.
    got = resolve_direction("hat", model, run)
    assert got.layers == (0, 4) and torch.equal(got.vector, d.vector)
    assert resolve_direction("3:2", model, run).sign == 1
    # Saving a saved name under a new name keeps its orientation (sign composes).
    again = save_named_direction(run, "hat2", "hat", (1, 2), model, sign=-1)
    torch.testing.assert_close(again.vector, spec_direction(model, "3:2").vector)
    assert again.sign == 1
    with pytest.raises(ValueError, match="already saved"):
        save_named_direction(run, "hat", "3:3", None, model)
    save_named_direction(run, "hat", "3:3", None, model, overwrite=True)
    assert load_run_directions(run)["hat"].layers is None
    with pytest.raises(ValueError, match="outside this space's layers 0-7"):
        save_named_direction(run, "deep", "3:1", (6, 9), model)
    with pytest.raises(ValueError, match="looks like a path"):
        save_named_direction(run, "../x", "3:1", None, model)
    with pytest.raises(DirectionSpecError, match=r"unknown direction 'nose'.*saved: hat, wide, hat2"):
        resolve_direction("nose", model, run)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_run_latents_only_when_they_fit(tmp_path, model, data):
    assert run_latents(tmp_path, model) is None
    np.save(tmp_path / "latents.npy", data[:, :4])
    assert run_latents(tmp_path, model) is None  # wrong dim: not this model's latents
    np.save(tmp_path / "latents.npy", data)
    np.testing.assert_array_equal(run_latents(tmp_path, model), data)


def test_nearest_segment_finds_the_source(model):
    for spec, seg, sign in (("3:4", 4, 1), ("3:5-4", 4, -1), ("2:0", None, 1)):
        d = spec_direction(model, spec)
        best = nearest_segment(model, d.vector)
        if seg is not None:
            assert best["bits"] == 3 and best["segment"] == seg
        assert best["cosine"] == pytest.approx(sign, abs=1e-6)


def test_edit_full_touches_only_the_named_layers(shared_dir):
    from sfvq.generators.stylegan_pkl import stylegan_from_fixture_dir
    from sfvq.spaces import LatentSpace

    G = stylegan_from_fixture_dir(shared_dir / "fixtures/stylegan/sg2ada_uncond")
    space = LatentSpace(G, "w")
    full = space.encode_seeds([0, 1, 2])  # (3, 8, 32)
    d = torch.randn(32)
    d = d / d.norm()
    out = edit_full(space, full, d, [-2.0, 0.0, 3.0], (2, 5))  # (3, 3, 8, 32)
    assert out.shape == (3, 3, 8, 32)
    assert torch.equal(out[1], full)  # sigma 0: bit-identical
    for k, s in ((0, -2.0), (2, 3.0)):
        delta = out[k] - full  # (3, 8, 32)
        assert torch.equal(delta[:, :2], torch.zeros_like(delta[:, :2]))
        assert torch.equal(delta[:, 5:], torch.zeros_like(delta[:, 5:]))
        torch.testing.assert_close(delta[:, 2:5], (s * d).expand(3, 3, 32))


def test_data_sigmas_on_a_hand_computable_distribution():
    from sfvq.directions import SIGMA_STEPS, data_sigmas

    # Column 0 takes -2, -1, 0, 1, 2 equally often: mean 0, std sqrt(2); |p| is 0 (20 %), 1 (40 %), 2 (40 %),
    # so its 99th percentile is 2 and the limit 2 / sqrt(2). Column 1 is +-1: std 1, |p| always 1, limit 1.
    x0 = np.repeat([-2.0, -1.0, 0.0, 1.0, 2.0], 200)
    x1 = np.tile([-1.0, 1.0], 500)
    X = np.stack([x0, x1], 1)  # (1000, 2)
    dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 0.0], [0.0, 0.0]])  # not unit, and a zero vector
    choice = data_sigmas(X, dirs)
    assert choice.per_direction[:3] == pytest.approx([2**0.5, 1.0, 2**0.5])
    assert choice.per_direction[3] is None  # a zero vector has no direction
    assert choice.limit == 1.4  # the median sqrt(2), rounded down to 0.1
    assert choice.sigmas == pytest.approx([s * 1.4 for s in SIGMA_STEPS]) and 0.0 in choice.sigmas
    assert "99 %" in choice.describe() and choice.as_dict()["rule"] == "data"
    # The median of |p| is 1 (positions 20 %-60 %): limit 1 / sqrt(2), rounded down to 0.7.
    assert data_sigmas(X, dirs[0], quantile=0.5).limit == 0.7
    # Gaussian data: the 99th percentile of |p| is 2.576 std, whatever the direction's scale.
    G = np.random.default_rng(0).normal(size=(200_000, 3)) * [1.0, 10.0, 0.1]
    per = data_sigmas(G, torch.eye(3)).per_direction
    assert per == pytest.approx([2.576] * 3, abs=0.03)
    with pytest.raises(ValueError, match="quantile"):
        data_sigmas(X, dirs, quantile=1.0)
    with pytest.raises(ValueError, match="2-D"):
        data_sigmas(np.zeros((5, 3)), dirs)
    with pytest.raises(ValueError, match="no direction has any spread"):
        data_sigmas(np.ones((5, 2)), dirs)
