"""Pure tensor maths on a piece-wise linear curve (the SFVQ codebook).

A codebook ``C`` of shape (K, D) holds the corners of the polyline ``c_0 -> c_1 -> ... -> c_{K-1}``;
segment ``k`` joins ``c_k`` and ``c_{k+1}`` (S = K - 1 segments). A point on the curve has a fractional
index ``t`` in ``[0, K-1]``: ``k = min(floor(t), K-2)``, ``lam = t - k``,
``point(t) = (1 - lam) c_k + lam c_{k+1}``.

Everything here works on whatever device and float dtype the inputs have, and never builds an
(N, D, K) tensor: distances come from one matrix product per chunk of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sfvq.threads import ThreadPicker

# Rows per chunk are chosen so that one (rows, K) block of float32 stays near this many bytes.
_CHUNK_BYTES = 4 * 2**20


def chunk_rows(n_cols: int, chunk_bytes: int = _CHUNK_BYTES) -> int:
    """Rows per chunk so that an (rows, n_cols) float32 block is about ``chunk_bytes``."""
    return max(64, chunk_bytes // (4 * max(1, n_cols)))


def decode(codebook: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points of the curve at fractional indices ``t`` (any shape) -> (*t.shape, D)."""
    K = codebook.shape[0]
    if K < 2:
        raise ValueError(f"a curve needs at least 2 corners, got {K}")
    t = t.to(codebook.dtype).clamp(0, K - 1)
    k = t.floor().long().clamp(max=K - 2)  # (...)
    lam = (t - k.to(t.dtype)).unsqueeze(-1)  # (..., 1)
    return (1 - lam) * codebook[k] + lam * codebook[k + 1]


def doubling_indices(K: int, eps: float = 0.01, dtype=torch.float64) -> torch.Tensor:
    """Fractional indices on the old K-corner curve of the 2K corners after doubling.

    Corner ``j`` of the first half gets the pair ``(j, j + eps)``, of the second half ``(j - eps, j)``,
    so every old corner is kept, its twin sits a tiny step towards the interior, and the order holds.
    Example K = 4: ``[0, .01, 1, 1.01, 1.99, 2, 2.99, 3]``.
    """
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must lie in (0, 0.5), got {eps}")
    j = torch.arange(K, dtype=dtype)
    first = j < K // 2
    lo = torch.where(first, j, j - eps)
    hi = torch.where(first, j + eps, j)
    return torch.stack([lo, hi], dim=1).reshape(-1)  # (2K,)


