"""Direction sources beside SFVQ: GANSpace, SeFa and LatentCLR, all returning sfvq's DirectionSet.

:func:`method_directions` builds one method's candidate directions for a generator, together with the
:class:`~sfvq.spaces.LatentSpace` they live in (directions of different methods live in different spaces:
SFVQ in W or the first layer's feature space, GANSpace in W or z, SeFa in W or z, LatentCLR in W or z).
Each set's ``meta["space"]`` describes its space, and :func:`save_method` / :func:`load_method` keep a
set with its space (``directions.safetensors`` + ``space.json``) so it can be reused.

Methods (``METHODS``):

* ``sfvq``: the segments of a fitted curve (from ``--model``, or a curve fitted on the spot in the
  generator's default space), ordered by the data's std along them.
* ``ganspace``: GANSpace as its paper runs it: PCA in W for StyleGAN; for generators without a mapping
  network, PCA of the first layer's activations regressed back to z.
* ``ganspace-latent``: PCA of sampled latents in the default latent space (W, or z; in a Gaussian z it
  finds no structure, kept to show that).
* ``ganspace-features``: PCA in sfvq's first-layer feature space (generators without a mapping network).
* ``sefa``: closed-form eigenvectors of the weights that read the latent (W or z).
* ``latentclr``: contrastively trained directions (W or z).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfvq.baselines.ganspace import ganspace_activations, ganspace_latent, pca
from sfvq.baselines.latentclr import nt_xent, train_latentclr
from sfvq.baselines.sefa import sefa, style_affines
from sfvq.directions import DirectionSet, data_covariance, std_along

METHODS = ("sfvq", "ganspace", "ganspace-latent", "ganspace-features", "sefa", "latentclr")
DEFAULT_METHODS = ("sfvq", "ganspace", "sefa", "latentclr")
DEFAULT_FIT_BITS = 4


@dataclass
class MethodDirections:
    """One method's directions, the space they live in, and how long building them took (s)."""

    method: str
    space: Any
    directions: DirectionSet
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def parse_methods(text: str) -> list[str]:
    """``"sfvq,ganspace"`` -> ``["sfvq", "ganspace"]``; unknown or repeated names raise ValueError."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError(f"no methods given (choose from {', '.join(METHODS)})")
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a method is listed twice in {text!r}")
    return names


def _has_w(G: Any) -> bool:
    return "w" in getattr(G, "spaces", ())


def _with_std(dset: DirectionSet, X: np.ndarray) -> DirectionSet:
    """Fill every direction's std (data spread along it) from samples X (N, D) of its space."""
    stds = std_along(dset.vectors, data_covariance(X))
    for d, s in zip(dset, stds, strict=True):
        d.std = s
    return dset


def _with_layers(dset: DirectionSet, layers: tuple[int, int] | None) -> DirectionSet:
    if layers is not None:
        for d in dset:
            d.layer_start, d.layer_stop = int(layers[0]), int(layers[1])
    return dset


def _top(dset: DirectionSet, k: int) -> DirectionSet:
    return DirectionSet(list(dset)[:k], dim=dset.dim, meta=dset.meta)


def sfvq_directions(
    model: Any, space: Any, bits: int | None = None, X: Any = None, k: int | None = None
) -> DirectionSet:
    """The segments of ``model`` at ``bits`` (default: its finest) as directions in ``space``, the
    zero-length ones dropped, ordered by the data's std along them (largest first; X (N, D) gives the
    std, else the order is by segment length); at most ``k``."""
    from sfvq.directions import segment_directions

    bits = max(model.codebooks_) if bits is None else int(bits)
    seg = segment_directions(model, bits, X)
    kept = [d for d in seg if d.length and d.length > 0]
    kept.sort(key=lambda d: -(d.std if d.std is not None else d.length))
    meta = {"method": "sfvq", "bits": bits, "space": space.describe()}
    return DirectionSet(kept[:k] if k is not None else kept, dim=seg.dim, meta=meta)


