"""``sfvq sample`` (latents to disk) and ``sfvq generate`` (images for seeds), NVIDIA-style options."""

from __future__ import annotations

from pathlib import Path

import click

from sfvq.cli.common import check_sampling, load_network
from sfvq.cli.options import (
    SeedList,
    batch_size_option,
    device_option,
    network_option,
    noise_mode_option,
    outdir_option,
    space_option,
    truncation_options,
)
from sfvq.parsing import MAX_SEED

SAMPLE_SPACES = ("z", "w", "w+", "s")  # of sfvq.parsing.SPACE_NAMES: the latents a file can hold


@click.command()
@network_option(required=True)
@space_option(
    SAMPLE_SPACES,
    "sample",
    help="Latent space to store (w+: all style layers; s: StyleSpace, the style codes of every layer, "
    "s:coarse|middle|fine|A-B a group). Default: w if the generator has one, else z.",
)
@click.option("--n", "n", type=click.IntRange(min=1), default=None, help="Number of latents (default 10000).")
@click.option(
    "--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Seed of the random stream (default 0)."
)
@click.option(
    "--seeds",
    type=SeedList(max_count=10_000_000),
    default=None,
    help="One z per seed, as NVIDIA's tools draw it (e.g. 0-999); instead of --n/--seed.",
)
@truncation_options()
@batch_size_option(1024)
@device_option()
@click.option(
    "--shard-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Write shards of this many rows (shards/*.npy) and a manifest.json, for data larger than memory "
    "and for several processes (torchrun); row i is the same as in one latents.npy.",
)
@outdir_option("Writes latents.npy, latents.json and options.json here.")
def sample(
    network: str,
    space: str | None,
    n: int | None,
    seed: int | None,
    seeds: list[int] | None,
    truncation_psi: float,
    trunc_cutoff: int | None,
    class_idx: int | None,
    batch_size: int,
    device: str,
    shard_rows: int | None,
    outdir: Path,
) -> None:
    """Sample latents of a generator (z, w, w+ or s) and write them as an (N, D) float32 .npy.

    With --shard-rows, as shards and a manifest.json (which `sfvq fit --latents` reads); under torchrun
    each process writes its shards, and the files are those one process writes.
    """
    from sfvq import dist
    from sfvq.generators.registry import generator_sha256
    from sfvq.io import write_options
    from sfvq.latents import check_space, format_seeds, latent_dim, sample_latent_shards, sample_latents

    if dist.init(device=device):
        click.get_current_context().call_on_close(dist.shutdown)
        device = dist.device_for_rank(device)
        if shard_rows is None:
            raise click.UsageError("several processes write shards: give --shard-rows")

    if seeds is not None and (n is not None or seed is not None):
        raise click.UsageError("--seeds gives one z per seed; do not combine it with --n or --seed")
    if seeds is None:
        n = 10_000 if n is None else n
        seed = 0 if seed is None else seed
    G = load_network(network, device)
    if space is None:
        space = "w" if "w" in G.spaces else "z"
    try:
        check_space(G, space)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--space'") from e
    check_sampling(G, truncation_psi, trunc_cutoff, class_idx)
    _check_disk(outdir, len(seeds) if seeds is not None else n, latent_dim(G, space))
    if space == "z" and (truncation_psi != 1.0 or trunc_cutoff is not None):
        click.echo(
            "note: space z stores the raw z; the truncation is recorded in latents.json and applies "
            "when the z are mapped",
            err=True,
        )
    outdir.mkdir(parents=True, exist_ok=True)
    out_path = outdir / "latents.npy"
    common = {
        "n": None if seeds is not None else n,
        "space": space,
        "seed": 0 if seed is None else seed,
        "truncation_psi": truncation_psi,
        "truncation_cutoff": trunc_cutoff,
        "class_idx": class_idx,
        "batch_size": batch_size,
        "progress": True,
        "seeds": seeds,
        "generator_sha256": generator_sha256(network),
    }
    if shard_rows is not None:
        out_path = sample_latent_shards(G, outdir, shard_rows=shard_rows, **common)
    else:
        sample_latents(G, out_path=out_path, **common)
    if not dist.is_main():
        return
    count = len(seeds) if seeds is not None else n
    options = {
        "network": network,
        "space": space,
        "n": count,
        "seed": seed,
        "seeds": None if seeds is None else format_seeds(seeds),
        "trunc": truncation_psi,
        "trunc_cutoff": trunc_cutoff,
        "class": class_idx,
        "batch_size": batch_size,
        "device": device,
        "shard_rows": shard_rows,
        "outdir": str(outdir),
    }
    write_options(outdir, "sample", options)
    click.echo(f"wrote {out_path} ({count}, {latent_dim(G, space)}) float32, space {space}, from {G.name}")


