"""Fitting a curve to latents and writing what every fit writes: the model, ``summary.json``, ``loss.png``
and ``curve.png``. Shared by ``sfvq fit`` / ``sfvq demo`` and the main job (:mod:`sfvq.pipeline`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sfvq.schedule import DEFAULT_SCHEDULE

MODEL_FILE = "model.safetensors"
CHECK_ROWS = 65_536  # rows read at a time by check_data (the data may be a memory map or shards)


class DataError(ValueError):
    """Latents a curve cannot be fitted to (the message says why and what to do)."""


def read_latents(path: str | Path) -> Any:
    """Read an (N, D) latents ``.npy`` memory-mapped (never a pickle), or the shards a manifest
    (``.json``, see :mod:`sfvq.shards`) lists as one :class:`~sfvq.shards.Rows`; ValueError naming the
    problem. Nothing is read into memory yet."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        from sfvq.shards import open_manifest

        return open_manifest(path)  # ManifestError is a ValueError
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from e
    if size == 0:
        raise ValueError(f"{path} is not a .npy file (0 bytes)")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except EOFError as e:  # numpy's word for a file cut short inside its header
        raise ValueError(f"{path} is not a .npy file (cut short: {size} bytes)") from e
    except ValueError as e:
        raise ValueError(f"{path} is not a plain numeric .npy file ({e})") from e
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(X, np.ndarray) or X.dtype.kind not in "fiu":
        raise ValueError(f"{path} does not hold numbers (dtype {getattr(X, 'dtype', '?')})")
    if X.ndim == 3:
        raise ValueError(
            f"{path} holds {X.shape} (N, layers, D) latents; fit on one layer's (N, D) vectors, "
            "e.g. sample with --space w"
        )
    if X.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {X.shape}; expected (N, D) latent vectors")
    if X.shape[1] < 2:
        raise ValueError(f"{path} holds {X.shape[1]}-D vectors {X.shape}; a curve needs D >= 2")
    return X


def float32_limit(dim: int) -> float:
    """The largest magnitude a coordinate of ``dim``-D data may have for the fit's float32 arithmetic
    (squared distances between points of the data's range, summed over ``dim``) to stay finite."""
    return math.sqrt(float(np.finfo(np.float32).max) / (16.0 * max(int(dim), 1)))


def _blocks(X: Any) -> Any:
    """Consecutive float64 numpy blocks of the rows of X: an array / memory map, or a
    :class:`~sfvq.shards.Rows`. Read through :func:`sfvq.shards.as_rows`, so a memory map's pages leave
    resident memory as the pass goes (and blocks stay a few MiB whatever D is)."""
    import torch

    from sfvq.shards import as_rows

    rows = as_rows(X)
    for start, block in rows.chunks(rows=min(CHECK_ROWS, rows.chunk_rows()), dtype=torch.float64):
        yield start, block.cpu().numpy()
    rows.release()


def check_data(X: Any) -> bool:
    """Check (N, D) latents before fitting, reading them block by block (never whole); returns whether
    they are constant (every row the same: a curve then collapses and NMSE is undefined).

    Raises :class:`DataError` for what a curve cannot be fitted to: not 2-D, no rows, D < 2, NaN or inf,
    or values so large that the fit's float32 squared distances overflow (:func:`float32_limit`).
    """
    shape = tuple(getattr(X, "shape", ()))
    if len(shape) != 2:
        raise DataError(f"latents must be an (N, D) array, got shape {shape or None}")
    N, D = (int(v) for v in shape)
    if N == 0:
        raise DataError("the latents are empty (0 rows)")
    if D < 2:
        raise DataError(f"the latents are {D}-D {shape}; a curve needs vectors of D >= 2")
    peak = 0.0
    lo = np.full(D, np.inf)  # (D,) column minima
    hi = np.full(D, -np.inf)  # (D,) column maxima
    bad, first_bad = 0, N
    for start, block in _blocks(X):  # (c, D) float64
        finite = np.isfinite(block).all(axis=1)  # (c,)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            bad += rows.size
            first_bad = min(first_bad, start + int(rows[0]))
            continue
        lo = np.minimum(lo, block.min(axis=0))
        hi = np.maximum(hi, block.max(axis=0))
        peak = max(peak, float(-lo.min()), float(hi.max()))
    if bad:
        raise DataError(
            f"the latents contain NaN or inf in {bad} of {N} rows (first bad row: {first_bad}); "
            "remove or repair them before fitting"
        )
    limit = float32_limit(D)
    if peak > limit:
        raise DataError(
            f"the latents hold values up to {peak:.3g} in magnitude; the fit's float32 squared distances "
            f"overflow beyond {limit:.3g} for {D}-D vectors: rescale the data"
        )
    return bool((lo == hi).all())


