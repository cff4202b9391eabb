"""Image change: SSIM (Wang, Bovik, Sheikh and Simoncelli 2004) in plain torch.

Local means, variances and covariance under an 11-tap Gaussian window (sigma 1.5), taken over the valid
region only (no padding), with C1 = (0.01 L)^2 and C2 = (0.03 L)^2 for data range L; the SSIM map is
averaged over channels and positions. This matches scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L``.
"""

from __future__ import annotations

import numpy as np
import torch

from sfvq.scorers._common import as_uint8_rgb

CHUNK_ELEMENTS = 1 << 18  # pixel values per chunk or band (float64, five maps: about 10 MB)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian taps: (size,), summing to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be a positive odd number, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid-region filter along the last two axes: (..., H, W) -> (..., H-k+1, W-k+1).

    Weighted sums of k shifted slices per axis, accumulated in place: exact in float64, and on CPU several
    times faster than a float64 convolution.
    """
    k = g.numel()
    H, W = x.shape[-2:]
    taps = [float(t) for t in g]
    rows = x[..., 0 : H - k + 1, :] * taps[0]  # (..., H-k+1, W)
    for j in range(1, k):
        rows.add_(x[..., j : j + H - k + 1, :], alpha=taps[j])
    out = rows[..., :, 0 : W - k + 1] * taps[0]  # (..., H-k+1, W-k+1)
    for j in range(1, k):
        out.add_(rows[..., :, j : j + W - k + 1], alpha=taps[j])
    return out


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    full: bool = False,
) -> torch.Tensor:
    """SSIM of paired images x, y (N, C, H, W) (or (C, H, W)) with values in [0, data_range] -> (N,).

    Computed in float64. With ``full=True`` returns the SSIM map (N, C, H-window+1, W-window+1) instead.
    """
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"images of {x.shape[-2]}x{x.shape[-1]} px are smaller than the {window}-px window")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    g = gaussian_window(window, sigma)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    N, C, H, W = x.shape
    h_out = H - window + 1
    step = max(1, CHUNK_ELEMENTS // (C * H * W))  # images per chunk: keeps the working set in cache
    band = h_out if step > 1 else max(1, CHUNK_ELEMENTS // (C * W))  # output rows per band (big images)
    parts = []
    for start in range(0, N, step):
        maps = []
        for r0 in range(0, h_out, band):
            rows = slice(r0, min(h_out, r0 + band) + window - 1)  # input rows that band needs
            # (n, C, rows, W), row-major: the shifted slices are ~20x slower on channels-last strides
            xc = x[start : start + step, :, rows].detach().to(torch.float64).contiguous()
            yc = y[start : start + step, :, rows].detach().to(torch.float64).contiguous()
            stats = _filter(torch.stack([xc, yc, xc * xc, yc * yc, xc * yc]), g)  # (5, n, C, b, w)
            mx, my, exx, eyy, exy = stats
            sxx = exx - mx * mx  # local variances and covariance
            syy = eyy - my * my
            sxy = exy - mx * my
            maps.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))
        smap = torch.cat(maps, dim=2)  # (n, C, h_out, w_out)
        parts.append(smap if full else smap.mean(dim=(1, 2, 3)))
    return torch.cat(parts)


def image_ssim(
    images_a: np.ndarray | torch.Tensor, images_b: np.ndarray | torch.Tensor, **kwargs: float
) -> np.ndarray:
    """SSIM between paired images in the scorers' format (uint8 NHWC, or float NCHW in [-1, 1]) -> (N,).

    Both are quantised to uint8 first, as the other scorers see them, then compared on [0, 1].
    """
    a = as_uint8_rgb(images_a)
    b = as_uint8_rgb(images_b)
    if a.shape != b.shape:
        raise ValueError(f"paired image batches differ in shape: {a.shape} vs {b.shape}")
    ta = torch.from_numpy(a).permute(0, 3, 1, 2).to(torch.float64) / 255.0  # (N, 3, H, W) in [0, 1]
    tb = torch.from_numpy(b).permute(0, 3, 1, 2).to(torch.float64) / 255.0
    return ssim(ta, tb, data_range=1.0, **kwargs).numpy()
