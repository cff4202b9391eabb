"""The ground-truth benchmark: which method's directions change one known factor of the avatars world?

On a generator trained on rendered faces (``builtin:avatars-sg2``) a factor classifier reads every
factor (glasses, mouth, hair, skin, background, ...) from any image, so a direction's effect can be
measured factor by factor instead of through face-analysis proxies.

For every direction of every method (SFVQ segments at several bitrates, GANSpace, SeFa, LatentCLR and
random directions, all in W, applied to every style layer or to one range of them, ``layers``; SeFa then
factorises only those layers' affines; and optionally SFVQ curves fitted in StyleSpace, ``style_spaces``
such as ``s`` or ``s:coarse``, named ``sfvq-s:coarse-5bit``: their segments edit the codes of their
group's style layers only, so ``layers`` does not apply to them):

* **effect** (shift): ``n`` seeds are edited by ``+s`` and ``-s`` (``s`` in ``steps``, in std units of the
  data along the direction); for each factor, the total-variation distance ``0.5 * sum_v |P_v(+s) -
  P_v(-s)|`` between the predicted value distributions averaged over the seeds at ``+s`` and at ``-s``
  (0: the factor's mix does not move; 1: it flips completely), per group of nested factors the largest
  of its members' -> effects (directions, steps, groups). A change that both signs make alike (a
  blur, a degraded face) cancels; see :func:`direction_effects`.
* **purity** of a direction: the share of its total change (summed over steps and factors) taken by its
  main factor (1: it changes one factor only; 1/F for a change spread evenly over F factors). When
  random directions are measured, each factor's shift is first divided by the mean shift random
  directions make in it (its *chance* shift): readings of some factors (a 61-way hair style) move under
  any edit, and would otherwise be every direction's main factor.
* a direction is **pure** when its purity is above chance, above the highest purity among ``random_k``
  random directions (or at least a given ``purity``), and its main factor's shift at the largest
  step is at least ``floor`` (so that a direction that changes nothing is not called pure);
  **coverage** is the number of factors that are the main factor of at least one pure direction.

Steps in std units favour directions along the data's largest variation (they change faces most), so
purity is also compared at a **matched effect size**: for each direction, at the step where its per-face
change (total-variation distance from the original face, summed over groups) first reaches
``match_change``, interpolated linearly between the measured steps (and from 0 at step 0), with the chance
shifts of random directions taken at the same change; directions that never change faces that much up to
the largest step are counted as not reached.

For SFVQ, also whether index *ranges* of the curve separate factor values: ``mi_n`` sampled latents
are rendered, their factors read, and each is assigned to its nearest corner; the normalised mutual
information ``I(range; factor) / H(factor)`` between the range of consecutive corners holding it and
each factor is compared with the same number and size of ranges made of randomly chosen corners
(``shuffles`` random corner orders). With ranges of one corner both are the cell-level value; with
longer ranges the curve keeps more information than shuffled groups only if neighbouring corners
hold the same factor values, which is the paper's claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from sfvq.avatars.benchmark_config import GroundTruthConfig
from sfvq.directions import Direction, DirectionSet, data_covariance, std_along

__all__ = [
    "GroundTruthConfig",
    "curve_mutual_information",
    "direction_effects",
    "markdown_report",
    "normalised_mi",
    "random_directions",
    "run_ground_truth",
    "summarise_effects",
]


# Factors of the data set that nest (a smile is a kind of mouth, glasses a kind of accessory, a hat a kind
# of top, a beard a kind of facial hair, a shirt graphic a detail of the clothing) are measured as one
# group, so that a direction that changes the mouth is not called impure for also changing "smile".
# The first member of each group is its finest factor (used for the curve's mutual information).
FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "mouth": ("mouth", "smile"),
    "eyes": ("eyes",),
    "eyebrows": ("eyebrows",),
    "nose": ("nose",),
    "accessory": ("accessory", "glasses"),
    "skin": ("skin",),
    "top": ("top", "hat"),
    "hair_colour": ("hair_colour",),
    "facial_hair": ("facial_hair", "beard"),
    "clothing": ("clothing", "shirt_graphic"),
    "clothing_colour": ("clothing_colour",),
    "background": ("background",),
}


def factor_groups(factors: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """:data:`FACTOR_GROUPS` restricted to ``factors``; a factor in no group forms its own."""
    have = set(factors)
    out = {g: tuple(m for m in members if m in have) for g, members in FACTOR_GROUPS.items()}
    out = {g: m for g, m in out.items() if m}
    placed = {m for members in out.values() for m in members}
    out.update({f: (f,) for f in factors if f not in placed})
    return out


# ---------------------------------------------------------------------------------------------- effects
def _read(space: Any, classifier: Any, full: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Render full latents (N, L, F) with fixed noise and read their factors: {factor: (N, K)}."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same noise for every image: only the latent differs
        return classifier.predict_proba(space.render_full(full, batch_size))


@torch.no_grad()
def direction_effects(
    space: Any,
    directions: DirectionSet,
    classifier: Any,
    full: torch.Tensor,
    steps: Sequence[float],
    *,
    batch_size: int = 128,
    base: dict[str, torch.Tensor] | None = None,
    progress: bool = False,
    label: str = "editing",
) -> tuple[np.ndarray, np.ndarray]:
    """How each direction changes each factor's predicted distribution, per step.

    ``full`` (S, L, F) are the seeds' full latents in ``space``; each direction (with its std: steps are
    in std units) edits them by ``+s`` and ``-s``; ``base`` are the unedited seeds' probabilities
    (computed when None). Returns two (M, T, F_factors) float64 arrays, factors in the classifier's order:

    * ``shift``: total-variation distance between the *mean* predicted distributions over the seeds
      edited by ``+s`` and by ``-s``: the systematic, signed change (e.g. the share of faces read as
      wearing glasses going from 0.2 at ``-s`` to 0.7 at ``+s`` moves 0.5). Per-face reading noise
      averages out, and so does a change both signs make alike (an edit that only blurs or degrades
      the face moves the readings the same way at ``+s`` and ``-s``), which a one-sided shift from the
      original would count as an effect on every factor;
    * ``change``: the mean over seeds and signs of the per-face total-variation distance from the
      original (any change at all).
    """
    from sfvq.progress import track

    factors = list(classifier.vocab)
    if base is None:
        base = _read(space, classifier, full, batch_size)
    S = full.shape[0]
    shift = np.zeros((len(directions), len(steps), len(factors)))
    change = np.zeros_like(shift)
    for m, d in track(enumerate(directions), label, total=len(directions), enabled=progress):
        if d.std is None or not d.std > 0:
            raise ValueError(f"direction {d.name!r} has no std along it: steps in std units are undefined")
        sigmas = [sign * float(s) * d.std for s in steps for sign in (1, -1)]  # (2T,) step-major
        images = space.render_edits(full, [d.vector], sigmas, d.layers, batch_size)[:, 0]  # (S, 2T, C, H, W)
        p = classifier.predict_proba(images.transpose(0, 1).reshape(-1, *images.shape[2:]))  # (2T*S) rows
        for f, name in enumerate(factors):
            q = p[name].reshape(len(steps), 2, S, -1)  # (T, 2, S, K)
            b = base[name][None, None]  # (1, 1, S, K)
            mean = q.mean(2)  # (T, 2, K) mean distribution at +s and at -s
            shift[m, :, f] = (0.5 * (mean[:, 0] - mean[:, 1]).abs().sum(-1)).double().numpy()  # (T,)
            change[m, :, f] = (0.5 * (q - b).abs().sum(-1)).mean(dim=(1, 2)).double().numpy()  # (T,)
    return shift, change


def grouped(effects: np.ndarray, factors: Sequence[str], groups: dict[str, Sequence[str]]) -> np.ndarray:
    """Effects per factor (M, T, F) -> per group (M, T, G): the largest of a group's members."""
    index = {f: i for i, f in enumerate(factors)}
    return np.stack(
        [np.max([effects[..., index[m]] for m in members], axis=0) for members in groups.values()], -1
    )


