"""``sfvq quality``: map-quality measures of every bitrate of a run, beside the classical ordered quantizers
at the same K, written to ``quality.json`` in the run with a recommended bitrate (see docs/interpretation.md,
"Map quality")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from sfvq.cli.options import quiet_option

QUALITY_FILE = "quality.json"
# Columns of the printed table: (key in quality.json, header, format); docs/interpretation.md explains them.
COLUMNS = (
    ("mse", "MSE", "#.4g"),
    ("mean_distance", "dist", "#.3g"),
    ("topographic_error", "topo", ".3f"),
    ("kaski_lagus", "K-L", "#.3g"),
    ("trustworthiness", "trust", ".3f"),
    ("continuity", "cont", ".3f"),
    ("usage_kl", "use KL", ".3f"),
    ("sparseness", "sparse", ".3f"),
    ("entropy", "H", ".2f"),
    ("smoothness", "smooth", ".3f"),
)
METHOD_LABELS = {"sfvq": "curve", "kmeans_tour": "tour", "som": "SOM", "pca_order": "PC1"}
LEGEND = (
    "curve: the run's curve; tour: k-means centroids on a 2-opt shortest tour; SOM: a 1-D "
    "self-organizing map; PC1: k-means centroids by first principal component. MSE/dist: squared / "
    "plain distance to the nearest corner; topo: topographic error; K-L: Kaski-Lagus error; "
    "trust/cont: trustworthiness/continuity; use KL, sparse, H: corner use (KL from uniform, Hoyer "
    "sparseness, entropy in bits). * recommended."
)


def quality_table(result: dict[str, Any], title: str) -> Table:
    """The measures of ``result`` (the quality.json dict) as a rich table: each bitrate's curve, then
    the baselines at the same K."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, caption=LEGEND)
    table.add_column("bits", justify="right")
    table.add_column("method")
    for _, header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for b in sorted(result["bits"], key=int):
        rows = [("sfvq", result["bits"][b])]
        rows += [(name, per[b]) for name, per in result.get("baselines", {}).items() if b in per]
        for i, (name, m) in enumerate(rows):
            label = METHOD_LABELS.get(name, name)
            cells = [format(m[key], spec) for key, _, spec in COLUMNS]
            if name == "sfvq" and int(b) == result.get("recommended_bits"):
                label = f"[bold]{label} *[/bold]"
            table.add_row(b if i == 0 else "", label, *cells, end_section=i == len(rows) - 1)
    return table


def compute_quality(
    codebooks: dict[int, Any],
    X: Any,
    *,
    baselines: bool = True,
    neighbors: int,
    subsample: int,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Every measure (:func:`sfvq.mapquality.map_quality`) of each codebook (bits -> (2**bits, D)) on X
    (N, D), and of the ordered baselines at the same K (:mod:`sfvq.baselines.ordered`), with the
    recommendation (:func:`sfvq.mapquality.recommend_bits`); the dict that quality.json holds."""
    from sfvq.baselines.ordered import BASELINES, ordered_baselines
    from sfvq.mapquality import map_quality, recommend_bits
    from sfvq.progress import track

    bits = sorted(codebooks)
    N = X.shape[0]
    jobs: list[tuple[int, str]] = []
    for b in bits:
        jobs.append((b, "sfvq"))
        if baselines and 2**b <= N:
            jobs.append((b, "baselines"))
    data = np.ascontiguousarray(X, dtype=np.float32) if baselines else X  # (N, D) for k-means and the SOM
    opts = {"neighbors": neighbors, "subsample": subsample, "seed": seed}
    per_bits: dict[int, dict[str, Any]] = {}
    per_base: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in BASELINES} if baselines else {}
    for b, what in track(jobs, "map quality", total=len(jobs), enabled=progress):
        if what == "sfvq":
            per_bits[b] = map_quality(codebooks[b], X, **opts).as_dict()
        else:
            for name, C in ordered_baselines(data, 2**b, seed=seed).items():
                per_base[name][b] = map_quality(C, X, **opts).as_dict()
    tour = {b: m["topographic_error"] for b, m in per_base.get("kmeans_tour", {}).items()}
    best, why = recommend_bits(per_bits, tour or None)
    return {
        "bits": {str(b): m for b, m in per_bits.items()},
        "baselines": {name: {str(b): m for b, m in per.items()} for name, per in per_base.items()},
        "recommended_bits": best,
        "recommendation": why,
        "settings": {**opts, "samples": int(N)},
    }


@click.command()
@click.option(
    "--run",
    "run_path",
    type=click.Path(path_type=Path),
    required=True,
    help="A run directory (or its model.safetensors) with the latents the curve was fitted to.",
)
@click.option(
    "--baselines/--no-baselines",
    default=True,
    show_default=True,
    help="Also measure the ordered baselines at each K: k-means + 2-opt tour, a 1-D SOM, k-means + PC1.",
)
@click.option(
    "--neighbors",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Neighbours compared by trustworthiness and continuity.",
)
@click.option(
    "--subsample",
    type=click.IntRange(min=4),
    default=2000,
    show_default=True,
    help="Rows (a seeded random subset) for trustworthiness and continuity.",
)
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@quiet_option()
def quality(run_path: Path, baselines: bool, neighbors: int, subsample: int, seed: int, quiet: bool) -> None:
    """Measure how well every bitrate of a run maps its latents (quantization error, topographic and
    Kaski-Lagus errors, trustworthiness, continuity, corner usage, smoothness, U-profile) beside k-means
    + shortest tour, a 1-D SOM and k-means + PC1 at the same K; write quality.json into the run and
    recommend a bitrate."""
    from sfvq.cli.common import open_run
    from sfvq.io import write_json

    run = open_run(run_path, hint="'--run'")
    X = run.latents
    if X is None:
        raise click.BadParameter(
            f"{run.path} has no latents.npy (nor a readable data path in the model) to measure the map on",
            param_hint="'--run'",
        )
    codebooks = {b: C.detach().cpu().float() for b, C in sorted(run.model.codebooks_.items())}
    if not codebooks:
        raise click.BadParameter(
            f"{run.path}: the model has no codebook of 3 or more corners", param_hint="'--run'"
        )
    try:
        result = compute_quality(
            codebooks,
            X,
            baselines=baselines,
            neighbors=neighbors,
            subsample=subsample,
            seed=seed,
            progress=not quiet,
        )
    except ValueError as e:  # latents that cannot be measured (NaN, too few rows)
        raise click.UsageError(f"cannot measure {run.path}: {e}") from e
    run_id = (getattr(run.model, "metadata_", None) or {}).get("run_id")
    if run_id is not None:
        result["run_id"] = run_id
    out = write_json(run.path / QUALITY_FILE, result)
    console = Console(width=None if Console().is_terminal else 120)
    console.print(quality_table(result, f"Map quality of {run.path} (N={X.shape[0]}, D={X.shape[1]})"))
    click.echo(f"recommended: {result['recommended_bits']} bits. {result['recommendation']}")
    click.echo(f"wrote {out}")
    from sfvq.cli.report import refresh_report

    refresh_report(run.path)
