"""``sfvq import ...`` and ``sfvq export ...``: other tools' files in and out of sfvq's formats.

``import codebooks`` reads the SFVQ paper's released curves into a run; ``import directions`` reads the
paper's directions, InterFaceGAN boundaries or GANSpace components into a run's saved directions (or a
file); ``export codebooks`` / ``export directions`` write the paper's formats back.
"""

from __future__ import annotations

from pathlib import Path

import click

from sfvq.cli.common import carry_latents, load_network, open_run, publishing, read_latents_arg
from sfvq.cli.options import (
    OutFile,
    device_option,
    model_option,
    network_option,
    outdir_option,
    space_option,
)

MODEL_FILE = "model.safetensors"


@click.group("import")
def import_() -> None:
    """Import other tools' files: the SFVQ paper's curves and directions, InterFaceGAN, GANSpace."""


@import_.command("codebooks")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@network_option(help="Generator the curves belong to.")
@space_option(
    ("w", "z"),
    "import codebooks",
    dest="space_kind",
    default="w",
    help="Space of the curves (written to space.json when --network is given).",
)
@click.option(
    "--latents",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="(N, D) .npy of the latents: fills usage, MSE and perplexity; its path is recorded.",
)
@device_option()
@outdir_option(staged=True)
def import_codebooks_cmd(
    folder: Path, network: str | None, space_kind: str, latents: Path | None, device: str, outdir: Path
) -> None:
    """A folder of codebook_{b}bit.npy (the paper's release) -> OUTDIR/model.safetensors (+ space.json)."""
    from sfvq.interop import InteropError, import_codebooks
    from sfvq.io import write_options

    X = read_latents_arg(latents) if latents is not None else None
    space = None
    if network is not None:
        from sfvq.spaces import LatentSpace

        G = load_network(network, device)
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
    with publishing(outdir) as st:  # the model, space and options published as one run
        if latents is not None:
            carry_latents(latents, outdir, st)
        model.metadata_["run_id"] = st.run_id
        model.save(st.path / MODEL_FILE)
        if space is not None:
            space.save(st.path)
        write_options(
            st.path,
            "import codebooks",
            {
                "folder": str(folder),
                "network": network,
                "space": space_kind,
                "latents": latents,
                "outdir": outdir,
            },
            run_id=st.run_id,
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
    type=OutFile(),
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
    from sfvq.directions import DirectionSet, check_layers, check_name
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
    run = open_run(run_dir, hint="'--run'")
    if run.model.n_features_in_ != merged.dim:
        raise click.UsageError(
            f"the directions are {merged.dim}-D but the run's model is {run.model.n_features_in_}-D"
        )
    num_ws = run.num_ws
    try:
        saved = run.directions() or DirectionSet(dim=merged.dim, meta={"num_ws": num_ws})
        for d in merged:
            check_name(d.name)
            check_layers(d.layers, num_ws, f"layer range of {d.name!r}")
            if d.name in saved and not overwrite:
                raise ValueError(f"{d.name!r} is already saved in {run.path}; pass --overwrite to replace it")
            saved.add(d, overwrite=overwrite)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    path = saved.save(run.path / "directions")
    click.echo(f"added {len(merged)} directions ({', '.join(merged.names)}) to {path}")


@click.group("export")
def export() -> None:
    """Export curves and directions in the SFVQ paper's formats (.npy files + inclusive layer table)."""


@export.command("codebooks")
@model_option()
@outdir_option()
def export_codebooks_cmd(model_path: Path, outdir: Path) -> None:
    """Write OUTDIR/codebook_{b}bit.npy for every bitrate of the model."""
    from sfvq.interop import export_codebooks
    from sfvq.io import write_options

    paths = export_codebooks(open_run(model_path).model, outdir)
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
@outdir_option()
def export_directions_cmd(
    model_path: Path | None, bits: int | None, directions_file: Path | None, table_name: str, outdir: Path
) -> None:
    """Write OUTDIR/<name>.npy unit vectors and an inclusive layer table (names become file-safe)."""
    from sfvq.directions import DirectionSet, segment_directions
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
        run = open_run(model_path)
        model = run.model
        num_ws = run.num_ws
        if bits is not None:
            if bits not in model.codebooks_:
                raise click.BadParameter(
                    f"no {bits}-bit curve; the model has bits {sorted(model.codebooks_)}",
                    param_hint="'--bits'",
                )
            dset = segment_directions(model, bits, run.latents)
        else:
            dset = run.directions()
            if dset is None or not len(dset):
                raise click.UsageError(f"{run.path} has no saved directions; pass --bits to export segments")
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
