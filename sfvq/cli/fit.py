"""``sfvq fit`` (a curve from a latents file) and ``sfvq demo`` (the same on a built-in data set)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from sfvq.cli.options import DEVICE
from sfvq.quantizer import DEFAULT_SCHEDULE as FIT_DEFAULTS


def load_latents(path: Path) -> np.ndarray:
    """Read an (N, D) latents ``.npy`` (never a pickle), with errors that name the problem."""
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise click.BadParameter(
            f"{path} is not a plain numeric .npy file ({e})", param_hint="'--latents'"
        ) from e
    except OSError as e:
        raise click.BadParameter(f"cannot read {path}: {e}", param_hint="'--latents'") from e
    if not isinstance(X, np.ndarray) or X.dtype.kind not in "fiu":
        raise click.BadParameter(
            f"{path} does not hold numbers (dtype {getattr(X, 'dtype', '?')})", param_hint="'--latents'"
        )
    if X.ndim == 3:
        raise click.BadParameter(
            f"{path} holds {X.shape} (N, layers, D) latents; fit on one layer's (N, D) vectors, "
            "e.g. sample with --space w",
            param_hint="'--latents'",
        )
    return X


def summary_rows(model: Any) -> list[dict[str, Any]]:
    """One row per bitrate: bits, MSE, NMSE, perplexity, used segments, seconds."""
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
    from sfvq import SFVQ
    from sfvq.io import write_json, write_options
    from sfvq.plots import curve_plot, loss_plot

    model = SFVQ(
        options["bits"],
        epochs=options["epochs"],
        batch_size=options["batch_size"],
        lr=options["lr"],
        init=options["init"],
        assign=options["assign"],
        random_state=options["seed"],
        device=options["device"],
        verbose=not options["quiet"],
    )
    try:
        model.fit(np.asarray(X))
    except ValueError as e:  # bad data: say so as a usage error, nothing written
        raise click.UsageError(str(e)) from e
    model.metadata_ = {"data": source}
    outdir.mkdir(parents=True, exist_ok=True)
    model.save(outdir / "model.safetensors")
    rows = summary_rows(model)
    write_json(outdir / "summary.json", {"total_variance": model.total_variance_, "stages": rows})
    loss_plot(model.history_, outdir / "loss.png")
    codebooks = {b: C.cpu().numpy() for b, C in model.codebooks_.items()}
    curve_plot(np.asarray(X), codebooks, outdir / "curve.png")
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
            click.option("--device", type=DEVICE, default="cpu", show_default=True),
            click.option("--quiet", is_flag=True, help="No progress bar."),
            click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), required=True),
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
    X = load_latents(latents)
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
