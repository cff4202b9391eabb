"""The re-scoring benchmark behind ``sfvq evaluate``: do a method's directions change a face attribute
while keeping the person?

For each method (a :class:`~sfvq.baselines.MethodDirections`: candidate directions and their space):

1. **Screen** (seeds disjoint from the evaluation seeds, so that picking the best direction does not
   flatter it on the seeds it is then measured on): every candidate edits ``screen_n`` seeds by
   ``+s`` and ``-s`` (in std units of the data along the direction); the attribute scorer gives the
   one-sided changes per unit step ``(a(+s) - a(0)) / s`` and ``(a(-s) - a(0)) / s`` averaged over
   seeds. The best direction for an attribute, with its sign, is the one that raises it most per unit
   step (one-sided, because the measurement follows it one way and responses are often lopsided).
2. **Measure**: each method's best (oriented) directions edit the ``n`` evaluation seeds at steps
   ``0 < s_1 < ... < s_T``; every image gets the attributes, its identity distance to the unedited
   image (face embeddings) and, when given, SSIM to it.
3. **Summarise** per method and attribute: the change per unit step (slope of the mean change through
   the origin); the *matched* comparison: the target change ``T_a`` is ``match`` times the smallest
   largest-mean-change the methods' best directions reach (leaving out methods that reach less than
   ``floor`` times the best one: they are "not reached"), the step at which each method's mean curve
   first reaches ``T_a`` (linear interpolation between steps), and at that step the identity distance,
   SSIM and the change of every other attribute (entanglement: their mean ``|change| / std`` over the
   unedited seeds). All with percentile bootstrap intervals over seeds (seeded).

Scorers are parameters (so tests inject fakes): an attribute scorer has ``score(images) -> dict`` of
(N,) arrays holding at least the attribute names (``detected`` optional); an identity scorer has
``embed(images) -> (N, E)`` and ``distance(a, b) -> (...)``; ``ssim(images_a, images_b) -> (N,)``.
Images are passed as float (N, C, H, W) in [-1, 1], as generators return them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

DEFAULT_STEPS = (1.0, 2.0, 3.0)
SCREEN_SEED_START = 1_000_000  # screening seeds: far from the evaluation seeds 0..n-1


# ---------------------------------------------------------------------------------------------- scorers
@dataclass
class Scorers:
    """The scorers one benchmark uses: attributes (required), identity and SSIM (optional)."""

    attributes: Any
    identity: Any | None = None
    ssim: Callable[[Any, Any], np.ndarray] | None = None
    names: tuple[str, ...] = ("age", "gender", "smile", "yaw")


@dataclass
class Scores:
    """Scores of N images: ``attrs`` (N, A), ``detected`` (N,) bool, ``embeddings`` (N, E) or None."""

    attrs: np.ndarray
    detected: np.ndarray
    embeddings: np.ndarray | None


def score_images(scorers: Scorers, images: torch.Tensor, identity: bool = True) -> Scores:
    """Score images (N, C, H, W) in [-1, 1]: attributes, and embeddings when ``identity`` and an identity
    scorer is given. The two scorers run at the same time (the attribute scorer may be a separate process).
    """
    N = images.shape[0]

    def attributes() -> tuple[np.ndarray, np.ndarray]:
        out = scorers.attributes.score(images)
        missing = [a for a in scorers.names if a not in out]
        if missing:
            raise KeyError(f"the attribute scorer gave no {', '.join(missing)} (it gave {', '.join(out)})")
        A = np.stack([np.asarray(out[a], np.float64).reshape(N) for a in scorers.names], 1)  # (N, A)
        det = np.asarray(out.get("detected", np.ones(N, bool)), bool).reshape(N)
        return A, det

    emb = None
    if identity and scorers.identity is not None:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(attributes)
            emb = np.asarray(scorers.identity.embed(images), np.float64)  # (N, E)
            A, det = job.result()
    else:
        A, det = attributes()
    return Scores(A, det, emb)


# ---------------------------------------------------------------------------------------------- edits
def _raw_scale(d: Any, units: str) -> float:
    if units == "raw":
        return 1.0
    if d.std is None or not d.std > 0:
        raise ValueError(f"direction {d.name!r} has no std along it, so steps in std units are undefined")
    return float(d.std)


@torch.no_grad()
def render_steps(
    md: Any,
    index: int,
    sign: int,
    full: torch.Tensor,
    steps: Sequence[float],
    *,
    units: str = "std",
    layers: tuple[int, int] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Direction ``index`` of ``md`` times ``sign`` applied to seeds' full tensors (S, L, F) at each step
    -> images (S, len(steps), C, H, W)."""
    d = md.directions[index]
    scale = _raw_scale(d, units) * sign
    use = layers if layers is not None else d.layers
    edited = torch.stack(
        [md.space.edit(full, d.vector, float(s) * scale, use) for s in steps], 1
    )  # (S, T, L, F)
    S, T = edited.shape[:2]
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same noise for every image: only the edit differs
        images = md.space.render_full(edited.reshape(S * T, *full.shape[1:]), batch_size)  # (S*T, C, H, W)
    return images.reshape(S, T, *images.shape[1:])


