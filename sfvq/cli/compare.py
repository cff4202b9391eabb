"""``sfvq compare`` (side-by-side edit grids of SFVQ and the baselines) and ``sfvq evaluate`` (the
re-scoring benchmark with the offline face scorers).

Both build each method's directions with :func:`sfvq.baselines.method_directions` (or read them back
with ``--directions METHOD=DIR`` from an earlier run's ``directions/<method>/``), and save every set in
``OUTDIR/directions/<method>/`` (``directions.safetensors`` + ``space.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.cli.common import check_steps, load_network, open_run, run_generator, run_network, run_space
from sfvq.cli.options import (
    FINITE_FLOAT,
    FLOATS,
    LAYER_RANGE_OR_AUTO,
    SeedList,
    batch_size_option,
    device_option,
    network_option,
    outdir_option,
)

UNITS = click.Choice(["std", "raw"])


# ---------------------------------------------------------------------------------------------- shared
def _methods(text: str) -> list[str]:
    from sfvq.baselines import parse_methods

    try:
        return parse_methods(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--methods'") from e


def _saved(items: tuple[str, ...], methods: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(f"{item!r} is not METHOD=DIR", param_hint="'--directions'")
        name = name.strip()
        if name not in methods:
            raise click.BadParameter(
                f"{name!r} is not one of --methods ({', '.join(methods)})", param_hint="'--directions'"
            )
        if name in out:
            raise click.BadParameter(f"{name!r} is given twice", param_hint="'--directions'")
        out[name] = Path(path.strip())
    return out


def build_methods(
    methods: list[str],
    *,
    network: str | None,
    model_path: Path | None,
    k: int,
    n_samples: int,
    seed: int,
    bits: int | None,
    layers: tuple[int, int] | None,
    latentclr_steps: int,
    saved: dict[str, Path],
    device: str,
    outdir: Path,
    console: Any,
    write: bool = True,
    candidates: str = "std",
) -> tuple[Any, str, list[Any]]:
    """Load the generator (and the sfvq model when given), build or read every method's directions,
    save them under ``outdir/directions/`` (unless ``write`` is False). Returns (G, network,
    [MethodDirections]). ``candidates="annotations"``: the sfvq method's k segments are the ones the run's
    annotations say move a score most (:func:`sfvq.evaluation.benchmark.annotated_candidates`)."""
    from sfvq.baselines import load_method, method_directions, save_method
    from sfvq.directions import check_layers

    run = None
    if model_path is not None:
        if "sfvq" not in methods:
            raise click.BadParameter(
                "--model is used by the sfvq method; add sfvq to --methods", param_hint="'--model'"
            )
        run = open_run(model_path, network=network, device=device)
        network = run_network(run)
    if network is None:
        raise click.UsageError("pass --network NAME|PATH (or --model of a run that records it)")
    if candidates == "annotations" and (run is None or "sfvq" in saved):
        raise click.BadParameter(
            "annotations choose among a run's segments: give --model RUN (not --directions sfvq=...)",
            param_hint="'--candidates'",
        )
    G = run_generator(run) if run is not None else load_network(str(network), device)
    if layers is not None:
        try:
            check_layers(layers, G.num_ws)
        except ValueError as e:
            raise click.BadParameter(f"{e} ({G.name})", param_hint="'--layers'") from e
    model = space = X = None
    if run is not None:
        model, space, X = run.model, run_space(run), run.latents
        if bits is None:
            bits = min(max(model.codebooks_), 4)
        if bits not in model.codebooks_:
            raise click.BadParameter(
                f"the model has bits {sorted(model.codebooks_)}, not {bits}", param_hint="'--bits'"
            )
    out = []
    for m in methods:
        if m in saved:
            try:
                md = load_method(saved[m], G, m)
            except (FileNotFoundError, ValueError, KeyError) as e:
                raise click.BadParameter(f"{m}: {e}", param_hint="'--directions'") from e
            console.print(f"{m}: read {len(md.directions)} directions ({md.space.name}) from {saved[m]}")
            if len(md.directions) > k:
                from sfvq.directions import DirectionSet

                md.directions = DirectionSet(
                    list(md.directions)[:k], dim=md.directions.dim, meta=md.directions.meta
                )
        else:
            console.print(f"{m}: building {k} directions ...")
            by_notes = m == "sfvq" and candidates == "annotations"
            try:
                md = method_directions(
                    m, G, k=2**bits if by_notes else k, n=n_samples, seed=seed, layers=layers, model=model,
                    model_space=space, model_latents=X, bits=bits, latentclr={"steps": latentclr_steps},
                    progress=False,
                )  # fmt: skip
                if by_notes:
                    from sfvq.annotate import read_annotations
                    from sfvq.evaluation.benchmark import annotated_candidates

                    run_id = (getattr(model, "metadata_", None) or {}).get("run_id")
                    notes = read_annotations(run.path, run_id)
                    md.directions = annotated_candidates(md.directions, notes, bits, k)
            except ValueError as e:
                raise click.UsageError(f"{m}: {e}") from e
            extra = "".join(f", {key} {v}" for key, v in md.info.items())
            console.print(
                f"{m}: {len(md.directions)} directions in {md.space.name} ({md.seconds:.1f} s{extra})"
            )
        if write:
            save_method(md, outdir / "directions" / m)
        out.append(md)
    return G, str(network), out


def _auto_ranges(
    mds: list[Any], model_path: Path | None, network: str | None, device: str, console: Any
) -> dict[tuple[str, str], tuple[int, int] | None]:
    """``--layers auto``: each direction's range, {(method, name): range or None (all layers)}: sfvq
    segments of a ``--model`` run from its annotations.json, every other direction computed now by the
    same criterion (:func:`sfvq.annotate.direction_layers`, one set of seed renders per space)."""
    from sfvq.annotate import AnnotationError, Renderer, auto_layers, direction_layers

    run = open_run(model_path, network=network, device=device) if model_path is not None else None
    out: dict[tuple[str, str], tuple[int, int] | None] = {}
    for md in mds:
        renderer = Renderer(md.space, (0, 1, 2, 3)) if md.space.num_ws > 1 else None
        for d in md.directions:
            try:
                if run is not None and md.method == "sfvq":
                    out[md.method, d.name], _ = auto_layers(run, d, md.space)
                else:
                    out[md.method, d.name], _ = direction_layers(md.space, d, renderer=renderer)
            except AnnotationError as e:
                raise click.BadParameter(f"{md.method} {d.name}: {e}", param_hint="'--layers'") from e
        console.print(f"{md.method}: --layers auto found each direction's range")
    return out


def _common(f: Any) -> Any:
    opts = [
        network_option(help="Generator (default: the --model's)."),
        click.option(
            "--model",
            "model_path",
            type=click.Path(path_type=Path),
            default=None,
            help="An sfvq run (or its model.safetensors) for the sfvq method; default: fit a curve here.",
        ),
        click.option(
            "--methods",
            default="sfvq,ganspace,sefa,latentclr",
            show_default=True,
            help="Comma-separated: sfvq, ganspace, ganspace-latent, ganspace-features, sefa, latentclr.",
        ),
        click.option(
            "--bits",
            type=click.IntRange(2, 16),
            default=None,
            help="sfvq: bitrate whose segments are used (default 4, or the model's finest if lower).",
        ),
        click.option(
            "--layers",
            type=LAYER_RANGE_OR_AUTO,
            default=None,
            help="Inclusive W+ layer range (StyleGAN), e.g. 4-7; compare also takes auto: each direction's "
            "own range (sfvq segments from the run's annotations.json, the rest computed the same way).",
        ),
        click.option(
            "--n-samples",
            type=click.IntRange(min=100),
            default=5000,
            show_default=True,
            help="Latents sampled for PCAs, the on-the-spot curve and the std along directions.",
        ),
        click.option(
            "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Sampling seed."
        ),
        click.option(
            "--latentclr-steps",
            type=click.IntRange(min=1),
            default=300,
            show_default=True,
            help="LatentCLR training steps.",
        ),
        click.option(
            "--directions",
            "saved",
            multiple=True,
            metavar="METHOD=DIR",
            help="Reuse a method's saved directions (OUTDIR/directions/METHOD of an earlier run).",
        ),
        batch_size_option(64),
        device_option(),
        outdir_option(),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


# ---------------------------------------------------------------------------------------------- compare
@click.command()
@_common
@click.option("--k", type=click.IntRange(1, 64), default=5, show_default=True, help="Directions per method.")
@click.option("--seeds", type=SeedList(max_count=64), default="0-3", show_default=True, help="Seeds shown.")
@click.option("--sigma", type=FLOATS, default="-3,0,3", show_default=True, help="Step sizes.")
@click.option(
    "--units", type=UNITS, default="std", show_default=True, help="std: sigma times the data's std."
)
@click.option(
    "--add-to-run",
    is_flag=True,
    help="With --model: save the baselines' directions that live in the run's space into the run, "
    "named METHOD-NAME, for `sfvq edit --direction`.",
)
def compare(
    network: str | None,
    model_path: Path | None,
    methods: str,
    bits: int | None,
    layers: tuple[int, int] | None,
    n_samples: int,
    seed: int,
    latentclr_steps: int,
    saved: tuple[str, ...],
    batch_size: int,
    device: str,
    outdir: Path,
    k: int,
    seeds: list[int],
    sigma: list[float],
    units: str,
    add_to_run: bool,
) -> None:
    """Edit grids of each method's top-k directions at the same seeds, sigmas and layer range:
    OUTDIR/<method>.png (rows = directions, columns = seed x sigma) and OUTDIR/index.html."""
    import numpy as np
    from rich.console import Console

    from sfvq.directions import layers_text
    from sfvq.generators.base import to_uint8
    from sfvq.images import labelled_grid
    from sfvq.io import save_png, write_options
    from sfvq.report import CompareSection, write_compare_page
    from sfvq.spaces import check_finite

    console = Console(stderr=True)
    names = _methods(methods)
    saved_dirs = _saved(saved, names)
    if add_to_run and model_path is None:
        raise click.BadParameter(
            "needs --model RUN (the run to add the directions to)", param_hint="'--add-to-run'"
        )
    outdir.mkdir(parents=True, exist_ok=True)
    auto = layers == "auto"
    G, net, mds = build_methods(
        names, network=network, model_path=model_path, k=k, n_samples=n_samples, seed=seed, bits=bits,
        layers=None if auto else layers, latentclr_steps=latentclr_steps, saved=saved_dirs, device=device,
        outdir=outdir, console=console,
    )  # fmt: skip
    ranges = _auto_ranges(mds, model_path, network, device, console) if auto else {}
    if units == "std":
        for md in mds:
            missing = [d.name for d in md.directions if d.std is None or not d.std > 0]
            if missing:
                raise click.BadParameter(
                    f"{md.method}: no std along {', '.join(missing[:4])} (a model without latents.npy?)",
                    param_hint="'--units'",
                )
    if auto:
        where = "each direction's own layer range (--layers auto), shown after its name"
    else:
        where = f"layers {layers_text(layers)} of 0-{G.num_ws - 1}" if layers is not None else "all layers"
    sections, files = [], {}
    for md in mds:
        full = md.space.encode_seeds(seeds)  # (S, L, F)
        tiles, labels = [], []
        for d in md.directions:
            scale = d.std if units == "std" else 1.0
            use = ranges[md.method, d.name] if auto else layers if layers is not None else d.layers
            raw = [s * scale for s in sigma]
            check_steps(sigma, raw)
            imgs = md.space.render_edits(full, [d.vector], raw, use, batch_size)
            try:
                check_finite(imgs, f"{md.method} {d.name} images")  # (S, 1, T, C, H, W)
            except ValueError as e:
                raise click.BadParameter(
                    f"{e}: a step of --sigma {max(sigma, key=abs):g} is too large for {G.name}",
                    param_hint="'--sigma'",
                ) from e
            tiles.append(to_uint8(imgs.reshape(-1, *imgs.shape[3:])))  # (S*T, H, W, C) seed-major
            name = f"{d.name} [{layers_text(use, md.space.num_ws)}]" if auto else d.name
            labels += [f"{name} s{s} {v:+g}" for s in seeds for v in sigma]
        grid = labelled_grid(np.concatenate(tiles), labels, cols=len(seeds) * len(sigma))
        files[md.method] = save_png(outdir / f"{md.method}.png", grid)
        rows = [(d.name, d.std, d.source) for d in md.directions]
        sections.append(CompareSection(md.method, md.space.name, grid, rows))
    write_compare_page(outdir / "index.html", names, G.name, seeds, sigma, units, where, sections)
    write_options(
        outdir,
        "compare",
        {
            "network": net, "generator": G.name, "model": model_path, "methods": names, "k": k,
            "seeds": seeds, "sigma": sigma, "units": units,
            "layers": "auto" if auto else None if layers is None else list(layers), "bits": bits,
            "n_samples": n_samples, "seed": seed, "latentclr_steps": latentclr_steps,
            "directions": {m: str(p) for m, p in saved_dirs.items()},
            "spaces": {md.method: md.space.describe() for md in mds}, "device": device, "outdir": outdir,
            "auto_layers": {f"{m}/{n}": None if r is None else list(r) for (m, n), r in ranges.items()},
        },
    )  # fmt: skip
    click.echo(f"wrote {', '.join(p.name for p in files.values())}, index.html and directions/ to {outdir}")
    if add_to_run:
        run_dir = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
        add_baselines_to_run(run_dir, mds, G.num_ws)


def add_baselines_to_run(run_dir: Path, mds: list[Any], num_ws: int) -> list[str]:
    """Save the non-sfvq methods' directions that live in the run's space (same W or z space, same dim)
    into ``run_dir/directions.*`` as ``METHOD-NAME`` (replacing earlier ones of those names). Feature-space
    sets are skipped unless they use the run's own PCA. Returns the names saved."""
    from sfvq.directions import RUN_DIRECTIONS, Direction, DirectionSet, load_run_directions

    run_space = next(md.space for md in mds if md.method == "sfvq")
    saved = load_run_directions(run_dir) or DirectionSet(dim=run_space.dim, meta={"num_ws": num_ws})
    added = []
    for md in mds:
        if md.method == "sfvq":
            continue
        same = md.space is run_space or (
            md.space.kind in ("w", "z") and md.space.kind == run_space.kind and md.space.dim == run_space.dim
        )
        if not same:
            click.echo(
                f"{md.method}: not added to the run (space {md.space.name}, the run's is {run_space.name})"
            )
            continue
        for d in md.directions:
            name = f"{md.method}-{d.name}"
            source = {**d.source, "method": md.method, "direction": d.name}
            saved.add(
                Direction(name, d.vector, source, d.layer_start, d.layer_stop, d.length, d.std, 1),
                overwrite=True,
            )
            added.append(name)
    if added:
        path = saved.save(run_dir / RUN_DIRECTIONS)
        click.echo(f"added {len(added)} directions to {path}: {', '.join(added)}")
    return added


