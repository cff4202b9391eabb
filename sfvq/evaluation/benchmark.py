"""The benchmark driver behind ``sfvq evaluate``: its settings, the screen-then-measure run over every
method, and the summary rows with bootstrap intervals (see :mod:`sfvq.evaluation` for the protocol)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sfvq.evaluation.effects import (
    Curves,
    Scorers,
    Scores,
    Screen,
    gather_scores,
    measure,
    score_images,
    screen_method,
    seed_block,
)
from sfvq.evaluation.stats import bootstrap_stats, curve_stats, matched_targets

DEFAULT_STEPS = (1.0, 2.0, 3.0)
SCREEN_SEED_START = 1_000_000  # screening seeds: far from the evaluation seeds 0..n-1


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
    evaluation seeds (see the module docstring). ``methods`` are :class:`~sfvq.baselines.MethodDirections`.

    Under torchrun every process calls this with the same methods: the renders and scores are shared
    (:mod:`sfvq.evaluation.effects`) and every process returns the same result, one process's."""
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
            # This process's seeds (all in one process): rendered and scored here, the scores gathered.
            a, b = seed_block(len(full), config.batch_size)
            base_images, mine = None, None
            if b > a:
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    base_images = md.space.render_full(full[a:b], config.batch_size)  # (b - a, C, H, W)
                mine = score_images(scorers, base_images)
            base_cache[key] = (full, base_images, gather_scores(mine))
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


def annotated_candidates(directions: Any, annotations: dict[str, Any] | None, bits: int, k: int) -> Any:
    """The ``k`` segments of ``directions`` (an sfvq DirectionSet of one bitrate) that the run's
    annotations (:func:`sfvq.annotate.read_annotations`) say move a score most, instead of the ``k`` with
    the largest std: per signed score of the annotation's scorer (its ``paired`` ones, such as identity,
    left out), segments are ranked by ``|effect|`` (either sign: screening follows a direction both
    ways), and the scores take turns adding their best segment not chosen yet until ``k`` are chosen.
    Raises ValueError when the annotations lack the bitrate or were made without a scorer."""
    from sfvq.annotate import segment_annotation

    if not annotations:
        raise ValueError("the run has no annotations.json for its curve: run sfvq annotate --run RUN first")
    paired = set(annotations.get("paired") or ())
    rows: dict[str, dict[str, float]] = {}  # direction name -> {score: |effect|}
    for d in directions:
        corners = (d.source or {}).get("corners")
        row = segment_annotation(annotations, bits, min(corners)) if corners else None
        if row is None:
            raise ValueError(f"annotations.json has no {bits}-bit entry for {d.name}: annotate that bitrate")
        rows[d.name] = {
            name: abs(v)
            for name, v in (row.get("effects") or {}).items()
            if name not in paired and isinstance(v, (int, float)) and math.isfinite(v)
        }
    scores = sorted({name for r in rows.values() for name in r})
    if not scores:
        raise ValueError("the annotations have no score effects (made with --scorer none): use a scorer")
    ranked = {s: sorted((n for n in rows if s in rows[n]), key=lambda n, s=s: -rows[n][s]) for s in scores}
    chosen: list[str] = []
    pos = dict.fromkeys(scores, 0)
    while len(chosen) < k and any(pos[s] < len(ranked[s]) for s in scores):
        for s in scores:  # one round: each score adds its best segment not chosen yet
            while pos[s] < len(ranked[s]) and ranked[s][pos[s]] in chosen:
                pos[s] += 1
            if len(chosen) < k and pos[s] < len(ranked[s]):
                chosen.append(ranked[s][pos[s]])
                pos[s] += 1
    from sfvq.directions import DirectionSet

    meta = {**(directions.meta or {}), "candidates": "annotations"}
    return DirectionSet([directions[n] for n in chosen], dim=directions.dim, meta=meta)


__all__ = [
    "DEFAULT_STEPS",
    "SCREEN_SEED_START",
    "EvalConfig",
    "EvalResult",
    "MethodResult",
    "annotated_candidates",
    "run_evaluation",
    "summarise",
]
