"""``sfvq fit`` (a curve from a latents file) and ``sfvq demo`` (the same on a built-in data set)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from sfvq.cli.common import read_latents_arg
from sfvq.cli.options import device_option, outdir_option, quiet_option
from sfvq.schedule import DEFAULT_SCHEDULE as FIT_DEFAULTS


def print_summary(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for col in ("bits", "MSE", "NMSE", "perplexity", "used segments", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["bits"]),
            f"{r['mse']:.5g}",
            f"{r['nmse']:.4f}",
            f"{r['perplexity']:.1f}",
            f"{r['used_segments']}/{r['segments']}",
            f"{r['seconds']:.2f}",
        )
    (console or Console()).print(table)


def run_fit(
    X: np.ndarray, outdir: Path, options: dict[str, Any], command: str, source: dict[str, Any]
) -> Any:
    """Fit, then write model, summary, plots and options.json into ``outdir``; returns the model."""
    from sfvq.fitting import fit_curve, write_fit
    from sfvq.io import write_options

    try:
        model = fit_curve(
            X,
            options["bits"],
            epochs=options["epochs"],
            batch_size=options["batch_size"],
            lr=options["lr"],
            init=options["init"],
            assign=options["assign"],
            seed=options["seed"],
            device=options["device"],
            verbose=not options["quiet"],
            metadata={"data": source},
        )
    except ValueError as e:  # bad data: say so as a usage error, nothing written
        raise click.UsageError(str(e)) from e
    rows, _ = write_fit(model, X, outdir)
    write_options(outdir, command, {**options, "outdir": str(outdir)})
    print_summary(rows, f"SFVQ fit on {source.get('name', 'data')}: N={X.shape[0]}, D={X.shape[1]}")
    click.echo(f"wrote {outdir}/model.safetensors, summary.json, loss.png, curve.png, options.json")
    return model


def _fit_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--bits",
                type=click.IntRange(2, 16),
                default=6,
                show_default=True,
                help="Final bitrate: 2**bits corners.",
            ),
            click.option(
                "--epochs",
                type=click.IntRange(min=1),
                default=FIT_DEFAULTS["epochs"],
                show_default=True,
                help="Passes over the data per bitrate.",
            ),
            click.option(
                "--batch-size",
                type=click.IntRange(min=1),
                default=FIT_DEFAULTS["batch_size"],
                show_default=True,
            ),
            click.option(
                "--lr",
                type=click.FloatRange(min=0, min_open=True),
                default=FIT_DEFAULTS["lr"],
                show_default=True,
                help="Adam learning rate at the start of each stage.",
            ),
            click.option(
                "--init", type=click.Choice(["data", "gaussian"]), default="data", show_default=True
            ),
            click.option(
                "--assign", type=click.Choice(["dithered", "exact"]), default="dithered", show_default=True
            ),
            click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True),
            device_option(),
            quiet_option(),
            outdir_option(),
        ]
    ):
        f = option(f)
    return f


@click.command()
@click.option(
    "--latents",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="An (N, D) .npy file of latent vectors.",
)
@_fit_options
def fit(latents: Path, outdir: Path, **options: Any) -> None:
    """Fit an SFVQ curve to the latent vectors in a .npy file."""
    X = read_latents_arg(latents)
    run_fit(
        X, outdir, {"latents": str(latents), **options}, "fit", {"name": latents.name, "path": str(latents)}
    )


@click.command()
@click.option(
    "--dataset",
    type=click.Choice(["spiral", "aniso"]),
    default="spiral",
    show_default=True,
    help="spiral: a noisy 2-turn 2-D spiral; aniso: 20,000 anisotropic Gaussian vectors in 64-D.",
)
@_fit_options
def demo(dataset: str, outdir: Path, **options: Any) -> None:
    """Fit a curve to a built-in synthetic data set and write the same outputs as `sfvq fit`."""
    from sfvq.datasets import make_aniso, make_spiral
    from sfvq.io import save_npy_with_sidecar

    start = time.perf_counter()
    if dataset == "spiral":
        X = make_spiral(20_000, noise=0.02, turns=2.0, seed=options["seed"])
        source = {"name": "spiral", "n": 20_000, "noise": 0.02, "turns": 2.0, "seed": options["seed"]}
    else:
        X = make_aniso(20_000, 64, seed=options["seed"])
        source = {"name": "aniso", "n": 20_000, "dim": 64, "seed": options["seed"]}
    save_npy_with_sidecar(outdir / "latents.npy", X, source)
    options = {**options, "dataset": dataset}
    run_fit(X, outdir, options, "demo", source)
    click.echo(f"demo finished in {time.perf_counter() - start:.1f}s")