# ---------------------------------------------------------------------------------------------- evaluate
@click.command()
@_common
@click.option("--k", type=click.IntRange(1, 64), default=10, show_default=True, help="Candidates per method.")
@click.option(
    "--n", type=click.IntRange(min=2), default=100, show_default=True, help="Evaluation seeds 0..n-1."
)
@click.option(
    "--steps",
    type=FLOATS,
    default="1,2,3",
    show_default=True,
    help="Positive step sizes along each best direction (0 is added).",
)
@click.option(
    "--units", type=UNITS, default="std", show_default=True, help="std: steps times the data's std."
)
@click.option(
    "--screen-n",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Seeds (from 1,000,000 on) used to pick each method's best direction per attribute.",
)
@click.option(
    "--match",
    type=FINITE_FLOAT,
    default=0.9,
    show_default=True,
    help="Matched change = MATCH x the smallest reach among the methods.",
)
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True, help="Resamples.")
@click.option(
    "--ssim/--no-ssim", default=True, show_default=True, help="Also measure SSIM to the unedited image."
)
@click.option(
    "--candidates",
    type=click.Choice(["std", "annotations"]),
    default="std",
    show_default=True,
    help="The sfvq method's k candidates: the segments with the largest std, or (with --model RUN) the ones "
    "the run's annotations.json says move a score most, the scores taking turns (sfvq annotate first).",
)
def evaluate(
    network: str | None,
    model_path: Path | None,
    methods: str,
    bits: int | None,
    layers: tuple[int, int] | None,
    n_samples: int,
    seed: int,
    latentclr_steps: int,
    saved: tuple[str, ...],
    batch_size: int,
    device: str,
    outdir: Path,
    k: int,
    n: int,
    steps: list[float],
    units: str,
    screen_n: int,
    match: float,
    bootstrap: int,
    ssim: bool,
    candidates: str,
) -> None:
    """Re-score each method's directions with the offline face scorers (age, gender, smile, yaw; identity;
    SSIM): per method and attribute the best direction, its change per unit step, and the identity
    distance and other attributes' change at a matched change, with bootstrap intervals.
    Writes OUTDIR/table.md, results.json, curves.png, figures/<method>.png and options.json."""
    from rich.console import Console

    from sfvq.evaluation import (
        EvalConfig,
        curves_plot,
        markdown_table,
        method_figure,
        run_evaluation,
        summarise,
    )
    from sfvq.io import atomic_path, save_png, write_json, write_options

    console = Console(stderr=True)
    if layers == "auto":
        raise click.BadParameter(
            "auto is taken by sfvq compare, edit and augment; evaluate needs a range such as 4-7",
            param_hint="'--layers'",
        )
    names = _methods(methods)
    saved_dirs = _saved(saved, names)
    config = EvalConfig(
        n=n, screen_n=screen_n, steps=tuple(steps), units=units, layers=layers, match=match,
        bootstrap=bootstrap, seed=seed, batch_size=batch_size,
    )  # fmt: skip
    try:
        config.check()
    except ValueError as e:
        hint = "'--steps'" if "steps" in str(e) else "'--match'" if "match" in str(e) else "'--n'"
        raise click.BadParameter(str(e), param_hint=hint) from e
    from sfvq import dist

    if dist.init(device=device):  # under torchrun the processes share the scoring (docs/scale.md)
        click.get_current_context().call_on_close(dist.shutdown)
        device = dist.device_for_rank(device)
        if not dist.is_main():
            console = Console(stderr=True, quiet=True)
    scorers = _scorers(ssim)
    try:
        build = dict(
            network=network, model_path=model_path, k=k, n_samples=n_samples, seed=seed, bits=bits,
            layers=layers, latentclr_steps=latentclr_steps, device=device, outdir=outdir, console=console,
        )  # fmt: skip
        error = None
        if dist.is_main():  # builds (or reads) the directions and writes them; the others read them
            try:
                with dist.local():
                    outdir.mkdir(parents=True, exist_ok=True)
                    for stale in ("table.md", "results.json", "curves.png", "options.json"):
                        (outdir / stale).unlink(missing_ok=True)  # a run stopped half-way must not look done
                    G, net, mds = build_methods(names, saved=saved_dirs, candidates=candidates, **build)
            except Exception as e:  # noqa: BLE001 (raised below, on every process)
                error = e
        dist.raise_together(error)
        if not dist.is_main():
            written = {m: outdir / "directions" / m for m in names}
            G, net, mds = build_methods(names, saved=written, write=False, **build)
        result = run_evaluation(mds, scorers, config, log=lambda text: console.print(f"[dim]{text}[/dim]"))
    finally:
        close = getattr(scorers.attributes, "close", None)
        if close is not None:
            close()
    if not dist.is_main():  # rank 0 writes the results
        return
    summary = summarise(result)
    table = markdown_table(summary)
    for m in result.methods:
        save_png(outdir / "figures" / f"{m}.png", method_figure(result, m))
    curves_plot(result, summary, outdir / "curves.png")
    write_json(outdir / "results.json", {"config": _config_dict(config), **summary})
    with atomic_path(outdir / "table.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    write_options(
        outdir,
        "evaluate",
        {
            "network": net, "generator": G.name, "model": model_path, "methods": names, "k": k, "n": n,
            "steps": steps, "units": units, "screen_n": screen_n, "match": match, "bootstrap": bootstrap,
            "ssim": ssim, "layers": None if layers is None else list(layers), "bits": bits,
            "candidates": candidates, "n_samples": n_samples, "seed": seed,
            "latentclr_steps": latentclr_steps,
            "directions": {m: str(p) for m, p in saved_dirs.items()}, "batch_size": batch_size,
            "device": device, "outdir": outdir, "seconds": result.seconds,
        },
    )  # fmt: skip
    click.echo(table)
    click.echo(f"wrote table.md, results.json, curves.png, figures/ and directions/ to {outdir}")


def _config_dict(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(config)
    d["layers"] = None if config.layers is None else list(config.layers)
    return d


def _scorers(ssim: bool) -> Any:
    """The offline face scorers, or a usage error saying what to install."""
    from sfvq.evaluation import Scorers
    from sfvq.scorers import ATTRIBUTES, AttributeScorer, IdentityScorer, ScorerUnavailable, image_ssim

    try:
        identity = IdentityScorer()
        attributes = AttributeScorer()
    except ScorerUnavailable as e:
        raise click.UsageError(f"sfvq evaluate needs the face scorers: {e}") from e
    return Scorers(attributes, identity, image_ssim if ssim else None, tuple(ATTRIBUTES))