def summarise_effects(
    effects: np.ndarray,
    factors: Sequence[str],
    purity: float = 0.5,
    floor: float = 0.1,
    chance: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per direction: main factor, purity, the main factor's shift at the largest step and the total
    shift; per set: mean and best purity, number of pure directions, coverage.

    ``effects`` (M, T, F): shifts per direction, step and factor (or factor group). ``chance`` (F,), when
    given, is each factor's typical shift under random directions: purity and the main factor are then
    computed on ``effects / chance`` (a factor whose reading moves under any edit, such as a 61-way hair
    style, no longer wins by its noise), while ``floor`` and the reported shifts stay in raw units.
    """
    if effects.ndim != 3 or effects.shape[2] != len(factors):
        raise ValueError(f"effects must be (M, T, {len(factors)}), got {effects.shape}")
    rel = effects if chance is None else effects / np.maximum(np.asarray(chance, dtype=float), 1e-12)
    total = rel.sum(axis=1)  # (M, F)
    sums = total.sum(axis=1)  # (M,)
    main = total.argmax(axis=1)  # (M,)
    pur = np.where(sums > 0, total[np.arange(len(main)), main] / np.where(sums > 0, sums, 1), 0.0)
    last = effects[np.arange(len(main)), -1, main]  # (M,) main factor's raw shift at the largest step
    pure = (pur >= purity) & (last >= floor)
    covered = sorted({factors[i] for i in main[pure]})
    return {
        "directions": int(len(main)),
        "main": [factors[i] for i in main],
        "purity": pur.tolist(),
        "main_shift": last.tolist(),
        "total_shift": effects[:, -1].sum(axis=1).tolist(),
        "mean_purity": float(pur.mean()) if len(pur) else float("nan"),
        "best_purity": float(pur.max()) if len(pur) else float("nan"),
        "mean_main_shift": float(last.mean()) if len(pur) else float("nan"),
        "pure": int(pure.sum()),
        "coverage": len(covered),
        "covered": covered,
    }


def at_matched_change(
    effects: np.ndarray, face_change: np.ndarray, steps: Sequence[float], target: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each direction's effects at the step where its per-face change first reaches ``target``.

    ``effects`` (M, T, G) and ``face_change`` (M, T) per step ``steps`` (increasing); both are taken as 0
    at step 0 and linear between steps. Returns (effects at the matched step (M, G), the matched step
    (M,), reached (M,) bool); a direction whose change stays below ``target`` up to the largest step is
    not reached (its row is NaN).
    """
    M, T, G = effects.shape
    x = np.concatenate([[0.0], np.asarray(steps, dtype=float)])  # (T+1,)
    change = np.concatenate([np.zeros((M, 1)), face_change], axis=1)  # (M, T+1)
    eff = np.concatenate([np.zeros((M, 1, G)), effects], axis=1)  # (M, T+1, G)
    out = np.full((M, G), np.nan)
    step = np.full(M, np.nan)
    reached = np.zeros(M, dtype=bool)
    for m in range(M):
        above = np.nonzero(change[m] >= target)[0]
        if len(above) == 0:
            continue
        j = int(above[0])  # >= 1: change[m, 0] == 0 < target
        lo, hi = change[m, j - 1], change[m, j]
        w = (target - lo) / (hi - lo) if hi > lo else 1.0
        out[m] = eff[m, j - 1] + w * (eff[m, j] - eff[m, j - 1])
        step[m] = x[j - 1] + w * (x[j] - x[j - 1])
        reached[m] = True
    return out, step, reached


def purity_threshold(
    config: GroundTruthConfig,
    random_effects: np.ndarray | None,
    groups: Sequence[str],
    chance: np.ndarray | None = None,
) -> tuple[float, str]:
    """The purity a direction needs to count as pure: ``config.purity`` when set; else just above the
    highest purity any random direction reaches (what chance gives with this generator and read-out,
    where factors read together), or 0.5 when no random directions were measured."""
    if config.purity is not None:
        return float(config.purity), "given"
    if random_effects is None or len(random_effects) == 0:
        return 0.5, "default (no random directions measured)"
    best = summarise_effects(random_effects, groups, 1.0, 0.0, chance)["best_purity"]
    return float(np.nextafter(best, 2.0)), f"above the purest of {len(random_effects)} random directions"


def random_directions(dim: int, k: int, seed: int, X: np.ndarray | None = None) -> DirectionSet:
    """``k`` isotropic random unit directions (seeded), with the data's std along each when X is given."""
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn((k, dim), generator=g)
    v = v / v.norm(dim=1, keepdim=True)  # (k, dim)
    stds = std_along(v, data_covariance(X))
    dirs = [
        Direction(name=f"rand{j}", vector=v[j], source={"method": "random", "seed": int(seed)}, std=stds[j])
        for j in range(k)
    ]
    return DirectionSet(dirs, dim=dim, meta={"method": "random", "seed": int(seed)})


# ---------------------------------------------------------------------------------------------- curve MI
def normalised_mi(groups: np.ndarray, labels: np.ndarray) -> float:
    """``I(G; L) / H(L)`` (plug-in estimate, natural log) for two integer arrays of equal length N;
    0 when L is constant."""
    groups, labels = np.asarray(groups), np.asarray(labels)
    _, gi = np.unique(groups, return_inverse=True)
    _, li = np.unique(labels, return_inverse=True)
    n = len(labels)
    joint = np.zeros((gi.max() + 1, li.max() + 1))
    np.add.at(joint, (gi, li), 1.0)
    joint /= n
    pg, pl = joint.sum(1), joint.sum(0)
    h_l = -float((pl[pl > 0] * np.log(pl[pl > 0])).sum())
    if h_l <= 0:
        return 0.0
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / (pg[:, None] * pl[None, :])[nz])).sum())
    return max(0.0, mi) / h_l


