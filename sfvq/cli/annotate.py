"""``sfvq annotate --run R``: annotate every segment of a run (where it acts, what it changes, which W+
layers carry it) into ``R/annotations.json`` and ``R/annotations/`` (see :mod:`sfvq.annotate`)."""

from __future__ import annotations

from pathlib import Path

import click

from sfvq.cli.common import open_run, run_generator, run_network, run_space
from sfvq.cli.options import (
    FiniteFloat,
    SeedList,
    batch_size_option,
    device_option,
    network_option,
    quiet_option,
)


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
    required=True,
    help="Run directory (model.safetensors, space.json, latents.npy), as `sfvq run` writes it.",
)
@click.option(
    "--bits",
    "bits",
    type=click.IntRange(1, 24),
    multiple=True,
    help="Bitrate(s) to annotate (repeatable; default: the run's finest, its --bits).",
)
@click.option(
    "--seeds",
    type=SeedList(max_count=64),
    default="0-3",
    show_default=True,
    help="Seeds every edit is applied to.",
)
@click.option(
    "--sigma",
    type=FiniteFloat(min=0, min_open=True),
    default=None,
    help="Edit size in stds of the run's latents along each segment, applied as +sigma and -sigma "
    "(default: the largest step of the run's edit grids, chosen from the data; 3 without latents).",
)
@click.option(
    "--scorer",
    default="auto",
    show_default=True,
    metavar="auto|none|faces|avatars|MODULE:FUNC|FILE.py:FUNC",
    help="What scores the edited images: auto picks the avatars classifier for builtin:avatars-sg2 and the "
    "face scorers for face generators; MODULE:FUNC / FILE.py:FUNC is a function returning your own scorer "
    "(see sfvq.scorers.interface).",
)
@click.option(
    "--search",
    type=click.Choice(["shrink", "exact"]),
    default="shrink",
    show_default=True,
    help="Layer-range search: shrink from all layers one group at a time, or render every range.",
)
@click.option(
    "--criterion",
    type=click.Choice(["pixels", "purity"]),
    default="pixels",
    show_default=True,
    help="How layer ranges are chosen: the range keeping most of the edit's pixel change with the least "
    "elsewhere, or the range whose largest score-group shift is the largest share of all (needs a scorer).",
)
@click.option(
    "--resolution",
    type=click.IntRange(8, 4096),
    default=256,
    show_default=True,
    help="Render at most this many px a side (a StyleGAN2 stops at that block).",
)
@network_option()
@batch_size_option(64)
@device_option()
@quiet_option()
def annotate(
    run_dir: Path,
    bits: tuple[int, ...],
    seeds: list[int],
    sigma: float | None,
    scorer: str,
    search: str,
    criterion: str,
    resolution: int,
    network: str | None,
    batch_size: int,
    device: str,
    quiet: bool,
) -> None:
    """Annotate every segment of a run: a heat map of where it acts and how local that is, the shift of
    each score of a scorer, a one-line summary, and the W+ layer range that keeps most of its effect with
    the least change elsewhere (used by --layers auto). Writes RUN/annotations.json and RUN/annotations/."""
    import time

    from sfvq.annotate import AnnotationError, annotate_run
    from sfvq.scorers._common import ScorerUnavailable
    from sfvq.scorers.interface import ScorerError, make_scorer

    run = open_run(run_dir, hint="'--run'", network=network, device=device)
    have = sorted(run.model.codebooks_)
    for b in bits:
        if b not in have:
            raise click.BadParameter(
                f"the run has no {b}-bit curve; it has bits {have[0]}-{have[-1]}", param_hint="'--bits'"
            )
    net = run_network(run)
    G = run_generator(run)
    run_space(run)
    try:
        chosen, line = make_scorer(scorer, net, G)
    except (ScorerError, ScorerUnavailable) as e:
        raise click.BadParameter(str(e), param_hint="'--scorer'") from e
    click.echo(line)
    start = time.perf_counter()
    try:
        path = annotate_run(
            run,
            list(bits) or None,
            seeds=seeds,
            sigma=sigma,
            scorer=chosen,
            search=search,
            criterion=criterion,
            resolution=resolution,
            batch_size=batch_size,
            progress=not quiet,
        )
    except ScorerError as e:
        raise click.BadParameter(str(e), param_hint="'--scorer'") from e
    except AnnotationError as e:
        raise click.UsageError(str(e)) from e
    finally:
        close = getattr(chosen, "close", None)
        if callable(close):
            close()
    _print_table(path)
    click.echo(f"wrote {path} and {run_dir / 'annotations'}/ in {time.perf_counter() - start:.1f} s")
    from sfvq.cli.report import refresh_report

    refresh_report(run_dir)


def _print_table(path: Path) -> None:
    """The annotation table of each bitrate written (segment, locality, layers, summary)."""
    from rich.console import Console
    from rich.table import Table

    from sfvq.annotate import read_annotations
    from sfvq.directions import layers_text

    data = read_annotations(path.parent) or {"bits": {}}
    console = Console()
    for b, rows in data["bits"].items():
        table = Table(title=f"{b}-bit segments")
        for col in ("segment", "change", "locality", "layers", "kept", "summary"):
            table.add_column(col)
        for row in rows:
            lay = row.get("layers")
            table.add_row(
                str(row["segment"]),
                f"{row['change']:.3f}" if row.get("change") is not None else "-",
                f"{row['locality']:.2f}" if row.get("locality") is not None else "-",
                layers_text(tuple(lay)) if lay else "-",
                f"{row['layer_share']:.2f}" if row.get("layer_share") is not None else "-",
                row.get("summary", ""),
            )
        console.print(table)
