"""``sfvq augment``: images of points sampled along one curve segment of a run, with their labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.cli.common import open_run, run_network, run_space
from sfvq.cli.options import (
    LAYER_RANGE_OR_AUTO,
    FiniteFloat,
    batch_size_option,
    device_option,
    model_option,
    model_space_option,
    network_option,
    noise_mode_option,
    outdir_option,
)


@click.command()
@model_option()
@network_option()
@model_space_option("augment")
@click.option(
    "--segment", "spec", required=True, metavar="b:i", help="Curve segment to sample along, e.g. 5:1."
)
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=500, show_default=True, help="Images.")
@click.option(
    "--jitter",
    type=FiniteFloat(min=0),
    default=0.0,
    show_default=True,
    help="Off-segment Gaussian noise, in units of the data's per-dimension std (needs the latents).",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--layers",
    type=LAYER_RANGE_OR_AUTO,
    default=None,
    help="Move along the segment on these W+ layers only (inclusive, e.g. 4-7; the rest stay at the "
    "segment's middle), or auto: the segment's range from annotations.json (default: all layers).",
)
@noise_mode_option(default=None)
@batch_size_option(32)
@device_option()
@outdir_option()
def augment(
    model_path: Path,
    network: str | None,
    space_kind: str | None,
    spec: str,
    n: int,
    jitter: float,
    seed: int,
    layers: tuple[int, int] | str | None,
    noise_mode: str | None,
    batch_size: int,
    device: str,
    outdir: Path,
) -> None:
    """Images of points sampled along one curve segment, with latents.npy and labels.csv (deterministic).

    A rerun into the same folder skips the images an interrupted run of the same request wrote; under
    torchrun each process renders its share of the batches (same files as one process).
    """
    from sfvq import dist
    from sfvq.augment import parse_segment, sample_segment, write_augmentation
    from sfvq.directions import DirectionSpecError
    from sfvq.io import write_options

    if dist.init(device=device):
        click.get_current_context().call_on_close(dist.shutdown)
        device = dist.device_for_rank(device)

    run = open_run(model_path, network=network, device=device, space=space_kind)
    net = run_network(run)
    try:
        bits, segment = parse_segment(spec, run.model)
    except DirectionSpecError as e:
        raise click.BadParameter(str(e), param_hint="'--segment'") from e
    X = run.latents if jitter > 0 else None
    if jitter > 0 and X is None:
        raise click.BadParameter(
            "--jitter > 0 needs the latents the curve was fitted to (latents.npy beside the model)",
            param_hint="'--jitter'",
        )
    space = run_space(run, None, noise_mode)
    samples = sample_segment(run.model, bits, segment, n, seed=seed, jitter=jitter, X=X)
    main = dist.is_main()
    used = _augment_layers(run, spec, layers, space, main)
    if main:
        click.echo(
            f"sampling {n} points on segment {spec} (jitter {jitter}, seed {seed}) in space {space.name}"
        )
    meta = {"model": str(model_path)}
    write_augmentation(space, samples, outdir, batch_size=batch_size, progress=main, meta=meta, layers=used)
    if not dist.is_main():
        return
    options = {
        "model": str(model_path),
        "network": net,
        "generator": space.G.name,
        "space": space.name,
        "segment": spec,
        "n": n,
        "jitter": jitter,
        "jitter_scale": "per-dimension data std; the component along the segment removed",
        "seed": seed,
        "layers": None if used is None else list(used),
        "truncation_psi": space.truncation_psi,
        "noise_mode": space.noise_mode,
        "batch_size": batch_size,
        "device": device,
        "outdir": str(outdir),
    }
    write_options(outdir, "augment", options)
    click.echo(f"wrote {n} images, latents.npy, labels.csv, preview.png and options.json to {outdir}")


def _augment_layers(
    run: Any, spec: str, layers: tuple[int, int] | str | None, space: Any, main: bool
) -> tuple[int, int] | None:
    """The W+ layers the samples move on: None (all), the given range checked against the space, or
    for ``auto`` the segment's annotated range (:func:`sfvq.annotate.auto_layers`)."""
    from sfvq.directions import check_layers, layers_text, spec_direction

    if layers is None:
        return None
    if layers == "auto":
        from sfvq.annotate import AnnotationError, auto_layers

        try:
            used, where = auto_layers(run, spec_direction(run.model, spec, run.latents), space)
        except AnnotationError as e:
            hint = f"{e}; run `sfvq annotate --run {run.path}` first"
            raise click.BadParameter(hint, param_hint="'--layers'") from e
        if main:
            click.echo(f"--layers auto: {layers_text(used, space.num_ws)} for {spec}, from {where}")
        return None if used is None or used == (0, space.num_ws) else used
    try:
        check_layers(layers, space.num_ws)
    except ValueError as e:
        raise click.BadParameter(f"{e} (space {space.name!r})", param_hint="'--layers'") from e
    return layers
