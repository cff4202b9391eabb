"""``sfvq edit``: move seeds along a direction of a run (a segment spec or a saved name) and write the grid.

A model is given as ``--model`` (a ``model.safetensors`` or the run directory holding one); its space
comes from ``space.json`` beside it (or ``--space w|z`` for a model fitted on raw latents) and its
generator from ``--network`` or the model's ``metadata_["network"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.cli.common import check_steps, fmt, open_run, run_network, run_space
from sfvq.cli.options import (
    FINITE_FLOAT,
    FLOATS,
    LAYER_RANGE_OR_AUTO,
    SeedList,
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
@model_space_option("edit")
@click.option(
    "--direction", "spec", required=True, metavar="b:i|b:i-j|NAME", help="Segment spec or saved name."
)
@click.option(
    "--layers",
    type=LAYER_RANGE_OR_AUTO,
    default=None,
    help="Inclusive W+ layer range, e.g. 4-7, or auto: the segment's range from annotations.json (sfvq "
    "annotate), computed now where the file lacks it (default: all).",
)
@click.option(
    "--sigma",
    type=FLOATS,
    default=None,
    help="Step sizes (columns) in --units (default: chosen from the run's latents, +-the 99th percentile of "
    "their spread along the direction and half of it; -8,-4,0,4,8 raw without latents).",
)
@click.option(
    "--units",
    type=click.Choice(["raw", "std"]),
    default="raw",
    show_default=True,
    help="raw: sigma times the unit direction; std: sigma times the data's std along it.",
)
@click.option("--seeds", type=SeedList(max_count=1000), default="0-7", show_default=True, help="Rows.")
@click.option(
    "--trunc", "truncation_psi", type=FINITE_FLOAT, default=None, help="Truncation psi (default: space's)."
)
@noise_mode_option(default=None)
@click.option("--images/--no-images", default=False, show_default=True, help="Also write every image.")
@batch_size_option(32)
@device_option()
@outdir_option()
def edit(
    model_path: Path,
    network: str | None,
    space_kind: str | None,
    spec: str,
    layers: tuple[int, int] | None,
    sigma: list[float] | None,
    units: str,
    seeds: list[int],
    truncation_psi: float | None,
    noise_mode: str | None,
    images: bool,
    batch_size: int,
    device: str,
    outdir: Path,
) -> None:
    """Move seeds along a direction: a grid with one row per seed and one column per sigma."""
    import torch

    from sfvq.directions import DirectionSpecError, edit_full, layers_text, resolve_direction
    from sfvq.generators.base import to_uint8
    from sfvq.io import save_npy_with_sidecar, save_png, write_options
    from sfvq.latents import format_seeds
    from sfvq.render import edit_grid
    from sfvq.spaces import check_finite

    run = open_run(model_path, network=network, device=device, space=space_kind)
    net = run_network(run)
    try:
        d = resolve_direction(spec, run.model, run.path, run.latents)
    except DirectionSpecError as e:
        raise click.BadParameter(str(e), param_hint="'--direction'") from e
    except ValueError as e:
        raise click.UsageError(f"cannot read the run's saved directions: {e}") from e
    space = run_space(run, truncation_psi, noise_mode)
    if layers == "auto":
        layers = auto_layer_range(run, d, space)
    used = _layer_range(layers, d, space)
    if units == "std" and d.std is None:
        raise click.BadParameter(
            "--units std needs the latents the curve was fitted to (latents.npy beside the model) "
            "to measure the std along the direction",
            param_hint="'--units'",
        )
    sigma, sigma_choice = _default_sigma(sigma, d, run.latents, units)
    scale = d.std if units == "std" else 1.0
    raw_sigmas = [s * scale for s in sigma]
    check_steps(sigma, raw_sigmas)
    if space.num_ws > 1:
        where = f"layers {layers_text(used)} of 0-{space.num_ws - 1}"
    else:
        where = f"all of space {space.name} " + (
            "(its style group)" if space.kind == "s" else "(no style layers)"
        )
    click.echo(
        f"direction {d.name} (length {fmt(d.length)}, std {fmt(d.std)}), {where}, sigma {sigma} {units}, "
        f"truncation psi {space.truncation_psi}, noise mode {space.noise_mode}"
    )
    with torch.no_grad():
        full = space.encode_seeds(seeds)  # (N, L, F)
        rendered = space.render_edits(full, [d.vector], raw_sigmas, used, batch_size)[:, 0]  # (N, S, C, H, W)
        try:
            check_finite(rendered, "the edited images")
        except ValueError as e:
            raise click.BadParameter(
                f"{e}: a step of --sigma {max(sigma, key=abs):g} is too large for {space.G.name}",
                param_hint="'--sigma'",
            ) from e
        edited = edit_full(space, full, d.vector, raw_sigmas, used)  # (S, N, L, F), as latents.npy stores
    outdir.mkdir(parents=True, exist_ok=True)
    N, S = rendered.shape[:2]
    tiles = to_uint8(rendered.reshape(N * S, *rendered.shape[2:]))  # (N*S, H, W, C): rows = seeds
    save_png(outdir / "grid.png", edit_grid(tiles, seeds, sigma))
    if images:
        for i, s in enumerate(seeds):
            for k, v in enumerate(sigma):
                save_png(outdir / "images" / f"seed{s:04d}_sigma{v:+g}.png", tiles[i * S + k])
    meta = {
        "what": "edited full latents, axes (sigma, seed, layer, dim); row order of grid.png",
        "direction": d.name,
        "sigma": sigma,
        "sigma_raw": raw_sigmas,
        "seeds": seeds,
        "layer_start": used[0],
        "layer_stop": used[1],
        "space": space.describe(),
    }
    save_npy_with_sidecar(outdir / "latents.npy", edited.numpy(), meta)
    options = {
        "model": str(model_path),
        "network": net,
        "generator": space.G.name,
        "space": space.name,
        "direction": spec,
        "resolved_direction": d.info(),
        "layers": layers_text(used),
        "layer_start": used[0],
        "layer_stop": used[1],
        "num_ws": space.num_ws,
        "sigma": sigma,
        "units": units,
        "sigma_raw": raw_sigmas,
        "sigma_choice": sigma_choice,
        "seeds": format_seeds(seeds),
        "truncation_psi": space.truncation_psi,
        "truncation_cutoff": space.truncation_cutoff,
        "noise_mode": space.noise_mode,
        "images": images,
        "batch_size": batch_size,
        "device": device,
        "outdir": str(outdir),
    }
    write_options(outdir, "edit", options)
    click.echo(f"wrote {outdir / 'grid.png'} ({N} seeds x {S} sigmas), latents.npy, options.json")


def _default_sigma(
    sigma: list[float] | None, d: Any, latents: Any, units: str
) -> tuple[list[float], dict[str, Any]]:
    """The steps in ``units``: the user's ``--sigma``; else chosen from the run's latents along the direction
    (:func:`sfvq.directions.data_sigmas`, converted to raw units when asked); else the fixed old default."""
    from sfvq.directions import data_sigmas

    if sigma is not None:
        return sigma, {"rule": "given"}
    if latents is None or not d.std:
        click.echo("--sigma not given and no latents to choose it from: -8,-4,0,4,8 raw")
        return [-8.0, -4.0, 0.0, 4.0, 8.0], {"rule": "fixed"}  # raw: --units std needs the latents
    choice = data_sigmas(latents, d.vector)
    steps = list(choice.sigmas) if units == "std" else [round(s * d.std, 4) + 0.0 for s in choice.sigmas]
    click.echo(f"--sigma {','.join(f'{s:g}' for s in steps)} ({units}): {choice.describe()}")
    return steps, choice.as_dict()


def auto_layer_range(run: Any, d: Any, space: Any) -> tuple[int, int] | None:
    """``--layers auto``: the direction's annotated (or now computed) range, said on the terminal; None
    for a space without style layers (all of it)."""
    from sfvq.annotate import AnnotationError, auto_layers
    from sfvq.directions import layers_text

    try:
        used, where = auto_layers(run, d, space)
    except AnnotationError as e:
        hint = f"{e}; run `sfvq annotate --run {run.path}` first"
        raise click.BadParameter(hint, param_hint="'--layers'") from e
    click.echo(f"--layers auto: {layers_text(used, space.num_ws)} for {d.name}, from {where}")
    return used


def _layer_range(layers: tuple[int, int] | None, d: Any, space: Any) -> tuple[int, int]:
    """The layers the edit touches: ``--layers``, else the saved direction's range, else all; checked
    against the space."""
    from sfvq.directions import check_layers

    if layers is not None:
        try:
            check_layers(layers, space.num_ws)
        except ValueError as e:
            raise click.BadParameter(f"{e} (space {space.name!r})", param_hint="'--layers'") from e
        return layers
    if d.layers is not None:
        try:
            check_layers(d.layers, space.num_ws, f"the saved layer range of {d.name!r}")
        except ValueError as e:
            raise click.UsageError(str(e)) from e
        return d.layers
    return (0, space.num_ws)
