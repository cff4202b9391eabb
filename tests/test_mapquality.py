"""Map-quality measures of ordered codebooks, checked on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfvq import mapquality
from sfvq.mapquality import (
    kaski_lagus,
    map_position,
    map_quality,
    recommend_bits,
    topographic_error,
    trustworthiness_continuity,
    two_nearest,
    u_profile,
    usage,
)
from sfvq.metrics import smoothness

# A folded curve: the four corners of the unit square, in order round three of its sides.
SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
# Samples with their (BMU, 2nd BMU) by hand: (0, 3) not map neighbours; (0, 1); (2, 1); (3, 2).
FOUR = torch.tensor([[0.0, 0.4], [0.4, -0.1], [1.2, 0.7], [0.2, 0.9]])
BMU_DIST = [0.4, math.sqrt(0.17), math.sqrt(0.13), math.sqrt(0.05)]


def test_u_profile_is_the_distance_between_consecutive_corners() -> None:
    c = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0], [0.0, 5.0]])
    assert u_profile(c).tolist() == [5.0, 1.0, 3.0]
    with pytest.raises(ValueError, match=r"\(K >= 2, D\) codebook"):
        u_profile(torch.zeros(1, 3))


def test_two_nearest_by_hand() -> None:
    idx, dist = two_nearest(FOUR, SQUARE)
    assert idx.tolist() == [[0, 3], [0, 1], [2, 1], [3, 2]]
    assert dist[:, 0].tolist() == pytest.approx(BMU_DIST)
    assert dist[0, 1] == pytest.approx(0.6)


def test_two_nearest_reads_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    X, C = torch.randn(1000, 5, generator=gen), torch.randn(16, 5, generator=gen)
    monkeypatch.setattr(mapquality, "CHUNK_BYTES", 1024)  # 64-row chunks
    idx, dist = two_nearest(X.numpy(), C)
    d, i = torch.cdist(X.double(), C.double()).topk(2, dim=1, largest=False)
    assert torch.equal(idx, i)
    assert torch.allclose(dist, d)


def test_topographic_and_kaski_lagus_errors_by_hand() -> None:
    idx, dist = two_nearest(FOUR, SQUARE)
    assert topographic_error(idx) == 0.25  # only the first sample's two nearest corners are not adjacent
    # BMU distance + path along the curve to the 2nd BMU: 3 sides for the first sample, 1 for the others.
    assert kaski_lagus(idx, dist, SQUARE) == pytest.approx((sum(BMU_DIST) + 3 + 1 + 1 + 1) / 4)
    # on a straight curve of unequal steps the path is the summed steps between the two corners
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [6.0, 0.0]])
    i2 = torch.tensor([[0, 2], [3, 1]])
    d2 = torch.tensor([[0.5, 9.0], [1.0, 9.0]], dtype=torch.float64)
    assert topographic_error(i2) == 1.0
    assert kaski_lagus(i2, d2, line) == pytest.approx(((0.5 + 3) + (1 + 5)) / 2)


def test_usage_by_hand() -> None:
    u = usage(torch.tensor([2, 0, 1, 1]))  # p = (1/2, 0, 1/4, 1/4)
    assert u["entropy"] == pytest.approx(1.5)  # 1/2 * 1 + 2 * 1/4 * 2 bits
    assert u["usage_kl"] == pytest.approx(0.5)  # log2 4 - 1.5
    assert u["sparseness"] == pytest.approx((2 - 1 / math.sqrt(0.375)) / (2 - 1))  # |p|_1 = 1, |p|_2^2 = 3/8
    flat = usage(np.full(8, 5))
    assert flat == pytest.approx({"usage_kl": 0.0, "sparseness": 0.0, "entropy": 3.0})
    one = usage(np.array([0, 0, 7, 0]))
    assert one == pytest.approx({"usage_kl": 2.0, "sparseness": 1.0, "entropy": 0.0})
    with pytest.raises(ValueError, match="positive sum"):
        usage(np.zeros(4))


def test_map_position_is_the_fractional_corner_index() -> None:
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    t = map_position(torch.tensor([[0.25, 1.0], [1.5, -2.0], [-3.0, 0.0]]), line)
    assert t.tolist() == pytest.approx([0.25, 1.5, 0.0])


def test_trustworthiness_and_continuity() -> None:
    from sklearn.manifold import trustworthiness

    gen = torch.Generator().manual_seed(1)
    x = 7 * torch.rand(200, generator=gen)  # unevenly spaced: no ties among the distances
    X = torch.stack([x, torch.zeros(200)], 1)  # (200, 2) on the x axis
    line = torch.stack([torch.arange(8.0), torch.zeros(8)], 1)  # a curve along the data, in order
    assert trustworthiness_continuity(X, line, neighbors=5) == pytest.approx((1.0, 1.0))
    # 3-D data on a 1-D map: neighbourhoods cannot all survive
    Y, C = torch.randn(300, 3, generator=gen), torch.randn(8, 3, generator=gen)
    trust, cont = trustworthiness_continuity(Y, C, neighbors=5)
    t = map_position(Y, C)[:, None].numpy()
    assert trust == pytest.approx(trustworthiness(Y.numpy(), t, n_neighbors=5))
    assert cont == pytest.approx(trustworthiness(t, Y.numpy(), n_neighbors=5))  # the spaces swapped
    assert trust < 0.95 and cont < 0.95 and trust != cont


def test_trustworthiness_subsample_is_seeded() -> None:
    gen = torch.Generator().manual_seed(2)
    X, C = torch.randn(600, 3, generator=gen), torch.randn(8, 3, generator=gen)
    a = trustworthiness_continuity(X, C, subsample=100, seed=3)
    assert a == trustworthiness_continuity(X.numpy(), C, subsample=100, seed=3)
    assert a != trustworthiness_continuity(X, C, subsample=100, seed=4)


def test_map_quality_collects_every_measure() -> None:
    q = map_quality(SQUARE, FOUR).as_dict()
    assert q["mse"] == pytest.approx((0.16 + 0.17 + 0.13 + 0.05) / 4)
    assert q["mean_distance"] == pytest.approx(sum(BMU_DIST) / 4)
    assert q["topographic_error"] == 0.25
    assert q["usage_kl"] == pytest.approx(0.5)  # BMU counts (2, 0, 1, 1)
    assert q["smoothness"] == pytest.approx(smoothness(SQUARE))
    assert q["u_profile"] == pytest.approx([1.0, 1.0, 1.0])
    assert 0 <= q["trustworthiness"] <= 1 and 0 <= q["continuity"] <= 1
    with pytest.raises(ValueError, match=r"samples \(N, 2\)"):
        map_quality(SQUARE, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        map_quality(SQUARE, torch.full((5, 2), float("nan")))
    with pytest.raises(ValueError, match=r"\(K >= 3, D\)"):
        map_quality(SQUARE[:2], FOUR)


def _m(mse: float, kl: float = 0.1, te: float = 0.1) -> dict[str, float]:
    return {"mse": mse, "usage_kl": kl, "topographic_error": te}


def test_recommend_bits_stops_at_the_knee() -> None:
    # cuts: 2->3 50%, 3->4 20% (< half of 50%): the knee is at 3 bits, 4 and 5 are not considered
    per = {2: _m(100), 3: _m(50), 4: _m(40), 5: _m(10)}
    bits, why = recommend_bits(per)
    assert bits == 3
    assert "knee" in why and "4 bits cut it by only 20.0%" in why
    # steady cuts (every bit 5%, as in a high-dimensional space): no knee, the largest readable bitrate
    steady = {b: _m(100 * 0.95 ** (b - 2)) for b in range(2, 7)}
    assert recommend_bits(steady)[0] == 6


def test_recommend_bits_needs_a_readable_map() -> None:
    steady = {b: _m(100 * 0.95 ** (b - 2)) for b in range(2, 7)}
    steady[6] = _m(steady[6]["mse"], kl=1.5)  # fewer than half the corners in use
    steady[5] = _m(steady[5]["mse"], te=0.6)  # most samples' nearest corners not map neighbours
    bits, why = recommend_bits(steady)
    assert bits == 4 and "5 bits: topographic error 0.60 > 0.5" in why
    tour = {2: 0.5, 3: 0.5, 4: 0.05}  # the curve's order at 4 bits is worse than the k-means tour's
    assert recommend_bits(steady, tour)[0] == 3
    bad = {2: _m(100, kl=2.0), 3: _m(50, kl=2.0)}
    bits, why = recommend_bits(bad)
    assert bits == 2 and why.startswith("No bitrate") and "usage KL 2.00" in why
    with pytest.raises(ValueError, match="no bitrates"):
        recommend_bits({})