def method_directions(
    method: str,
    G: Any,
    *,
    k: int = 10,
    n: int = 5000,
    seed: int = 0,
    layers: tuple[int, int] | None = None,
    model: Any = None,
    model_space: Any = None,
    model_latents: Any = None,
    bits: int | None = None,
    latentclr: dict[str, Any] | None = None,
    progress: bool = False,
) -> MethodDirections:
    """Build the top ``k`` directions of ``method`` for generator ``G`` (see the module docstring).

    ``n`` samples (seeded by ``seed``) give PCAs and stds. ``layers`` (start, stop_exclusive) is the W+
    range the directions are meant for (SeFa factorises exactly those layers; others record it).
    For ``sfvq``: ``model`` with ``model_space`` (and its latents for the std), or else a ``bits``-bit
    curve fitted on ``n`` samples of the default space (default 4 bits); ``bits`` picks the bitrate
    whose segments are used (default: the model's finest). ``latentclr`` holds keyword arguments for
    :func:`~sfvq.baselines.latentclr.train_latentclr` (steps, batch_size, alpha, tau, lr, layer).
    """
    from sfvq.spaces import LatentSpace, default_space

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if layers is not None and G.num_ws <= 1:
        raise ValueError(f"{G.name} has no style layers (num_ws = 1): a layer range does not apply")
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    if method == "sfvq":
        if model is not None:
            if model_space is None:
                raise ValueError("an sfvq model needs its space (model_space)")
            space, X = model_space, model_latents
            info["model"] = "given"
        else:
            from sfvq import SFVQ

            space = LatentSpace(G, default_space(G))
            X = np.ascontiguousarray(space.sample(n, seed, progress=progress), dtype=np.float32)
            fit_bits = DEFAULT_FIT_BITS if bits is None else bits
            model = SFVQ(fit_bits, random_state=seed, verbose=progress).fit(X)
            info["model"] = f"fitted: {fit_bits} bits on {n} samples of {space.name} (seed {seed})"
        dset = sfvq_directions(model, space, bits, X, k)
    elif method in ("ganspace", "ganspace-latent") and (_has_w(G) or method == "ganspace-latent"):
        space = LatentSpace(G, "w" if _has_w(G) else "z")
        X = space.sample(n, seed, progress=progress)
        dset = ganspace_latent(space, X, k)
    elif method == "ganspace":
        space = LatentSpace(G, "z")
        dset = ganspace_activations(G, k, n=n, seed=seed)
        info["r2"] = dset.meta.get("r2")
    elif method == "ganspace-features":
        if _has_w(G):
            raise ValueError(f"ganspace-features is for generators without a mapping network; {G.name} has W")
        space = LatentSpace(G, "features")
        X = space.sample(n, seed, progress=progress)
        dset = ganspace_latent(space, X, k, prefix="fpc")
        dset.meta["variant"] = "features"
    elif method == "sefa":
        dset = sefa(G, k, layers)
        space = LatentSpace(G, dset.meta["space"]["kind"])  # W where G has it, else z
        _with_std(dset, space.sample(n, seed, progress=progress))
    else:  # latentclr
        opts = dict(latentclr or {})
        result = train_latentclr(G, k, seed=seed, progress=progress, **opts)
        dset = result.directions
        space = LatentSpace(G, dset.meta["space"]["kind"])
        info["loss_first"], info["loss_last"] = result.history[0], result.history[-1]
    dset = _with_layers(_top(dset, k), layers)
    dset.meta.setdefault("space", space.describe())
    dset.meta["method"] = method
    return MethodDirections(method, space, dset, time.perf_counter() - t0, info)


# ---------------------------------------------------------------------------------------------- files
DIRECTIONS_FILE = "directions"


def save_method(md: MethodDirections, directory: str | Path) -> Path:
    """Write ``directory/directions.safetensors`` (+ .json) and the space (``space.json``, + PCA)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md.space.save(directory)
    return md.directions.save(directory / DIRECTIONS_FILE)


def load_method(directory: str | Path, G: Any, method: str | None = None) -> MethodDirections:
    """Read a directory written by :func:`save_method` for generator ``G``; errors say what is wrong."""
    from sfvq.spaces import LatentSpace

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory of saved directions")
    space = LatentSpace.load(directory, G)
    dset = DirectionSet.load(directory / DIRECTIONS_FILE)
    if dset.dim != space.dim:
        raise ValueError(f"{directory}: the directions are {dset.dim}-D but its space is {space.dim}-D")
    name = method or str(dset.meta.get("method") or directory.name)
    return MethodDirections(name, space, dset, 0.0, {"loaded": str(directory)})


__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "MethodDirections",
    "ganspace_activations",
    "ganspace_latent",
    "load_method",
    "method_directions",
    "nt_xent",
    "parse_methods",
    "pca",
    "save_method",
    "sefa",
    "sfvq_directions",
    "style_affines",
    "train_latentclr",
]