def _check_disk(outdir: Path, n: int, dim: int) -> None:
    """A bad ``--n`` when the (n, dim) float32 latents would not fit on the disk of ``outdir``."""
    import shutil

    need = 4 * n * dim + 4096  # the array and its .npy header
    here = Path(outdir).absolute()
    while not here.exists() and here.parent != here:
        here = here.parent
    try:
        free = shutil.disk_usage(here).free
    except OSError:
        return
    if need > free:
        raise click.BadParameter(
            f"{n:,} latents of {dim} floats need {need / 2**30:.1f} GiB; {free / 2**30:.1f} GiB is free "
            f"on the disk of {outdir}",
            param_hint="'--n'",
        )


@click.command()
@network_option(required=True)
@click.option("--seeds", type=SeedList(max_count=10_000), required=True, help="Seeds, e.g. 0-15,20.")
@truncation_options()
@noise_mode_option()
@batch_size_option(16)
@device_option()
@click.option("--grid/--no-grid", default=True, show_default=True, help="Also write a labelled grid.png.")
@click.option(
    "--grid-cols", type=click.IntRange(min=1), default=None, help="Images per grid row (default: square)."
)
@outdir_option("Writes seed0000.png ..., grid.png and options.json here.")
def generate(
    network: str,
    seeds: list[int],
    truncation_psi: float,
    trunc_cutoff: int | None,
    noise_mode: str,
    class_idx: int | None,
    batch_size: int,
    grid: bool,
    grid_cols: int | None,
    device: str,
    outdir: Path,
) -> None:
    """Generate one image per seed (seedNNNN.png) and a labelled grid.

    Under torchrun each process renders its share of the batches; rank 0 draws the grid from the files.
    """
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from sfvq import dist
    from sfvq.generators.base import to_uint8
    from sfvq.images import labelled_grid
    from sfvq.io import save_png, write_options
    from sfvq.latents import class_vectors, format_seeds, z_for_seeds

    if dist.init(device=device):
        click.get_current_context().call_on_close(dist.shutdown)
        device = dist.device_for_rank(device)
    G = load_network(network, device)
    check_sampling(G, truncation_psi, trunc_cutoff, class_idx)
    outdir.mkdir(parents=True, exist_ok=True)
    tiles: list[np.ndarray] = []
    starts = dist.my_items(range(0, len(seeds), batch_size))  # this process's batches
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn())
    bar_on = dist.is_main()
    with Progress(*columns, console=Console(stderr=True), disable=not bar_on) as bar, torch.no_grad():
        task = bar.add_task("generate", total=sum(len(seeds[s : s + batch_size]) for s in starts))
        for start in starts:
            batch = seeds[start : start + batch_size]
            z = torch.from_numpy(z_for_seeds(G, batch, truncation_psi)).to(G.device)  # (B, z_dim)
            c = class_vectors(G, class_idx, len(batch))  # (B, c_dim) or None
            ws = G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=trunc_cutoff)  # (B, L, D)
            images = to_uint8(G.synthesis(ws, noise_mode=noise_mode))  # (B, H, W, C) uint8
            for s, img in zip(batch, images, strict=True):
                save_png(outdir / f"seed{s:04d}.png", img)
                if grid:
                    tiles.append(img)
            bar.advance(task, len(batch))
    dist.barrier()  # every image is on disk
    if not dist.is_main():
        return
    if grid and dist.world_size() > 1:  # other processes rendered some: read the tiles back
        from PIL import Image

        tiles = []
        for s in seeds:
            with Image.open(outdir / f"seed{s:04d}.png") as im:
                a = np.asarray(im)
            tiles.append(a[:, :, None] if a.ndim == 2 else a)
    if grid:
        labels = [f"seed {s}" for s in seeds]
        save_png(outdir / "grid.png", labelled_grid(np.stack(tiles), labels, cols=grid_cols))
    options = {
        "network": network,
        "seeds": format_seeds(seeds),
        "trunc": truncation_psi,
        "trunc_cutoff": trunc_cutoff,
        "noise_mode": noise_mode,
        "class": class_idx,
        "batch_size": batch_size,
        "grid": grid,
        "grid_cols": grid_cols,
        "device": device,
        "outdir": str(outdir),
        "generator": G.name,
    }
    write_options(outdir, "generate", options)
    click.echo(f"wrote {len(seeds)} images to {outdir}" + (" and grid.png" if grid else ""))