def curve_mutual_information(
    corner_index: np.ndarray,
    labels: dict[str, np.ndarray],
    n_corners: int,
    ranges: int,
    shuffles: int = 50,
    seed: int = 0,
) -> dict[str, Any]:
    """How well ranges of consecutive corners separate each factor, against randomly grouped corners.

    ``corner_index`` (N,) nearest corner of each sample; ``labels`` factor -> (N,) value codes. The
    ``n_corners`` corners are cut into ``ranges`` equal runs of consecutive indices (fewer when there are
    fewer corners); the shuffled baseline groups the same corners after a random permutation.
    Returns per factor the cell-level, curve-range and mean shuffled-range normalised MI, and means.
    """
    idx = np.asarray(corner_index)
    r = max(1, min(ranges, n_corners))
    size = n_corners / r
    curve_group = np.floor(idx / size).astype(np.int64)  # (N,)
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n_corners) for _ in range(shuffles)]
    out: dict[str, Any] = {"corners": int(n_corners), "ranges": int(r), "factors": {}}
    for name, lab in labels.items():
        cell = normalised_mi(idx, lab)
        cur = normalised_mi(curve_group, lab)
        shuf = float(np.mean([normalised_mi(np.floor(p[idx] / size).astype(np.int64), lab) for p in perms]))
        out["factors"][name] = {"cell": cell, "curve": cur, "shuffled": shuf}
    vals = out["factors"].values()
    for key in ("cell", "curve", "shuffled"):
        out[f"mean_{key}"] = float(np.mean([v[key] for v in vals]))
    out["curve_over_shuffled"] = (
        out["mean_curve"] / out["mean_shuffled"] if out["mean_shuffled"] > 0 else None
    )
    return out


