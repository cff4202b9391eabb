"""The avatars data-set builder: deterministic renders, shapes, factor columns, caching, loading."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfvq.avatars.dataset import (
    BACKGROUNDS,
    SMILE_MOUTHS,
    DatasetError,
    build_dataset,
    factor_vocabularies,
    load_dataset,
    render_faces,
    sample_face,
)

EXPECTED_FACTORS = {
    "smile",
    "mouth",
    "eyes",
    "glasses",
    "accessory",
    "skin",
    "top",
    "hair_colour",
    "beard",
    "facial_hair",
    "clothing",
    "clothing_colour",
    "background",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("avatars") / "data"
    path, fresh = build_dataset(out, count=6, seed=3, resolutions=(32, 16), workers=1, progress=False)
    assert fresh
    return path


def test_factor_vocabularies_cover_the_issue_factors() -> None:
    vocab = factor_vocabularies()
    assert EXPECTED_FACTORS <= set(vocab)
    assert vocab["smile"] == ("no", "yes")
    assert set(SMILE_MOUTHS) < set(vocab["mouth"])
    assert vocab["background"] == tuple(BACKGROUNDS)
    assert all(len(v) == len(set(v)) >= 2 for v in vocab.values())


def test_sample_face_is_seeded_and_consistent() -> None:
    vocab = factor_vocabularies()
    a1, f1 = sample_face(5, 11)
    a2, f2 = sample_face(5, 11)
    assert f1 == f2 and a1.render() == a2.render()
    faces = [sample_face(5, i)[1] for i in range(40)]
    assert len({tuple(sorted(f.items())) for f in faces}) == 40
    for f in faces:
        assert set(f) == set(vocab)
        assert all(f[k] in vocab[k] for k in vocab)
        assert (f["smile"] == "yes") == (f["mouth"] in SMILE_MOUTHS)
        acc = f["accessory"]
        kind = "none" if acc == "none" else "eyepatch" if acc == "eyepatch" else "glasses"
        assert f["glasses"] == ("sunglasses" if acc.startswith("sunglasses") else kind)
        assert (f["hat"] == "yes") == f["top"].startswith("hat:")
        assert (f["beard"] == "none") == (f["facial_hair"] == "none")
    assert {f["smile"] for f in faces} == {"yes", "no"}
    assert len({f["background"] for f in faces}) >= 4


def test_render_is_deterministic_and_worker_independent() -> None:
    one, f_one = render_faces(7, [0, 1, 2, 3], (32, 16), workers=1)
    two, f_two = render_faces(7, [0, 1, 2, 3], (32, 16), workers=2)
    assert f_one == f_two
    for r in (32, 16):
        assert one[r].shape == (4, r, r, 3) and one[r].dtype == np.uint8
        np.testing.assert_array_equal(one[r], two[r])
    assert one[32].std() > 20  # a face, not a flat colour
    assert not np.array_equal(one[32][0], one[32][1])


def test_background_colour_fills_the_corners() -> None:
    images, factors = render_faces(0, range(6), (32,))
    for img, f in zip(images[32], factors, strict=True):
        want = np.array([int(BACKGROUNDS[f["background"]][i : i + 2], 16) for i in (1, 3, 5)])
        assert np.abs(img[0, 0].astype(int) - want).max() <= 2
        assert np.abs(img[0, -1].astype(int) - want).max() <= 2


def test_build_writes_images_factors_and_meta(built: Path) -> None:
    names = ["avatars.npz", "dataset.json", "factors.csv", "preview.png"]
    assert sorted(p.name for p in built.iterdir()) == names
    preview = np.asarray(Image.open(built / "preview.png"))
    assert preview.shape == (33 + 1, 6 * 33 + 1, 3)  # 6 faces of 32 px in one row, 1 px gaps
    with np.load(built / "avatars.npz") as z:
        np.testing.assert_array_equal(preview[1:33, 1:33], z["images_32"][0])
        assert sorted(z.files) == ["images_16", "images_32"]
        assert z["images_32"].shape == (6, 32, 32, 3)
        assert z["images_16"].shape == (6, 16, 16, 3)
    with open(built / "factors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(6))
    assert EXPECTED_FACTORS <= set(rows[0])
    direct, factors = render_faces(3, range(6), (32,))
    assert [{k: r[k] for k in factors[0]} for r in rows] == factors
    with np.load(built / "avatars.npz") as z:
        np.testing.assert_array_equal(z["images_32"], direct[32])


def test_load_dataset_codes_match_the_csv(built: Path) -> None:
    ds = load_dataset(built)
    assert ds.resolution == 16 and len(ds) == 6
    ds32 = load_dataset(built, 32)
    assert ds32.images.shape == (6, 32, 32, 3)
    _, factors = render_faces(3, range(6), (16,))
    for k, codes in ds.codes.items():
        assert [ds.vocab[k][c] for c in codes] == [f[k] for f in factors]
    with pytest.raises(DatasetError, match="not 64"):
        load_dataset(built, 64)


def test_build_is_cached_and_refuses_another_data_set(built: Path) -> None:
    stamp = (built / "avatars.npz").stat().st_mtime_ns
    _, fresh = build_dataset(built, count=6, seed=3, resolutions=(16, 32), workers=1, progress=False)
    assert not fresh and (built / "avatars.npz").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="already holds a data set"):
        build_dataset(built, count=7, seed=3, resolutions=(32, 16), workers=1, progress=False)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="power of two"):
        render_faces(0, [0], (30,))
    with pytest.raises(DatasetError, match="count"):
        build_dataset(tmp_path / "x", count=0)
    with pytest.raises(DatasetError, match="build-dataset"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "avatars.npz").write_bytes(b"")
    with pytest.raises(DatasetError, match="factors.csv is missing"):
        load_dataset(tmp_path / "partial")