def double(codebook: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Grow a (K, D) curve to (2K, D) corners without changing its shape (see :func:`doubling_indices`).

    Evaluated in float64 so that the kept corners are bit-for-bit the old ones.
    """
    K = codebook.shape[0]
    t = doubling_indices(K, eps).to(codebook.device)
    return decode(codebook.double(), t).to(codebook.dtype)


def init_by_norm(x: torch.Tensor, K: int = 4) -> torch.Tensor:
    """Initial corners: sort rows of x (N, D) by L2 norm, cut into K equal chunks, average each chunk."""
    N = x.shape[0]
    if N < K:
        raise ValueError(f"need at least {K} samples to initialise {K} corners, got {N}")
    order = torch.argsort(x.norm(dim=1))
    return torch.stack([x[idx].mean(0) for idx in torch.tensor_split(order, K)])  # (K, D)


@dataclass
class Projection:
    """Result of projecting rows of x onto a curve; ``points`` are decoded only when asked for."""

    codebook: torch.Tensor  # (K, D) the curve, on x's device and dtype
    segment: torch.Tensor  # (N,) long, segment index in [0, K-2]
    lam: torch.Tensor  # (N,) position within the segment, in [0, 1]
    sqdist: torch.Tensor  # (N,) squared distance from x to its point

    @property
    def t(self) -> torch.Tensor:
        """Fractional curve index ``segment + lam``, shape (N,)."""
        return self.segment.to(self.lam.dtype) + self.lam

    @property
    def points(self) -> torch.Tensor:
        """Nearest points of the curve, (N, D), filled chunk by chunk (no full-size temporaries)."""
        c = self.codebook
        d = c[1:] - c[:-1]  # (S, D)
        out = torch.empty(self.segment.shape[0], c.shape[1], dtype=c.dtype, device=c.device)
        rows = chunk_rows(c.shape[1])
        with ThreadPicker("sfvq.points") as picker:
            for start in range(0, out.shape[0], rows):
                with picker.step():
                    seg = self.segment[start : start + rows]
                    part = out[start : start + rows]
                    torch.index_select(c, 0, seg, out=part)  # segment start corners
                    part.addcmul_(d.index_select(0, seg), self.lam[start : start + rows].unsqueeze(1))
        return out


def _segment_tables(c: torch.Tensor):
    """Per-segment constants of a (centred) codebook c (K, D)."""
    d = c[1:] - c[:-1]  # (S, D)
    dd = (d * d).sum(1)  # (S,) squared lengths
    ad = (c[:-1] * d).sum(1)  # (S,) <c_k, d_k>
    aa = (c * c).sum(1)  # (K,) squared corner norms
    inv_dd = torch.where(dd > 0, 1 / dd.clamp_min(torch.finfo(c.dtype).tiny), torch.zeros_like(dd))
    return dd, ad, aa, inv_dd


def project(
    x: torch.Tensor,
    codebook: torch.Tensor,
    method: str = "exact",
    chunk_size: int | None = None,
) -> Projection:
    """Nearest points of the curve to the rows of x (N, D).

    ``method="exact"`` searches all K-1 segments; ``method="adjacent"`` is the authors' rule: find the
    nearest corner, clamp it to [1, K-2], and keep the better of the two segments around it.
    Zero-length segments (coincident corners) project to their start corner.
    """
    if method not in ("exact", "adjacent"):
        raise ValueError(f"method must be 'exact' or 'adjacent', got {method!r}")
    K = codebook.shape[0]
    if K < 2:
        raise ValueError(f"a curve needs at least 2 corners, got {K}")
    corners = codebook.to(device=x.device, dtype=x.dtype)
    # Centre both on the codebook mean: the expanded distance formula then loses no precision to a
    # large common offset (StyleGAN's W has one).
    centre = corners.mean(0)
    c = corners - centre  # (K, D)
    dd, ad, aa, inv_dd = _segment_tables(c)
    chunk_fn = _exact_chunk if method == "exact" else _adjacent_chunk
    N = x.shape[0]
    # The results are allocated once and filled chunk by chunk: small per-chunk results kept between
    # the large per-chunk temporaries would fragment the C heap (hundreds of MB never given back).
    segs = torch.empty(N, dtype=torch.long, device=x.device)
    lams = torch.empty(N, dtype=x.dtype, device=x.device)
    dists = torch.empty(N, dtype=x.dtype, device=x.device)
    # Chunks sized by the wider of the (n, K) scores and the (n, D) centred rows stay cache-friendly.
    rows = chunk_size or chunk_rows(max(K, x.shape[1]))
    with ThreadPicker("sfvq.project") as picker:  # small ops a chunk: see sfvq.threads
        for start in range(0, N, rows):
            with picker.step():
                xc = x[start : start + rows] - centre  # (n, D)
                g = xc @ c.T  # (n, K): <x, c_k>, the only O(n D K) work
                seg, lam, score = chunk_fn(g, dd, ad, aa, inv_dd)
                # score = ||x - point||^2 - ||x||^2; clamp the rounding of points lying on the curve
                dists[start : start + rows] = (score + torch.linalg.vecdot(xc, xc)).clamp_min_(0)
                segs[start : start + rows] = seg
                lams[start : start + rows] = lam
    return Projection(corners, segs, lams, dists)


def _exact_chunk(g, dd, ad, aa, inv_dd):
    """Best segment, lambda and score per row from g = <x, c_k> (n, K)."""
    num = g[:, 1:] - g[:, :-1]  # (n, S): <x, d_k>
    num -= ad  # <x - c_k, d_k>
    lam = (num * inv_dd).clamp_(0, 1)  # (n, S)
    # ||x - c_k - lam d_k||^2 - ||x||^2 = aa_k - 2 g_k + lam (lam dd - 2 num)
    score = torch.mul(lam, dd).sub_(num, alpha=2).mul_(lam)
    score.sub_(g[:, :-1], alpha=2).add_(aa[:-1])
    best, seg = score.min(1)  # (n,)
    return seg, lam.gather(1, seg.unsqueeze(1)).squeeze(1), best


def _adjacent_chunk(g, dd, ad, aa, inv_dd):
    """The authors' two-segment rule per row from g = <x, c_k> (n, K)."""
    K = g.shape[1]
    k = (aa - 2 * g).argmin(1)  # (n,) nearest corner
    if K == 2:
        cand = torch.zeros_like(k).unsqueeze(1)  # one segment only
    else:
        k = k.clamp(1, K - 2)
        cand = torch.stack([k - 1, k], dim=1)  # (n, 2) segments around the corner
    gk = g.gather(1, cand)  # (n, 2) <x, c_i>
    num = g.gather(1, cand + 1) - gk - ad[cand]  # <x - c_i, d_i>
    lam = (num * inv_dd[cand]).clamp(0, 1)
    score = aa[cand] - 2 * gk - 2 * lam * num + lam * lam * dd[cand]
    best, pick = score.min(1, keepdim=True)  # ties keep the lower segment
    return cand.gather(1, pick).squeeze(1), lam.gather(1, pick).squeeze(1), best.squeeze(1)


def nearest_corner(x: torch.Tensor, codebook: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Index of the nearest corner for each row of x (N, D) -> (N,) long."""
    c = codebook.to(device=x.device, dtype=x.dtype)
    centre = c.mean(0)
    c = c - centre
    aa = (c * c).sum(1)  # (K,)
    rows = chunk_size or chunk_rows(c.shape[0])
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)  # filled in place (see project)
    for start in range(0, x.shape[0], rows):
        out[start : start + rows] = (aa - 2 * (x[start : start + rows] - centre) @ c.T).argmin(1)
    return out


def dithered_points(codebook: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """One dithered point per segment: ``(1 - lam_k) c_k + lam_k c_{k+1}`` -> (S, D); differentiable."""
    return torch.lerp(codebook[:-1], codebook[1:], lam.unsqueeze(1))


def segment_usage(segment: torch.Tensor, n_segments: int) -> torch.Tensor:
    """Counts of each segment index, (S,) long."""
    return torch.bincount(segment, minlength=n_segments)


def perplexity(counts: torch.Tensor) -> float:
    """``exp(entropy)`` of a histogram: the effective number of used bins."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
