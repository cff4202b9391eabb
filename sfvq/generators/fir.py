"""Memory-bounded FIR resampling (``upfirdn``) shared by the StyleGAN2, StyleGAN3 and rosinality generators.

A separable filter is applied as two 1-D passes, each a short sum of shifted (and, for down-sampling,
strided) slices of the input; up-sampling is polyphase: each of the ``up`` output phases is a sum of the
taps that meet a real input pixel, so the zero-inserted image is never built and no op holds more than
the padded input and its output. A 2-D filter that is not separable (StyleGAN3-R's radial down filter)
is a depthwise (per-channel) convolution. The maths is the usual one (format doc §6.3/§6.4): insert
``up - 1`` zeros after each pixel, pad (negative padding crops), convolve "valid" with the filter (a true
convolution, i.e. the flipped filter slides), keep every ``down``-th pixel from index 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sfvq.threads import ThreadPicker

__all__ = ["CHUNK_BYTES", "fir1d", "rows_needed", "separable_taps", "upfirdn2d"]

# A 2-D filter counts as separable when the outer product of its factors matches it to this relative error.
_SEPARABLE_RTOL = 1e-6

# Output rows of a chunked 2-D filter are sized so that a chunk's intermediate stays near this many bytes.
CHUNK_BYTES = 4 * 2**20


def separable_taps(f: torch.Tensor) -> tuple[list[float], list[float]] | None:
    """Factor a filter into (taps along H, taps along W) with ``f = outer(taps_h, taps_w)``.

    ``f`` is (T,) (the same 1-D filter along both axes) or (Th, Tw); a 2-D filter that is not rank one
    gives None. The factors are exact for rank-one filters such as outer([1,3,3,1], [1,3,3,1]) / 64.
    """
    if f.ndim == 1:
        taps = f.detach().double().cpu().tolist()
        return taps, taps
    if f.ndim != 2:
        raise ValueError(f"a FIR filter is (T,) or (Th, Tw), got shape {tuple(f.shape)}")
    g = f.detach().double().cpu()  # (Th, Tw)
    peak = int(g.abs().argmax())
    i, j = divmod(peak, g.shape[1])
    if g[i, j] == 0:
        zeros_h, zeros_w = [0.0] * g.shape[0], [0.0] * g.shape[1]
        return zeros_h, zeros_w
    col, row = g[:, j], g[i, :] / g[i, j]  # f = outer(col, row) when f is rank one
    if (torch.outer(col, row) - g).abs().max() > _SEPARABLE_RTOL * g[i, j].abs():
        return None
    return col.tolist(), row.tolist()


def _take(x: torch.Tensor, dim: int, start: int, count: int, step: int = 1) -> torch.Tensor:
    """The view ``x[..., start : start + (count - 1) * step + 1 : step]`` along ``dim`` (-1 or -2)."""
    idx: list[slice] = [slice(None)] * x.ndim
    idx[dim] = slice(start, start + (count - 1) * step + 1, step)
    return x[tuple(idx)]


def _pad1d(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """Zero-pad (negative values crop) dimension ``dim`` (-1 or -2) of x."""
    if before == 0 and after == 0:
        return x
    return F.pad(x, [before, after] if dim == -1 else [0, 0, before, after])


def _terms(
    n: int, T: int, up: int, down: int, pad: tuple[int, int]
) -> tuple[int, list[tuple[int, int, list[tuple[int, int]]]]]:
    """Output length and, per output phase, ``(phase, count, [(tap index, input offset)])``.

    Output ``j = up*q + phase`` (``j = down*q`` when down-sampling) takes ``x[q*step + offset]`` times
    the tap, for each listed term; ``step`` is ``down`` (up == 1) or 1 (up > 1).
    """
    p0, p1 = pad
    L = n * up + p0 + p1 - T + 1  # full-rate output length
    s = T - 1 - p0  # y[j] = sum_t f[t] u[j + s - t], u the zero-inserted input
    if up == 1:
        count = (L + down - 1) // down
        return L, [(0, count, [(t, s - t) for t in range(T)])]
    phases = []
    for phi in range(min(up, L)):
        count = (L - phi + up - 1) // up
        phases.append((phi, count, [(t, (phi + s - t) // up) for t in range(T) if (phi + s - t) % up == 0]))
    return L, phases


def _fir1d_inplace(
    x: torch.Tensor,
    taps: Sequence[float],
    dim: int,
    up: int,
    down: int,
    pad: tuple[int, int],
    out: torch.Tensor,
) -> None:
    """:func:`fir1d` written into ``out`` without padding copies: each term adds on its valid range."""
    n, T = x.shape[dim], len(taps)
    _, phases = _terms(n, T, up, down, pad)
    step = down if up == 1 else 1
    for phi, count, terms in phases:
        view = _take(out, dim, phi, count, up)  # the outputs of this phase
        ranges = []
        for t, o in terms:  # outputs q with 0 <= q*step + o < n
            lo = max(0, (-o + step - 1) // step)
            hi = min(count, (n - o + step - 1) // step)
            if hi > lo:
                ranges.append((taps[t], o, lo, hi))
        if not ranges:
            view.zero_()
            continue
        # Every output sums its valid terms in tap order (outputs outside the first term's range start
        # from an exact 0), so the result does not depend on how the rows are chunked or batched: an
        # image renders bit for bit the same alone or in any batch (tested).
        tap, o, lo, hi = ranges[0]
        if lo > 0:
            _take(view, dim, 0, lo).zero_()
        if hi < count:
            _take(view, dim, hi, count - hi).zero_()
        torch.mul(_take(x, dim, lo * step + o, hi - lo, step), tap, out=_take(view, dim, lo, hi - lo))
        for tap, o, lo, hi in ranges[1:]:
            _take(view, dim, lo, hi - lo).add_(_take(x, dim, lo * step + o, hi - lo, step), alpha=tap)


def _fir1d_autograd(
    x: torch.Tensor, taps: Sequence[float], dim: int, up: int, down: int, pad: tuple[int, int]
) -> torch.Tensor:
    """:func:`fir1d` from out-of-place ops only (differentiable): a padded copy, sums of slices."""
    n, T = x.shape[dim], len(taps)
    L, phases = _terms(n, T, up, down, pad)
    step = down if up == 1 else 1
    offsets = [(o, count) for _, count, terms in phases for _, o in terms]
    before = max([0] + [-o for o, _ in offsets])
    after = max([0] + [(count - 1) * step + o + 1 - n for o, count in offsets])
    xp = _pad1d(x, dim, before, after)
    parts = []
    for _, count, terms in phases:
        acc = None
        for t, o in terms:
            term = _take(xp, dim, before + o, count, step) * taps[t]
            acc = term if acc is None else acc + term
        if acc is None:
            shape = list(x.shape)
            shape[dim] = count
            acc = x.new_zeros(shape)
        parts.append(acc)
    if up == 1:
        return parts[0]
    # Interleave the phases: pad each to the longest, stack after dim, flatten, crop to L.
    longest = parts[0].shape[dim]
    parts = [_pad1d(p, dim, 0, longest - p.shape[dim]) for p in parts]
    parts += [torch.zeros_like(parts[0])] * (up - len(parts))
    y = torch.stack(parts, dim=x.ndim + dim + 1)  # (..., longest, up) or (..., longest, up, W)
    shape = list(x.shape)
    shape[dim] = longest * up
    return _take(y.reshape(shape), dim, 0, L)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _empty(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with x's dtype, device and (4-D) memory format."""
    fmt = torch.contiguous_format
    if x.ndim == 4 and x.shape[1] > 1 and x.stride(1) == 1 and x.stride(3) > 1:  # channels innermost
        fmt = torch.channels_last
    return torch.empty(list(shape), dtype=x.dtype, device=x.device, memory_format=fmt)


