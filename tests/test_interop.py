"""Interoperability: the SFVQ paper's release (curves, directions, layer table), InterFaceGAN, GANSpace."""

import math
import shutil

import numpy as np
import pytest
import torch

from sfvq import SFVQ
from sfvq.directions import Direction, DirectionSet, nearest_segment
from sfvq.interop import (
    InteropError,
    export_codebooks,
    export_paper_directions,
    import_codebooks,
    load_ganspace,
    load_interfacegan_boundary,
    load_paper_directions,
    parse_layer_table,
)

# The README of the fixture: which segment each kept direction came from, as "c_a - c_b at bits".
FROM_KEPT_BITRATES = {
    "rotation": (2, 3, 2),  # c3 - c2 at 2 bits
    "hat": (4, 9, 10),  # c9 - c10 at 4 bits
    "gender": (5, 1, 2),  # c1 - c2 at 5 bits
    "age": (6, 25, 26),  # c25 - c26 at 6 bits
}
# The paper's published FFHQ layer ranges (inclusive, of 18), from the authors' table.
README_LAYERS = {
    "Rotation": (0, 2), "Age": (3, 7), "Gender": (4, 7), "Smile": (4, 4), "Eyeglass": (2, 2),
    "Hair_Color": (8, 8), "Race": (8, 9), "Makeup": (8, 8), "Hat": (0, 3), "Beard": (6, 6),
    "Bald": (3, 6), "Graduation_hat": (1, 6), "Asian_face": (4, 8),
}  # fmt: skip


@pytest.fixture(scope="module")
def release(shared_dir):
    return shared_dir / "fixtures/paper-release/stylegan2-ffhq"


@pytest.fixture(scope="module")
def paper_model(release):
    return import_codebooks(release / "codebooks")


def test_import_the_papers_curves(release, paper_model):
    m = paper_model
    assert sorted(m.codebooks_) == [2, 3, 4, 5, 6] and m.n_features_in_ == 512 and m.bits == 6
    for b in range(2, 7):
        ref = np.load(release / f"codebooks/codebook_{b}bit.npy")
        assert np.array_equal(m.codebooks_[b].numpy(), ref)
    imp = m.metadata_["imported"]
    assert imp["format"] == "sfvq-paper-codebooks" and imp["stats_from_data"] is False
    assert set(imp["files"]) == {"2", "3", "4", "5", "6"} and len(imp["files"]["2"]["sha256"]) == 64
    assert m.n_samples_fit_ == 0 and math.isnan(m.total_variance_) and m.history_ == []
    # The imported model is a usable estimator: it projects, and it saves and loads.
    x = m.codebooks_[4][:3] + 0.0
    assert np.array_equal(m.predict(x.numpy(), bits=4), [0, 1, 2])


def test_imported_model_saves_and_loads(paper_model, tmp_path):
    paper_model.save(tmp_path / "model.safetensors")
    back = SFVQ.load(tmp_path / "model.safetensors")
    assert all(torch.equal(back.codebooks_[b], paper_model.codebooks_[b]) for b in range(2, 7))
    assert back.metadata_["imported"]["format"] == "sfvq-paper-codebooks"


def test_directions_are_found_as_the_segments_they_came_from(release, paper_model):
    ds = load_paper_directions(release / "directions")
    assert len(ds) == 11 and ds.dim == 512
    found = {d.name: nearest_segment(paper_model, d.vector) for d in ds}
    for name, (bits, a, b) in FROM_KEPT_BITRATES.items():
        best = found[name]
        seg = min(a, b)
        sign = 1 if b < a else -1  # c_a - c_b = +segment when a = b + 1, else -segment
        assert (best["bits"], best["segment"]) == (bits, seg), name
        assert best["cosine"] == pytest.approx(sign, abs=1e-6), name
    # The other seven come from 7..12-bit curves that the fixture does not keep: none matches here.
    others = {n: f["cosine"] for n, f in found.items() if n not in FROM_KEPT_BITRATES}
    assert len(others) == 7 and max(abs(c) for c in others.values()) < 0.9


