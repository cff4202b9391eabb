"""Scoring what one direction does: the scorers, edited renders, screening of candidates and the
response curves of an oriented direction (see :mod:`sfvq.evaluation` for the protocol).

Scorers are parameters (so tests inject fakes): an attribute scorer has ``score(images) -> dict`` of
(N,) arrays holding at least the attribute names (``detected`` optional); an identity scorer has
``embed(images) -> (N, E)`` and ``distance(a, b) -> (...)``; ``ssim(images_a, images_b) -> (N,)``.
Images are passed as float (N, C, H, W) in [-1, 1], as generators return them.

Under ``torch.distributed`` (``torchrun ... -m sfvq -- evaluate``) the scoring is shared: screening by
candidate (candidate i on process i mod world), the measurements by blocks of whole render batches of
seeds (:func:`seed_block`), so that every image is rendered in the batch one process would render it in;
the per-seed results are gathered in seed order, and every process returns what one process would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sfvq import dist


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


# ---------------------------------------------------------------------------------------------- processes
def seed_block(n: int, batch_size: int) -> tuple[int, int]:
    """This process's seeds ``[start, stop)`` of ``n``: a contiguous run of whole render batches of
    ``batch_size`` (the batches split evenly among the processes; every seed in one process). Possibly
    empty where there are fewer batches than processes."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    first, last = dist.my_range(-(-n // batch_size))  # batches
    return min(n, first * batch_size), min(n, last * batch_size)


def gather_rows(part: Any) -> Any:
    """Every process's rows (numpy arrays or tensors, or None for a process with no rows) concatenated in
    rank order; ``part`` itself in one process. None when no process has rows."""
    if not dist.is_distributed():
        return part
    parts = [p for p in dist.all_gather_object(part) if p is not None]
    if not parts:
        return None
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts)


def gather_scores(part: Scores | None) -> Scores:
    """:class:`Scores` of every process's seeds, in seed order (see :func:`gather_rows`)."""
    if not dist.is_distributed():
        assert part is not None
        return part
    get = (lambda name: None) if part is None else (lambda name: getattr(part, name))
    attrs, detected, emb = (gather_rows(get(name)) for name in ("attrs", "detected", "embeddings"))
    return Scores(attrs, detected, emb)


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
    -> images (S, len(steps), C, H, W) (:meth:`~sfvq.spaces.LatentSpace.render_edits`, its fixed noise)."""
    d = md.directions[index]
    scale = _raw_scale(d, units) * sign
    use = layers if layers is not None else d.layers
    sigmas = [float(s) * scale for s in steps]
    return md.space.render_edits(full, [d.vector], sigmas, use, batch_size)[:, 0]  # (S, T, C, H, W)


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
    for i in dist.my_items(range(M)):  # under torchrun: candidate i on process i mod world
        imgs = render_steps(md, i, 1, full, (step, -step), units=units, layers=layers, batch_size=batch_size)
        S = imgs.shape[0]
        sc = score_images(scorers, imgs.reshape(S * 2, *imgs.shape[2:]), identity=False)
        a = sc.attrs.reshape(S, 2, A)
        with np.errstate(all="ignore"):
            gains[i] = np.nanmean(a - base[:, None], 0) / step  # (2, A)
        if progress is not None:
            progress(f"screened {md.method} {md.directions[i].name}")
    if dist.is_distributed():  # each process's candidates' rows, from the process that screened them
        for r, part in enumerate(dist.all_gather_object(gains)):
            gains[r :: dist.world_size()] = part[r :: dist.world_size()]
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
    scores ``base`` (all S) and images) at ``steps`` (> 0). Returns the curves and the images of the first
    ``keep`` seeds (keep, T+1, C, H, W) (None when keep is 0).

    ``base_images`` are those of this process's seeds, :func:`seed_block` (S, batch_size): all S in one
    process. Under torchrun each process renders and scores its block; every process gets all curves."""
    a, b = seed_block(full.shape[0], batch_size)
    T = len(steps)
    A = len(scorers.names)
    attrs = det = ident = ss = kept = None
    if b > a:
        imgs = render_steps(
            md, index, sign, full[a:b], steps, units=units, layers=layers, batch_size=batch_size
        )  # (S', T, C, H, W), S' = b - a
        S = b - a
        flat = imgs.reshape(S * T, *imgs.shape[2:])
        sc = score_images(scorers, flat)
        attrs = np.concatenate([base.attrs[a:b, None], sc.attrs.reshape(S, T, A)], 1)  # (S', T+1, A)
        det = np.concatenate([base.detected[a:b, None], sc.detected.reshape(S, T)], 1)
        if sc.embeddings is not None and base.embeddings is not None:
            e = sc.embeddings.reshape(S, T, -1)
            far = np.asarray(scorers.identity.distance(e, base.embeddings[a:b, None]), np.float64)  # (S', T)
            ident = np.concatenate([np.zeros((S, 1)), far], 1)
        if scorers.ssim is not None:
            ref = base_images[:, None].expand(S, T, *base_images.shape[1:]).reshape(flat.shape)
            ss = np.concatenate(
                [np.ones((S, 1)), np.asarray(scorers.ssim(flat, ref), np.float64).reshape(S, T)], 1
            )
        if keep > a:
            kept = torch.cat([base_images[: keep - a, None], imgs[: keep - a]], 1)  # (k, T+1, C, H, W)
    attrs, det, ident, ss, kept = (gather_rows(x) for x in (attrs, det, ident, ss, kept))
    if not keep:
        kept = None
    return Curves(np.concatenate([[0.0], np.asarray(steps, np.float64)]), attrs, ident, ss, det), kept


__all__ = [
    "Curves",
    "Scorers",
    "Scores",
    "Screen",
    "gather_rows",
    "gather_scores",
    "measure",
    "render_steps",
    "score_images",
    "screen_method",
    "seed_block",
]