def fit_curve(
    X: np.ndarray,
    bits: int,
    *,
    epochs: int = DEFAULT_SCHEDULE["epochs"],
    batch_size: int = DEFAULT_SCHEDULE["batch_size"],
    lr: float = DEFAULT_SCHEDULE["lr"],
    init: str = "data",
    assign: str = "dithered",
    seed: int = 0,
    device: str = "cpu",
    verbose: bool = False,
    metadata: dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    fitter: str = "sfvq",
) -> Any:
    """An :class:`~sfvq.SFVQ` of ``bits`` bits fitted to ``X`` (N, D), with ``metadata_`` set.

    ``fitter``: "sfvq" (this package's fitter) or "sfdiveq" (SF-DiVeQ from the optional ``diveq``
    package, :mod:`sfvq.sfdiveq`; no checkpoints, ``init``/``assign`` do not apply, recorded in the
    metadata as ``fitter``).

    X may be a memory map or the :class:`~sfvq.shards.Rows` of a manifest: it is read chunk by chunk.
    ``checkpoint``, ``checkpoint_every`` and ``resume`` are those of :meth:`~sfvq.SFVQ.fit`.
    Raises :class:`DataError` for data it cannot fit (:func:`check_data`: NaN, D < 2, overflowing values)
    and ValueError for other impossible settings (too few rows), before anything is written.
    """
    from sfvq.quantizer import SFVQ

    check_data(X)
    if fitter == "sfdiveq":
        from sfvq.sfdiveq import fit_sfdiveq

        model = fit_sfdiveq(
            X, bits, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, verbose=verbose
        )
        model.metadata_ = {**(metadata or {}), "fitter": "sfdiveq"}
        return model
    if fitter != "sfvq":
        raise ValueError(f"fitter must be 'sfvq' or 'sfdiveq', got {fitter!r}")
    model = SFVQ(
        bits,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        init=init,
        assign=assign,
        random_state=seed,
        device=device,
        verbose=verbose,
    ).fit(X, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    model.metadata_ = dict(metadata or {})
    return model


# The curve plot works on a float64 copy of what it is given: data above this size is thinned first.
PLOT_BYTES = 32 * 2**20


def plot_rows(X: Any, max_bytes: int = PLOT_BYTES) -> np.ndarray:
    """The rows the curve plot draws: all of X (N, D) when its float64 copy fits in ``max_bytes``, else
    every k-th row (evenly spaced, at most ``max_bytes`` of float64), read without loading X whole."""
    N, D = X.shape
    keep = max(1, max_bytes // (8 * D))
    in_memory = isinstance(X, np.ndarray) and X.flags.writeable
    if N <= keep and in_memory:
        return X
    idx = np.arange(0, N, max(1, -(-N // keep)))
    if in_memory:
        return X[idx]
    import torch

    from sfvq.shards import as_rows

    rows = as_rows(X)  # a memory map or a manifest's shards: read without mapping the whole file
    out = rows.take(torch.from_numpy(idx)).cpu().numpy()
    rows.release()
    return out


def summary_rows(model: Any) -> list[dict[str, Any]]:
    """One row per bitrate: bits, corners, MSE, NMSE, perplexity, used segments, seconds. NMSE is None
    (undefined) for constant data (total variance 0)."""
    tv = model.total_variance_
    return [
        {
            "bits": h["bits"],
            "corners": 2 ** h["bits"],
            "mse": h["mse"],
            "nmse": h["mse"] / tv if tv > 0 else None,
            "perplexity": h["perplexity"],
            "used_segments": h["used_segments"],
            "segments": 2 ** h["bits"] - 1,
            "seconds": h["seconds"],
        }
        for h in model.history_
    ]


def write_fit(
    model: Any, X: Any, outdir: str | Path, *, run_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Write ``model.safetensors``, ``summary.json`` (total variance + :func:`summary_rows`), ``loss.png``
    and ``curve.png`` (the data with every bitrate's curve) into ``outdir``, each file atomically (a whole
    run is published at once by writing into the folder of :func:`sfvq.runs.staged_run`). ``run_id`` is
    stamped into the model's metadata and summary.json.

    Returns the summary rows and the paths, keyed ``model``, ``summary``, ``loss plot``, ``curve plot``.
    """
    from sfvq.io import write_json
    from sfvq.plots import curve_plot, loss_plot

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"total_variance": model.total_variance_}
    if run_id is not None:
        model.metadata_ = {**(getattr(model, "metadata_", None) or {}), "run_id": run_id}
        summary["run_id"] = run_id
    files = {"model": model.save(out / MODEL_FILE)}
    rows = summary_rows(model)
    files["summary"] = write_json(out / "summary.json", {**summary, "stages": rows})
    files["loss plot"] = loss_plot(model.history_, out / "loss.png")
    codebooks = {b: C.detach().cpu().float().numpy() for b, C in sorted(model.codebooks_.items())}  # (K, D)
    files["curve plot"] = curve_plot(plot_rows(X), codebooks, out / "curve.png")
    return rows, files


__all__ = [
    "DataError",
    "check_data",
    "fit_curve",
    "float32_limit",
    "plot_rows",
    "read_latents",
    "summary_rows",
    "write_fit",
]
