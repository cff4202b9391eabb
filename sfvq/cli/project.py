"""``sfvq project`` (a photo -> the latent that draws it) and ``sfvq locate`` (that latent on a run's map).

``project`` reads a photo safely, aligns it when the generator draws faces, and optimises a latent of the
generator (W, W+, Z, or a run's feature space) until its image matches: the latent (``projected.npy``,
and NVIDIA's ``projected_w.npz`` in W), target and projection side by side, the loss curve.

``locate`` places a photo (projected first) or a latent file on every bitrate of a run's curve: the
fractional curve index, the nearest corners (shown beside the photo), and how far off the map it lies (its
distance to the curve as a percentile of the sampled latents' distances); then edits it along the
segments around its place and any named direction, as a grid and a walk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.cli.common import fmt, load_network, open_run, run_network, run_space
from sfvq.cli.options import (
    FLOATS,
    LAYER_RANGE,
    FiniteFloat,
    device_option,
    network_option,
    options,
    outdir_option,
    quiet_option,
    space_option,
)

# The defaults of sfvq.project.ProjectionSettings and DEFAULT_MAX_PIXELS, written out so that the command
# line starts without torch (a test holds them equal).
DEFAULT_STEPS = 300
DEFAULT_LR = 0.4
DEFAULT_STARTS = 64
DEFAULT_LATENT_NOISE = 0.0
DEFAULT_MAX_PIXELS = 40_000_000
ALIGN_MODES = ("auto", "yes", "no")
POSITIVE = FiniteFloat(min=0, min_open=True)
NON_NEGATIVE = FiniteFloat(min=0)


def projection_options(f: Any) -> Any:
    """The options of a projection, shared by ``project`` and ``locate --image``."""
    return options(
        click.option(
            "--align",
            type=click.Choice(ALIGN_MODES),
            default="auto",
            show_default=True,
            help="Align the face first (dlib's 68 landmarks, the FFHQ crop); auto: when the generator "
            "draws faces.",
        ),
        click.option(
            "--steps",
            type=click.IntRange(1, 100_000),
            default=DEFAULT_STEPS,
            show_default=True,
            help="Optimisation steps.",
        ),  # fmt: skip
        click.option(
            "--lr",
            type=POSITIVE,
            default=DEFAULT_LR,
            show_default=True,
            help="Peak learning rate, in units of the sampled latents' spread per coordinate.",
        ),  # fmt: skip
        click.option(
            "--starts",
            type=click.IntRange(0, 10_000),
            default=DEFAULT_STARTS,
            show_default=True,
            help="Sampled latents tried as starting points besides their mean.",
        ),  # fmt: skip
        click.option(
            "--latent-noise",
            type=NON_NEGATIVE,
            default=DEFAULT_LATENT_NOISE,
            show_default=True,
            help="Noise added to the latent early on, in units of the latents' spread (fades out).",
        ),  # fmt: skip
        click.option(
            "--ssim-weight",
            type=NON_NEGATIVE,
            default=1.0,
            show_default=True,
            help="Weight of 1 - MS-SSIM in the loss.",
        ),  # fmt: skip
        click.option(
            "--edge-weight",
            type=NON_NEGATIVE,
            default=1.0,
            show_default=True,
            help="Weight of the error-gradient (edge) term in the loss.",
        ),
        click.option(
            "--pixel-weight",
            type=NON_NEGATIVE,
            default=1.0,
            show_default=True,
            help="Weight of the pixel MSE in the loss.",
        ),  # fmt: skip
        click.option(
            "--prior-weight",
            type=NON_NEGATIVE,
            default=None,
            help="Weight of the pull towards the sampled latents (default: 0 in W, 0.01 else).",
        ),
        click.option(
            "--fit-noise/--const-noise",
            default=True,
            show_default=True,
            help="StyleGAN2 noise inputs: fit the noise maps (regularised) or keep the constant noise.",
        ),  # fmt: skip
        click.option(
            "--max-pixels",
            type=click.IntRange(1),
            default=DEFAULT_MAX_PIXELS,
            show_default=True,
            help="Largest photo read, in pixels (width x height).",
        ),  # fmt: skip
        click.option(
            "--seed",
            type=click.IntRange(0),
            default=0,
            show_default=True,
            help="Seed of the latent noise and the sampled starts.",
        ),  # fmt: skip
    )(f)


def _settings(kw: dict[str, Any]) -> Any:
    from sfvq.project import ProjectionSettings

    try:
        return ProjectionSettings(
            steps=kw["steps"],
            lr=kw["lr"],
            starts=kw["starts"],
            latent_noise=kw["latent_noise"],
            ssim_weight=kw["ssim_weight"],
            pixel_weight=kw["pixel_weight"],
            edge_weight=kw["edge_weight"],
            prior_weight=kw["prior_weight"],
            optimise_noise=kw["fit_noise"],
            seed=kw["seed"],
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e


def _read_photo(path: Path, max_pixels: int) -> Any:
    from sfvq.project import ImageInputError, read_image

    try:
        return read_image(path, max_pixels)
    except (ImageInputError, FileNotFoundError) as e:
        raise click.BadParameter(str(e), param_hint="'--image'") from e


def _target(photo: Any, G: Any, align: str) -> Any:
    from sfvq.align import NoFaceError
    from sfvq.project import prepare_target
    from sfvq.scorers import ScorerUnavailable

    try:
        return prepare_target(photo, G, align)
    except NoFaceError as e:
        raise click.BadParameter(str(e), param_hint="'--image'") from e
    except ScorerUnavailable as e:
        raise click.ClickException(f"--align needs dlib: {e}") from e


def _project(space: Any, plus: bool, target: Any, settings: Any, reference: Any, quiet: bool) -> Any:
    from sfvq.generators.base import GeneratorError
    from sfvq.project import Projector

    try:
        projector = Projector(space, plus=plus, settings=settings, reference=reference)
    except GeneratorError as e:
        raise click.BadParameter(str(e), param_hint="'--network'") from e
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    return projector.project(target.tensor, progress=not quiet)


def _write_photo(outdir: Path, photo: Any, target: Any, size: int = 256) -> None:
    """``photo.png``: what was projected at a viewable size (the aligned crop, or the centred square)."""
    from sfvq.align import crop_quad
    from sfvq.io import save_png
    from sfvq.project import fit_square

    big = max(size, target.image.width)
    shown = (
        crop_quad(photo, target.alignment.quad, big)
        if target.alignment is not None
        else fit_square(photo, big)
    )
    save_png(outdir / "photo.png", shown)


def _echo_projection(result: Any) -> None:
    s = result.summary(0)
    extra = ""
    if "psnr_with_noise" in s:
        extra = f" (with the fitted noise {s['psnr_with_noise']:.2f} dB, SSIM {s['ssim_with_noise']:.3f})"
    click.echo(
        f"projected into {s['space']} in {s['steps']} steps ({s['seconds']:.1f} s, start: {s['start']}): "
        f"PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}{extra}"
    )


@click.command()
@network_option(help="Generator to project into (default: the run's, with --run).")
@click.option("--image", required=True, type=click.Path(path_type=Path), help="The photo (PNG, JPEG, ...).")
@click.option(
    "--run", "run_path", type=click.Path(path_type=Path), default=None,
    help="A run: its space (a feature space needs one), generator and sampled latents.",
)  # fmt: skip
@space_option(
    ("w", "w+", "z", "features"),
    "project",
    help="Space to project into (default: the run's space, else w where the generator has a mapping "
    "network, else z).",
)
@projection_options
@device_option()
@quiet_option()
@outdir_option()
def project(
    network: str | None,
    image: Path,
    run_path: Path | None,
    space: str | None,
    device: str,
    quiet: bool,
    outdir: Path,
    **kw: Any,
) -> None:
    """Find the latent whose image matches a photo (aligned first for a face generator)."""
    from sfvq.spaces import LatentSpace

    settings = _settings(kw)
    photo = _read_photo(image, kw["max_pixels"])
    reference = None
    if run_path is not None:
        run = open_run(run_path, hint="'--run'", network=network, device=device)
        net = run_network(run)
        lspace = run_space(run)
        if space is not None and space.rstrip("+") != lspace.kind:
            raise click.BadParameter(
                f"the run's curve lives in space {lspace.name!r}; project into it (or w+ for a W run)",
                param_hint="'--space'",
            )
        reference = run.latents
    else:
        if network is None:
            raise click.UsageError("give --network (the generator to project into) or --run")
        net = network
        G = load_network(network, device)
        kind = space or ("w" if "w" in G.spaces else "z")
        if kind == "features":
            raise click.BadParameter(
                "a feature space is a run's (its PCA): give --run with a feature-space run",
                param_hint="'--space'",
            )
        try:
            lspace = LatentSpace(G, kind.rstrip("+"))
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--space'") from e
    plus = space == "w+"
    target = _target(photo, lspace.G, kw["align"])
    result = _project(lspace, plus, target, settings, reference, quiet)
    from sfvq.io import write_options
    from sfvq.project import write_projection

    outdir.mkdir(parents=True, exist_ok=True)
    meta = {"network": net, "image": str(image), "run": None if run_path is None else str(run_path)}
    write_projection(result, outdir, target=target, meta=meta)
    _write_photo(outdir, photo, target)
    write_options(
        outdir,
        "project",
        {**kw, "network": net, "image": str(image), "run": meta["run"], "space": result.space_name,
         "device": device, "outdir": str(outdir)},
    )  # fmt: skip
    _echo_projection(result)
    npz = " projected_w.npz," if lspace.kind == "w" else ""
    click.echo(f"wrote {outdir}: compare.png, projection.png, projected.npy,{npz} loss.png, projection.json")


# ---------------------------------------------------------------------------------------------- locate
@click.command()
@click.option(
    "--run", "run_path", required=True, type=click.Path(path_type=Path),
    help="The run (its model, space and sampled latents).",
)  # fmt: skip
@network_option()
@click.option("--image", type=click.Path(path_type=Path), default=None, help="A photo to project and place.")
@click.option(
    "--latent", type=click.Path(path_type=Path), default=None,
    help="A latent to place: .npy (a space vector, or W+ ws) or NVIDIA's projected_w.npz.",
)  # fmt: skip
@space_option(("w", "w+"), "locate", help="With --image in a W run: project into w (default) or w+.")
@click.option(
    "--bits",
    type=click.IntRange(1, 30),
    default=None,
    help="Bitrate whose segments around the latent are edited along (default: the finest).",
)
@click.option(
    "--around",
    type=click.IntRange(0, 8),
    default=1,
    show_default=True,
    help="Segments on each side of the latent's segment to edit along.",
)
@click.option(
    "--direction",
    "directions",
    multiple=True,
    metavar="b:i|b:i-j|NAME",
    help="Also edit along this segment or saved direction (repeatable).",
)
@click.option("--sigma", type=FLOATS, default="-2,-1,0,1,2", show_default=True, help="Edit steps (columns).")
@click.option(
    "--units", type=click.Choice(["std", "raw"]), default=None,
    help="std: sigma times the data's std along the direction (default when the run has latents); raw.",
)  # fmt: skip
@click.option(
    "--layers",
    type=LAYER_RANGE,
    default=None,
    help="Inclusive W+ layer range of the edits (default: a saved direction's, else all).",
)
@click.option(
    "--nearest",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Nearest corners shown and reported per bitrate.",
)
@click.option(
    "--threshold",
    type=FiniteFloat(min=0, max=100, min_open=True),
    default=99.0,
    show_default=True,
    help="Percentile of the sampled latents' distances above which the latent is off the map.",
)
@click.option("--walk/--no-walk", default=True, show_default=True, help="Write walk.gif of the edits.")
@click.option(
    "--frames", type=click.IntRange(4, 240), default=24, show_default=True, help="Walk frames per direction."
)
@projection_options
@device_option()
@quiet_option()
@outdir_option()
def locate(
    run_path: Path,
    network: str | None,
    image: Path | None,
    latent: Path | None,
    space: str | None,
    bits: int | None,
    around: int,
    directions: tuple[str, ...],
    sigma: list[float],
    units: str | None,
    layers: tuple[int, int] | None,
    nearest: int,
    threshold: float,
    walk: bool,
    frames: int,
    device: str,
    quiet: bool,
    outdir: Path,
    **kw: Any,
) -> None:
    """Place a photo or a latent on a run's curve, say how far off the map it lies, and edit it."""
    import torch

    from sfvq.directions import DirectionSpecError, check_layers, layers_text, resolve_direction
    from sfvq.generators.base import to_uint8
    from sfvq.io import save_png, write_json, write_options
    from sfvq.locate import (
        edit_grid_image,
        edit_images,
        place,
        placement_figure,
        reference_distances,
        segments_around,
        walk_frames,
    )
    from sfvq.project import Latent, LatentFileError, read_latent, write_projection
    from sfvq.render import write_gif

    if (image is None) == (latent is None):
        raise click.UsageError("give exactly one of --image (a photo) and --latent (a latent file)")
    if space is not None and image is None:
        raise click.BadParameter("--space chooses the projection of --image", param_hint="'--space'")
    settings = _settings(kw) if image is not None else None
    photo = _read_photo(image, kw["max_pixels"]) if image is not None else None
    run = open_run(run_path, hint="'--run'", network=network, device=device)
    net = run_network(run)
    lspace = run_space(run)
    model = run.model
    if space == "w+" and lspace.kind != "w":
        raise click.BadParameter(
            f"w+ needs a W run; this run's space is {lspace.name!r}", param_hint="'--space'"
        )
    if bits is not None and bits not in model.codebooks_:
        raise click.BadParameter(f"the model has bitrates {sorted(model.codebooks_)}, not {bits}",
                                 param_hint="'--bits'")  # fmt: skip
    X = run.latents
    if units == "std" and X is None:
        raise click.BadParameter(
            "--units std needs the latents the curve was fitted to (latents.npy in the run)",
            param_hint="'--units'",
        )
    units = units or ("std" if X is not None else "raw")
    outdir.mkdir(parents=True, exist_ok=True)
    target_u8 = None
    if photo is not None:
        target = _target(photo, lspace.G, kw["align"])
        result = _project(lspace, space == "w+", target, settings, X, quiet)
        meta = {"network": net, "image": str(image), "run": str(run_path)}
        write_projection(result, outdir, target=target, meta=meta)
        _write_photo(outdir, photo, target)
        _echo_projection(result)
        lat = Latent(result.full[:1], result.vectors[:1], result.plus, {"image": str(image)})
        target_u8 = to_uint8(result.targets[:1])[0]
    else:
        try:
            lat = read_latent(latent, lspace)
        except (LatentFileError, FileNotFoundError) as e:
            raise click.BadParameter(str(e), param_hint="'--latent'") from e
    with torch.no_grad():
        shown = to_uint8(lspace.render_full(lat.full))[0]  # (H, W, C)
    if target_u8 is None:
        target_u8 = shown
    reference_note = ""
    if X is None:
        X = lspace.sample(2000, seed=0, progress=False)
        reference_note = " (the run has no latents.npy: compared with 2000 fresh samples, seed 0)"
    ref = reference_distances(model, X)
    placement = place(model, lat.vector, ref, nearest=nearest, threshold=threshold)
    # pictures of the nearest corners, bitrate by bitrate
    corners = {}
    with torch.no_grad():
        for b, info in placement.bits.items():
            C = model.codebooks_[b].detach().to("cpu", torch.float32)
            idx = [n["corner"] for n in info["nearest"]]
            corners[b] = to_uint8(lspace.render(C[idx]))
    save_png(outdir / "placement.png", placement_figure(target_u8, shown, corners, placement))
    # edits: the segments around the latent's place, then the named directions
    b = bits or placement.finest
    specs = [f"{b}:{s}" for s in segments_around(placement, b, around)] + list(directions)
    found = []
    for spec in specs:
        try:
            found.append(resolve_direction(spec, model, run.path, run.latents))
        except DirectionSpecError as e:
            raise click.BadParameter(str(e), param_hint="'--direction'") from e
        except ValueError as e:
            raise click.UsageError(f"cannot read the run's saved directions: {e}") from e
    edits, ranges, raw = [], [], []
    for d in found:
        used = layers if layers is not None else d.layers
        try:
            check_layers(
                used, lspace.num_ws, "--layers" if layers is not None else f"the range of {d.name!r}"
            )
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--layers'") from e
        if units == "std" and d.std is None:
            raise click.UsageError(
                f"direction {d.name!r} has no std (the run has no latents); use --units raw"
            )
        scale = d.std if units == "std" else 1.0
        ranges.append(used)
        raw.append([s * scale for s in sigma])
        edits.append({"direction": d.name, "source": d.source, "layers": layers_text(used, lspace.num_ws),
                      "sigma": sigma, "units": units, "sigma_raw": raw[-1]})  # fmt: skip
    vectors = [d.vector for d in found]
    with torch.no_grad():
        tiles = edit_images(lspace, lat.full, vectors, raw, ranges)  # (M, T, H, W, C)
    save_png(outdir / "edits.png", edit_grid_image(tiles, [d.name for d in found], sigma, units))
    if walk:
        extents = [max(abs(s) for s in r) for r in raw]
        with torch.no_grad():
            movie = walk_frames(lspace, lat.full, vectors, extents, ranges, frames)
        write_gif(outdir / "walk.gif", movie, fps=12)
    out = {
        "network": net,
        "run": str(run_path),
        "space": "w+" if lat.plus else lspace.name,
        "latent": lat.source,
        **placement.to_json(),
        "reference": "the run's latents" if not reference_note else "2000 fresh samples (seed 0)",
        "edits": edits,
    }
    write_json(outdir / "placement.json", out)
    write_options(
        outdir,
        "locate",
        {**kw, "run": str(run_path), "network": net, "image": None if image is None else str(image),
         "latent": None if latent is None else str(latent), "space": space, "bits": b, "around": around,
         "directions": list(directions), "sigma": sigma, "units": units,
         "layers": None if layers is None else layers_text(layers), "nearest": nearest,
         "threshold": threshold, "walk": walk, "frames": frames, "device": device, "outdir": str(outdir)},
    )  # fmt: skip
    for bb, info in sorted(placement.bits.items()):
        near = ", ".join(f"{n['corner']} ({fmt(n['distance'])})" for n in info["nearest"])
        pct = "" if info["percentile"] is None else f", percentile {info['percentile']:.1f}"
        click.echo(
            f"{bb:>2} bits: t = {info['t']:.3f} (segment {info['segment']}), distance {fmt(info['distance'])}"
            f"{pct}; nearest corners {near}"
        )
    o = placement.outlier
    verdict = "OFF THE MAP" if o.get("off_map") else "on the map"
    click.echo(
        f"{verdict}: at {o['bits']} bits it lies farther from the curve than {o['percentile']:.1f} % of the "
        f"sampled latents (distance {fmt(o['distance'])}, {fmt(o['ratio'])} x their median; threshold "
        f"{o['threshold']:g} %){reference_note}"
    )
    click.echo(
        f"wrote {outdir}: placement.json, placement.png, edits.png ({len(found)} directions x {len(sigma)} "
        f"sigmas{', ' + units if units else ''})" + (", walk.gif" if walk else "")
    )


__all__ = ["locate", "project", "projection_options"]
