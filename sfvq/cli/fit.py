"""``sfvq fit`` (a curve from a latents file) and ``sfvq demo`` (the same on a built-in data set)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from sfvq.cli.common import carry_latents, publishing, read_latents_arg
from sfvq.cli.options import FiniteFloat, device_option, outdir_option, quiet_option
from sfvq.schedule import DEFAULT_SCHEDULE as FIT_DEFAULTS

CHECKPOINT_FILE = "checkpoint.safetensors"


def print_summary(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    for col in ("bits", "MSE", "NMSE", "perplexity", "used segments", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["bits"]),
            f"{r['mse']:.5g}",
            "undefined" if r["nmse"] is None else f"{r['nmse']:.4f}",
            f"{r['perplexity']:.1f}",
            f"{r['used_segments']}/{r['segments']}",
            f"{r['seconds']:.2f}",
        )
    (console or Console()).print(table)


def run_fit(
    X: np.ndarray,
    outdir: Path,
    options: dict[str, Any],
    command: str,
    source: dict[str, Any],
    *,
    latents: Path | None = None,
    save_latents: bool = False,
) -> Any:
    """Fit, then write model, summary, plots and options.json as one run into ``outdir``, published whole
    (:func:`sfvq.runs.staged_run`: a failure or a kill leaves ``outdir`` as it was); returns the model.

    ``save_latents``: also write X as the run's ``latents.npy`` (+ sidecar ``source``). ``latents``: the
    file X was read from; when it is the ``latents.npy`` of the run being replaced, it goes into the new
    run (the run's latents are the data the curve was fitted to).

    With ``checkpoint_every`` in ``options`` the fit checkpoints to ``outdir/checkpoint.safetensors``
    (removed once everything is written) and ``options["resume"]`` continues from it. Under torchrun
    every process fits and rank 0 alone writes.
    """
    from sfvq import dist
    from sfvq.fitting import fit_curve, write_fit
    from sfvq.io import save_npy_with_sidecar, write_options

    fitter = options.get("fitter", "sfvq")
    if fitter == "sfdiveq":
        from sfvq.sfdiveq import require_diveq

        try:
            require_diveq()
        except ImportError as e:
            raise click.UsageError(str(e)) from e
        if options.get("resume"):
            raise click.UsageError("--resume needs --fitter sfvq: the sfdiveq fitter writes no checkpoints")
        if dist.world_size() > 1:
            raise click.UsageError("--fitter sfdiveq runs in one process; start it without torchrun")
    checkpoint = outdir / CHECKPOINT_FILE if "checkpoint_every" in options and fitter == "sfvq" else None

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
            checkpoint=checkpoint,
            checkpoint_every=options.get("checkpoint_every", 0),
            resume=options.get("resume", False),
            fitter=fitter,
        )
    except ValueError as e:  # bad data: say so as a usage error, nothing written
        raise click.UsageError(str(e)) from e
    if not dist.is_main():
        return model
    if model.total_variance_ == 0:
        click.echo(
            "warning: the data are constant (total variance 0): every corner lies on the one point, and "
            "NMSE is undefined",
            err=True,
        )
    with publishing(outdir) as st:
        if save_latents:
            save_npy_with_sidecar(st.path / "latents.npy", X, {**source, "run_id": st.run_id})
        elif latents is not None:
            carry_latents(latents, outdir, st)
        rows, _ = write_fit(model, X, st.path, run_id=st.run_id)
        write_options(st.path, command, {**options, "outdir": str(outdir)}, run_id=st.run_id)
    print_summary(rows, f"SFVQ fit on {source.get('name', 'data')}: N={X.shape[0]}, D={X.shape[1]}")
    click.echo(f"wrote {outdir}/model.safetensors, summary.json, loss.png, curve.png, options.json")
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # the fit is complete: nothing left to resume
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
                type=FiniteFloat(min=0, min_open=True),
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
            click.option(
                "--fitter",
                type=click.Choice(["sfvq", "sfdiveq"]),
                default="sfvq",
                show_default=True,
                help="sfvq: this package's fitter; sfdiveq: SF-DiVeQ from the optional diveq package "
                "(pip install diveq; no checkpoints, --init/--assign do not apply).",
            ),
            device_option(),
            quiet_option(),
            outdir_option(staged=True),
        ]
    ):
        f = option(f)
    return f


@click.command()
@click.option(
    "--latents",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="An (N, D) .npy file of latent vectors, or the manifest.json of sharded latents (sfvq sample "
    "--shard-rows); read chunk by chunk, never loaded whole.",
)
@_fit_options
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Steps between checkpoints (outdir/checkpoint.safetensors), besides the one after every "
    "bitrate; 0: after bitrates only.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from outdir/checkpoint.safetensors (after a crash or kill); the result equals an "
    "uninterrupted fit. Without a checkpoint the fit starts afresh.",
)
def fit(latents: Path, outdir: Path, **options: Any) -> None:
    """Fit an SFVQ curve to the latent vectors in a .npy file (or a manifest of shards).

    Under torchrun (torchrun --nproc-per-node N -m sfvq -- fit ...) the processes share every step's
    batch and sum their gradients; rank 0 writes. See docs/scale.md.
    """
    from sfvq import dist

    distributed = dist.init(device=options["device"])
    try:
        options["device"] = dist.device_for_rank(options["device"])
        X = read_latents_arg(latents)
        run_fit(
            X,
            outdir,
            {"latents": str(latents), **options},
            "fit",
            {"name": latents.name, "path": str(latents)},
            latents=latents,
        )
    finally:
        if distributed:
            dist.shutdown()


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

    start = time.perf_counter()
    if dataset == "spiral":
        X = make_spiral(20_000, noise=0.02, turns=2.0, seed=options["seed"])
        source = {"name": "spiral", "n": 20_000, "noise": 0.02, "turns": 2.0, "seed": options["seed"]}
    else:
        X = make_aniso(20_000, 64, seed=options["seed"])
        source = {"name": "aniso", "n": 20_000, "dim": 64, "seed": options["seed"]}
    options = {**options, "dataset": dataset}
    run_fit(X, outdir, options, "demo", source, save_latents=True)
    click.echo(f"demo finished in {time.perf_counter() - start:.1f}s")
