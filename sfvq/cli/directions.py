"""``sfvq directions``, ``sfvq edit``, ``sfvq augment``, ``sfvq import ...`` and ``sfvq export ...``.

A model is given as ``--model`` (a ``model.safetensors`` or the run directory holding one); its space
comes from ``space.json`` beside it (or ``--space w|z`` for a model fitted on raw latents) and its
generator from ``--network`` or the model's ``metadata_["network"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.cli.options import DEVICE, FINITE_FLOAT, FLOATS, LAYER_RANGE, SeedList

NOISE_MODES = ("const", "random", "none")
MODEL_FILE = "model.safetensors"


# ---------------------------------------------------------------------------------------------- helpers
def load_model_arg(path: Path, hint: str = "'--model'") -> tuple[Any, Path]:
    """``--model`` (a model file, or a run directory holding model.safetensors) -> (model, run_dir)."""
    from sfvq.quantizer import SFVQ, ModelFileError

    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise click.BadParameter(f"{path} is a directory without {MODEL_FILE}", param_hint=hint)
        path = path / MODEL_FILE
    try:
        model = SFVQ.load(path)
    except FileNotFoundError as e:
        raise click.BadParameter(str(e), param_hint=hint) from e
    except ModelFileError as e:
        raise click.BadParameter(str(e), param_hint=hint) from e
    return model, path.parent


def _network(model: Any, network: str | None) -> str:
    if network:
        return network
    recorded = (getattr(model, "metadata_", None) or {}).get("network")
    if not recorded:
        raise click.UsageError(
            "the model does not record its generator (metadata 'network'); pass --network NAME|PATH"
        )
    return str(recorded)


def load_space(
    run_dir: Path,
    model: Any,
    G: Any,
    space_kind: str | None,
    truncation_psi: float | None = None,
    noise_mode: str | None = None,
) -> Any:
    """The model's latent space: ``space.json`` beside the model, else ``--space w|z`` built fresh.

    ``truncation_psi`` / ``noise_mode`` override the saved settings when given.
    """
    from sfvq.spaces import SPACE_FILE, LatentSpace

    if (run_dir / SPACE_FILE).is_file():
        try:
            space = LatentSpace.load(run_dir, G)
        except (ValueError, KeyError, OSError) as e:
            raise click.UsageError(f"cannot use {run_dir / SPACE_FILE} with {G.name}: {e}") from e
        if space_kind is not None and space_kind != space.kind:
            raise click.BadParameter(
                f"the model was fitted in space {space.name!r} ({run_dir / SPACE_FILE}), not {space_kind!r}",
                param_hint="'--space'",
            )
    else:
        if space_kind is None:
            raise click.UsageError(
                f"no {SPACE_FILE} beside the model in {run_dir}: "
                "pass --space w|z (the space its latents are in)"
            )
        if space_kind == "features":
            raise click.BadParameter(
                f"a feature space is defined by its PCA, saved as {SPACE_FILE} + space_pca.safetensors "
                "beside the model; none found",
                param_hint="'--space'",
            )
        try:
            space = LatentSpace(G, space_kind)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--space'") from e
    if space.dim != model.n_features_in_:
        raise click.UsageError(
            f"the model is {model.n_features_in_}-D but space {space.name!r} of {G.name} is {space.dim}-D: "
            "wrong --network or --space?"
        )
    if truncation_psi is not None:
        space.truncation_psi = float(truncation_psi)
    if noise_mode is not None:
        space.noise_mode = noise_mode
    return space


def _generator(network: str, device: str) -> Any:
    from sfvq.cli.generate import _load

    return _load(network, device)


def _space_option(f: Any) -> Any:
    return click.option(
        "--space",
        "space_kind",
        type=click.Choice(["w", "z", "features"]),
        default=None,
        help="Space of the model's latents; needed only when no space.json lies beside the model.",
    )(f)


_model_opt = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    required=True,
    help="An sfvq model.safetensors, or the run directory holding one.",
)
_network_opt = click.option(
    "--network",
    default=None,
    metavar="NAME|PATH",
    help="Generator (default: the one recorded in the model).",
)
_device_opt = click.option("--device", type=DEVICE, default="cpu", show_default=True, help="Torch device.")
_outdir_opt = click.option(
    "--outdir", type=click.Path(file_okay=False, dir_okay=True, path_type=Path), required=True
)


def _fmt(v: float | None, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


# ---------------------------------------------------------------------------------------------- directions
@click.command()
@_model_opt
@click.option(
    "--bits", type=click.IntRange(2, 16), default=None, help="Bitrate (default: the model's final)."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the segment directions to OUT.safetensors + OUT.json.",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--save", "save_name", default=None, metavar="NAME", help="Save --direction under NAME in the run."
)
@click.option("--direction", "spec", default=None, metavar="b:i|b:i-j|NAME", help="What --save saves.")
@click.option("--layers", type=LAYER_RANGE, default=None, help="Inclusive layer range for --save, e.g. 4-7.")
@click.option("--negate", is_flag=True, help="With --save: store the opposite direction.")
@click.option("--overwrite", is_flag=True, help="With --save: replace a saved direction of the same name.")
def directions(
    model_path: Path,
    bits: int | None,
    out: Path | None,
    fmt: str,
    save_name: str | None,
    spec: str | None,
    layers: tuple[int, int] | None,
    negate: bool,
    overwrite: bool,
) -> None:
    """List the segment directions of one bitrate (name, bits, segment, layers, length, std) and the
    run's saved directions; export them with --out, or save a named one with --save."""
    from rich.console import Console
    from rich.table import Table

    from sfvq.directions import (
        DirectionSpecError,
        check_layers,
        check_name,
        layers_text,
        load_run_directions,
        run_latents,
        run_num_ws,
        save_named_direction,
        segment_directions,
    )
    from sfvq.io import to_json_text

    model, run_dir = load_model_arg(model_path)
    X = run_latents(run_dir, model)
    num_ws = run_num_ws(run_dir, model)
    if save_name is not None:
        if spec is None:
            raise click.UsageError("--save NAME needs --direction b:i|b:i-j|NAME (what to save)")
        try:
            check_name(save_name)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--save'") from e
        try:
            check_layers(layers, num_ws)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--layers'") from e
        try:
            d = save_named_direction(
                run_dir, save_name, spec, layers, model, -1 if negate else 1, overwrite=overwrite, X=X
            )
        except DirectionSpecError as e:
            raise click.BadParameter(str(e), param_hint="'--direction'") from e
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--save'") from e
        click.echo(
            f"saved {d.name!r} = {'-' if d.sign < 0 else ''}{spec}, layers {layers_text(d.layers, num_ws)}, "
            f"to {run_dir / 'directions.safetensors'}"
        )
        return
    if spec is not None or layers is not None or negate or overwrite:
        raise click.UsageError("--direction, --layers, --negate and --overwrite go with --save NAME")
    bits = bits if bits is not None else max(model.codebooks_)
    if bits not in model.codebooks_:
        raise click.BadParameter(
            f"no {bits}-bit curve in this model; it has bits {sorted(model.codebooks_)}",
            param_hint="'--bits'",
        )
    seg = segment_directions(model, bits, X)
    seg.meta.update(model=str(model_path), num_ws=num_ws)
    try:
        saved = load_run_directions(run_dir)
    except ValueError as e:
        raise click.UsageError(f"cannot read the run's saved directions: {e}") from e
    if out is not None:
        path = seg.save(out)
        click.echo(f"wrote {path} and {path.with_suffix('.json').name} ({len(seg)} x {seg.dim})", err=True)
    rows = seg.rows(num_ws)
    saved_rows = saved.rows(num_ws) if saved is not None else []
    if fmt == "json":
        click.echo(to_json_text({"bits": bits, "segments": rows, "saved": saved_rows}), nl=False)
        return
    console = Console()
    for title, table_rows in (
        (f"{len(rows)} segment directions at {bits} bits", rows),
        (f"{len(saved_rows)} saved directions", saved_rows),
    ):
        if not table_rows:
            continue
        table = Table(title=title)
        for col in ("name", "bits", "segment", "layers", "length", "std", "sign"):
            table.add_column(col, justify="left" if col == "name" else "right")
        for r in table_rows:
            table.add_row(
                r["name"],
                "" if r["bits"] is None else str(r["bits"]),
                r["segment"],
                r["layers"],
                _fmt(r["length"]),
                _fmt(r["std"]),
                "+" if r["sign"] > 0 else "-",
            )
        console.print(table)
    if X is None:
        console.print("std: no latents found beside the model (latents.npy), so none is shown", style="dim")


