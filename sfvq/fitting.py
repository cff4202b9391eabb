"""Fitting a curve to latents and writing what every fit writes: the model, ``summary.json``, ``loss.png``
and ``curve.png``. Shared by ``sfvq fit`` / ``sfvq demo`` and the main job (:mod:`sfvq.pipeline`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sfvq.schedule import DEFAULT_SCHEDULE

MODEL_FILE = "model.safetensors"


def read_latents(path: str | Path) -> np.ndarray:
    """Read an (N, D) latents ``.npy`` memory-mapped (never a pickle); ValueError naming the problem."""
    path = Path(path)
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
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
    return X


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
) -> Any:
    """An :class:`~sfvq.SFVQ` of ``bits`` bits fitted to ``X`` (N, D), with ``metadata_`` set.

    Raises ValueError for data it cannot fit (NaN, too few rows), before anything is written.
    """
    from sfvq.quantizer import SFVQ

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
    ).fit(np.asarray(X))
    model.metadata_ = dict(metadata or {})
    return model


def summary_rows(model: Any) -> list[dict[str, Any]]:
    """One row per bitrate: bits, corners, MSE, NMSE, perplexity, used segments, seconds."""
    tv = model.total_variance_
    return [
        {
            "bits": h["bits"],
            "corners": 2 ** h["bits"],
            "mse": h["mse"],
            "nmse": h["mse"] / tv if tv > 0 else float("nan"),
            "perplexity": h["perplexity"],
            "used_segments": h["used_segments"],
            "segments": 2 ** h["bits"] - 1,
            "seconds": h["seconds"],
        }
        for h in model.history_
    ]


def write_fit(model: Any, X: np.ndarray, outdir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Write ``model.safetensors``, ``summary.json`` (total variance + :func:`summary_rows`), ``loss.png``
    and ``curve.png`` (the data with every bitrate's curve) into ``outdir``.

    Returns the summary rows and the paths, keyed ``model``, ``summary``, ``loss plot``, ``curve plot``.
    """
    from sfvq.io import write_json
    from sfvq.plots import curve_plot, loss_plot

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"model": model.save(out / MODEL_FILE)}
    rows = summary_rows(model)
    files["summary"] = write_json(
        out / "summary.json", {"total_variance": model.total_variance_, "stages": rows}
    )
    files["loss plot"] = loss_plot(model.history_, out / "loss.png")
    codebooks = {b: C.detach().cpu().float().numpy() for b, C in sorted(model.codebooks_.items())}  # (K, D)
    files["curve plot"] = curve_plot(np.asarray(X), codebooks, out / "curve.png")
    return rows, files


__all__ = ["fit_curve", "read_latents", "summary_rows", "write_fit"]
