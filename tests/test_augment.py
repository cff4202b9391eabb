"""Augmentation along a segment: seeded sampling, jitter off the segment, the files written."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from sfvq import SFVQ
from sfvq.augment import data_std, labels_csv, parse_segment, sample_segment, write_augmentation
from sfvq.directions import DirectionSpecError


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((400, 5)) * np.array([4, 2, 1, 0.5, 0.25])).astype(np.float32)


@pytest.fixture(scope="module")
def model(data):
    return SFVQ(3, epochs=1, batch_size=128, random_state=0, verbose=False).fit(data)


def test_points_lie_on_the_segment_at_t(model):
    s = sample_segment(model, 3, 2, 200, seed=5)
    C = model.codebooks_[3].double().numpy()
    assert s.t.shape == (200,) and s.points.shape == (200, 5) and s.points.dtype == np.float32
    assert s.t.min() >= 0 and s.t.max() <= 1 and s.t.std() > 0.2  # spread over the whole segment
    expected = (1 - s.t)[:, None] * C[2] + s.t[:, None] * C[3]
    np.testing.assert_allclose(s.points, expected, rtol=1e-6, atol=1e-6)
    assert s.spec == "3:2" and s.jitter == 0.0 and s.seed == 5


def test_sampling_is_deterministic_for_a_seed(model, data):
    a = sample_segment(model, 3, 1, 50, seed=3, jitter=0.5, X=data)
    b = sample_segment(model, 3, 1, 50, seed=3, jitter=0.5, X=data)
    c = sample_segment(model, 3, 1, 50, seed=4, jitter=0.5, X=data)
    assert np.array_equal(a.t, b.t) and np.array_equal(a.points, b.points)
    assert not np.array_equal(a.t, c.t)
    # jitter does not move t: the same seed gives the same positions with or without it
    assert np.array_equal(sample_segment(model, 3, 1, 50, seed=3).t, a.t)


def test_jitter_is_off_the_segment_and_scaled_by_the_data_std(model, data):
    n = 4000
    s = sample_segment(model, 3, 4, n, seed=0, jitter=0.2, X=data)
    C = model.codebooks_[3].double().numpy()
    a, b = C[4], C[5]
    d = b - a
    on = (1 - s.t)[:, None] * a + s.t[:, None] * b  # (n, D)
    noise = s.points.astype(np.float64) - on
    # no component along the segment: the projection onto the segment's line is still at t
    assert np.abs(noise @ d).max() / np.linalg.norm(d) < 1e-4
    np.testing.assert_allclose(((s.points - a) @ d) / (d @ d), s.t, atol=1e-5)
    # per-dimension spread: jitter * data std, less the removed along-segment part
    u = d / np.linalg.norm(d)
    std = data_std(data)
    expected = np.sqrt(
        np.maximum((0.2 * std) ** 2 - 2 * (0.2 * std) ** 2 * u**2 + u**2 * ((0.2 * std) ** 2 @ u**2), 0)
    )
    np.testing.assert_allclose(noise.std(0), expected, rtol=0.08)
    np.testing.assert_allclose(std, data.astype(np.float64).std(0), rtol=1e-10)


def test_bad_requests(model, data):
    with pytest.raises(ValueError, match="needs the data"):
        sample_segment(model, 3, 1, 10, jitter=0.1)
    with pytest.raises(ValueError, match="jitter must be a finite number >= 0"):
        sample_segment(model, 3, 1, 10, jitter=-1.0, X=data)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sample_segment(model, 3, 1, 0)
    with pytest.raises(ValueError, match="the data is 4-D but the curve is 5-D"):
        sample_segment(model, 3, 1, 10, jitter=0.1, X=data[:, :4])
    with pytest.raises(DirectionSpecError, match="segments 0-6"):
        sample_segment(model, 3, 7, 10)
    assert parse_segment("3:6", model) == (3, 6)
    with pytest.raises(DirectionSpecError, match="segment 7 is out of range"):
        parse_segment("3:7", model)
    with pytest.raises(DirectionSpecError, match="augmentation runs along one segment"):
        parse_segment("3:1-3", model)
    with pytest.raises(DirectionSpecError, match="no 4-bit curve"):
        parse_segment("4:1", model)


class _ToySpace:
    """Renders a space vector (n, 5) as a 4x4 image whose pixels are tanh of its entries (deterministic)."""

    def render(self, v: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(v[:, :3, None, None] + torch.arange(16.0).reshape(1, 1, 4, 4) * v[:, 3:4, None, None])
        return x  # (n, 3, 4, 4)

    def describe(self) -> dict:
        return {"kind": "toy"}


def test_write_augmentation_files(model, tmp_path):
    s = sample_segment(model, 3, 2, 70, seed=9)
    paths = write_augmentation(_ToySpace(), s, tmp_path, batch_size=16, progress=False)
    files = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert files == [f"{k:06d}.png" for k in range(70)]
    with open(paths["labels"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"images/{k:06d}.png" for k in range(70)]
    assert all(r["segment"] == "3:2" and r["bits"] == "3" and r["seed"] == "9" for r in rows)
    t = np.array([float(r["t"]) for r in rows])
    assert np.array_equal(t, s.t)  # written exactly
    np.testing.assert_allclose([float(r["curve_t"]) for r in rows], 2 + s.t)
    assert np.array_equal(np.load(paths["latents"]), s.points)
    # image k is the rendering of latent k
    from sfvq.generators.base import to_uint8

    img = to_uint8(_ToySpace().render(torch.from_numpy(s.points[[0, 69]])))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images/000000.png")), img[0])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images/000069.png")), img[1])
    assert Image.open(paths["preview"]).size[0] > 8 * 4
    assert labels_csv(s, [f"images/{k:06d}.png" for k in range(70)]) == paths["labels"].read_text()
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left


def test_rerun_with_fewer_samples_leaves_no_stale_images(model, tmp_path):
    write_augmentation(_ToySpace(), sample_segment(model, 3, 2, 20, seed=1), tmp_path, progress=False)
    (tmp_path / "images" / "notes.png").write_bytes(b"mine")  # not ours: kept
    smaller = sample_segment(model, 3, 2, 5, seed=1)
    paths = write_augmentation(_ToySpace(), smaller, tmp_path, progress=False)
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == [f"{k:06d}.png" for k in range(5)] + ["notes.png"]
    assert paths["labels"].read_text().count("\n") == 6  # header + 5 rows


def test_a_failed_rerun_does_not_look_complete(model, tmp_path):
    write_augmentation(_ToySpace(), sample_segment(model, 3, 2, 4, seed=1), tmp_path, progress=False)

    class Broken(_ToySpace):
        def render(self, v):
            raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        write_augmentation(Broken(), sample_segment(model, 3, 2, 4, seed=2), tmp_path, progress=False)
    assert not (tmp_path / "labels.csv").exists()  # the earlier labels no longer vouch for the folder


class _NoisySpace(_ToySpace):
    """The toy rendering plus torch noise (as noise_mode="random" draws it), counting the batches."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches = 0
        self.fail_after = fail_after

    def render(self, v: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt  # a kill between batches
        self.batches += 1
        return super().render(v) + 0.3 * torch.randn(v.shape[0], 3, 4, 4)


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_an_interrupted_render_resumes_and_writes_the_same_files(model, tmp_path):
    s = sample_segment(model, 3, 2, 23, seed=4)  # 5 batches of 5
    whole = _NoisySpace()
    write_augmentation(whole, s, tmp_path / "whole", batch_size=5, progress=False)
    assert whole.batches == 5
    with pytest.raises(KeyboardInterrupt):
        write_augmentation(_NoisySpace(fail_after=3), s, tmp_path / "cut", batch_size=5, progress=False)
    assert not (tmp_path / "cut" / "labels.csv").exists()
    assert len(list((tmp_path / "cut" / "images").glob("*.png"))) == 15
    (tmp_path / "cut" / "images" / "000012.png").unlink()  # a batch with one image missing is redone
    rest = _NoisySpace()
    write_augmentation(rest, s, tmp_path / "cut", batch_size=5, progress=False)
    assert rest.batches == 3  # batch 2 (image 12 missing) and batches 3, 4
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")  # noise included: one stream a batch


def test_images_of_another_request_are_never_reused(model, tmp_path):
    a, b = sample_segment(model, 3, 2, 10, seed=1), sample_segment(model, 3, 2, 10, seed=2)
    with pytest.raises(KeyboardInterrupt):
        write_augmentation(_NoisySpace(fail_after=1), a, tmp_path / "x", batch_size=5, progress=False)
    other = _NoisySpace()
    write_augmentation(other, b, tmp_path / "x", batch_size=5, progress=False)
    assert other.batches == 2
    write_augmentation(_NoisySpace(), b, tmp_path / "y", batch_size=5, progress=False)
    assert _files(tmp_path / "x") == _files(tmp_path / "y")
