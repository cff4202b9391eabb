"""Placement on a curve of known geometry: fractional index, nearest corners, outlier percentile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfvq import SFVQ
from sfvq.locate import (
    percentile_of,
    place,
    reference_distances,
    segments_around,
)


def _line_model() -> SFVQ:
    """Curves along the x axis: 2 bits through x = 0, 1, 2, 3; 3 bits through x = 0, 0.5, ..., 3.5."""
    two = np.stack([np.arange(4.0), np.zeros(4)], axis=1)
    three = np.stack([np.arange(8) / 2, np.zeros(8)], axis=1)
    return SFVQ.from_codebooks({2: two, 3: three})


def test_place_reports_the_fractional_index_distance_and_nearest_corners() -> None:
    model = _line_model()
    p = place(model, np.array([1.5, 0.5], dtype=np.float32), nearest=2)
    two = p.bits[2]
    assert two["segment"] == 1 and two["t"] == pytest.approx(1.5) and two["lam"] == pytest.approx(0.5)
    assert two["distance"] == pytest.approx(0.5)
    assert [n["corner"] for n in two["nearest"]] == [1, 2]  # both at sqrt(0.5); ties in corner order
    assert two["nearest"][0]["distance"] == pytest.approx(np.sqrt(0.5), abs=1e-5)
    three = p.bits[3]
    assert three["t"] == pytest.approx(3.0) and three["distance"] == pytest.approx(0.5)  # on corner 3
    assert three["nearest"][0] == {"corner": 3, "distance": pytest.approx(0.5)}
    assert p.finest == 3 and p.outlier["bits"] == 3 and "percentile" not in p.outlier
    # beyond the end the point clamps to the last corner
    end = place(model, np.array([4.0, 0.0], dtype=np.float32))
    assert end.bits[2]["t"] == pytest.approx(3.0) and end.bits[2]["distance"] == pytest.approx(1.0)


def test_the_outlier_score_is_the_percentile_among_the_sampled_latents() -> None:
    model = _line_model()
    # 100 sampled latents at heights 0.01, 0.02, ..., 1.00 above the line
    X = np.stack([np.linspace(0.2, 2.8, 100), np.arange(1, 101) / 100], axis=1).astype(np.float32)
    ref = reference_distances(model, X)
    assert np.allclose(ref[2], np.arange(1, 101) / 100, atol=1e-5)
    assert np.allclose(ref[3], np.arange(1, 101) / 100, atol=1e-5)
    near = place(model, np.array([1.0, 0.255], dtype=np.float32), ref)
    assert near.bits[2]["percentile"] == pytest.approx(25.0)
    assert near.outlier["percentile"] == pytest.approx(25.0) and near.outlier["off_map"] is False
    assert near.outlier["median_reference"] == pytest.approx(0.505, abs=1e-4)
    far = place(model, np.array([1.0, 5.0], dtype=np.float32), ref)
    assert far.outlier["percentile"] == 100.0 and far.outlier["off_map"] is True
    assert far.outlier["ratio"] == pytest.approx(5.0 / 0.505, rel=1e-3)
    # the threshold decides what counts as off the map
    edge = place(model, np.array([1.0, 0.955], dtype=np.float32), ref, threshold=95.0)
    assert edge.outlier["percentile"] == pytest.approx(95.0) and edge.outlier["off_map"] is True
    assert place(model, np.array([1.0, 0.955], dtype=np.float32), ref).outlier["off_map"] is False


def test_reference_rows_are_subsampled_with_a_seed() -> None:
    model = _line_model()
    X = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    a = reference_distances(model, X, max_rows=100, seed=3)
    b = reference_distances(model, X, max_rows=100, seed=3)
    assert len(a[2]) == 100 and np.array_equal(a[2], b[2])
    assert np.all(np.diff(a[2]) >= 0)  # sorted
    with pytest.raises(ValueError, match="non-empty"):
        reference_distances(model, np.zeros((0, 2)))


def test_percentile_of_counts_values_at_or_below() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    assert percentile_of(0.5, ref) == 0.0
    assert percentile_of(2.0, ref) == 50.0
    assert percentile_of(9.0, ref) == 100.0


def test_bad_latents_and_settings_are_refused() -> None:
    model = _line_model()
    with pytest.raises(ValueError, match="3 entries, the model is 2-D"):
        place(model, np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        place(model, np.array([np.nan, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match="percentile in"):
        place(model, np.zeros(2, dtype=np.float32), threshold=0.0)


def test_segments_around_stay_on_the_curve() -> None:
    model = _line_model()
    start = place(model, torch.tensor([0.2, 0.0]))
    assert segments_around(start, 2) == [0, 1]  # segment 0 has no left neighbour
    end = place(model, torch.tensor([9.0, 0.0]))
    assert segments_around(end, 3) == [5, 6]  # nor segment 6 (of 8 corners) a right one
    middle = place(model, torch.tensor([1.5, 0.0]))
    assert segments_around(middle, 2) == [0, 1, 2]
    assert segments_around(middle, 2, width=0) == [1]
    with pytest.raises(ValueError, match="no curve at 5 bits"):
        segments_around(middle, 5)
