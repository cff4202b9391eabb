"""Smoothness score, k-means baseline, empty-corner rule and segment statistics on hand-made cases."""

import numpy as np
import pytest
import torch

from sfvq.metrics import (
    corner_cells,
    empty_corners,
    image_features,
    image_smoothness,
    kmeans,
    pairwise_distances,
    segment_stats,
    smoothness,
)


def test_smoothness_of_points_on_a_line_is_three_over_k_plus_one():
    # Consecutive gaps are 1; the mean over all pairs of 0..K-1 is (K + 1) / 3.
    for K in (3, 8, 64):
        X = torch.arange(K, dtype=torch.float64)[:, None] * torch.tensor([[3.0, 4.0]], dtype=torch.float64)
        assert smoothness(X) == pytest.approx(3 / (K + 1), rel=1e-9)


def test_ordered_set_scores_well_below_one_and_shuffled_near_one():
    rng = np.random.default_rng(0)
    X = np.cumsum(rng.standard_normal((64, 5)), axis=0)  # a random walk: ordered, neighbours close
    ordered = smoothness(X)
    assert ordered < 0.3
    shuffled = [smoothness(X[rng.permutation(64)]) for _ in range(200)]
    assert np.mean(shuffled) == pytest.approx(1.0, abs=0.03)
    # Any single shuffle is far above the ordered score.
    assert min(shuffled) > 2 * ordered


def test_smoothness_edge_cases():
    with pytest.raises(ValueError, match="at least 3"):
        smoothness(np.zeros((2, 3)))
    assert np.isnan(smoothness(np.ones((5, 3))))  # all equal: nothing to compare


def test_pairwise_distances_l1_is_mean_absolute_difference():
    X = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 2.0, 0.0]])
    d = pairwise_distances(X, "l1")
    assert d[0, 1] == pytest.approx(1.0) and d[1, 0] == pytest.approx(1.0) and d[0, 0] == 0
    assert pairwise_distances(X, "l2")[0, 1] == pytest.approx(np.sqrt(6))
    with pytest.raises(ValueError, match="metric"):
        pairwise_distances(X, "cosine")


def test_image_smoothness_follows_content():
    # Images that brighten step by step: ordered scores low, reversed the same, shuffled about 1.
    levels = torch.linspace(-1, 1, 16)
    imgs = levels[:, None, None, None].expand(16, 3, 64, 64).clone()  # (16, 3, 64, 64)
    assert image_features(imgs).shape == (16, 3 * 32 * 32)
    s = image_smoothness(imgs)
    assert s == pytest.approx(3 / 17, rel=1e-5)
    assert image_smoothness(imgs.flip(0)) == pytest.approx(s)
    perm = torch.tensor([3, 12, 0, 9, 15, 6, 1, 10, 4, 14, 7, 2, 13, 8, 5, 11])
    assert image_smoothness(imgs[perm]) > 0.8


def test_kmeans_finds_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    X = np.concatenate([c + 0.1 * rng.standard_normal((200, 2)).astype(np.float32) for c in centres])
    C = kmeans(X, 4, seed=0).numpy()
    found = sorted(map(tuple, np.round(C).astype(int).tolist()))
    assert found == [(0, 0), (0, 10), (10, 0), (10, 10)]
    torch.testing.assert_close(kmeans(X, 4, seed=0), kmeans(X, 4, seed=0))
    with pytest.raises(ValueError, match="k must be"):
        kmeans(X, 1000)


def test_kmeans_reseeds_empty_clusters():
    X = np.zeros((50, 3), dtype=np.float32)
    X[:2] = [[5, 0, 0], [0, 5, 0]]
    C = kmeans(X, 3, seed=0)  # three distinct points, three centroids: each must hold one
    assert C.shape == (3, 3)
    assert sorted(map(tuple, C.round().int().tolist())) == [(0, 0, 0), (0, 5, 0), (5, 0, 0)]


def _line_data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    return np.stack([x, 0.05 * rng.standard_normal(n)], 1).astype(np.float32)  # (n, 2) along the x axis


def test_empty_corners_flags_a_corner_away_from_the_data():
    X = _line_data()
    C = np.array([[0, 0], [2.5, 0], [5, 0], [7.5, 0], [10, 0]], dtype=np.float32)
    assert empty_corners(X, C).flagged == []
    far = C.copy()
    far[2] = [5, 6]  # lifted off the data: no sample projects near it and its nearest sample is far
    res = empty_corners(X, far)
    assert res.flagged == [2]
    assert "samples nearby" in res.reasons[2] and "nearest sample" in res.reasons[2]
    assert res.share[2] < 0.1 / 5 and res.nearest[2] > 5


def test_empty_corners_flags_a_corner_in_a_gap_of_the_data():
    # Data in two clumps; a corner in the middle of the gap holds almost no samples in its cell.
    X = _line_data()
    X = X[(X[:, 0] < 3) | (X[:, 0] > 7)]
    C = np.array([[0, 0], [1.5, 0], [3, 0], [5, 0], [7, 0], [8.5, 0], [10, 0]], dtype=np.float32)
    res = empty_corners(X, C, dist_factor=1e9)  # the share rule alone
    assert res.flagged == [3]
    assert "samples nearby" in res.reasons[3]
    res = empty_corners(X, C, min_share=0.0)  # the distance rule alone
    assert res.flagged == [3] and "nearest sample 2" in res.reasons[3]


def test_corner_cells_split_segments_at_their_middle():
    from sfvq import curve

    C = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    x = torch.tensor([[0.1, 0.0], [0.6, 0.0], [0.9, 1.0], [1.4, 0.0], [1.6, 0.0], [3.0, 0.0]])
    cells = corner_cells(curve.project(x, C), 3)
    assert cells.tolist() == [1, 3, 2]


def test_segment_stats_by_hand():
    X = np.array([[0, 0], [1, 0], [2, 0], [3, 0]], dtype=np.float32)
    C = np.array([[0, 0], [3, 0], [3, 0]], dtype=np.float32)  # second segment has zero length
    rows = segment_stats(X, C)
    assert [r["segment"] for r in rows] == [0, 1]
    assert rows[0]["length"] == pytest.approx(3) and rows[1]["length"] == 0
    assert rows[0]["std"] == pytest.approx(np.std([0, 1, 2, 3])) and rows[1]["std"] == 0
    assert rows[0]["usage"] + rows[1]["usage"] == pytest.approx(1.0)
