"""Ordered baselines of the map-quality table: k-means + shortest tour, 1-D SOM, k-means + PC1 order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfvq.baselines.ordered import (
    kmeans_tour,
    nearest_neighbour_tour,
    ordered_baselines,
    pca_order,
    shortest_tour,
    som_1d,
    tour_length,
    two_opt,
)


def _is_permutation(order: np.ndarray, K: int) -> bool:
    return sorted(order.tolist()) == list(range(K))


def test_tour_length_by_hand() -> None:
    P = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 0.0]])
    assert tour_length(P, [0, 1, 2]) == pytest.approx(5 + 4)
    assert tour_length(P, [0, 2, 1]) == pytest.approx(3 + 4)


def test_two_opt_uncrosses_a_square() -> None:
    square = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # in this order the path crosses
    order = two_opt(square, [0, 1, 2, 3])
    assert tour_length(square, order) == pytest.approx(3.0)  # three sides: the shortest open tour
    assert _is_permutation(order, 4)


@pytest.mark.parametrize("seed", range(5))
def test_two_opt_never_lengthens_a_tour(seed: int) -> None:
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(40, 3))
    for start in (rng.permutation(40), nearest_neighbour_tour(P), np.arange(40)):
        out = two_opt(P, start)
        assert _is_permutation(out, 40)
        assert tour_length(P, out) <= tour_length(P, start) + 1e-9
    once = shortest_tour(P)
    assert two_opt(P, once).tolist() == once.tolist()  # a 2-opt local optimum stays put
    with pytest.raises(ValueError, match="permutation"):
        two_opt(P, [0] * 40)


def test_nearest_neighbour_tour_visits_every_point_once() -> None:
    P = np.array([[0.0], [10.0], [1.0], [2.5], [9.0]])
    order = nearest_neighbour_tour(P, start=0)
    assert order.tolist() == [0, 2, 3, 4, 1]
    assert nearest_neighbour_tour(P).tolist()[0] == 1  # default start: the point farthest from the mean


def test_kmeans_tour_and_pca_order_reorder_the_centroids() -> None:
    rng = np.random.default_rng(0)
    C = rng.normal(size=(16, 4)) * np.array([5.0, 1.0, 0.5, 0.1])
    tour = kmeans_tour(C)
    assert tour.shape == (16, 4) and tour.dtype == torch.float32
    rows = {tuple(np.round(r, 5)) for r in C}
    assert {tuple(np.round(r, 5)) for r in tour.double().numpy()} == rows
    assert tour_length(tour.numpy(), np.arange(16)) <= tour_length(C, np.arange(16))
    by_pc = pca_order(C).double().numpy()
    assert {tuple(np.round(r, 5)) for r in by_pc} == rows
    axis = np.linalg.svd(C - C.mean(0))[2][0]
    score = (by_pc - C.mean(0)) @ axis
    assert np.all(np.diff(score) >= -1e-6)  # sorted along the first principal axis


def test_som_1d_orders_units_along_a_line() -> None:
    rng = np.random.default_rng(1)
    X = np.stack([rng.uniform(0, 10, 2000), rng.normal(0, 0.05, 2000)], 1)
    W = som_1d(X, 8, seed=0, iterations=3000).numpy()
    assert W.shape == (8, 2)
    steps = np.diff(W[:, 0])
    assert np.all(steps > 0) or np.all(steps < 0)  # the chain unfolded along x
    with pytest.raises(ValueError, match="2 <= k"):
        som_1d(X[:4], 8)


def test_ordered_baselines_give_ordered_codebooks_of_k() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    out = ordered_baselines(X, 8, seed=0, som_iterations=500)
    assert set(out) == {"kmeans_tour", "som", "pca_order"}
    for C in out.values():
        assert C.shape == (8, 6) and torch.isfinite(C).all()
    # the tour and the PC1 order are two orders of the same k-means centroids
    key = lambda C: sorted(map(tuple, np.round(C.numpy(), 4)))  # noqa: E731
    assert key(out["kmeans_tour"]) == key(out["pca_order"])
    again = ordered_baselines(X, 8, seed=0, som_iterations=500)
    assert all(torch.equal(out[k], again[k]) for k in out)  # seeded