def fir1d(
    x: torch.Tensor,
    taps: Sequence[float],
    dim: int,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One axis of upfirdn: zero-insert ``up``, pad, "valid" true convolution, keep every ``down``-th.

    x (..., n) along ``dim`` (-1: width, -2: height) -> (..., L') with L = n*up + pad0 + pad1 - T + 1 and
    L' = ceil(L / down). Cost: T multiply-adds an output pixel (T/up when up-sampling); memory: the output
    only (written into ``out`` when given), unless x needs a gradient (then padded copies and sums).
    """
    if dim not in (-1, -2):
        raise ValueError(f"fir1d filters along dim -1 or -2, got {dim}")
    if up < 1 or down < 1:
        raise ValueError(f"up and down must be >= 1, got up={up}, down={down}")
    n, T = x.shape[dim], len(taps)
    L = n * up + pad[0] + pad[1] - T + 1
    if L < 1 or T < 1:
        raise ValueError(f"fir1d output would be empty: {n} pixels, up {up}, pad {pad}, {T} taps")
    if up > 1 and down > 1:  # not used by the generators: the plain composition
        full = fir1d(x, taps, dim, up=up, pad=pad)
        y = _take(full, dim, 0, (L + down - 1) // down, down)
        return y if out is None else out.copy_(y)
    if _needs_grad(x):
        y = _fir1d_autograd(x, taps, dim, up, down, pad)
        return y if out is None else out.copy_(y)
    if out is None:
        shape = list(x.shape)
        shape[dim] = L if up > 1 else (L + down - 1) // down
        out = _empty(x, shape)
    _fir1d_inplace(x, taps, dim, up, down, pad, out)
    return out


def rows_needed(
    a: int, b: int, n: int, T: int, up: int, down: int, pad: tuple[int, int]
) -> tuple[int, int, tuple[int, int]]:
    """Input rows ``[i0, i1)`` and the padding that make :func:`fir1d` give exactly output rows ``[a, b)``.

    For a pass over n input rows with T taps, factors up/down and padding ``pad``: running it on
    ``x[i0:i1]`` with the returned padding yields rows a..b-1 of the full pass (``i1 == i0`` when those
    rows lie wholly in the zero padding).
    """
    p0 = pad[0]
    i0 = min(max(-((p0 - down * a) // up), 0), n)  # ceil((down*a - p0) / up), clamped
    i1 = min(max((down * (b - 1) + T - 1 - p0) // up + 1, i0), n)
    q0 = p0 - down * a + up * i0
    q1 = down * (b - a - 1) + 1 - (i1 - i0) * up - q0 + T - 1
    return i0, i1, (q0, q1)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Up-sample (zero insertion), pad ``(x_lo, x_hi, y_lo, y_hi)``, FIR-filter "valid", down-sample.

    x (N, C, H, W); f None (identity), (T,) (the same filter along both axes) or (Th, Tw). A separable
    filter runs as two 1-D passes (:func:`fir1d`), the gain split between them, chunk by chunk of output
    rows, so the only full-size allocation is the output; a non-separable 2-D filter runs as a depthwise
    (per-channel) convolution, after explicit zero insertion when ``up > 1``.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    x_lo, x_hi, y_lo, y_hi = padding
    if f is None:
        f = torch.ones(1)
    factors = separable_taps(f)
    if factors is None:
        return _depthwise(x, f, up, down, padding, gain)
    taps_h, taps_w = factors
    g = abs(gain) ** 0.5
    taps_w = [t * g for t in taps_w]
    taps_h = [t * g * (1.0 if gain >= 0 else -1.0) for t in taps_h]
    if _needs_grad(x):
        x = fir1d(x, taps_w, -1, up=up, down=down, pad=(x_lo, x_hi))  # (N, C, H, W')
        return fir1d(x, taps_h, -2, up=up, down=down, pad=(y_lo, y_hi))  # (N, C, H', W')
    n, c, h, w = x.shape
    th, tw = len(taps_h), len(taps_w)
    w_out = -(-(w * up + x_lo + x_hi - tw + 1) // down)
    h_out = -(-(h * up + y_lo + y_hi - th + 1) // down)
    if w_out < 1 or h_out < 1:
        raise ValueError(
            f"upfirdn2d output would be empty: input {h}x{w}, up {up}, down {down}, pad {padding}"
        )
    out = _empty(x, (n, c, h_out, w_out))
    rows = max(1, CHUNK_BYTES // max(1, n * c * w_out * x.element_size() * max(1, down // up)))
    with ThreadPicker(
        "sfvq.fir"
    ) as picker:  # small ops a chunk: one thread when a busy core would stall them
        for a in range(0, h_out, rows):
            b = min(a + rows, h_out)
            i0, i1, pad_h = rows_needed(a, b, h, th, up, down, (y_lo, y_hi))
            with picker.step():
                if i1 <= i0:  # these output rows lie in the zero padding
                    out[:, :, a:b].zero_()
                    continue
                tmp = fir1d(
                    x[:, :, i0:i1], taps_w, -1, up=up, down=down, pad=(x_lo, x_hi)
                )  # (N, C, rows, W')
                fir1d(tmp, taps_h, -2, up=up, down=down, pad=pad_h, out=out[:, :, a:b])
    return out


def _depthwise(
    x: torch.Tensor, f: torch.Tensor, up: int, down: int, padding: tuple[int, int, int, int], gain: float
) -> torch.Tensor:
    """upfirdn2d with a non-separable 2-D filter f (Th, Tw) as one depthwise convolution."""
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)  # (N, C, H*up, W*up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, list(padding))  # (N, C, H', W'), negative values crop
    kernel = (f.flip([0, 1]) * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)  # (C, 1, Th, Tw)
    return F.conv2d(x, kernel, stride=down, groups=c)