# ---------------------------------------------------------------------------------------------- edit
@click.command()
@_model_opt
@_network_opt
@_space_option
@click.option(
    "--direction", "spec", required=True, metavar="b:i|b:i-j|NAME", help="Segment spec or saved name."
)
@click.option(
    "--layers", type=LAYER_RANGE, default=None, help="Inclusive W+ layer range, e.g. 4-7 (default: all)."
)
@click.option("--sigma", type=FLOATS, default="-8,-4,0,4,8", show_default=True, help="Step sizes (columns).")
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
@click.option(
    "--noise-mode", type=click.Choice(NOISE_MODES), default=None, help="Default: the space's (const)."
)
@click.option("--images/--no-images", default=False, show_default=True, help="Also write every image.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_device_opt
@_outdir_opt
def edit(
    model_path: Path,
    network: str | None,
    space_kind: str | None,
    spec: str,
    layers: tuple[int, int] | None,
    sigma: list[float],
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
    import numpy as np
    import torch

    from sfvq.directions import (
        DirectionSpecError,
        check_layers,
        edit_full,
        layers_text,
        resolve_direction,
        run_latents,
    )
    from sfvq.generators.base import to_uint8
    from sfvq.io import labelled_grid, save_npy_with_sidecar, save_png, write_options
    from sfvq.latents import format_seeds
    from sfvq.progress import track
    from sfvq.spaces import check_finite

    model, run_dir = load_model_arg(model_path)
    net = _network(model, network)
    X = run_latents(run_dir, model)
    try:
        d = resolve_direction(spec, model, run_dir, X)
    except DirectionSpecError as e:
        raise click.BadParameter(str(e), param_hint="'--direction'") from e
    except ValueError as e:
        raise click.UsageError(f"cannot read the run's saved directions: {e}") from e
    G = _generator(net, device)
    space = load_space(run_dir, model, G, space_kind, truncation_psi, noise_mode)
    if layers is not None:
        try:
            check_layers(layers, space.num_ws)
        except ValueError as e:
            raise click.BadParameter(f"{e} (space {space.name!r})", param_hint="'--layers'") from e
        used = layers
    elif d.layers is not None:
        try:
            check_layers(d.layers, space.num_ws, f"the saved layer range of {d.name!r}")
        except ValueError as e:
            raise click.UsageError(str(e)) from e
        used = d.layers
    else:
        used = (0, space.num_ws)
    if units == "std":
        if d.std is None:
            raise click.BadParameter(
                "--units std needs the latents the curve was fitted to (latents.npy beside the model) "
                "to measure the std along the direction",
                param_hint="'--units'",
            )
        scale = d.std
    else:
        scale = 1.0
    raw_sigmas = [s * scale for s in sigma]
    if space.num_ws > 1:
        where = f"layers {layers_text(used)} of 0-{space.num_ws - 1}"
    else:
        where = f"all of space {space.name} (no style layers)"
    click.echo(
        f"direction {d.name} (length {_fmt(d.length)}, std {_fmt(d.std)}), {where}, sigma {sigma} {units}, "
        f"truncation psi {space.truncation_psi}, noise mode {space.noise_mode}"
    )
    outdir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        full = space.encode_seeds(seeds)  # (N, L, F)
        edited = edit_full(space, full, d.vector, raw_sigmas, used)  # (n_sigma, N, L, F)
        cols = []
        for k in track(range(len(sigma)), "editing", total=len(sigma)):
            with torch.random.fork_rng():
                torch.manual_seed(0)  # the same noise in every column: only the edit differs
                img = space.render_full(edited[k], batch_size)  # (N, C, H, W)
            check_finite(img, f"images at sigma {sigma[k]}")
            cols.append(to_uint8(img))  # (N, H, W, C)
    tiles = np.stack(cols, axis=1)  # (N, n_sigma, H, W, C): rows = seeds, columns = sigma
    labels = [f"seed {s}  {v:+g}" for s in seeds for v in sigma]
    N, S = tiles.shape[:2]
    save_png(outdir / "grid.png", labelled_grid(tiles.reshape(N * S, *tiles.shape[2:]), labels, cols=S))
    if images:
        for i, s in enumerate(seeds):
            for k, v in enumerate(sigma):
                save_png(outdir / "images" / f"seed{s:04d}_sigma{v:+g}.png", tiles[i, k])
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
        "generator": G.name,
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


# ---------------------------------------------------------------------------------------------- augment
@click.command()
@_model_opt
@_network_opt
@_space_option
@click.option(
    "--segment", "spec", required=True, metavar="b:i", help="Curve segment to sample along, e.g. 5:1."
)
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=500, show_default=True, help="Images.")
@click.option(
    "--jitter",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Off-segment Gaussian noise, in units of the data's per-dimension std (needs the latents).",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--noise-mode", type=click.Choice(NOISE_MODES), default=None, help="Default: the space's (const)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_device_opt
@_outdir_opt
def augment(
    model_path: Path,
    network: str | None,
    space_kind: str | None,
    spec: str,
    n: int,
    jitter: float,
    seed: int,
    noise_mode: str | None,
    batch_size: int,
    device: str,
    outdir: Path,
) -> None:
    """Images of points sampled along one curve segment, with latents.npy and labels.csv (deterministic)."""
    from sfvq.augment import parse_segment, sample_segment, write_augmentation
    from sfvq.directions import DirectionSpecError, run_latents
    from sfvq.io import write_options

    model, run_dir = load_model_arg(model_path)
    net = _network(model, network)
    try:
        bits, segment = parse_segment(spec, model)
    except DirectionSpecError as e:
        raise click.BadParameter(str(e), param_hint="'--segment'") from e
    X = run_latents(run_dir, model) if jitter > 0 else None
    if jitter > 0 and X is None:
        raise click.BadParameter(
            "--jitter > 0 needs the latents the curve was fitted to (latents.npy beside the model)",
            param_hint="'--jitter'",
        )
    G = _generator(net, device)
    space = load_space(run_dir, model, G, space_kind, None, noise_mode)
    samples = sample_segment(model, bits, segment, n, seed=seed, jitter=jitter, X=X)
    click.echo(f"sampling {n} points on segment {spec} (jitter {jitter}, seed {seed}) in space {space.name}")
    write_augmentation(space, samples, outdir, batch_size=batch_size, meta={"model": str(model_path)})
    options = {
        "model": str(model_path),
        "network": net,
        "generator": G.name,
        "space": space.name,
        "segment": spec,
        "n": n,
        "jitter": jitter,
        "jitter_scale": "per-dimension data std; the component along the segment removed",
        "seed": seed,
        "truncation_psi": space.truncation_psi,
        "noise_mode": space.noise_mode,
        "batch_size": batch_size,
        "device": device,
        "outdir": str(outdir),
    }
    write_options(outdir, "augment", options)
    click.echo(f"wrote {n} images, latents.npy, labels.csv, preview.png and options.json to {outdir}")


# ---------------------------------------------------------------------------------------------- interop
@click.group("import")
def import_() -> None:
    """Import other tools' files: the SFVQ paper's curves and directions, InterFaceGAN, GANSpace."""


@import_.command("codebooks")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--network", default=None, metavar="NAME|PATH", help="Generator the curves belong to.")
@click.option(
    "--space",
    "space_kind",
    type=click.Choice(["w", "z"]),
    default="w",
    show_default=True,
    help="Space of the curves (written to space.json when --network is given).",
)
@click.option(
    "--latents",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="(N, D) .npy of the latents: fills usage, MSE and perplexity; its path is recorded.",
)
@_device_opt
@_outdir_opt
def import_codebooks_cmd(
    folder: Path, network: str | None, space_kind: str, latents: Path | None, device: str, outdir: Path
) -> None:
    """A folder of codebook_{b}bit.npy (the paper's release) -> OUTDIR/model.safetensors (+ space.json)."""
    from sfvq.cli.fit import load_latents
    from sfvq.interop import InteropError, import_codebooks
    from sfvq.io import write_options

    X = load_latents(latents) if latents is not None else None
    space = None
    if network is not None:
        from sfvq.spaces import LatentSpace

        G = _generator(network, device)
        try:
            space = LatentSpace(G, space_kind)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="'--space'") from e
    try:
        model = import_codebooks(folder, X=X, network=network, space=space)
    except (FileNotFoundError, InteropError) as e:
        raise click.BadParameter(str(e), param_hint="'FOLDER'") from e
    if space is not None and space.dim != model.n_features_in_:
        raise click.UsageError(
            f"the codebooks are {model.n_features_in_}-D but space {space.name!r} of {space.G.name} is "
            f"{space.dim}-D"
        )
    if latents is not None:
        model.metadata_["data"] = {"name": latents.name, "path": str(latents.resolve())}
    outdir.mkdir(parents=True, exist_ok=True)
    model.save(outdir / MODEL_FILE)
    if space is not None:
        space.save(outdir)
    write_options(
        outdir,
        "import codebooks",
        {
            "folder": str(folder),
            "network": network,
            "space": space_kind,
            "latents": latents,
            "outdir": outdir,
        },
    )
    click.echo(
        f"imported bits {sorted(model.codebooks_)} ({model.n_features_in_}-D) -> {outdir / MODEL_FILE}"
    )


@import_.command("directions")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--from",
    "kind",
    type=click.Choice(["paper", "interfacegan", "ganspace"]),
    required=True,
    help="paper: a folder of <name>.npy + layer table; interfacegan: (1, D) .npy files; ganspace: .npz.",
)
@click.option("--layer-table", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--count", type=click.IntRange(min=1), default=None, help="GANSpace: keep the first COUNT.")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Add them to this run's saved directions (usable by `sfvq edit --direction NAME`).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Or write them to OUT.safetensors + OUT.json.",
)
@click.option("--overwrite", is_flag=True, help="Replace saved directions of the same names (--run).")
def import_directions_cmd(
    sources: tuple[Path, ...],
    kind: str,
    layer_table: Path | None,
    count: int | None,
    run_dir: Path | None,
    out: Path | None,
    overwrite: bool,
) -> None:
    """Import directions (paper folder, InterFaceGAN boundaries, GANSpace components) into sfvq's format."""
    from sfvq.directions import DirectionSet, check_layers, check_name, load_run_directions, run_num_ws
    from sfvq.interop import InteropError, load_ganspace, load_interfacegan_boundary, load_paper_directions

    if (run_dir is None) == (out is None):
        raise click.UsageError("give exactly one of --run RUN (add to a run) or --out FILE")
    if layer_table is not None and kind != "paper":
        raise click.BadParameter("a layer table goes with --from paper", param_hint="'--layer-table'")
    if count is not None and kind != "ganspace":
        raise click.BadParameter("--count goes with --from ganspace", param_hint="'--count'")
    sets = []
    try:
        for src in sources:
            if kind == "paper":
                sets.append(load_paper_directions(src, layer_table if layer_table is not None else True))
            elif kind == "interfacegan":
                sets.append(load_interfacegan_boundary(src))
            else:
                sets.append(
                    load_ganspace(src, count=count, prefix=f"{src.stem}_pc" if len(sources) > 1 else "pc")
                )
    except (FileNotFoundError, InteropError) as e:
        raise click.BadParameter(str(e), param_hint="'SOURCES'") from e
    dims = {s.dim for s in sets}
    if len(dims) != 1:
        raise click.UsageError(f"the sources disagree on the dimension: {sorted(dims)}")
    merged = DirectionSet(dim=dims.pop(), meta={"imported": [s.meta.get("imported") for s in sets]})
    try:
        for s in sets:
            for d in s:
                merged.add(d)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    if out is not None:
        path = merged.save(out)
        click.echo(f"wrote {len(merged)} directions ({', '.join(merged.names)}) to {path}")
        return
    model, _ = load_model_arg(run_dir, "'--run'")
    if model.n_features_in_ != merged.dim:
        raise click.UsageError(
            f"the directions are {merged.dim}-D but the run's model is {model.n_features_in_}-D"
        )
    num_ws = run_num_ws(run_dir, model)
    try:
        saved = load_run_directions(run_dir) or DirectionSet(dim=merged.dim, meta={"num_ws": num_ws})
        for d in merged:
            check_name(d.name)
            check_layers(d.layers, num_ws, f"layer range of {d.name!r}")
            if d.name in saved and not overwrite:
                raise ValueError(f"{d.name!r} is already saved in {run_dir}; pass --overwrite to replace it")
            saved.add(d, overwrite=overwrite)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    path = saved.save(run_dir / "directions")
    click.echo(f"added {len(merged)} directions ({', '.join(merged.names)}) to {path}")


