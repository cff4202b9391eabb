"""The ground-truth benchmark: which method's directions change one known factor of the avatars world?

On a generator trained on rendered faces (``builtin:avatars-sg2``) a factor classifier reads every
factor (glasses, mouth, hair, skin, background, ...) from any image, so a direction's effect can be
measured factor by factor instead of through face-analysis proxies.

For every direction of every method (SFVQ segments at several bitrates, GANSpace, SeFa, LatentCLR and
random directions, all in W, applied to every style layer or to one range of them, ``layers``; SeFa then
factorises only those layers' affines):

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
    (fitted here on ``config.fit_n`` samples when None).
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

    groups = factor_groups(factors)
    result.groups = {g: list(m) for g, m in groups.items()}
    measured: dict[str, tuple[np.ndarray, np.ndarray, DirectionSet, float]] = {}
    for name, dset in sets:
        t = time.perf_counter()
        shift, change = direction_effects(
            space, dset, classifier, full, config.steps, batch_size=config.batch_size, base=base,
            progress=progress, label=f"{name}: editing",
        )  # fmt: skip
        g_shift = grouped(shift, factors, groups)  # (M, T, G)
        per_face = grouped(change, factors, groups).sum(axis=2)  # (M, T) per-face change per step
        measured[name] = (g_shift, per_face, dset, time.perf_counter() - t)
    rand = measured.get("random", (None,))[0]
    chance = None if rand is None else rand[:, -1].mean(axis=0)  # (G,) mean shift of a random direction
    result.chance = None if chance is None else dict(zip(groups, chance.round(5).tolist(), strict=True))
    threshold, source = purity_threshold(config, rand, list(groups), chance)
    result.purity_threshold = {"value": threshold, "source": source}
    say(f"pure: purity >= {threshold:.3f} ({source}) and main shift >= {config.floor}")
    matched = {
        name: at_matched_change(g_shift, per_face, config.steps, config.match_change)
        for name, (g_shift, per_face, _, _) in measured.items()
    }
    m_chance = None
    if "random" in matched and matched["random"][2].any():
        m_chance = np.nanmean(matched["random"][0], axis=0)  # (G,) random directions at the same change
    for name, (g_shift, per_face, dset, seconds) in measured.items():
        summary = summarise_effects(g_shift, list(groups), threshold, config.floor, chance)
        summary["face_change"] = per_face[:, -1].tolist()
        summary["mean_face_change"] = float(per_face[:, -1].mean())
        eff, step, reached = matched[name]
        if reached.any():
            ms = summarise_effects(eff[reached][:, None], list(groups), 1.0, 0.0, m_chance)
            summary["matched"] = {
                "reached": int(reached.sum()),
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
def markdown_report(result: GroundTruthResult | dict[str, Any]) -> str:
    """Two markdown tables: directions per method, and curve ranges vs shuffled corners per bitrate."""
    r = result.to_dict() if isinstance(result, GroundTruthResult) else result
    F = len(r.get("groups") or r["factors"])
    lines = [
        "| method | directions | mean purity | best purity | mean main shift | mean per-face change | pure | "
        f"coverage (of {F}) | factors with a pure direction | matched: reached | matched: mean purity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, s in r["methods"].items():
        covered = ", ".join(s["covered"]) or "-"
        m = s.get("matched") or {"reached": 0}
        mp = f"{m['mean_purity']:.3f}" if m["reached"] else "-"
        lines.append(
            f"| {name} | {s['directions']} | {s['mean_purity']:.3f} | {s['best_purity']:.3f} | "
            f"{s['mean_main_shift']:.3f} | {s['mean_face_change']:.2f} | {s['pure']} | {s['coverage']} | "
            f"{covered} | {m['reached']} | {mp} |"
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
        lines.insert(
            0,
            f"Pure: purity >= {th['value']:.3f} ({th['source']}) and main shift >= {floor}. Matched: "
            f"purity at the step where a direction's per-face change reaches {match}.\n",
        )
    for b, m in r["curve_mi"].items():
        ratio = m["curve_over_shuffled"]
        lines.append(
            f"| {b} | {m['corners']} | {m['ranges']} | {m['mean_cell']:.3f} | {m['mean_curve']:.3f} | "
            f"{m['mean_shuffled']:.3f} | {'-' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines) + "\n"
