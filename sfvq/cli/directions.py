"""``sfvq directions``: list a run's segment directions and saved directions, export them, or save one.

A model is given as ``--model`` (a ``model.safetensors`` or the run directory holding one). Editing along
a direction is ``sfvq edit`` (:mod:`sfvq.cli.edit`); sampling along a segment ``sfvq augment``
(:mod:`sfvq.cli.augment`); other tools' formats ``sfvq import`` / ``sfvq export`` (:mod:`sfvq.cli.interop`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.cli.common import fmt, open_run
from sfvq.cli.options import LAYER_RANGE, OutFile, model_option


@click.command()
@model_option()
@click.option(
    "--bits", type=click.IntRange(2, 16), default=None, help="Bitrate (default: the model's final)."
)
@click.option(
    "--out",
    type=OutFile(),
    default=None,
    help="Also write the segment directions to OUT.safetensors + OUT.json.",
)
@click.option("--format", "fmt_", type=click.Choice(["table", "json"]), default="table", show_default=True)
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
    fmt_: str,
    save_name: str | None,
    spec: str | None,
    layers: tuple[int, int] | None,
    negate: bool,
    overwrite: bool,
) -> None:
    """List the segment directions of one bitrate (name, bits, segment, layers, length, std) and the
    run's saved directions; export them with --out, or save a named one with --save."""
    from sfvq.directions import segment_directions
    from sfvq.io import to_json_text

    run = open_run(model_path)
    if save_name is not None:
        _save(run, save_name, spec, layers, negate, overwrite)
        return
    if spec is not None or layers is not None or negate or overwrite:
        raise click.UsageError("--direction, --layers, --negate and --overwrite go with --save NAME")
    model = run.model
    bits = bits if bits is not None else max(model.codebooks_)
    if bits not in model.codebooks_:
        raise click.BadParameter(
            f"no {bits}-bit curve in this model; it has bits {sorted(model.codebooks_)}",
            param_hint="'--bits'",
        )
    num_ws = run.num_ws
    seg = segment_directions(model, bits, run.latents)
    seg.meta.update(model=str(model_path), num_ws=num_ws)
    try:
        saved = run.directions()
    except ValueError as e:
        raise click.UsageError(f"cannot read the run's saved directions: {e}") from e
    if out is not None:
        path = seg.save(out)
        click.echo(f"wrote {path} and {path.with_suffix('.json').name} ({len(seg)} x {seg.dim})", err=True)
    rows = seg.rows(num_ws)
    saved_rows = saved.rows(num_ws) if saved is not None else []
    if fmt_ == "json":
        click.echo(to_json_text({"bits": bits, "segments": rows, "saved": saved_rows}), nl=False)
        return
    _print_tables(bits, rows, saved_rows, has_latents=run.latents is not None)


def _save(
    run: Any,
    name: str,
    spec: str | None,
    layers: tuple[int, int] | None,
    negate: bool,
    overwrite: bool,
) -> None:
    """``--save NAME --direction SPEC``: store the direction (with its layers and sign) in the run."""
    from sfvq.directions import DirectionSpecError, check_layers, check_name, layers_text

    if spec is None:
        raise click.UsageError("--save NAME needs --direction b:i|b:i-j|NAME (what to save)")
    try:
        check_name(name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--save'") from e
    num_ws = run.num_ws
    try:
        check_layers(layers, num_ws)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--layers'") from e
    try:
        d = run.save_direction(name, spec, layers, -1 if negate else 1, overwrite=overwrite)
    except DirectionSpecError as e:
        raise click.BadParameter(str(e), param_hint="'--direction'") from e
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--save'") from e
    click.echo(
        f"saved {d.name!r} = {'-' if d.sign < 0 else ''}{spec}, layers {layers_text(d.layers, num_ws)}, "
        f"to {run.path / 'directions.safetensors'}"
    )


def _print_tables(
    bits: int, rows: list[dict[str, Any]], saved_rows: list[dict[str, Any]], *, has_latents: bool
) -> None:
    """The segment and saved directions as rich tables."""
    from rich.console import Console
    from rich.table import Table

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
                fmt(r["length"]),
                fmt(r["std"]),
                "+" if r["sign"] > 0 else "-",
            )
        console.print(table)
    if not has_latents:
        console.print("std: no latents found beside the model (latents.npy), so none is shown", style="dim")