@click.group("export")
def export() -> None:
    """Export curves and directions in the SFVQ paper's formats (.npy files + inclusive layer table)."""


@export.command("codebooks")
@_model_opt
@_outdir_opt
def export_codebooks_cmd(model_path: Path, outdir: Path) -> None:
    """Write OUTDIR/codebook_{b}bit.npy for every bitrate of the model."""
    from sfvq.interop import export_codebooks
    from sfvq.io import write_options

    model, _ = load_model_arg(model_path)
    paths = export_codebooks(model, outdir)
    write_options(outdir, "export codebooks", {"model": str(model_path), "outdir": str(outdir)})
    click.echo(f"wrote {', '.join(p.name for p in paths)} to {outdir}")


@export.command("directions")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Export the run's saved directions (with --bits: a bitrate's segments).",
)
@click.option("--bits", type=click.IntRange(2, 16), default=None)
@click.option(
    "--directions",
    "directions_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Or export a directions file (.safetensors).",
)
@click.option("--table-name", default="Layers.txt", show_default=True, help="File name of the layer table.")
@_outdir_opt
def export_directions_cmd(
    model_path: Path | None, bits: int | None, directions_file: Path | None, table_name: str, outdir: Path
) -> None:
    """Write OUTDIR/<name>.npy unit vectors and an inclusive layer table (names become file-safe)."""
    from sfvq.directions import DirectionSet, load_run_directions, run_latents, run_num_ws, segment_directions
    from sfvq.interop import InteropError, export_paper_directions
    from sfvq.io import write_options

    if (model_path is None) == (directions_file is None):
        raise click.UsageError("give exactly one of --model or --directions")
    num_ws = None
    if directions_file is not None:
        if bits is not None:
            raise click.BadParameter("--bits goes with --model", param_hint="'--bits'")
        try:
            dset = DirectionSet.load(directions_file)
        except (FileNotFoundError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="'--directions'") from e
        num_ws = dset.meta.get("num_ws")
    else:
        model, run_dir = load_model_arg(model_path)
        num_ws = run_num_ws(run_dir, model)
        if bits is not None:
            if bits not in model.codebooks_:
                raise click.BadParameter(
                    f"no {bits}-bit curve; the model has bits {sorted(model.codebooks_)}",
                    param_hint="'--bits'",
                )
            dset = segment_directions(model, bits, run_latents(run_dir, model))
        else:
            dset = load_run_directions(run_dir)
            if dset is None or not len(dset):
                raise click.UsageError(f"{run_dir} has no saved directions; pass --bits to export segments")
    try:
        export_paper_directions(dset, outdir, table_name=table_name, num_ws=num_ws)
    except (InteropError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    write_options(
        outdir,
        "export directions",
        {
            "model": model_path,
            "bits": bits,
            "directions": directions_file,
            "table_name": table_name,
            "outdir": outdir,
            "count": len(dset),
        },
    )
    click.echo(f"wrote {len(dset)} direction files and {table_name} to {outdir}")