@dataclass
class Screen:
    """Screening of one method: ``gains`` (M, 2, A) the mean increase of each attribute per unit step
    when candidate i is followed forwards (``[:, 0]``) or backwards (``[:, 1]``); ``best`` (A,) the chosen
    candidate per attribute and ``signs`` (A,) the way (+1 / -1) that raises the attribute most."""

    gains: np.ndarray
    best: np.ndarray
    signs: np.ndarray
    seeds: list[int]
    step: float

    @property
    def chosen(self) -> np.ndarray:
        """The chosen candidates' gains: (A,)."""
        A = self.gains.shape[2]
        return self.gains[self.best, np.where(self.signs > 0, 0, 1), np.arange(A)]


def screen_method(
    md: Any,
    scorers: Scorers,
    seeds: Sequence[int],
    step: float,
    *,
    units: str = "std",
    layers: tuple[int, int] | None = None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> Screen:
    """One-sided changes of every candidate of ``md`` on ``seeds``: ``(a(+step) - a(0)) / step`` and
    ``(a(-step) - a(0)) / step``; the best (candidate, way) per attribute is the largest increase, as the
    measurement then follows it one way only (attribute responses are often lopsided)."""
    full = md.space.encode_seeds(list(seeds))  # (S, L, F)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = score_images(scorers, md.space.render_full(full, batch_size), identity=False).attrs  # (S, A)
    M, A = len(md.directions), len(scorers.names)
    gains = np.zeros((M, 2, A))
    for i in range(M):
        imgs = render_steps(md, i, 1, full, (step, -step), units=units, layers=layers, batch_size=batch_size)
        S = imgs.shape[0]
        sc = score_images(scorers, imgs.reshape(S * 2, *imgs.shape[2:]), identity=False)
        a = sc.attrs.reshape(S, 2, A)
        with np.errstate(all="ignore"):
            gains[i] = np.nanmean(a - base[:, None], 0) / step  # (2, A)
        if progress is not None:
            progress(f"screened {md.method} {md.directions[i].name}")
    flat = np.nan_to_num(gains.reshape(M * 2, A), nan=-np.inf)  # row 2i: forwards, 2i + 1: backwards
    pick = np.argmax(flat, 0)  # (A,)
    return Screen(gains, pick // 2, np.where(pick % 2 == 0, 1, -1), list(seeds), float(step))


@dataclass
class Curves:
    """Scores of one oriented direction on S seeds at steps ``steps`` (T+1,), ``steps[0] == 0`` (the
    unedited image): ``attrs`` (S, T+1, A); ``identity`` (S, T+1) distance to the unedited image;
    ``ssim`` (S, T+1) to it; ``detected`` (S, T+1)."""

    steps: np.ndarray
    attrs: np.ndarray
    identity: np.ndarray | None = None
    ssim: np.ndarray | None = None
    detected: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, np.float64)
        if (
            self.steps.ndim != 1
            or len(self.steps) < 2
            or self.steps[0] != 0
            or np.any(np.diff(self.steps) <= 0)
        ):
            raise ValueError(f"steps must start at 0 and increase, got {self.steps.tolist()}")
        if self.attrs.ndim != 3 or self.attrs.shape[1] != len(self.steps):
            raise ValueError(f"attrs must be (S, {len(self.steps)}, A), got {self.attrs.shape}")
        S = self.attrs.shape[0]
        for name in ("identity", "ssim", "detected"):
            v = getattr(self, name)
            if v is not None and v.shape != (S, len(self.steps)):
                raise ValueError(f"{name} must be ({S}, {len(self.steps)}), got {v.shape}")


def measure(
    md: Any,
    index: int,
    sign: int,
    scorers: Scorers,
    full: torch.Tensor,
    base: Scores,
    base_images: torch.Tensor,
    steps: Sequence[float],
    *,
    units: str = "std",
    layers: tuple[int, int] | None = None,
    batch_size: int = 64,
    keep: int = 0,
) -> tuple[Curves, torch.Tensor | None]:
    """Score direction ``index`` (times ``sign``) of ``md`` on seeds (full tensors (S, L, F), their unedited
    scores ``base`` and images) at ``steps`` (> 0). Returns the curves and the images of the first ``keep``
    seeds (keep, T+1, C, H, W) (None when keep is 0)."""
    imgs = render_steps(md, index, sign, full, steps, units=units, layers=layers, batch_size=batch_size)
    S, T = imgs.shape[:2]
    flat = imgs.reshape(S * T, *imgs.shape[2:])
    sc = score_images(scorers, flat)
    A = len(scorers.names)
    attrs = np.concatenate([base.attrs[:, None], sc.attrs.reshape(S, T, A)], 1)  # (S, T+1, A)
    det = np.concatenate([base.detected[:, None], sc.detected.reshape(S, T)], 1)
    ident = None
    if sc.embeddings is not None and base.embeddings is not None:
        e = sc.embeddings.reshape(S, T, -1)
        dist = np.asarray(scorers.identity.distance(e, base.embeddings[:, None]), np.float64)  # (S, T)
        ident = np.concatenate([np.zeros((S, 1)), dist], 1)
    ss = None
    if scorers.ssim is not None:
        ref = base_images[:, None].expand(S, T, *base_images.shape[1:]).reshape(flat.shape)
        ss = np.concatenate(
            [np.ones((S, 1)), np.asarray(scorers.ssim(flat, ref), np.float64).reshape(S, T)], 1
        )
    kept = None
    if keep:
        kept = torch.cat([base_images[:keep, None], imgs[:keep]], 1)  # (keep, T+1, C, H, W)
    return Curves(np.concatenate([[0.0], np.asarray(steps, np.float64)]), attrs, ident, ss, det), kept


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


def _nanmean0(x: np.ndarray) -> np.ndarray:
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
    delta = _nanmean0(attrs - attrs[:, :1])  # (T+1, A)
    x = c.steps
    slope = float(np.nansum(x * delta[:, a]) / np.sum(x**2))
    step = first_crossing(x, delta[:, a], target)
    out: dict[str, Any] = {"slope": slope, "reach": float(np.nanmax(delta[:, a])), "step": step}

    def at(y: np.ndarray) -> float:
        return float(np.interp(step, x, y)) if np.isfinite(step) else math.nan

    out["identity"] = at(_nanmean0(c.identity[sel])) if c.identity is not None else math.nan
    out["ssim"] = at(_nanmean0(c.ssim[sel])) if c.ssim is not None else math.nan
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


# ---------------------------------------------------------------------------------------------- the benchmark
@dataclass
class EvalConfig:
    """Settings of one benchmark (the options of ``sfvq evaluate``)."""

    n: int = 100
    seed_start: int = 0
    screen_n: int = 16
    screen_seed_start: int = SCREEN_SEED_START
    steps: tuple[float, ...] = DEFAULT_STEPS
    screen_step: float | None = None  # default: the largest step
    units: str = "std"
    layers: tuple[int, int] | None = None
    match: float = 0.9
    floor: float = 0.25
    bootstrap: int = 1000
    seed: int = 0
    batch_size: int = 64
    figure_seeds: int = 2

    def check(self) -> None:
        """Raise ValueError naming the setting at fault."""
        if self.n < 2:
            raise ValueError(f"n must be at least 2 (bootstrap over seeds), got {self.n}")
        if self.screen_n < 1:
            raise ValueError(f"screen_n must be at least 1, got {self.screen_n}")
        steps = list(self.steps)
        if not steps or any(not math.isfinite(s) or s <= 0 for s in steps) or sorted(set(steps)) != steps:
            raise ValueError(f"steps must be positive, distinct and increasing, got {steps}")
        if self.screen_step is not None and not (math.isfinite(self.screen_step) and self.screen_step > 0):
            raise ValueError(f"screen_step must be positive, got {self.screen_step}")
        if self.units not in ("std", "raw"):
            raise ValueError(f"units must be 'std' or 'raw', got {self.units!r}")
        if not 0 < self.match <= 1:
            raise ValueError(f"match must lie in (0, 1], got {self.match}")
        if not 0 <= self.floor <= 1:
            raise ValueError(f"floor must lie in [0, 1], got {self.floor}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        eval_seeds = set(range(self.seed_start, self.seed_start + self.n))
        if eval_seeds & set(range(self.screen_seed_start, self.screen_seed_start + self.screen_n)):
            raise ValueError("the screening seeds overlap the evaluation seeds; move screen_seed_start")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.seed_start, self.seed_start + self.n))

    @property
    def screen_seeds(self) -> list[int]:
        return list(range(self.screen_seed_start, self.screen_seed_start + self.screen_n))


