"""Automatic annotations of every curve segment: where in the image it acts, what it changes, and which W+
layers carry it (``sfvq annotate --run R`` writes ``<run>/annotations.json`` and ``<run>/annotations/``).

Each segment ``c_i -> c_{i+1}`` of one bitrate is turned into its unit direction and applied to fixed seeds
by ``+step`` and ``-step``, where ``step = sigma * std`` (``sigma`` in stds of the run's latents along the
direction; by default the largest step of the run's edit grids, :func:`default_sigma`, which keeps a seed
at the data's mean inside the central 99 % of the latents); every render goes through
:meth:`~sfvq.spaces.LatentSpace.render_edits` (fixed noise: only the edit differs).

(a) **Where it acts.** The heat map is the mean absolute image change ``|I(+-step) - I(0)|`` over seeds,
both signs and the colour channels, (H, W), saved as a PNG (``annotations/b{bits}_s{i:03d}.png``, scaled
to its own maximum). ``change`` is its mean (image units, images in [-1, 1]). A pixel is *hot* when its
change is at least :data:`HOT_FACTOR` (2) times the image's mean change; a *region* is a set of hot pixels
connected through their 8 neighbours. ``locality`` is the share of the total change inside the region
holding the most change (computed on the heat map area-averaged to at most 128 px a side): 1 when all the
change sits in one blob, near 0 when the change is spread out evenly (then no pixel is hot). A region can
only hold a large share if it is small: a pixel that changes twice the mean can cover at most half the
image.

(b) **What it changes.** With a scorer (:mod:`sfvq.scorers.interface`), ``effects[name]`` is the mean over
seeds of ``(score(I(+step)) - score(I(-step))) / 2``: the signed shift of that score by an edit of
``sigma`` stds from corner i towards corner i+1 (a change both signs make alike, such as a degraded face,
cancels). For the scorer's *paired* names (identity) it is the mean of ``compare(I(0), I(+-step))``, an
unsigned distance from the unedited image. ``summary`` lists the :data:`SUMMARY_TOP` largest shifts,
ranked by ``|shift| / scale`` (the scorer's ``scales``, 1 by default) and kept when that is at least
:data:`SUMMARY_MIN`.

(c) **Which layers carry it** (spaces with W+ layers only; null otherwise). The layers are cut into at
most :data:`MAX_GROUPS` contiguous groups (single layers for 8 or fewer). Let ``D`` be the change of the
full edit ``I(+step) - I(0)`` and ``R`` the hot pixels of the heat map (all pixels when none is hot). For a
contiguous range ``r`` of groups with change ``D_r`` (the edit applied to those layers only):

* ``kept(r) = <D_r, D>_R / <D, D>_R``: how much of the full edit's change where it acts the range
  reproduces (a projection, so a different change there does not count);
* ``outside(r) = |D_r|^2 outside R / |D_r|^2``: the share of the range's own change that falls elsewhere;
* ``score(r) = min(kept, 1) - outside``.

Among the ranges with ``kept >= KEEP_SHARE`` (0.8; the full range always qualifies) the best score wins,
and any range within :data:`TIE_TOLERANCE` (0.02) of it with fewer layers is preferred (fewest layers,
then score, then earliest). Why this one: it is image-based, so it works for every generator with or
without a scorer, and it asks exactly what a user of ``--layers`` wants: most of the segment's effect
where it acts, with as little as possible anywhere else, in as few layers as that allows. ``search``
``shrink`` (default) starts from the full range and repeatedly renders the two ranges one group
shorter (dropping the first or the last group), moving to the better-scoring one while it still keeps
``KEEP_SHARE``; the choice is then made among every range it rendered (at most ``2 (G - 1)`` ranges
instead of ``G (G + 1) / 2``). ``exact`` renders every range. ``layer_share`` is the chosen range's
``kept`` and ``layer_outside`` its ``outside``, both measured. (Predicting a range's change as the sum of
its layers' changes, rendering each layer alone, was tried and dropped: on builtin:avatars-sg2 at 3 stds
the prediction was off so far that the measured best range was missed for 58 of 63 segments.)

``criterion`` ``purity`` (an option; ``pixels``, the above, is the default) chooses the range by what
the edit changes instead of how many pixels: each range is rendered at ``+step`` and ``-step``, a
*group-shift* function turns the pair into one non-negative shift per group of effects (by default from
the scorer: ``sum |effects[name]| / scale`` over the names of a group, a name's group being its part
before ``=``, so ``mouth=smile`` and ``mouth=frown`` form ``mouth``), each group's shift is divided by
an optional weight (e.g. the shift random directions make in it), and ``purity(r)`` is the largest
group's share of the sum. Among the ranges whose largest group moves by at least ``min_shift`` (raw
units; the full range always qualifies) the purest wins, with the same tolerance and fewest-layers
preference. Why: on builtin:avatars-sg2 the largest pixel change of a W edit (background, skin) sits on
the coarse and middle layers, so the pixel criterion never keeps only the fine layers where the
purest (smaller) edits are; purity asks for the range that changes one thing. ``layer_share`` and
``layer_outside`` are still measured (from the range's ``+step`` render) and ``layer_purity`` holds
the chosen range's purity.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ANNOTATIONS_FILE = "annotations.json"
ANNOTATIONS_DIR = "annotations"
FORMAT_NAME = "sfvq.annotations"
FORMAT_VERSION = 1
DEFAULT_SEEDS = (0, 1, 2, 3)
DEFAULT_SIGMA = 3.0  # stds of the data along the direction (the inner columns of the run's edit grids)
DEFAULT_RESOLUTION = 256  # px: annotations render at most this (the run's preview size)
HOT_FACTOR = 2.0
KEEP_SHARE = 0.8
TIE_TOLERANCE = 0.02
MAX_GROUPS = 8
LOCALITY_SIDE = 128
MAX_COLUMNS = 64  # (direction, sigma) columns of seeds per render batch (bounds memory at large sizes)
CHUNK = 16  # segments annotated together (their renders batched; bounds the changes kept in memory)
SUMMARY_TOP = 3
SUMMARY_MIN = 0.02
SEARCHES = ("shrink", "exact")
CRITERIA = ("pixels", "purity")  # how a layer range is chosen (module docstring, (c))
MIN_SHIFT = 0.1  # purity criterion: the largest group's raw shift a range must reach (unless full)
HEAT_MIN_SIDE = 96  # px: small heat maps are upscaled (nearest) to at least this


class AnnotationError(ValueError):
    """Annotations that cannot be made or read as asked; the message says what to do."""


# ---------------------------------------------------------------------------------------------- heat maps
def heat_map(base: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """Mean absolute change: base (S, C, H, W), edited (S, T, C, H, W) -> (H, W) float64."""
    diff = (edited.double() - base.double()[:, None]).abs()  # (S, T, C, H, W)
    return diff.mean(dim=(0, 1, 2))  # (H, W)


def _area_down(heat: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W) -> area-averaged so that the longer side is at most ``max_side`` (integer factor)."""
    f = math.ceil(max(heat.shape) / max_side)
    if f <= 1:
        return heat
    H, W = heat.shape[0] // f * f, heat.shape[1] // f * f
    return heat[:H, :W].reshape(H // f, f, W // f, f).mean(axis=(1, 3))


def connected_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Regions of True pixels connected through their 8 neighbours: (H, W) bool -> (labels (H, W) int,
    with 0 for False pixels and 1..n for the regions; n)."""
    mask = np.asarray(mask, bool)
    labels = np.zeros(mask.shape, np.int64)
    H, W = mask.shape
    n = 0
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if labels[y0, x0]:
            continue
        n += 1
        labels[y0, x0] = n
        todo = deque([(int(y0), int(x0))])
        while todo:
            y, x = todo.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < H and 0 <= u < W and mask[v, u] and not labels[v, u]:
                        labels[v, u] = n
                        todo.append((v, u))
    return labels, n


def hot_mask(heat: np.ndarray | torch.Tensor, factor: float = HOT_FACTOR) -> np.ndarray:
    """Pixels whose change is at least ``factor`` times the mean change (and above 0): (H, W) bool."""
    h = np.asarray(heat, np.float64)
    return (h >= factor * h.mean()) & (h > 0)


def locality(
    heat: np.ndarray | torch.Tensor, factor: float = HOT_FACTOR, max_side: int = LOCALITY_SIDE
) -> float:
    """Share of the total change inside the hot region holding the most change (module docstring, (a));
    0 for a heat map without change."""
    h = _area_down(np.asarray(heat, np.float64), max_side)
    total = float(h.sum())
    if not total > 0:
        return 0.0
    labels, n = connected_regions(hot_mask(h, factor))
    if n == 0:
        return 0.0
    mass = np.bincount(labels.ravel(), weights=h.ravel(), minlength=n + 1)[1:]  # (n,)
    return float(mass.max() / total)


def heat_image(heat: np.ndarray | torch.Tensor, min_side: int = HEAT_MIN_SIDE) -> np.ndarray:
    """(H, W) change -> (H', W', 3) uint8 picture (magma colours, scaled to its maximum; upscaled without
    smoothing so the longer side is at least ``min_side``)."""
    from matplotlib import colormaps

    h = np.asarray(heat, np.float64)
    top = h.max()
    norm = h / top if top > 0 else np.zeros_like(h)
    rgb = (colormaps["magma"](norm)[..., :3] * 255).round().astype(np.uint8)  # (H, W, 3)
    k = max(1, math.ceil(min_side / max(h.shape)))
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)


# ---------------------------------------------------------------------------------------------- layers
def layer_groups(num_ws: int, max_groups: int = MAX_GROUPS) -> list[tuple[int, int]]:
    """Contiguous groups of ``ceil(num_ws / max_groups)`` layers: [(start, stop_exclusive), ...]."""
    if num_ws < 1 or max_groups < 1:
        raise ValueError(f"need num_ws >= 1 and max_groups >= 1, got {num_ws} and {max_groups}")
    size = math.ceil(num_ws / max_groups)
    return [(a, min(a + size, num_ws)) for a in range(0, num_ws, size)]


def group_ranges(n_groups: int) -> list[tuple[int, int]]:
    """Every contiguous range of groups as (first, stop_exclusive), shortest first, then by start."""
    return sorted(
        ((i, j) for i in range(n_groups) for j in range(i + 1, n_groups + 1)),
        key=lambda r: (r[1] - r[0], r[0]),
    )


def range_fit(full: torch.Tensor, part: torch.Tensor, region: torch.Tensor) -> tuple[float, float]:
    """(kept, outside) of a range's change ``part`` against the full edit's change ``full`` (both
    (S, C, H, W)) and the region where the segment acts (H, W) bool (module docstring, (c))."""
    R = region.to(full.dtype)
    inside = float((full * full * R).sum())
    kept = float((part * full * R).sum()) / inside if inside > 0 else 0.0
    energy = float((part * part).sum())
    outside = float((part * part * (1 - R)).sum()) / energy if energy > 0 else 0.0
    return kept, outside


def choose_range(
    ranges: Sequence[tuple[int, int]],
    kept: Sequence[float],
    outside: Sequence[float],
    sizes: Sequence[int] | None = None,
    keep_share: float = KEEP_SHARE,
    tolerance: float = TIE_TOLERANCE,
) -> int:
    """Index of the chosen range (module docstring, (c)): among ranges with ``kept >= keep_share``, those
    within ``tolerance`` of the best ``min(kept, 1) - outside``; of these the fewest layers (``sizes``,
    default the range lengths), then the best score, then the earliest start. Raises when none qualifies."""
    score = [min(k, 1.0) - o for k, o in zip(kept, outside, strict=True)]
    ok = [i for i, k in enumerate(kept) if k >= keep_share]
    if not ok:
        raise AnnotationError(f"no layer range keeps {keep_share:.0%} of the change")
    return _fewest_layers_near_best(ranges, score, ok, sizes, tolerance)


def _fewest_layers_near_best(
    ranges: Sequence[tuple[int, int]],
    score: Sequence[float],
    ok: Sequence[int],
    sizes: Sequence[int] | None,
    tolerance: float,
) -> int:
    """The tie-break both criteria share: of the qualifying ranges ``ok``, those within ``tolerance`` of
    the best ``score``; of these the fewest layers (``sizes``, default the range lengths), then the best
    score, then the earliest start."""
    sizes = [r[1] - r[0] for r in ranges] if sizes is None else list(sizes)
    best = max(score[i] for i in ok)
    near = [i for i in ok if score[i] >= best - tolerance]
    return min(near, key=lambda i: (sizes[i], -score[i], ranges[i][0]))


def range_purity(shifts: Any, weights: Any = None) -> tuple[float, int]:
    """(purity, main group) of one range's group shifts (G,): the largest of ``shifts / weights`` as a
    share of their sum (0 when nothing moves). ``weights`` (G,), e.g. chance shifts, default 1."""
    x = np.abs(np.asarray(shifts, dtype=np.float64))  # (G,)
    if weights is not None:
        x = x / np.maximum(np.asarray(weights, dtype=np.float64), 1e-12)
    total = float(x.sum())
    main = int(x.argmax()) if x.size else 0
    return (float(x[main]) / total if total > 0 else 0.0), main


def choose_range_by_purity(
    ranges: Sequence[tuple[int, int]],
    purity: Sequence[float],
    main_shift: Sequence[float],
    sizes: Sequence[int] | None = None,
    min_shift: float = MIN_SHIFT,
    full: tuple[int, int] | None = None,
    tolerance: float = TIE_TOLERANCE,
) -> int:
    """Index of the range the ``purity`` criterion picks (module docstring, (c)): among ranges whose main
    group's raw shift is at least ``min_shift`` (``full``, the full range, always qualifies), those within
    ``tolerance`` of the best purity; of these the fewest layers, then the purest, then the earliest.
    Raises when none qualifies."""
    ok = [i for i, r in enumerate(ranges) if main_shift[i] >= min_shift or r == full]
    if not ok:
        raise AnnotationError(f"no layer range moves any group of effects by {min_shift}")
    return _fewest_layers_near_best(ranges, purity, ok, sizes, tolerance)


# ---------------------------------------------------------------------------------------------- one direction
@dataclass
class DirectionAnnotation:
    """What :func:`annotate_direction` finds for one direction (see the module docstring)."""

    heat: torch.Tensor  # (H, W)
    change: float
    locality: float
    effects: dict[str, float]
    layers: tuple[int, int] | None
    layer_share: float | None
    layer_outside: float | None
    layer_purity: float | None = None  # the chosen range's purity (criterion "purity" only)


class Renderer:
    """Seeds of one space, their unedited images and scores, and the settings every edit shares."""

    def __init__(
        self,
        space: Any,
        seeds: Sequence[int],
        *,
        scorer: Any = None,
        search: str = "shrink",
        resolution: int | None = DEFAULT_RESOLUTION,
        batch_size: int = 64,
        max_groups: int = MAX_GROUPS,
        criterion: str = "pixels",
        group_shifts: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
        min_shift: float = MIN_SHIFT,
    ) -> None:
        """``criterion`` chooses layer ranges by ``pixels`` or ``purity`` (module docstring, (c));
        ``group_shifts(plus, minus)`` (images (S, C, H, W) at +-step -> (G,) non-negative shifts) feeds
        the purity criterion (default: the scorer's effects grouped by name, :meth:`scorer_group_shifts`)."""
        if search not in SEARCHES:
            raise AnnotationError(f"search must be one of {SEARCHES}, got {search!r}")
        if criterion not in CRITERIA:
            raise AnnotationError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if criterion == "purity" and group_shifts is None and scorer is None:
            raise AnnotationError("the purity criterion needs a scorer (or a group_shifts function)")
        if not min_shift >= 0:
            raise AnnotationError(f"min_shift must be >= 0, got {min_shift}")
        self.criterion, self.min_shift = criterion, float(min_shift)
        self.group_shifts = group_shifts or self.scorer_group_shifts
        if not seeds:
            raise AnnotationError("give at least one seed")
        self.space, self.seeds, self.scorer, self.search = space, list(seeds), scorer, search
        self.batch_size = batch_size
        self.images = 0  # images rendered so far (the seeds' unedited images included)
        side = int(getattr(space.G, "img_resolution", 0) or 0)
        self.resolution = None if resolution is None or (side and side <= resolution) else int(resolution)
        self.full = space.encode_seeds(self.seeds)  # (S, L, F)
        self.groups = layer_groups(space.num_ws, max_groups) if space.num_ws > 1 else []
        zero = torch.zeros(space.dim)
        self.base = self._render([zero], [[0.0]], None)[:, 0, 0]  # (S, C, H, W), render_edits' noise
        self.base_scores = None
        if scorer is not None:
            from sfvq.scorers.interface import run_scorer

            self.base_scores = run_scorer(scorer, self.base)

    def _render(self, vectors: list[torch.Tensor], sigmas: Any, layers: Any) -> torch.Tensor:
        self.images += len(vectors) * len(sigmas[0]) * self.full.shape[0]
        return self._render_columns(vectors, sigmas, layers)

    def _render_columns(self, vectors: list[torch.Tensor], sigmas: Any, layers: Any) -> torch.Tensor:
        """Seeds edited along ``vectors`` -> (S, M, T, C, H, W), as :meth:`LatentSpace.render_edits`.

        With deterministic noise (``const``/``none``) every column gives the same images whether it is
        rendered alone or in a batch with others, so the columns are edited with the space's own
        :meth:`~sfvq.spaces.LatentSpace.edit` and rendered together in batches of ``batch_size``
        (render_edits renders one column of S seeds per call, which costs about twice as much for a few
        seeds of a small generator); with random noise, render_edits itself fixes the noise per column.
        """
        if self.space.noise_mode == "random":
            return self.space.render_edits(
                self.full, vectors, sigmas, layers, self.batch_size, self.resolution
            )
        steps = torch.as_tensor(sigmas, dtype=torch.float64)  # (M, T)
        ranges = layers if isinstance(layers, list) else [layers] * len(vectors)
        edited = torch.cat(
            [
                self.space.edit(self.full, vectors[m], float(steps[m, t]), ranges[m])
                for m in range(len(vectors))
                for t in range(steps.shape[1])
            ]
        )  # (M * T * S, L, F), column-major
        S = self.full.shape[0]
        with torch.no_grad():
            images = self.space.render_full(edited, self.batch_size, self.resolution)  # (M * T * S, C, H, W)
        images = images.reshape(len(vectors), steps.shape[1], S, *images.shape[1:])
        return images.permute(2, 0, 1, *range(3, images.ndim))  # (S, M, T, C, H, W)

    def annotate(self, vector: torch.Tensor, step: float, *, effects: bool = True) -> DirectionAnnotation:
        """Annotate one direction (dim,) moved by ``+-step`` (raw units): heat, locality, effects (when
        ``effects`` and a scorer is set) and the layer range."""
        return self.annotate_many([vector], [step], effects=effects)[0]

    def annotate_many(
        self,
        vectors: Sequence[torch.Tensor],
        steps: Sequence[float],
        *,
        effects: bool = True,
        weights: Any = None,
    ) -> list[DirectionAnnotation]:
        """:meth:`annotate` for several directions at once: each round of renders (the full edits, then
        each step of the layer search) is one batch of columns for all of them. ``weights`` (G,) divide
        the group shifts of the purity criterion (ignored by the pixel criterion)."""
        vs = [torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in vectors]
        M, G = len(vs), self.groups
        if M == 0:
            return []
        cols = self._render(
            [v for v in vs for _ in (0, 1)], [[sign * st] for st in steps for sign in (1, -1)], None
        )[:, :, 0]  # (S, 2M, C, H, W): +step, -step of each direction
        outs: list[DirectionAnnotation] = []
        search: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # m -> (D (S, C, H, W), R (H, W))
        for m in range(M):
            plus, minus = cols[:, 2 * m], cols[:, 2 * m + 1]  # (S, C, H, W)
            heat = heat_map(self.base, cols[:, 2 * m : 2 * m + 2])  # (H, W)
            change = float(heat.mean())
            out = DirectionAnnotation(heat, change, locality(heat), {}, None, None, None)
            if effects and self.scorer is not None:
                out.effects = self._effects(plus, minus)
            if len(G) == 1 and change > 0:  # one group: the only range is every layer
                out.layers, out.layer_share, out.layer_outside = (0, self.space.num_ws), 1.0, 0.0
            elif len(G) > 1 and change > 0:
                R = torch.as_tensor(hot_mask(heat))
                search[m] = ((plus - self.base).double(), R if bool(R.any()) else torch.ones_like(R))
            outs.append(out)
        full_range = (0, len(G))
        if self.criterion == "purity":
            self._search_purity(vs, steps, cols, search, outs, weights)
            return outs
        fits = {m: {full_range: range_fit(D, D, R)} for m, (D, R) in search.items()}

        def measure(requests: list[tuple[int, tuple[int, int]]]) -> None:
            """Render the (direction, range) pairs not measured yet, in one batch of columns."""
            todo = [(m, r) for m, r in dict.fromkeys(requests) if r not in fits[m]]
            for k0 in range(0, len(todo), MAX_COLUMNS):
                part = todo[k0 : k0 + MAX_COLUMNS]
                rendered = self._render(
                    [vs[m] for m, _ in part],
                    [[steps[m]] for m, _ in part],
                    [self._layers(r) for _, r in part],
                )  # (S, len(part), 1, C, H, W)
                for k, (m, r) in enumerate(part):
                    D, R = search[m]
                    fits[m][r] = range_fit(D, (rendered[:, k, 0] - self.base).double(), R)

        if self.search == "exact":
            measure([(m, r) for m in search for r in group_ranges(len(G))])
        else:  # shrink: drop one group from either end while the shorter range still qualifies
            cur = {m: full_range for m in search}
            while cur:
                cands = {m: [(r[0] + 1, r[1]), (r[0], r[1] - 1)] for m, r in cur.items() if r[1] - r[0] > 1}
                measure([(m, c) for m, cs in cands.items() for c in cs])
                cur = {}
                for m, cs in cands.items():
                    ok = [r for r in cs if fits[m][r][0] >= KEEP_SHARE]
                    if ok:
                        cur[m] = max(ok, key=lambda r, f=fits[m]: min(f[r][0], 1.0) - f[r][1])
        for m in search:
            ranges = sorted(fits[m], key=lambda r: (r[1] - r[0], r[0]))
            sizes = [self._layers(r)[1] - self._layers(r)[0] for r in ranges]
            kept = [fits[m][r][0] for r in ranges]
            pick = choose_range(ranges, kept, [fits[m][r][1] for r in ranges], sizes)
            o = outs[m]
            o.layers, (o.layer_share, o.layer_outside) = self._layers(ranges[pick]), fits[m][ranges[pick]]
        return outs

    def _search_purity(
        self,
        vs: list[torch.Tensor],
        steps: Sequence[float],
        cols: torch.Tensor,
        search: dict[int, tuple[torch.Tensor, torch.Tensor]],
        outs: list[DirectionAnnotation],
        weights: Any,
    ) -> None:
        """The layer search of the ``purity`` criterion (module docstring, (c)) for the directions in
        ``search``; ``cols`` (S, 2M, C, H, W) are their full edits at +step, -step. Sets ``outs``' ranges."""
        full_range = (0, len(self.groups))
        # m -> range -> (purity, main group's raw shift, kept, outside)
        fits: dict[int, dict[tuple[int, int], tuple[float, float, float, float]]] = {}

        def fit(m: int, plus: torch.Tensor, minus: torch.Tensor) -> tuple[float, float, float, float]:
            D, R = search[m]
            shifts = np.abs(np.asarray(self.group_shifts(plus, minus), dtype=np.float64))  # (G,)
            pur, main = range_purity(shifts, weights)
            kept, outside = range_fit(D, (plus - self.base).double(), R)
            return pur, float(shifts[main]) if shifts.size else 0.0, kept, outside

        for m in search:
            fits[m] = {full_range: fit(m, cols[:, 2 * m], cols[:, 2 * m + 1])}

        def measure(requests: list[tuple[int, tuple[int, int]]]) -> None:
            """Render the (direction, range) pairs not measured yet at +-step, in batches of columns."""
            todo = [(m, r) for m, r in dict.fromkeys(requests) if r not in fits[m]]
            for k0 in range(0, len(todo), MAX_COLUMNS // 2):
                part = todo[k0 : k0 + MAX_COLUMNS // 2]
                rendered = self._render(
                    [vs[m] for m, _ in part],
                    [[steps[m], -steps[m]] for m, _ in part],
                    [self._layers(r) for _, r in part],
                )  # (S, len(part), 2, C, H, W)
                for k, (m, r) in enumerate(part):
                    fits[m][r] = fit(m, rendered[:, k, 0], rendered[:, k, 1])

        def qualifies(m: int, r: tuple[int, int]) -> bool:
            return fits[m][r][1] >= self.min_shift

        if self.search == "exact":
            measure([(m, r) for m in search for r in group_ranges(len(self.groups))])
        else:  # shrink: drop one group from either end, moving to the purer range that still qualifies
            cur = {m: full_range for m in search}
            while cur:
                cands = {m: [(r[0] + 1, r[1]), (r[0], r[1] - 1)] for m, r in cur.items() if r[1] - r[0] > 1}
                measure([(m, c) for m, cs in cands.items() for c in cs])
                cur = {}
                for m, cs in cands.items():
                    ok = [r for r in cs if qualifies(m, r)]
                    if ok:
                        cur[m] = max(ok, key=lambda r, f=fits[m]: f[r][0])
        for m in search:
            ranges = sorted(fits[m], key=lambda r: (r[1] - r[0], r[0]))
            sizes = [self._layers(r)[1] - self._layers(r)[0] for r in ranges]
            f = [fits[m][r] for r in ranges]
            pick = choose_range_by_purity(
                ranges, [x[0] for x in f], [x[1] for x in f], sizes, self.min_shift, full_range
            )
            o, chosen = outs[m], f[pick]
            o.layers, o.layer_purity = self._layers(ranges[pick]), chosen[0]
            o.layer_share, o.layer_outside = chosen[2], chosen[3]

    def scorer_group_shifts(self, plus: torch.Tensor, minus: torch.Tensor) -> np.ndarray:
        """Group shifts (G,) from the scorer (module docstring, (c)): ``sum |(score(plus) - score(minus)) /
        2| / scale`` over the unpaired names of each group (a name's part before ``=``), groups in the
        order their first name appears."""
        from sfvq.scorers.interface import run_scorer

        if self.scorer is None:
            raise AnnotationError("the purity criterion needs a scorer (or a group_shifts function)")
        S = plus.shape[0]
        both = run_scorer(self.scorer, torch.cat([plus, minus]))  # {name: (2S,)}
        scales = getattr(self.scorer, "scales", None) or {}
        out: dict[str, float] = {}
        for k, sc in both.items():
            shift = ((sc[:S] - sc[S:]) / 2).double()  # (S,)
            v = float(torch.nanmean(shift)) if bool(torch.isfinite(shift).any()) else 0.0
            g = k.split("=", 1)[0]
            out[g] = out.get(g, 0.0) + abs(v) / float(scales.get(k, 1.0) or 1.0)
        return np.array(list(out.values()), dtype=np.float64)

    def _layers(self, r: tuple[int, int]) -> tuple[int, int]:
        """A range of groups -> a range of layers (start, stop_exclusive)."""
        return self.groups[r[0]][0], self.groups[r[1] - 1][1]

    def _effects(self, plus: torch.Tensor, minus: torch.Tensor) -> dict[str, float]:
        from sfvq.scorers.interface import run_compare, run_scorer

        S = plus.shape[0]
        both = run_scorer(self.scorer, torch.cat([plus, minus]))  # {name: (2S,)}
        out: dict[str, float] = {}
        for k, s in both.items():
            shift = (s[:S] - s[S:]) / 2  # (S,)
            out[k] = float(np.nanmean(shift.numpy())) if bool(torch.isfinite(shift).any()) else float("nan")
        paired = run_compare(self.scorer, torch.cat([self.base, self.base]), torch.cat([plus, minus]))
        for k, d in paired.items():
            out[k] = float(np.nanmean(d.numpy())) if bool(torch.isfinite(d).any()) else float("nan")
        return out


def summary_line(
    effects: dict[str, float],
    scales: dict[str, float] | None = None,
    paired: Sequence[str] = (),
    top: int = SUMMARY_TOP,
    minimum: float = SUMMARY_MIN,
) -> str:
    """The largest shifts as one line, e.g. ``"smile +0.31, age -4.2"`` (module docstring, (b));
    ``"no clear change in the scores"`` when none reaches ``minimum`` of its scale."""
    scales = scales or {}
    rel = {k: abs(v) / float(scales.get(k, 1.0) or 1.0) for k, v in effects.items() if math.isfinite(v)}
    ranked = sorted((k for k in rel if rel[k] >= minimum), key=lambda k: -rel[k])[:top]
    if not ranked:
        return "no clear change in the scores"

    def num(k: str) -> str:
        v = effects[k]
        text = f"{v:.2f}" if k in paired else f"{v:+.2f}"
        return text if abs(v) < 10 else (f"{v:.0f}" if k in paired else f"{v:+.0f}")

    return ", ".join(f"{k} {num(k)}" for k in ranked)


def heat_summary(change: float, loc: float) -> str:
    """A line for annotations without a scorer: where the change sits."""
    if change == 0:
        return "no change"
    if loc >= 0.5:
        return f"local: {loc:.0%} of the change in one region"
    if loc > 0:
        return f"partly local: {loc:.0%} of the change in its main region"
    return "spread over the whole image"


# ---------------------------------------------------------------------------------------------- a run
def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def annotate_segments(
    space: Any,
    model: Any,
    bits: int,
    outdir: str | Path,
    *,
    X: Any = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    sigma: float = DEFAULT_SIGMA,
    scorer: Any = None,
    search: str = "shrink",
    resolution: int | None = DEFAULT_RESOLUTION,
    batch_size: int = 64,
    progress: bool = True,
    renderer: Renderer | None = None,
) -> list[dict[str, Any]]:
    """Annotate every segment of the ``bits``-bit curve of ``model`` in ``space`` (module docstring): heat
    maps written to ``outdir/annotations/b{bits}_s{i:03d}.png``; returns one entry a segment in the
    annotations.json format (``heat`` relative to ``outdir``). ``X``: the run's latents (for the std along
    each segment; without them the step is ``sigma`` times the segment's length)."""
    from sfvq.directions import segment_directions
    from sfvq.io import save_png
    from sfvq.progress import track

    if not (math.isfinite(sigma) and sigma > 0):
        raise AnnotationError(f"sigma must be a positive number, got {sigma}")
    dirs = segment_directions(model, bits, X)
    r = renderer or Renderer(
        space, seeds, scorer=scorer, search=search, resolution=resolution, batch_size=batch_size
    )
    scales = dict(getattr(scorer, "scales", {}) or {})
    paired = tuple(getattr(scorer, "paired", ()) or ())
    folder = Path(outdir) / ANNOTATIONS_DIR
    rows = []
    steps = [float(sigma) * float((d.std if d.std is not None else d.length) or 0.0) for d in dirs]
    chunks = [list(range(i, min(i + CHUNK, len(dirs)))) for i in range(0, len(dirs), CHUNK)]
    label = f"annotating {bits}-bit segments, {min(CHUNK, len(dirs))} at a time"
    for chunk in track(chunks, label, len(chunks), progress):
        moving = [i for i in chunk if steps[i] != 0 and bool(dirs[i].vector.any())]
        notes = r.annotate_many([dirs[i].vector for i in moving], [steps[i] for i in moving])
        found = dict(zip(moving, notes, strict=True))
        for i in chunk:
            a = found.get(i)
            if a is None:  # a zero-length segment: nothing moves
                a = DirectionAnnotation(torch.zeros(r.base.shape[2:]), 0.0, 0.0, {}, None, None, None)
                if scorer is not None:
                    a.effects = {k: 0.0 for k in scorer.names}
            rel = f"{ANNOTATIONS_DIR}/b{bits}_s{i:03d}.png"
            save_png(folder / f"b{bits}_s{i:03d}.png", heat_image(a.heat))
            if scorer is not None:
                summary = summary_line(a.effects, scales, paired)
            else:
                summary = heat_summary(a.change, a.locality)
            rows.append(
                {
                    "segment": i,
                    "heat": rel,
                    "change": _round(a.change, 5),
                    "locality": _round(a.locality),
                    "effects": {k: _round(v) for k, v in a.effects.items()},
                    "summary": summary,
                    "layers": None if a.layers is None else [int(a.layers[0]), int(a.layers[1])],
                    "layer_share": _round(a.layer_share),
                    "layer_outside": _round(a.layer_outside),
                    **({} if a.layer_purity is None else {"layer_purity": _round(a.layer_purity)}),
                }
            )
    return rows


def read_annotations(run_dir: str | Path, run_id: str | None = None) -> dict[str, Any] | None:
    """``<run>/annotations.json`` read defensively: None when absent, unreadable, not this format, or
    stamped with another ``run_id`` than the given one (a file left from an earlier curve)."""
    import json

    p = Path(run_dir) / ANNOTATIONS_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("bits"), dict):
        return None
    if run_id is not None and data.get("run_id") not in (None, run_id):
        return None
    return data


def segment_annotation(data: dict[str, Any] | None, bits: int, segment: int) -> dict[str, Any] | None:
    """The entry of one segment in annotations data (:func:`read_annotations`), or None."""
    if not data:
        return None
    rows = data.get("bits", {}).get(str(bits))
    if not isinstance(rows, list):
        return None
    for row in rows:
        if isinstance(row, dict) and row.get("segment") == segment:
            return row
    return None


def annotate_run(
    run: Any,
    bits: Sequence[int] | int | None = None,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    sigma: float | None = None,
    scorer: Any = None,
    search: str = "shrink",
    criterion: str = "pixels",
    resolution: int | None = DEFAULT_RESOLUTION,
    batch_size: int = 64,
    progress: bool = True,
    outdir: str | Path | None = None,
) -> Path:
    """Annotate the segments of ``bits`` (default: the run's finest bitrate) of an opened run
    (:class:`sfvq.runs.Run`, or anything with ``path``, ``model``, ``space`` and ``latents``) and write
    ``annotations.json`` atomically into ``outdir`` (default: the run). Entries of other bitrates already
    in the file are kept when they were made with the same run, seeds, scorer and search (``sigmas`` holds
    each bitrate's sigma).
    ``sigma`` None: :func:`default_sigma` (the largest step of the run's default edit grids).
    ``criterion``: how layer ranges are chosen, ``pixels`` or ``purity`` (needs a scorer; see the module
    docstring)."""
    from sfvq.io import write_json
    from sfvq.scorers.interface import scorer_label

    model = run.model
    have = sorted(model.codebooks_)
    wanted = [max(have)] if bits is None else [bits] if isinstance(bits, int) else list(bits)
    for b in wanted:
        if b not in model.codebooks_:
            raise AnnotationError(f"the run has no {b}-bit curve; it has bits {have[0]}-{have[-1]}")
    out = Path(outdir) if outdir is not None else Path(run.path)
    if sigma is None:
        sigma = default_sigma(run.latents, model, max(wanted))
    run_id = (getattr(model, "metadata_", None) or {}).get("run_id")
    space = run.space
    r = Renderer(
        space,
        seeds,
        scorer=scorer,
        search=search,
        resolution=resolution,
        batch_size=batch_size,
        criterion=criterion,
    )
    settings = {
        "run_id": run_id,
        "scorer": scorer_label(scorer),
        "seeds": [int(s) for s in seeds],
        "units": "std",
        "search": search,
        "range_criterion": criterion,
    }
    old = read_annotations(out, run_id)
    kept_bits: dict[str, Any] = {}
    sigmas = {str(b): float(sigma) for b in wanted}
    if old is not None and all(old.get(k) == v for k, v in settings.items()):
        kept_bits = {k: v for k, v in old["bits"].items() if k not in sigmas}
        old_sigmas = old.get("sigmas") if isinstance(old.get("sigmas"), dict) else {}
        sigmas = {**{k: old_sigmas.get(k) for k in kept_bits}, **sigmas}
    new_bits = {}
    for b in wanted:
        new_bits[str(b)] = annotate_segments(
            space, model, b, out, X=run.latents, sigma=sigma, scorer=scorer, progress=progress, renderer=r
        )
    side = int(r.base.shape[-1])
    data = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **settings,
        "sigmas": dict(sorted(sigmas.items(), key=lambda kv: int(kv[0]))),
        "scales": dict(getattr(scorer, "scales", {}) or {}),
        "paired": list(getattr(scorer, "paired", ()) or ()),
        "resolution": side,
        "images_rendered": r.images,
        "num_ws": int(space.num_ws),
        "layer_groups": [list(g) for g in r.groups] or None,
        "criterion": {
            "hot_factor": HOT_FACTOR,
            "keep_share": KEEP_SHARE,
            "tie_tolerance": TIE_TOLERANCE,
            "summary_min": SUMMARY_MIN,
            **({"min_shift": r.min_shift} if criterion == "purity" else {}),
        },
        "bits": {k: v for k, v in sorted({**kept_bits, **new_bits}.items(), key=lambda kv: int(kv[0]))},
    }
    return write_json(out / ANNOTATIONS_FILE, data)


def default_sigma(X: Any, model: Any, bits: int | None) -> float:
    """The edit size annotations use by default, in stds: the largest step of the run's default edit grids
    (:func:`sfvq.directions.data_sigmas` over the segments of ``bits``: a seed at the data's mean stays
    within the central 99 % of the latents along them), or :data:`DEFAULT_SIGMA` without latents."""
    from sfvq.directions import data_sigmas

    books = getattr(model, "codebooks_", {}) or {}
    if X is None or bits not in books:
        return DEFAULT_SIGMA
    C = books[bits].detach().to("cpu", torch.float64)  # (K, D)
    try:
        return float(data_sigmas(X, C[1:] - C[:-1]).limit)
    except ValueError:
        return DEFAULT_SIGMA


# ---------------------------------------------------------------------------------------------- --layers auto
def auto_layers(
    run: Any,
    direction: Any,
    space: Any | None = None,
    *,
    progress: bool = False,
) -> tuple[tuple[int, int] | None, str]:
    """The layer range ``--layers auto`` gives a direction of a run: ``(range or None, where from)``.

    A direction that is one segment (``b:i``, or its reverse) takes the range recorded for it in
    ``annotations.json``; any other direction, or a segment the file lacks, gets it computed now with the
    same criterion and the file's seeds and sigma (or the defaults). None: the space has no W+ layers.
    """
    space = space if space is not None else run.space
    if space.num_ws <= 1:
        return None, f"space {space.name} has no style layers: all of it"
    run_id = (getattr(run.model, "metadata_", None) or {}).get("run_id")
    data = read_annotations(run.path, run_id)
    src = getattr(direction, "source", None) or {}
    corners = src.get("corners")
    if src.get("method") == "sfvq" and corners and abs(corners[1] - corners[0]) == 1:
        row = segment_annotation(data, src.get("bits"), min(corners))
        if row is not None and isinstance(row.get("layers"), list) and len(row["layers"]) == 2:
            a, b = (int(x) for x in row["layers"])
            if 0 <= a < b <= space.num_ws:
                return (a, b), f"annotations.json ({_pct(row.get('layer_share'))} of the change kept)"
    seeds = (data or {}).get("seeds") or list(DEFAULT_SEEDS)
    sigma = ((data or {}).get("sigmas") or {}).get(str(src.get("bits")))
    if not isinstance(sigma, (int, float)) or not sigma > 0:
        sigma = default_sigma(run.latents, run.model, src.get("bits"))
    return direction_layers(space, direction, seeds=seeds, sigma=sigma, progress=progress)


def _pct(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, (int, float)) else "?"


def direction_layers(
    space: Any,
    direction: Any,
    *,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    sigma: float = DEFAULT_SIGMA,
    search: str = "shrink",
    renderer: Renderer | None = None,
    progress: bool = False,
) -> tuple[tuple[int, int] | None, str]:
    """The layer range of any direction (a :class:`~sfvq.directions.Direction`: ``vector``, ``std`` or
    ``length``) by the criterion of the module docstring, computed now: ``(range or None, note)``."""
    if space.num_ws <= 1:
        return None, f"space {space.name} has no style layers: all of it"
    unit = direction.std if getattr(direction, "std", None) else getattr(direction, "length", None)
    if not unit:
        raise AnnotationError(
            f"direction {direction.name!r} has no std or length to step by: cannot find its layers"
        )
    r = renderer or Renderer(space, seeds, search=search)
    a = r.annotate(direction.vector, float(sigma) * float(unit), effects=False)
    if a.layers is None:
        return (0, space.num_ws), "computed: the edit changes nothing, so all layers"
    return a.layers, f"computed now ({_pct(a.layer_share)} of the change kept; sfvq annotate stores it)"


__all__ = [
    "ANNOTATIONS_DIR",
    "ANNOTATIONS_FILE",
    "AnnotationError",
    "DirectionAnnotation",
    "Renderer",
    "annotate_run",
    "annotate_segments",
    "auto_layers",
    "choose_range",
    "connected_regions",
    "default_sigma",
    "direction_layers",
    "group_ranges",
    "heat_image",
    "heat_map",
    "heat_summary",
    "hot_mask",
    "layer_groups",
    "locality",
    "range_fit",
    "read_annotations",
    "segment_annotation",
    "summary_line",
]