# ---------------------------------------------------------------------------------------------- auto layers
AUTO_SUFFIX = "@auto"  # the name of a set measured with each direction on its own W+ range


def auto_layer_ranges(
    space: Any,
    directions: DirectionSet,
    sigma: float,
    seeds: Sequence[int],
    *,
    batch_size: int = 64,
    renderer: Any = None,
    weights: Any = None,
) -> list[tuple[tuple[int, int], float | None]]:
    """Each direction's W+ layer range as ``--layers auto`` picks it (:mod:`sfvq.annotate`, (c)): the
    direction edits ``seeds`` by ``+-sigma`` stds along it and the annotate module's range search keeps
    most of the change where it acts with the least elsewhere (or, with a ``renderer`` set to the purity
    criterion, moves one group most purely; ``weights`` (G,) divide its group shifts). Returns
    ``[((start, stop), kept share)]`` in the set's order; a direction whose edit changes nothing gets
    every layer (share None)."""
    from sfvq.annotate import CHUNK, Renderer

    if space.num_ws <= 1:
        raise ValueError(f"{space.name} has no W+ layers: there is no layer range to choose")
    r = renderer or Renderer(space, seeds, batch_size=batch_size, resolution=None)
    dirs = list(directions)
    out: list[tuple[tuple[int, int], float | None]] = []
    for i in range(0, len(dirs), CHUNK):
        part = dirs[i : i + CHUNK]
        steps = []
        for d in part:
            if d.std is None or not d.std > 0:
                raise ValueError(f"direction {d.name!r} has no std along it: its edit size is undefined")
            steps.append(float(sigma) * float(d.std))
        for a in r.annotate_many([d.vector for d in part], steps, effects=False, weights=weights):
            out.append(((0, space.num_ws), None) if a.layers is None else (a.layers, a.layer_share))
    return out


def on_auto_layers(
    directions: DirectionSet, ranges: Sequence[tuple[tuple[int, int], float | None]]
) -> DirectionSet:
    """A copy of ``directions`` with each direction set to its own range (from :func:`auto_layer_ranges`)."""
    from dataclasses import replace

    dirs = [
        replace(d, layer_start=int(a), layer_stop=int(b))
        for d, ((a, b), _) in zip(directions, ranges, strict=True)
    ]
    return DirectionSet(dirs, dim=directions.dim, meta={**(directions.meta or {}), "layers": "auto"})