def test_layer_table_is_read_inclusively(release):
    table = parse_layer_table(release / "directions/StyleGAN2-FFHQ_Layers.txt")
    assert table == {k: (a, b + 1) for k, (a, b) in README_LAYERS.items()}
    ds = load_paper_directions(release / "directions")
    # File names and table names differ in case and underscores (hair_color / Hair_Color, make_up / Makeup).
    expected = {
        "age": (3, 8), "bald": (3, 7), "beard": (6, 7), "eyeglass": (2, 3), "gender": (4, 8),
        "hair_color": (8, 9), "hat": (0, 4), "make_up": (8, 9), "race": (8, 10), "rotation": (0, 3),
        "smile": (4, 5),
    }  # fmt: skip
    assert {d.name: d.layers for d in ds} == expected
    assert ds.meta["unmatched_table_entries"] == ["Graduation_hat", "Asian_face"]
    assert all(d.source["method"] == "paper" and d.length is None for d in ds)  # unit vectors, kept exact
    for d in ds:
        assert np.array_equal(d.vector.numpy(), np.load(release / f"directions/{d.name}.npy"))
    assert all(d.layers is None for d in load_paper_directions(release / "directions", layer_table=False))


def test_export_then_import_round_trips(release, paper_model, tmp_path):
    export_codebooks(paper_model, tmp_path / "cb")
    again = import_codebooks(tmp_path / "cb")
    assert all(torch.equal(again.codebooks_[b], paper_model.codebooks_[b]) for b in range(2, 7))
    for b in range(2, 7):
        a = np.load(tmp_path / f"cb/codebook_{b}bit.npy")
        assert a.dtype == np.float32 and a.shape == (2**b, 512)
    ds = load_paper_directions(release / "directions")
    ds.add(Direction("free", ds["age"].vector.clone()))  # no layer range: stays "all layers"
    export_paper_directions(ds, tmp_path / "dirs")
    back = load_paper_directions(tmp_path / "dirs")
    assert back.names == sorted(ds.names)
    for d in ds:
        assert torch.equal(back[d.name].vector, d.vector) and back[d.name].layers == d.layers
    text = (tmp_path / "dirs/Layers.txt").read_text()
    assert "hat: W0-W3\n" in text and "free" not in text
    # With num_ws known, "all layers" is written out explicitly.
    export_paper_directions(ds, tmp_path / "dirs18", num_ws=18)
    assert load_paper_directions(tmp_path / "dirs18")["free"].layers == (0, 18)


def test_import_with_data_fills_the_fitted_state(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 4)).astype(np.float32)
    fitted = SFVQ(3, epochs=1, batch_size=100, random_state=0, verbose=False).fit(X)
    export_codebooks(fitted, tmp_path)
    m = import_codebooks(tmp_path, X=X)
    assert m.n_samples_fit_ == 500 and m.total_variance_ == pytest.approx(fitted.total_variance_)
    assert [h["bits"] for h in m.history_] == [2, 3]
    assert m.history_[-1]["mse"] == pytest.approx(-m.score(X), rel=1e-5)
    assert m.history_[-1]["mse"] == pytest.approx(fitted.history_[-1]["mse"], rel=1e-5)
    assert np.array_equal(m.usage_, fitted.usage_) and m.metadata_["imported"]["stats_from_data"]
    with pytest.raises(InteropError, match="the data is 3-D but the codebooks are 4-D"):
        import_codebooks(tmp_path, X=X[:, :3])


