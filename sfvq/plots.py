"""Matplotlib figures of a fit: loss curves per stage, and the curve drawn over 2-D data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sfvq.io import atomic_path  # noqa: E402


def _save(fig: Any, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def loss_plot(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Training loss per epoch, stages side by side, with each stage's final exact-projection MSE."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    start = 0
    for stage in history:
        loss = stage["loss"]
        x = np.arange(start, start + len(loss)) + 1
        ax.plot(x, loss, marker="o", ms=3, label=f"{stage['bits']} bits")
        start += len(loss)
        ax.axvline(start + 0.5, color="0.85", lw=0.8)
    ax.set_xlabel("epoch (all stages)")
    ax.set_ylabel("dithered training loss")
    ax.set_title("training loss per stage")
    ax.legend(fontsize=7, ncol=2)
    bits = [s["bits"] for s in history]
    ax2.plot(bits, [s["mse"] for s in history], marker="o")
    ax2.set_xlabel("bits")
    ax2.set_ylabel("MSE (exact projection)")
    ax2.set_title("quantization error per bitrate")
    ax2.set_xticks(bits)
    fig.tight_layout()
    return _save(fig, path)


def curve_plot(
    X: np.ndarray, codebooks: dict[int, np.ndarray], path: str | Path, max_points: int = 20_000
) -> Path:
    """The data (2-D, or its first two principal components) with the curve of each bitrate over it."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(0)
    if X.shape[1] == 2:
        basis = np.eye(2)
        labels = ("x0", "x1")
    else:
        rows = X[np.random.default_rng(0).choice(len(X), min(len(X), max_points), replace=False)]
        _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
        basis = vt[:2].T
        labels = ("PC 1", "PC 2")
    shown = X[:: max(1, len(X) // max_points)]
    n = len(codebooks)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.3), squeeze=False)
    for ax, (b, C) in zip(axes[0], sorted(codebooks.items()), strict=True):
        p = (shown - mean) @ basis
        c = (np.asarray(C, dtype=np.float64) - mean) @ basis
        ax.scatter(p[:, 0], p[:, 1], s=1, c="0.8", rasterized=True)
        ax.plot(c[:, 0], c[:, 1], "-", color="tab:red", lw=1)
        ax.scatter(c[:, 0], c[:, 1], s=8, c=np.arange(len(c)), cmap="viridis", zorder=3)
        ax.set_title(f"{b} bits ({len(c)} corners)", fontsize=9)
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return _save(fig, path)
