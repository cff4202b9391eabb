"""``sfvq run``: the main job (sample, fit, maps, walk, edits, smoothness, report) for any generator."""

from __future__ import annotations

from pathlib import Path

import click

from sfvq.cli.common import check_sampling, load_network
from sfvq.cli.options import (
    FLOATS,
    FiniteFloat,
    SeedList,
    device_option,
    network_option,
    noise_mode_option,
    outdir_option,
    quiet_option,
    space_option,
    truncation_options,
)
from sfvq.parsing import MAX_SEED
from sfvq.pipeline import (
    DEFAULT_N,
    DEFAULT_PREVIEW_RES,
    DEFAULT_RENDER_BATCH,
    DEFAULT_TIME_BUDGET,
    MIN_PREVIEW_RES,
    ConfigError,
    RunConfig,
    print_run_summary,
    run_pipeline,
)
from sfvq.schedule import DEFAULT_SCHEDULE

# Of sfvq.parsing.SPACE_NAMES: the spaces (sfvq.spaces.KINDS) of a curve.
RUN_SPACES = ("w", "z", "features", "s")


@click.command()
@network_option(required=True)
@click.option(
    "--bits",
    type=click.IntRange(2, 12),
    default=6,
    show_default=True,
    help="Final bitrate (2**bits corners); maps are drawn for every bitrate from 2 up.",
)
@space_option(
    RUN_SPACES,
    "run",
    help="Space of the curve. Default: w with a mapping network, else the first layer's features (PCA). "
    "s: StyleSpace (StyleGAN2/3 style codes of all layers; s:coarse, s:middle, s:fine or s:4-7 for a group).",
)
@click.option("--layer", default=None, help="Feature layer for --space features (default: the first).")
@click.option(
    "--n", "n", type=click.IntRange(min=4), default=DEFAULT_N, show_default=True, help="Latents to fit on."
)
@click.option(
    "--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="Sampling/fit seed."
)
@truncation_options()
@noise_mode_option()
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=DEFAULT_SCHEDULE["epochs"],
    show_default=True,
    help="Fit: passes over the data per bitrate.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_SCHEDULE["batch_size"],
    show_default=True,
    help="Fit: samples per step.",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, min_open=True),
    default=DEFAULT_SCHEDULE["lr"],
    show_default=True,
    help="Fit: Adam learning rate.",
)
@click.option(
    "--fitter",
    type=click.Choice(["sfvq", "sfdiveq"]),
    default="sfvq",
    show_default=True,
    help="Fit: sfvq (this package's fitter) or sfdiveq (SF-DiVeQ from the optional diveq package: "
    "pip install diveq).",
)
@click.option(
    "--edit-bits",
    type=click.IntRange(2, 12),
    default=None,
    help="Bitrate whose segments are edited (default: min(bits, 4)).",
)
@click.option(
    "--edit-seeds",
    type=SeedList(max_count=64),
    default="0-3",
    show_default=True,
    help="Seeds to edit (rows).",
)
@click.option(
    "--sigmas",
    type=FLOATS,
    default=None,
    help="Edit strengths (columns), in stds of the data along the direction (default: chosen from the "
    "data, +-the 99th percentile of the data's spread along the segments, and half of it).",
)
@click.option(
    "--walk-frames",
    type=click.IntRange(min=2),
    default=240,
    show_default=True,
    help="Frames of the walk (at most: the time budget may render fewer).",
)
@click.option(
    "--fps",
    type=FiniteFloat(min=0, min_open=True, max=120),
    default=24.0,
    show_default=True,
    help="Walk frames per second.",
)
@click.option(
    "--render-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help=f"Most images per generator call (default: as many as fit in half the free memory, at most "
    f"{DEFAULT_RENDER_BATCH}).",
)
@click.option(
    "--preview-res",
    type=click.IntRange(min=MIN_PREVIEW_RES),
    default=DEFAULT_PREVIEW_RES,
    show_default=True,
    help="Resolution (px) of maps, walk and edits, capped at the generator's. A StyleGAN2 stops at that "
    "block (a fraction of a full render); other generators render full size and shrink.",
)
@click.option(
    "--full-res", is_flag=True, help="Render maps, walk and edits at the generator's full resolution."
)
@click.option(
    "--full-res-corners",
    type=SeedList(max_count=4096),
    default=None,
    metavar="CORNERS",
    help="Corners of the final bitrate to also write at full size, e.g. 0-3,17 "
    "(maps/corner_{bits}bit_{k}.png).",
)
@click.option(
    "--time-budget",
    type=FiniteFloat(min=0),
    default=DEFAULT_TIME_BUDGET,
    show_default=True,
    help="Seconds the whole run may take (0: no limit). One render is timed first; where everything "
    "would take longer, the walk's frames, the edited segments (least used first), the k-means baseline "
    "and the map bitrates are cut to fit, and the run says what it left out.",
)
@click.option(
    "--annotate",
    is_flag=True,
    help="Also annotate every segment of the finest and the edit bitrate (as `sfvq annotate`: heat maps, "
    "score shifts, layer ranges for --layers auto) into annotations.json; off by default (about 10 s more "
    "on builtin:avatars-sg2, whose whole job takes about as long).",
)
@device_option()
@quiet_option("No progress bars (the final summary is still printed).")
@outdir_option(
    "Run directory: model, latents, maps/, walks/, edits/, report.html, summary.json, options.json.",
    staged=True,
)
def run(
    network: str,
    bits: int,
    space: str | None,
    layer: str | None,
    n: int,
    seed: int,
    truncation_psi: float,
    trunc_cutoff: int | None,
    class_idx: int | None,
    noise_mode: str,
    epochs: int,
    batch_size: int,
    lr: float,
    fitter: str,
    edit_bits: int | None,
    edit_seeds: list[int],
    sigmas: list[float] | None,
    walk_frames: int,
    fps: float,
    render_batch_size: int | None,
    preview_res: int,
    full_res: bool,
    full_res_corners: list[int] | None,
    time_budget: float,
    annotate: bool,
    device: str,
    quiet: bool,
    outdir: Path,
) -> None:
    """The main job: sample latents, fit the curve, render panoptic maps, a walk and segment edits,
    score the order against k-means, and write a self-contained report.html."""
    if outdir.exists() and not outdir.is_dir():
        raise click.BadParameter(f"{outdir} exists and is not a directory", param_hint="'--outdir'")
    config = RunConfig(
        network=network,
        outdir=outdir,
        bits=bits,
        space=space,
        layer=layer,
        n=n,
        seed=seed,
        truncation_psi=truncation_psi,
        truncation_cutoff=trunc_cutoff,
        class_idx=class_idx,
        noise_mode=noise_mode,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        fitter=fitter,
        edit_bits=edit_bits,
        edit_seeds=tuple(edit_seeds),
        sigmas=None if sigmas is None else tuple(sigmas),
        walk_frames=walk_frames,
        fps=fps,
        render_batch_size=render_batch_size,
        device=device,
        progress=not quiet,
        preview_res=preview_res,
        full_res=full_res,
        full_res_corners=tuple(full_res_corners or ()),
        time_budget=time_budget,
        annotate=annotate,
    )
    if fitter == "sfdiveq":
        from sfvq.sfdiveq import require_diveq

        try:
            require_diveq()
        except ImportError as e:
            raise click.BadParameter(str(e), param_hint="'--fitter'") from e
    from sfvq import dist

    if dist.init(device=device):  # under torchrun the processes share the renders (docs/scale.md)
        click.get_current_context().call_on_close(dist.shutdown)
        device = dist.device_for_rank(device)
        config.progress = config.progress and dist.is_main()
    G = load_network(network, device)
    check_sampling(G, truncation_psi, trunc_cutoff, class_idx)
    from sfvq.pipeline import validate

    try:
        kind = validate(config, G)
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint=f"'{e.option}'") from e
    if kind == "features" and truncation_psi != 1.0 and "w" in G.spaces and not G.truncation_in_z:
        click.echo(
            f"note: --trunc {truncation_psi:g} does not change a feature space of {G.name}: its features "
            "are computed from untruncated z (the setting is recorded)",
            err=True,
        )
    from sfvq.fitting import DataError

    try:
        result = run_pipeline(config, G)
    except DataError as e:  # the sampled latents: nothing was published
        raise click.ClickException(
            f"cannot fit a curve to the sampled latents: {e}; {outdir} is unchanged"
        ) from e
    except OSError as e:  # a full disk, say: the staging folder is gone, the run folder as it was
        raise click.ClickException(f"writing the run failed ({e}); {outdir} is unchanged") from e
    if not dist.is_main():
        return
    print_run_summary(result, outdir)
    click.echo(f"report: {outdir / 'report.html'}")