def classifier_group_shifts(
    classifier: Any, groups: dict[str, Sequence[str]]
) -> Callable[[torch.Tensor, torch.Tensor], np.ndarray]:
    """The group-shift function of the purity range criterion: images at +step and -step (S, C, H, W)
    -> (G,) shift per group, as :func:`direction_effects` measures it (total-variation distance between
    the mean predicted distributions at +step and -step, per group the largest of its members)."""
    factors = list(classifier.vocab)

    def shifts(plus: torch.Tensor, minus: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            p = classifier.predict_proba(torch.cat([plus, minus]).float())  # {factor: (2S, K)}
        S = plus.shape[0]
        per = np.array(
            [float(0.5 * (p[f][:S].mean(0) - p[f][S:].mean(0)).abs().sum()) for f in factors]
        )  # (F,)
        return grouped(per[None, None], factors, groups)[0, 0]  # (G,)

    return shifts


def _with_auto_variants(
    sets: list[tuple[str, DirectionSet]],
    skip: Any,
    space: Any,
    X: np.ndarray,
    model: Any,
    config: GroundTruthConfig,
    say: Callable[[str], None],
    classifier: Any = None,
) -> tuple[list[tuple[str, DirectionSet]], dict[str, Any]]:
    """Each W set of ``sets`` (not in ``skip``) followed by its ``@auto`` variant; and what was chosen
    ({"seeds", "num_ws", "criterion", "sigmas", "ranges", "shares"}, with the purity criterion also
    "selection_chance": per sigma the mean group shift of the random directions on the auto seeds): per
    @auto set the sigma its ranges were found with, each direction's range (start, stop exclusive) and
    the share of its change that range keeps. The purity criterion needs ``classifier``."""
    from sfvq.annotate import Renderer, default_sigma

    seeds = list(range(config.seed + config.n, config.seed + config.n + config.auto_seeds))
    chance_at: dict[float, np.ndarray] = {}  # sigma -> (G,) random directions' group shifts on ``seeds``
    if config.auto_criterion == "purity":
        if classifier is None:
            raise ValueError("the purity range criterion needs the factor classifier")
        groups = factor_groups(list(classifier.vocab))
        renderer = Renderer(
            space, seeds, batch_size=config.batch_size, resolution=None, search="exact",
            criterion="purity", group_shifts=classifier_group_shifts(classifier, groups),
            min_shift=config.floor,
        )  # fmt: skip
        rand = dict(sets).get("random")
        if rand is None:
            raise ValueError("the purity range criterion needs the random directions (methods: random)")
        sel_full = space.encode_seeds(seeds)  # (auto_seeds, L, W)
    else:
        renderer = Renderer(space, seeds, batch_size=config.batch_size, resolution=None)
    finest = default_sigma(X, model, max(config.bits))
    info: dict[str, Any] = {"seeds": seeds, "num_ws": int(space.num_ws), "criterion": config.auto_criterion}
    info.update(sigmas={}, ranges={}, shares={})
    out: list[tuple[str, DirectionSet]] = []
    for name, dset in sets:
        out.append((name, dset))
        if name in skip:
            continue
        bits = dset.meta.get("bits") if dset.meta.get("method") == "sfvq" else None
        sigma = config.auto_sigma or (default_sigma(X, model, bits) if bits is not None else finest)
        t = time.perf_counter()
        weights = None
        if config.auto_criterion == "purity":
            key = round(float(sigma), 6)
            if key not in chance_at:  # random directions on all layers at this sigma, on the auto seeds
                shift, _ = direction_effects(
                    space, rand, classifier, sel_full, [float(sigma)], batch_size=config.batch_size
                )  # (R, 1, F)
                chance_at[key] = grouped(shift, list(classifier.vocab), groups)[:, 0].mean(axis=0)  # (G,)
                info.setdefault("selection_chance", {})[f"{key:g}"] = dict(
                    zip(groups, chance_at[key].round(5).tolist(), strict=True)
                )
            weights = chance_at[key]
        ranges = auto_layer_ranges(space, dset, sigma, seeds, renderer=renderer, weights=weights)
        say(f"{name}: W+ ranges chosen at {sigma:.2f} stds in {time.perf_counter() - t:.1f} s")
        auto = name + AUTO_SUFFIX
        out.append((auto, on_auto_layers(dset, ranges)))
        info["sigmas"][auto] = round(float(sigma), 4)
        info["ranges"][auto] = [[int(a), int(b)] for (a, b), _ in ranges]
        info["shares"][auto] = [None if s is None else round(float(s), 4) for _, s in ranges]
    return out, info


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class GroundTruthResult:
    """Everything :func:`run_ground_truth` measured (JSON-friendly through :meth:`to_dict`)."""

    config: GroundTruthConfig
    generator: str
    factors: list[str]
    groups: dict[str, list[str]] = field(default_factory=dict)
    purity_threshold: dict[str, Any] = field(default_factory=dict)
    chance: dict[str, float] | None = None  # mean shift per group under random directions (largest step)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    curve_mi: dict[str, dict[str, Any]] = field(default_factory=dict)
    effects: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    # --layers auto: {"seeds", "sigmas", "ranges", "shares", "chance", "purity_threshold"} of the @auto sets
    auto_layers: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (config, per-method summaries, per-bitrate MI, raw effects)."""
        return {
            "config": asdict(self.config),
            "generator": self.generator,
            "factors": self.factors,
            "groups": self.groups,
            "purity_threshold": self.purity_threshold,
            "chance": self.chance,
            "methods": self.methods,
            "curve_mi": self.curve_mi,
            "effects": self.effects,
            "seconds": round(self.seconds, 1),
            "auto_layers": self.auto_layers,
        }


def run_ground_truth(
    G: Any,
    classifier: Any,
    config: GroundTruthConfig | None = None,
    *,
    model: Any = None,
    log: Callable[[str], None] | None = None,
    progress: bool = False,
) -> GroundTruthResult:
    """Measure every method's directions on ``G`` (which must have a W space) with the factor ``classifier``.

    ``model`` is an SFVQ already fitted on W samples of ``G`` holding every bitrate in ``config.bits``
    (fitted here on ``config.fit_n`` samples when None). Each of ``config.style_spaces`` gets its own curve,
    fitted here on ``config.fit_n`` samples of that StyleSpace (the same seeded z as W).
    """
    from sfvq import SFVQ
    from sfvq.baselines import method_directions
    from sfvq.baselines import sfvq_directions as _segments
    from sfvq.spaces import LatentSpace

    config = config or GroundTruthConfig()
    config.check()
    if "w" not in getattr(G, "spaces", ()):
        raise ValueError(f"{G.name} has no W space; the ground-truth benchmark works in W")
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    space = LatentSpace(G, "w")
    style_spaces = [LatentSpace(G, name) for name in config.style_spaces]  # a group must fit G: said now
    X = np.ascontiguousarray(space.sample(config.fit_n, config.seed, progress=progress), dtype=np.float32)
    if model is None:
        say(f"fitting a {max(config.bits)}-bit curve on {config.fit_n} W samples")
        model = SFVQ(max(config.bits), random_state=config.seed, verbose=progress).fit(X)
    missing = [b for b in config.bits if b not in model.codebooks_]
    if missing:
        raise ValueError(f"the curve has no bitrate {missing}; it has {sorted(model.codebooks_)}")
    factors = list(classifier.vocab)
    result = GroundTruthResult(config, str(G.name), factors)
    full = space.encode_seeds(range(config.seed, config.seed + config.n))  # (n, L, W)
    base = _read(space, classifier, full, config.batch_size)

    if config.layers is not None and not 0 <= config.layers[0] < config.layers[1] <= space.num_ws:
        raise ValueError(f"layer range {config.layers} is outside {G.name}'s layers 0-{space.num_ws - 1}")

    def on_layers(dset: DirectionSet) -> DirectionSet:
        for d in dset:
            d.layer_start, d.layer_stop = config.layers if config.layers is not None else (None, None)
        return dset

    sets: list[tuple[str, DirectionSet]] = []
    for b in config.bits:
        sets.append((f"sfvq-{b}bit", on_layers(_segments(model, space, b, X))))
    # StyleSpace curves: measured in their own space on the same seeds (their images equal W's exactly, so
    # the unedited seeds' readings ``base`` are shared); ``where`` maps a set's name to (space, full).
    where: dict[str, tuple[Any, torch.Tensor]] = {}
    for s_space in style_spaces:
        Xs = s_space.sample(config.fit_n, config.seed, progress=progress)  # (fit_n, dim) float32
        say(f"fitting a {max(config.bits)}-bit curve on {config.fit_n} samples of {s_space.name}")
        s_model = SFVQ(max(config.bits), random_state=config.seed, verbose=progress).fit(Xs)
        s_full = s_space.encode_seeds(range(config.seed, config.seed + config.n))  # (n, 1, style_dim)
        for b in config.bits:
            sets.append((f"sfvq-{s_space.name}-{b}bit", _segments(s_model, s_space, b, Xs)))
            where[sets[-1][0]] = (s_space, s_full)
    for method in config.methods:
        t = time.perf_counter()
        if method == "random":
            dset = on_layers(random_directions(space.dim, config.random_k, config.seed, X))
        else:
            md = method_directions(
                method, G, k=config.k, n=config.fit_n, seed=config.seed, layers=config.layers,
                latentclr={"steps": config.latentclr_steps}, progress=progress,
            )  # fmt: skip
            if md.space.kind != "w":
                raise ValueError(f"{method} gave directions in {md.space.name}, not W")
            dset = md.directions
        say(f"{method}: {len(dset)} directions in {time.perf_counter() - t:.1f} s")
        sets.append((method, dset))
    if config.auto_layers:  # each W set also on its directions' own ranges, right after it
        sets, result.auto_layers = _with_auto_variants(sets, where, space, X, model, config, say, classifier)

    groups = factor_groups(factors)
    result.groups = {g: list(m) for g, m in groups.items()}
    measured: dict[str, tuple[np.ndarray, np.ndarray, DirectionSet, float]] = {}
    for name, dset in sets:
        t = time.perf_counter()
        d_space, d_full = where.get(name, (space, full))
        shift, change = direction_effects(
            d_space, dset, classifier, d_full, config.steps, batch_size=config.batch_size, base=base,
            progress=progress, label=f"{name}: editing",
        )  # fmt: skip
        g_shift = grouped(shift, factors, groups)  # (M, T, G)
        per_face = grouped(change, factors, groups).sum(axis=2)  # (M, T) per-face change per step
        measured[name] = (g_shift, per_face, dset, time.perf_counter() - t)
    matched = {
        name: at_matched_change(g_shift, per_face, config.steps, config.match_change)
        for name, (g_shift, per_face, _, _) in measured.items()
    }
    # Chance and the purity a pure direction needs come from the random directions edited the same way:
    # on ``layers`` for the plain sets, each on its own auto range for the @auto sets ("random@auto").
    # suffix -> (chance (G,), chance at the matched change (G,), threshold, threshold at the matched change)
    reference: dict[str, tuple[Any, Any, float, float]] = {}
    for suffix in ("", AUTO_SUFFIX) if config.auto_layers else ("",):
        rand = measured.get("random" + suffix, (None,))[0]
        chance = None if rand is None else rand[:, -1].mean(axis=0)  # (G,) mean shift of a random direction
        threshold, source = purity_threshold(config, rand, list(groups), chance)
        m_chance, m_threshold = None, threshold if config.purity is not None else 0.5
        r_matched = matched.get("random" + suffix)
        if r_matched is not None and r_matched[2].any():
            m_chance = np.nanmean(r_matched[0], axis=0)  # (G,) random directions at the same change
            if config.purity is None:  # just above the purest random direction at the same change
                reached_r = r_matched[0][r_matched[2]][:, None]  # (reached, 1, G)
                best = summarise_effects(reached_r, list(groups), 1.0, 0.0, m_chance)["best_purity"]
                m_threshold = float(np.nextafter(best, 2.0))
        reference[suffix] = (chance, m_chance, threshold, m_threshold)
        chance_d = None if chance is None else dict(zip(groups, chance.round(5).tolist(), strict=True))
        th_d = {"value": threshold, "source": source, "matched": m_threshold}
        if suffix:
            assert result.auto_layers is not None
            result.auto_layers["chance"] = chance_d
            result.auto_layers["purity_threshold"] = th_d
        else:
            result.chance = chance_d
            result.purity_threshold = th_d
        say(f"pure{suffix}: purity >= {threshold:.3f} ({source}) and main shift >= {config.floor}")
    for name, (g_shift, per_face, dset, seconds) in measured.items():
        chance, m_chance, threshold, m_threshold = reference[AUTO_SUFFIX * name.endswith(AUTO_SUFFIX)]
        summary = summarise_effects(g_shift, list(groups), threshold, config.floor, chance)
        summary["face_change"] = per_face[:, -1].tolist()
        summary["face_change_steps"] = per_face.round(5).tolist()  # (M, T) per-face change per step
        summary["mean_face_change"] = float(per_face[:, -1].mean())
        eff, step, reached = matched[name]
        if reached.any():
            # no floor here: every reached direction changes faces by the same amount at this step
            ms = summarise_effects(eff[reached][:, None], list(groups), m_threshold, 0.0, m_chance)
            summary["matched"] = {
                "reached": int(reached.sum()),
                "pure": ms["pure"],
                "coverage": ms["coverage"],
                "covered": ms["covered"],
                "main_shift": ms["main_shift"],
                "mean_purity": ms["mean_purity"],
                "best_purity": ms["best_purity"],
                "mean_step": float(np.nanmean(step)),
                "main": ms["main"],
                "purity": ms["purity"],
                "names": [n for n, r in zip(dset.names, reached, strict=True) if r],
            }
        else:
            summary["matched"] = {"reached": 0}
        summary["names"] = list(dset.names)
        summary["seconds"] = round(seconds, 1)
        result.methods[name] = summary
        result.effects[name] = g_shift.round(5).tolist()
        say(
            f"{name}: {len(dset)} directions, mean purity {summary['mean_purity']:.3f}, "
            f"pure {summary['pure']}, coverage {summary['coverage']}/{len(groups)}"
        )

    # index ranges of the curve against factor values of sampled latents
    say(f"curve ranges: reading the factors of {config.mi_n} sampled faces")
    Xm = space.sample(config.mi_n, config.seed + 1, progress=False)  # (mi_n, W) disjoint from the fit
    pm = _read(space, classifier, space.to_full(torch.from_numpy(np.asarray(Xm))), config.batch_size)
    labels = {g: pm[members[0]].argmax(dim=1).numpy() for g, members in groups.items()}  # finest member
    for b in config.bits:
        idx = np.asarray(model.predict(np.asarray(Xm, dtype=np.float32), bits=b))
        result.curve_mi[str(b)] = curve_mutual_information(
            idx, labels, 2**b, config.mi_ranges, config.shuffles, config.seed
        )
    result.seconds = time.perf_counter() - t0
    return result


# ---------------------------------------------------------------------------------------------- report
def auto_range_row(name: str, ranges: Sequence[Sequence[int]], sigma: float, num_ws: int) -> str:
    """One markdown row on the W+ ranges an @auto set's directions got: mean length, how many took every
    layer, the three commonest ranges (inclusive, as users type them)."""
    from collections import Counter

    from sfvq.parsing import format_layer_range

    lengths = [b - a for a, b in ranges]
    every = sum(1 for a, b in ranges if a == 0 and b == num_ws)
    common = Counter(format_layer_range(a, b) for a, b in ranges).most_common(3)
    text = ", ".join(f"{k} ({v})" for k, v in common) or "-"
    mean = f"{np.mean(lengths):.1f}" if lengths else "-"
    return f"| {name} | {sigma:.2f} | {mean} | {every} | {text} |"


def markdown_report(result: GroundTruthResult | dict[str, Any]) -> str:
    """Two markdown tables: directions per method, and curve ranges vs shuffled corners per bitrate."""
    r = result.to_dict() if isinstance(result, GroundTruthResult) else result
    F = len(r.get("groups") or r["factors"])
    lines = [
        "| method | directions | mean purity | best purity | mean main shift | mean per-face change | pure | "
        f"coverage (of {F}) | factors with a pure direction | matched: reached | matched: mean purity | "
        "matched: pure | matched: coverage | matched: factors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for name, s in r["methods"].items():
        covered = ", ".join(s["covered"]) or "-"
        m = s.get("matched") or {"reached": 0}
        mp = f"{m['mean_purity']:.3f}" if m["reached"] else "-"
        m_cov = ", ".join(m.get("covered") or []) or "-"
        lines.append(
            f"| {name} | {s['directions']} | {s['mean_purity']:.3f} | {s['best_purity']:.3f} | "
            f"{s['mean_main_shift']:.3f} | {s['mean_face_change']:.2f} | {s['pure']} | {s['coverage']} | "
            f"{covered} | {m['reached']} | {mp} | {m.get('pure', 0)} | {m.get('coverage', 0)} | {m_cov} |"
        )
    lines += [
        "",
        "| bits | corners | ranges | cell NMI | curve-range NMI | shuffled-range NMI | curve / shuffled |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    th = r.get("purity_threshold") or {}
    if th:
        floor = r["config"]["floor"]
        match = r["config"].get("match_change")
        m_th = th.get("matched")
        m_pure = "" if m_th is None else f" (pure there: purity >= {m_th:.3f}, above every random one)"
        lines.insert(
            0,
            f"Pure: purity >= {th['value']:.3f} ({th['source']}) and main shift >= {floor}. Matched: "
            f"purity at the step where a direction's per-face change reaches {match}{m_pure}.\n",
        )
    auto = r.get("auto_layers") or {}
    a_th = auto.get("purity_threshold") or {}
    if a_th:
        lines.insert(
            1 if th else 0,
            f"`{AUTO_SUFFIX}` rows: each direction on its own W+ range (sfvq.annotate's "
            f"{auto.get('criterion', 'pixels')} criterion, `--layers auto`); pure there: purity >= "
            f"{a_th['value']:.3f} ({a_th['source']}, random "
            f"directions on their own ranges too) and main shift >= {r['config']['floor']}.\n",
        )
    for b, m in r["curve_mi"].items():
        ratio = m["curve_over_shuffled"]
        lines.append(
            f"| {b} | {m['corners']} | {m['ranges']} | {m['mean_cell']:.3f} | {m['mean_curve']:.3f} | "
            f"{m['mean_shuffled']:.3f} | {'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    if auto.get("ranges"):
        lines += [
            "",
            "| set | sigma (stds) | mean layers | all layers | commonest ranges |",
            "|---|---:|---:|---:|---|",
        ]
        for name, ranges in auto["ranges"].items():
            lines.append(auto_range_row(name, ranges, auto["sigmas"][name], auto["num_ws"]))
    return "\n".join(lines) + "\n"