@dataclass
class MethodResult:
    """One method's screening, its best directions' curves per attribute and kept images for figures."""

    method: str
    space: str
    candidates: list[str]
    screen: Screen
    curves: dict[str, Curves] = field(default_factory=dict)  # attribute -> curves of its best direction
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # attribute -> (keep, T+1, C, H, W)
    seconds: float = 0.0


@dataclass
class EvalResult:
    """Everything the benchmark measured; :func:`summarise` turns it into table rows."""

    config: EvalConfig
    attributes: tuple[str, ...]
    methods: dict[str, MethodResult]
    attr_std: np.ndarray
    attr_mean: np.ndarray
    base_detected: float
    seconds: float = 0.0


def run_evaluation(
    methods: Sequence[Any],
    scorers: Scorers,
    config: EvalConfig,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Screen every method's candidates, then measure each method's best direction per attribute on the
    evaluation seeds (see the module docstring). ``methods`` are :class:`~sfvq.baselines.MethodDirections`."""
    config.check()
    if not methods:
        raise ValueError("no methods to evaluate")
    log = log or (lambda text: None)
    t0 = time.perf_counter()
    steps = list(config.steps)
    screen_step = config.screen_step if config.screen_step is not None else max(steps)
    A = len(scorers.names)
    out: dict[str, MethodResult] = {}
    base_cache: dict[str, tuple[torch.Tensor, torch.Tensor, Scores]] = {}
    for md in methods:
        tm = time.perf_counter()
        if len(md.directions) == 0:
            raise ValueError(f"method {md.method!r} has no directions")
        log(f"{md.method}: screening {len(md.directions)} directions on {config.screen_n} seeds")
        scr = screen_method(
            md, scorers, config.screen_seeds, screen_step, units=config.units, layers=config.layers,
            batch_size=config.batch_size,
        )  # fmt: skip
        key = json.dumps(md.space.describe(), sort_keys=True)  # methods in the same space share the seeds
        if key not in base_cache:
            full = md.space.encode_seeds(config.seeds)  # (n, L, F)
            with torch.random.fork_rng():
                torch.manual_seed(0)
                base_images = md.space.render_full(full, config.batch_size)  # (n, C, H, W)
            base_cache[key] = (full, base_images, score_images(scorers, base_images))
        full, base_images, base = base_cache[key]
        res = MethodResult(md.method, md.space.name, list(md.directions.names), scr)
        done: dict[tuple[int, int], tuple[Curves, torch.Tensor | None]] = {}
        for j, attr in enumerate(scorers.names):
            pick = (int(scr.best[j]), int(scr.signs[j]))
            if pick not in done:
                log(f"{md.method}: measuring {'-' if pick[1] < 0 else '+'}{md.directions[pick[0]].name} "
                    f"on {config.n} seeds")  # fmt: skip
                done[pick] = measure(
                    md, pick[0], pick[1], scorers, full, base, base_images, steps, units=config.units,
                    layers=config.layers, batch_size=config.batch_size, keep=config.figure_seeds,
                )  # fmt: skip
            res.curves[attr], kept = done[pick]
            if kept is not None:
                res.images[attr] = kept
        res.seconds = time.perf_counter() - tm
        out[md.method] = res
    first = next(iter(base_cache.values()))[2]
    with np.errstate(all="ignore"):
        attr_std = np.nanstd(first.attrs, 0)  # (A,)
        attr_mean = np.nanmean(first.attrs, 0)
    assert attr_std.shape == (A,)
    return EvalResult(
        config, tuple(scorers.names), out, attr_std, attr_mean, float(first.detected.mean()),
        time.perf_counter() - t0,
    )  # fmt: skip


def summarise(result: EvalResult) -> dict[str, Any]:
    """Rows of the table (one per method and attribute) with bootstrap intervals, and the targets."""
    cfg = result.config
    names = result.attributes
    reaches = {
        m: np.array(
            [curve_stats(r.curves[a], j, math.nan, result.attr_std)["reach"] for j, a in enumerate(names)]
        )
        for m, r in result.methods.items()
    }
    targets = matched_targets(reaches, cfg.match, cfg.floor)
    rows = []
    for m, r in result.methods.items():
        for j, a in enumerate(names):
            c = r.curves[a]
            s = bootstrap_stats(c, j, float(targets[j]), result.attr_std, cfg.bootstrap, cfg.seed + j)
            i, sign = int(r.screen.best[j]), int(r.screen.signs[j])
            det = c.detected[:, 1:].mean() if c.detected is not None else math.nan
            rows.append(
                {
                    "method": m,
                    "space": r.space,
                    "attribute": a,
                    "direction": r.candidates[i],
                    "sign": sign,
                    "screen_slope": float(r.screen.chosen[j]),
                    "slope": s["slope"],
                    "slope_ci": s["slope_ci"],
                    "slope_per_std": s["slope"] / result.attr_std[j] if result.attr_std[j] > 0 else math.nan,
                    "reach": s["reach"],
                    "reach_ci": s["reach_ci"],
                    "target": float(targets[j]),
                    "step": s["step"],
                    "step_ci": s["step_ci"],
                    "reached": s["reached"],
                    "identity": s["identity"],
                    "identity_ci": s["identity_ci"],
                    "ssim": s["ssim"],
                    "ssim_ci": s["ssim_ci"],
                    "other": {b: float(s["other"][k]) for k, b in enumerate(names) if k != j},
                    "other_ci": {
                        b: [float(v) for v in s["other_ci"][k]] for k, b in enumerate(names) if k != j
                    },
                    "entanglement": s["entanglement"],
                    "entanglement_ci": s["entanglement_ci"],
                    "detected": float(det),
                }
            )
    return {
        "attributes": list(names),
        "attribute_mean": {a: float(v) for a, v in zip(names, result.attr_mean, strict=True)},
        "attribute_std": {a: float(v) for a, v in zip(names, result.attr_std, strict=True)},
        "targets": {a: float(t) for a, t in zip(names, targets, strict=True)},
        "base_detected": result.base_detected,
        "rows": rows,
        "methods": {
            m: {
                "space": r.space,
                "candidates": r.candidates,
                "screen_gains": r.screen.gains.tolist(),
                "screen_seeds": [r.screen.seeds[0], r.screen.seeds[-1]],
                "screen_step": r.screen.step,
                "seconds": r.seconds,
            }
            for m, r in result.methods.items()
        },
        "seconds": result.seconds,
    }


# ---------------------------------------------------------------------------------------------- reporting
def _ok(v: Any) -> bool:
    """A finite number (results read back from JSON hold the string "nan" where NaN was)."""
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _f(v: float | None, spec: str = ".3g") -> str:
    return format(v, spec) if _ok(v) else "-"


def _ci(v: float, ci: Sequence[float], spec: str = ".3g", missing: str = "-") -> str:
    if not _ok(v):
        return missing
    return f"{_f(v, spec)} [{_f(ci[0], spec)}, {_f(ci[1], spec)}]"


def _share(row: dict[str, Any]) -> str:
    """A note when the matched change is reached in fewer than 95 % of the bootstrap resamples."""
    r = row.get("reached")
    if not _ok(r) or not _ok(row["step"]) or r >= 0.95:
        return ""
    return f" ({math.floor(100 * r)} % of resamples reach it)"


def markdown_table(summary: dict[str, Any]) -> str:
    """The summary as markdown: one table per attribute, one row per method."""
    lines = []
    for a in summary["attributes"]:
        t = summary["targets"][a]
        lines += [
            f"### {a} (matched change: {_f(t)}; std over unedited faces {_f(summary['attribute_std'][a])})",
            "",
            "| method | best direction | change per unit step [95% CI] | steps to the matched change "
            "| identity distance at it | SSIM at it | other attributes' change at it | entanglement "
            "| faces found |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["rows"]:
            if r["attribute"] != a:
                continue
            others = (
                ", ".join(f"{b} {_f(v, '+.2g')}" for b, v in r["other"].items()) if _ok(r["step"]) else "-"
            )
            lines.append(
                f"| {r['method']} | {'-' if r['sign'] < 0 else '+'}{r['direction']} ({r['space']}) "
                f"| {_ci(r['slope'], r['slope_ci'])} "
                f"| {_ci(r['step'], r['step_ci'], missing='not reached')}{_share(r)} "
                f"| {_ci(r['identity'], r['identity_ci'])} | {_ci(r['ssim'], r['ssim_ci'])} | {others} "
                f"| {_ci(r['entanglement'], r['entanglement_ci'], '.2f')} "
                f"| {_f(100 * r['detected'], '.0f') + ' %' if _ok(r['detected']) else '-'} |"
            )
        lines.append("")
    return "\n".join(lines)


def method_figure(result: EvalResult, method: str) -> Any:
    """A grid of ``method``'s best direction per attribute: rows = attribute x kept seed, columns = steps."""
    from sfvq.generators.base import to_uint8
    from sfvq.io import labelled_grid

    r = result.methods[method]
    tiles, labels = [], []
    steps = None
    for j, a in enumerate(result.attributes):
        if a not in r.images:
            continue
        imgs = r.images[a]  # (keep, T+1, C, H, W)
        steps = r.curves[a].steps
        sign = "-" if r.screen.signs[j] < 0 else "+"
        name = r.candidates[int(r.screen.best[j])]
        for k in range(imgs.shape[0]):
            tiles.append(to_uint8(imgs[k]))  # (T+1, H, W, C)
            labels += [f"{a} {sign}{name} {s:g}" for s in steps]
    if not tiles:
        raise ValueError(f"no images kept for {method} (figure_seeds was 0)")
    arr = np.concatenate(tiles)
    return labelled_grid(arr, labels, cols=len(steps))


def curves_plot(result: EvalResult, summary: dict[str, Any], path: Any) -> Any:
    """Per attribute: mean change vs step (left) and identity distance vs change (right), one line per
    method, the matched change dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sfvq.plots import _save

    names = result.attributes
    fig, axes = plt.subplots(len(names), 2, figsize=(9, 2.6 * len(names)), squeeze=False)
    for j, a in enumerate(names):
        for m, r in result.methods.items():
            c = r.curves[a]
            delta = _nanmean0(c.attrs - c.attrs[:, :1])[:, j]  # (T+1,)
            (line,) = axes[j, 0].plot(c.steps, delta, marker="o", label=m)
            if c.identity is not None:
                axes[j, 1].plot(delta, _nanmean0(c.identity), marker="o", color=line.get_color(), label=m)
        t = summary["targets"][a]
        if np.isfinite(t):
            axes[j, 0].axhline(t, ls="--", color="grey", lw=0.8)
            axes[j, 1].axvline(t, ls="--", color="grey", lw=0.8)
        axes[j, 0].set_ylabel(f"change in {a}")
        axes[j, 0].set_xlabel(f"step ({result.config.units} units)")
        axes[j, 1].set_xlabel(f"change in {a}")
        axes[j, 1].set_ylabel("identity distance")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


__all__ = [
    "DEFAULT_STEPS",
    "Curves",
    "EvalConfig",
    "EvalResult",
    "MethodResult",
    "Scorers",
    "Scores",
    "Screen",
    "bootstrap_stats",
    "curve_stats",
    "curves_plot",
    "first_crossing",
    "markdown_table",
    "matched_targets",
    "measure",
    "method_figure",
    "render_steps",
    "run_evaluation",
    "score_images",
    "screen_method",
    "summarise",
]