def test_bad_codebook_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        import_codebooks(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no codebook_"):
        import_codebooks(tmp_path)
    np.save(tmp_path / "codebook_2bit.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(InteropError, match=r"expected shape \(4, D\) for a 2-bit curve, got \(5, 3\)"):
        import_codebooks(tmp_path)
    bad = np.zeros((4, 3), np.float32)
    bad[1, 1] = np.nan
    np.save(tmp_path / "codebook_2bit.npy", bad)
    with pytest.raises(InteropError, match="contains NaN or inf"):
        import_codebooks(tmp_path)
    np.save(tmp_path / "codebook_2bit.npy", np.zeros((4, 3), np.float32))
    np.save(tmp_path / "codebook_3bit.npy", np.zeros((8, 2), np.float32))
    with pytest.raises(InteropError, match=r"disagree on the dimension \(2 vs 3\)"):
        import_codebooks(tmp_path)
    np.save(tmp_path / "codebook_3bit.npy", np.array([{"a": 1}] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(InteropError, match="not a plain numeric .npy"):
        import_codebooks(tmp_path)
    (tmp_path / "codebook_3bit.npy").unlink()
    np.save(tmp_path / "codebook_1bit.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(InteropError, match="codebook_1bit.npy: bits must lie in"):
        import_codebooks(tmp_path)


def test_bad_direction_folders_and_tables(release, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no <name>.npy"):
        load_paper_directions(tmp_path)
    np.save(tmp_path / "a.npy", np.ones((2, 4), np.float32))
    with pytest.raises(InteropError, match=r"expected a vector of shape \(D,\) or \(1, D\), got \(2, 4\)"):
        load_paper_directions(tmp_path)
    np.save(tmp_path / "a.npy", np.zeros(4, np.float32))
    with pytest.raises(InteropError, match="zero vector"):
        load_paper_directions(tmp_path)
    np.save(tmp_path / "a.npy", np.full(4, 2.0, np.float32))  # not unit: normalised, length kept
    d = load_paper_directions(tmp_path)["a"]
    assert d.length == pytest.approx(4.0) and torch.allclose(d.vector, torch.full((4,), 0.5))
    (tmp_path / "t.txt").write_text("Header line\nA: W5-W3\n")
    with pytest.raises(InteropError, match=r"t.txt:2: range W5-W3 of 'A' is reversed"):
        load_paper_directions(tmp_path)
    (tmp_path / "t.txt").write_text("A: W1-W2\nB: W1 to W4\n")
    with pytest.raises(InteropError, match=r"t.txt:2: cannot read 'B: W1 to W4'"):
        parse_layer_table(tmp_path / "t.txt")
    (tmp_path / "t.txt").write_text("A: W1-W2\na: W3\n")
    with pytest.raises(InteropError, match="listed twice"):
        parse_layer_table(tmp_path / "t.txt")
    (tmp_path / "t.txt").write_text("just text\n")
    with pytest.raises(InteropError, match="not a layer table"):
        parse_layer_table(tmp_path / "t.txt")
    (tmp_path / "u.txt").write_text("A: W1\n")
    with pytest.raises(InteropError, match="several .txt files"):
        load_paper_directions(tmp_path)
    assert load_paper_directions(tmp_path, layer_table=tmp_path / "u.txt")["a"].layers == (1, 2)
    shutil.copy(release / "directions/age.npy", tmp_path / "age.npy")
    with pytest.raises(InteropError, match=r"disagree on the dimension \(512 vs 4\)"):
        load_paper_directions(tmp_path, layer_table=False)


def test_export_refuses_colliding_names(tmp_path):
    v = torch.ones(3) / math.sqrt(3)
    ds = DirectionSet([Direction("5:1", v), Direction("5_1", v)])
    with pytest.raises(InteropError, match="same file name"):
        export_paper_directions(ds, tmp_path)
    export_paper_directions(DirectionSet([Direction("5:1", v, layer_start=2, layer_stop=4)]), tmp_path)
    assert (tmp_path / "5_1.npy").is_file() and "5_1: W2-W3" in (tmp_path / "Layers.txt").read_text()


def test_interfacegan_boundaries(tmp_path):
    rng = np.random.default_rng(0)
    b = rng.standard_normal((1, 512))
    b = (b / np.linalg.norm(b)).astype(np.float32)
    np.save(tmp_path / "pose_boundary.npy", b)
    ds = load_interfacegan_boundary(tmp_path / "pose_boundary.npy")
    assert ds.names == ["pose_boundary"] and np.array_equal(ds["pose_boundary"].vector.numpy(), b[0])
    assert ds["pose_boundary"].source == {"method": "interfacegan", "file": "pose_boundary.npy"}
    np.save(tmp_path / "two.npy", np.ones((2, 512), np.float32))
    with pytest.raises(InteropError, match=r"has shape \(1, D\), got \(2, 512\)"):
        load_interfacegan_boundary(tmp_path / "two.npy")
    nan = b.copy()
    nan[0, 3] = np.inf
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(InteropError, match="NaN or inf"):
        load_interfacegan_boundary(tmp_path / "nan.npy")
    with pytest.raises(FileNotFoundError, match="no such boundary file"):
        load_interfacegan_boundary(tmp_path / "missing.npy")


def _ganspace_file(path, K=6, D=16, **override):
    """A file with the keys and shapes GANSpace's decomposition.py writes (savez_compressed)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((D, K)))
    arrays = {
        "act_comp": q.T.reshape(K, 1, D).astype(np.float32),
        "act_mean": np.zeros((1, D), np.float32),
        "act_stdev": np.linspace(3, 1, K).astype(np.float32),
        "lat_comp": q.T.reshape(K, 1, D).astype(np.float32),
        "lat_mean": rng.standard_normal((1, D)).astype(np.float32),
        "lat_stdev": np.linspace(2, 0.5, K).astype(np.float32),
        "var_ratio": np.linspace(0.3, 0.05, K).astype(np.float32),
        "random_stdevs": np.ones(K, np.float32),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def test_ganspace_components(tmp_path):
    arrays = _ganspace_file(tmp_path / "g.npz")
    ds = load_ganspace(tmp_path / "g.npz")
    assert ds.names == [f"pc{j}" for j in range(6)] and ds.dim == 16
    assert np.array_equal(ds.vectors.numpy(), arrays["lat_comp"][:, 0])
    assert [d.std for d in ds] == pytest.approx(arrays["lat_stdev"].tolist())
    assert ds["pc2"].source["component"] == 2 and ds["pc2"].source["var_ratio"] == pytest.approx(0.3 - 0.1)
    assert ds.meta["lat_mean"] == pytest.approx(arrays["lat_mean"][0].tolist())
    assert len(load_ganspace(tmp_path / "g.npz", count=2)) == 2
    # (K, D) components are accepted too
    _ganspace_file(tmp_path / "flat.npz", lat_comp=arrays["lat_comp"][:, 0])
    assert torch.equal(load_ganspace(tmp_path / "flat.npz").vectors, ds.vectors)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"lat_stdev": None}, "missing lat_stdev"),
        ({"lat_comp": np.ones((6, 2, 16), np.float32)}, r"lat_comp should be \(K, 1, D\) or \(K, D\)"),
        ({"lat_mean": np.ones((1, 15), np.float32)}, "lat_mean has 15 entries, lat_comp is 16-D"),
        ({"lat_stdev": np.ones(5, np.float32)}, r"lat_stdev should have shape \(6,\)"),
        ({"lat_mean": np.full((1, 16), np.nan, np.float32)}, "lat_mean contains NaN"),
    ],
)
def test_bad_ganspace_files(tmp_path, override, message):
    _ganspace_file(tmp_path / "g.npz", **override)
    with pytest.raises(InteropError, match=message):
        load_ganspace(tmp_path / "g.npz")


def test_ganspace_non_archives(tmp_path):
    np.save(tmp_path / "single.npy", np.ones(3))
    with pytest.raises(InteropError, match="single array"):
        load_ganspace(tmp_path / "single.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InteropError, match="not a readable .npz"):
        load_ganspace(tmp_path / "junk.npz")
