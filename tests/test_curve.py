"""Curve maths, checked against projections worked out by hand in 2-D."""

import pytest
import torch

from sfvq import curve

L_SHAPE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0]])


@pytest.mark.parametrize(
    ("x", "t", "point", "sqdist"),
    [
        ((0.5, 0.2), 0.5, (0.5, 0.0), 0.04),  # interior of segment 0
        ((-1.0, 0.0), 0.0, (0.0, 0.0), 1.0),  # before the first corner: clamps to the start
        ((3.0, 1.0), 3.0, (2.0, 1.0), 1.0),  # past the last corner: clamps to the end
        ((1.2, 0.5), 1.5, (1.0, 0.5), 0.04),  # middle segment, closer than either corner
        ((1.5, 1.5), 2.5, (1.5, 1.0), 0.25),  # last segment
    ],
)
@pytest.mark.parametrize("method", ["exact", "adjacent"])
def test_projection_by_hand(x, t, point, sqdist, method):
    p = curve.project(torch.tensor([x]), L_SHAPE, method=method)
    assert p.t.item() == pytest.approx(t, abs=1e-6)
    assert p.points[0].tolist() == pytest.approx(point, abs=1e-6)
    assert p.sqdist.item() == pytest.approx(sqdist, abs=1e-6)


def test_coincident_corners_do_not_divide_by_zero():
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # segment 1 has length 0
    p = curve.project(torch.tensor([[1.5, 0.1], [1.0, 1.0], [0.25, -0.5]]), c)
    assert torch.isfinite(p.t).all() and torch.isfinite(p.points).all()
    assert p.t.tolist() == pytest.approx([2.5, 1.0, 0.25], abs=1e-6)
    torch.testing.assert_close(p.points, torch.tensor([[1.5, 0.0], [1.0, 0.0], [0.25, 0.0]]))


def test_exact_beats_two_segment_rule_where_the_nearest_corner_misleads():
    # The nearest corner is c3, but the nearest curve point lies on segment 0, far from c3.
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [0.5, 1.0]])
    x = torch.tensor([[5.0, 0.1]])
    exact = curve.project(x, c)
    adjacent = curve.project(x, c, method="adjacent")
    assert exact.t.item() == pytest.approx(0.5)
    assert exact.sqdist.item() == pytest.approx(0.01, abs=1e-5)
    assert adjacent.t.item() == pytest.approx(2 + 5 / 9.5, abs=1e-5)
    assert adjacent.sqdist.item() == pytest.approx(0.81, abs=1e-5)


def test_two_corner_curve():
    c = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    for method in ("exact", "adjacent"):
        p = curve.project(torch.tensor([[1.0, 1.0], [3.0, 0.0]]), c, method=method)
        assert p.t.tolist() == pytest.approx([0.5, 1.0])


def test_exact_never_worse_than_adjacent_on_random_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 16, generator=g)
    c = torch.randn(32, 16, generator=g) * 0.7
    exact = curve.project(x, c)
    adjacent = curve.project(x, c, method="adjacent")
    assert (exact.sqdist <= adjacent.sqdist + 1e-5).all()
    assert exact.sqdist.mean() < adjacent.sqdist.mean()  # strictly better somewhere on such data


def test_exact_matches_brute_force_and_chunking_changes_nothing():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 5, generator=g, dtype=torch.float64) + 3.0  # a large common offset
    c = torch.randn(17, 5, generator=g, dtype=torch.float64) + 3.0
    a, b = c[:-1], c[1:]  # brute force: (N, S, D), fine at this size
    d = b - a
    lam = (((x[:, None] - a) * d).sum(-1) / (d * d).sum(-1)).clamp(0, 1)
    dist = ((x[:, None] - (a + lam[..., None] * d)) ** 2).sum(-1)
    best = dist.min(1)
    p = curve.project(x, c)
    torch.testing.assert_close(p.sqdist, best.values)
    # Where two segments meet at a corner both are right; the chosen point must still be the brute-force one.
    a_best = a[best.indices] + lam.gather(1, best.indices[:, None]) * d[best.indices]
    torch.testing.assert_close(p.points, a_best)
    q = curve.project(x, c, chunk_size=7)
    torch.testing.assert_close(q.points, p.points)
    assert (q.segment == p.segment).all()


def test_decode_round_trips_projection():
    g = torch.Generator().manual_seed(2)
    c = torch.randn(9, 3, generator=g)
    p = curve.project(torch.randn(200, 3, generator=g), c)
    torch.testing.assert_close(curve.decode(c, p.t), p.points)


def test_doubling_indices_match_the_documented_example():
    assert curve.doubling_indices(4).tolist() == pytest.approx([0, 0.01, 1, 1.01, 1.99, 2, 2.99, 3])


@pytest.mark.parametrize("K", [4, 8, 64])
def test_doubling_keeps_every_corner_and_the_order(K):
    g = torch.Generator().manual_seed(K)
    c = torch.randn(K, 6, generator=g)
    new = curve.double(c)
    assert new.shape == (2 * K, 6)
    half = K // 2
    assert torch.equal(new[0 : 2 * half : 2], c[:half])  # first half: the old corner comes first
    assert torch.equal(new[2 * half + 1 :: 2], c[half:])  # second half: the old corner comes second
    # Every new corner lies on the old curve, at non-decreasing curve positions.
    p = curve.project(new.double(), c.double())
    assert p.sqdist.max() < 1e-10
    assert (p.t.diff() >= -1e-9).all()


def test_init_by_norm_uses_norm_sorted_chunk_means():
    x = torch.tensor(
        [[4.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 2.0], [8.0, 0.0], [0.0, 6.0], [0.5, 0], [7.0, 0]]
    )
    # norms: 4, 1, 3, 2, 8, 6, .5, 7 -> sorted pairs (.5, 1), (2, 3), (4, 6), (7, 8)
    expected = [[0.75, 0.0], [0.0, 2.5], [2.0, 3.0], [7.5, 0.0]]
    torch.testing.assert_close(curve.init_by_norm(x), torch.tensor(expected))


def test_perplexity():
    assert curve.perplexity(torch.tensor([5, 5, 5, 5])) == pytest.approx(4.0)
    assert curve.perplexity(torch.tensor([10, 0, 0])) == pytest.approx(1.0)
