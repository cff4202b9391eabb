"""Statistics of response curves: where a mean curve first reaches a change, slopes and what else changes
on the way, percentile bootstrap intervals over seeds, and the change every method is compared at."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sfvq.evaluation.effects import Curves


# ---------------------------------------------------------------------------------------------- statistics
def first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """The smallest x where the piecewise-linear curve (x, y) first reaches ``target`` (y[0] below it);
    NaN when it never does."""
    if not np.isfinite(target):
        return math.nan
    for i in range(1, len(x)):
        if np.isfinite(y[i]) and y[i] >= target:
            y0 = y[i - 1]
            if not np.isfinite(y0):  # no point before it to interpolate from
                return float(x[i])
            if y0 >= target:
                return float(x[i - 1])
            return float(x[i - 1] + (target - y0) * (x[i] - x[i - 1]) / (y[i] - y0))
    return math.nan


def nanmean0(x: np.ndarray) -> np.ndarray:
    """Mean over axis 0 (the seeds) of the finite entries; NaN where there is none."""
    with np.errstate(all="ignore"):
        ok = np.isfinite(x)
        n = ok.sum(0)
        return np.where(n > 0, np.where(ok, x, 0).sum(0) / np.maximum(n, 1), np.nan)


def curve_stats(
    c: Curves, a: int, target: float, attr_std: np.ndarray, idx: np.ndarray | None = None
) -> dict[str, Any]:
    """Statistics of attribute ``a`` along one oriented direction over the seeds ``idx`` (default all):

    ``slope`` (mean change per unit step, least squares through the origin), ``reach`` (largest mean
    change over the steps), ``step`` (step where the mean change first reaches ``target``), and at that
    step ``identity``, ``ssim``, ``other`` (A,) mean change of every attribute (NaN at ``a``) and
    ``entanglement`` (mean of ``|other| / attr_std`` over the other attributes).
    """
    sel = slice(None) if idx is None else idx
    attrs = c.attrs[sel]  # (S, T+1, A)
    delta = nanmean0(attrs - attrs[:, :1])  # (T+1, A)
    x = c.steps
    slope = float(np.nansum(x * delta[:, a]) / np.sum(x**2))
    step = first_crossing(x, delta[:, a], target)
    out: dict[str, Any] = {"slope": slope, "reach": float(np.nanmax(delta[:, a])), "step": step}

    def at(y: np.ndarray) -> float:
        return float(np.interp(step, x, y)) if np.isfinite(step) else math.nan

    out["identity"] = at(nanmean0(c.identity[sel])) if c.identity is not None else math.nan
    out["ssim"] = at(nanmean0(c.ssim[sel])) if c.ssim is not None else math.nan
    other = np.array([at(delta[:, j]) if j != a else math.nan for j in range(attrs.shape[2])])
    out["other"] = other
    rest = [j for j in range(attrs.shape[2]) if j != a]
    with np.errstate(all="ignore"):
        out["entanglement"] = (
            float(np.mean(np.abs(other[rest]) / attr_std[rest])) if rest and np.isfinite(step) else math.nan
        )
    return out


def bootstrap_stats(
    c: Curves,
    a: int,
    target: float,
    attr_std: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """:func:`curve_stats` on all seeds, with percentile intervals from ``n_boot`` resamples of the seeds
    (``numpy.random.default_rng(seed)``): each scalar ``k`` gets ``k_ci`` = [low, high]; ``other_ci`` is
    (A, 2); ``reached`` is the share of resamples whose mean curve reaches the target."""
    point = curve_stats(c, a, target, attr_std)
    S = c.attrs.shape[0]
    rng = np.random.default_rng(seed)
    keys = ("slope", "reach", "step", "identity", "ssim", "entanglement")
    samples = {k: np.full(n_boot, np.nan) for k in keys}
    other = np.full((n_boot, c.attrs.shape[2]), np.nan)
    for b in range(n_boot):
        s = curve_stats(c, a, target, attr_std, rng.integers(0, S, S))
        for k in keys:
            samples[k][b] = s[k]
        other[b] = s["other"]
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def ci(v: np.ndarray) -> list[float]:
        v = v[np.isfinite(v)]
        return [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if len(v) else [math.nan, math.nan]

    out = dict(point)
    for k in keys:
        out[f"{k}_ci"] = ci(samples[k])
    out["other_ci"] = np.array([ci(other[:, j]) for j in range(other.shape[1])])
    out["reached"] = float(np.isfinite(samples["step"]).mean()) if n_boot else math.nan
    return out


def matched_targets(reaches: dict[str, np.ndarray], match: float = 0.9, floor: float = 0.25) -> np.ndarray:
    """The change every method is compared at, per attribute: (A,).

    ``reaches`` maps method -> (A,) largest mean change its best direction reaches. Methods whose reach
    is below ``floor`` times the largest reach barely move the attribute; they are left out (they show
    as "not reached") so that one weak method does not shrink the comparison to nothing. The target is
    ``match`` times the smallest reach of the others; NaN where no method raises the attribute.
    """
    if not 0 < match <= 1:
        raise ValueError(f"match must lie in (0, 1], got {match}")
    if not 0 <= floor <= 1:
        raise ValueError(f"floor must lie in [0, 1], got {floor}")
    R = np.stack([np.asarray(v, np.float64) for v in reaches.values()])  # (methods, A)
    R = np.where(np.isfinite(R) & (R > 0), R, np.nan)
    out = np.full(R.shape[1], np.nan)
    for j in range(R.shape[1]):
        col = R[:, j][np.isfinite(R[:, j])]
        if len(col):
            out[j] = match * col[col >= floor * col.max()].min()
    return out


__all__ = ["bootstrap_stats", "curve_stats", "first_crossing", "matched_targets", "nanmean0"]
